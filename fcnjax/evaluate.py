"""Evaluation over a whole split: a model, its variables, a source and a transform ->
the task's metrics, summed over every example (never averaged per batch).

>>> import jax, jax.numpy as jnp, numpy as np
>>> from fcnjax import data, models, tasks
>>> model = models.get("fcn8s", num_classes=3, width=0.0625, dropout=0.0)
>>> variables = jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
>>> images, masks = np.zeros((3, 32, 32, 3), np.uint8), np.ones((3, 32, 32), np.uint8)
>>> source = data.NumpyArrays(images, masks, num_classes=3)
>>> task = tasks.Segmentation(num_classes=3)
>>> transform = data.EvalTransform(mode="none")
>>> results = evaluate(model, variables, source, transform, task, batch_size=2)
>>> results["confusion_matrix"][1]  # 3 images of class 1, predicted 0; the padding uncounted
[3072, 0, 0]
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import flax.linen as nn

from fcnjax import data as data_lib
from fcnjax import parallel, steps
from fcnjax.tasks import Task

__all__ = ["Evaluator", "evaluate"]


class Evaluator:
    """A compiled evaluation of one model on one source, to call again as training goes.

    Args:
      model: the network (``model.apply(variables, images, train=False)``).
      source: the examples to evaluate (every one exactly once).
      transform: an :class:`~fcnjax.data.EvalTransform`.
      task: a :mod:`fcnjax.tasks` task (its sums and metrics).
      batch_size: the global batch; a multiple of the devices.
      placement: a :mod:`fcnjax.parallel` placement (default: ``jit`` over every device).
      loader: options of :func:`fcnjax.data.eval_loader` (``workers``, ``threads``, ...).
    """

    def __init__(
        self,
        model: nn.Module,
        source: Any,
        transform: data_lib.EvalTransform,
        task: Task,
        batch_size: int,
        placement: parallel.Placement | None = None,
        loader: Mapping[str, Any] | None = None,
    ):
        self.placement = placement if placement is not None else parallel.get("jit")
        self.placement.check_batch(batch_size, "eval_batch_size")
        self.source, self.transform, self.task = source, transform, task
        self.batch_size, self.loader = batch_size, dict(loader or {})
        step = functools.partial(steps.eval_step, apply_fn=model.apply, task=task)
        self._step = self.placement.compile(step)

    def __call__(self, variables: Any) -> dict[str, Any]:
        """Metrics of ``variables``, already placed (:meth:`Placement.place`).

        Segmentation: ``mean_iou``, ``pixel_accuracy``, ``mean_accuracy``,
        ``frequency_weighted_iou``, ``per_class_iou``, ``confusion_matrix`` (rows = ground
        truth), ``loss``; the autoencoder: ``loss``.
        """
        batches = data_lib.eval_loader(self.source, self.batch_size, self.transform, **self.loader)
        names = getattr(self.source, "class_names", None)
        sums = self.task.accumulator(names)
        for batch in batches:
            sums.update(self.placement.fetch(self._step(variables, self.placement.shard(batch))))
        return sums.compute()


def evaluate(
    model: nn.Module,
    variables: Any,
    source: Any,
    transform: data_lib.EvalTransform,
    task: Task,
    batch_size: int,
    placement: parallel.Placement | None = None,
    loader: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """One evaluation of host ``variables``: :class:`Evaluator` (same arguments) called once."""
    evaluator = Evaluator(model, source, transform, task, batch_size, placement, loader)
    return evaluator(evaluator.placement.place(variables))
