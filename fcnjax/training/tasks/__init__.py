"""What a network is trained to do: one module per task, found by ``config.task``.

A task module (``segmentation``, ``autoencoder``) holds the task's loss and evaluation
sums, its metrics, what it records in ``run_info.json``, its pictures, and ``make(loss,
context)``, which builds the task from the config's ``loss`` section and a
:class:`Context`. Adding a task is adding a module here (big_vision finds its evaluators
by name the same way); :func:`names` lists them.

>>> names()
('autoencoder', 'segmentation')
>>> task = make("segmentation", {"reduction": "mean", "class_weights": None, "ignore_label": 255},
...             Context(data_classes=3))
>>> task.num_classes, [t.name for t in task.terms]
(3, ['cross_entropy'])
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Mapping
from types import ModuleType
from typing import Any

from fcnjax.training.tasks._base import LOCAL, Across, Batch, Context, EvalAccumulator, Task
from fcnjax.training.tasks.autoencoder import Autoencoder
from fcnjax.training.tasks.segmentation import AUX_WEIGHT, Segmentation

__all__ = [
    "AUX_WEIGHT",
    "LOCAL",
    "Across",
    "Autoencoder",
    "Batch",
    "Context",
    "EvalAccumulator",
    "Segmentation",
    "Task",
    "get",
    "make",
    "names",
]


def names() -> tuple[str, ...]:
    """The tasks: every public module of this package."""
    return tuple(
        sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_"))
    )


def get(name: str) -> ModuleType:
    """The module of task ``name``; ValueError naming the tasks for another name."""
    if name not in names():
        raise ValueError(f"`task` must be one of {names()}; got {name!r}.")
    return importlib.import_module(f"{__name__}.{name}")


def make(name: str, loss: Mapping[str, Any], context: Context) -> Task:
    """Task ``name`` from the config's ``loss`` section and ``context``."""
    return get(name).make(loss, context)
