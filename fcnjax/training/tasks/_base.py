"""What every task shares: the host-side sums of an evaluation, the interface a task
implements, and what a task is made from (:class:`Context`)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, Protocol

import jax
import numpy as np

from fcnjax import metrics

__all__ = ["Batch", "Context", "EvalAccumulator", "Task"]

Batch = Mapping[str, jax.Array]


class EvalAccumulator:
    """Host-side sums of :meth:`Task.eval_sums` over a split -> the task's metrics.

    Losses add in float64; confusion matrices in int64 (:class:`metrics.ConfusionMatrix`).
    """

    def __init__(self, confusion: metrics.ConfusionMatrix | None = None):
        self.confusion = confusion
        self.loss_total = 0.0
        self.loss_norm = 0.0

    def update(self, sums: Mapping[str, Any]) -> None:
        self.loss_total += float(np.asarray(sums["loss_total"], np.float64))
        self.loss_norm += float(np.asarray(sums["loss_norm"], np.float64))
        if self.confusion is not None:
            self.confusion.update(sums["confusion_matrix"])

    def compute(self) -> dict[str, Any]:
        results: dict[str, Any] = {"loss": self.loss_total / max(self.loss_norm, 1e-12)}
        if self.confusion is not None:
            results.update(self.confusion.compute())
            results["confusion_matrix"] = self.confusion.matrix.tolist()
        return results


class Task(Protocol):
    """A task: a frozen dataclass (hashable, so that jitted steps can bind it) with these.

    Its loss is returned as *sums* ``(total, normaliser)`` over a batch, so that devices
    and hosts combine them exactly by summing both; the objective is ``total /
    normaliser`` over the global batch.
    """

    name: ClassVar[str]
    metric_names: ClassVar[tuple[str, ...]]  # the scalar metrics of `accumulator()`
    num_classes: int | None

    def loss_sums(self, outputs: Any, batch: Batch) -> tuple[jax.Array, jax.Array]: ...

    def eval_sums(self, outputs: Any, batch: Batch) -> dict[str, jax.Array]: ...

    def accumulator(self, class_names: Sequence[str] | None = None) -> EvalAccumulator: ...

    def info(self) -> dict[str, Any]:
        """What the task records in ``run_info.json`` (``task``, ``num_classes``, ...)."""

    def write_pictures(
        self,
        model: Any,
        variables: Any,
        source: Any,
        transform: Any,
        workdir: Path,
        outputs: Mapping[str, Any],
    ) -> list[Path]:
        """The pictures a finished run leaves in ``workdir``; returns the files written."""


@dataclasses.dataclass(frozen=True)
class Context:
    """What a task is made from besides the config's ``loss`` section.

    Attributes:
      num_classes: the classes the model is asked for (``model.num_classes``), or None.
      data_classes: the data's classes (its source, or a run's ``run_info.json``), or None.
      class_names: the data's class names, or None.
      info: a finished run's ``run_info.json`` (evaluation, prediction), or None.
      needs_loss: whether the loss is computed (training, evaluation; not prediction).
      train_source: the training source, built on demand (e.g. for class frequencies).
    """

    num_classes: int | None = None
    data_classes: int | None = None
    class_names: tuple[str, ...] | None = None
    info: Mapping[str, Any] | None = None
    needs_loss: bool = True
    train_source: Callable[[], Any] | None = None
