"""What every task shares: how a loss sees the global batch (:class:`Across`), the
host-side sums of an evaluation, the interface a task implements, and what a task is made
from (:class:`Context`)."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, Protocol

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from fcnjax import metrics

__all__ = ["LOCAL", "Across", "Batch", "Context", "EvalAccumulator", "Task"]

Batch = Mapping[str, jax.Array]


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def _global_sum(x: jax.Array, axis_name: str) -> jax.Array:
    return lax.psum(x, axis_name)


def _global_sum_fwd(x, axis_name):
    return lax.psum(x, axis_name), None


def _global_sum_bwd(axis_name, _, g):
    return (g,)  # this device's share of d(objective)/dx: its own terms of the sum


_global_sum.defvjp(_global_sum_fwd, _global_sum_bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def _global_rows(x: jax.Array, axis_name: str) -> jax.Array:
    return lax.all_gather(x, axis_name, tiled=True)


def _global_rows_fwd(x, axis_name):
    return lax.all_gather(x, axis_name, tiled=True), None


def _global_rows_bwd(axis_name, _, g):
    n = g.shape[0] // lax.psum(1, axis_name)
    return (lax.dynamic_slice_in_dim(g, lax.axis_index(axis_name) * n, n),)  # its own rows


_global_rows.defvjp(_global_rows_fwd, _global_rows_bwd)


@dataclasses.dataclass(frozen=True)
class Across:
    """How a task's loss sees the global batch when each device holds a shard of it.

    Under ``jax.jit`` over a mesh (``axis_name=None``) arrays are global already and both
    methods are the identity. Under ``pmap``/``shard_map`` they give every device the
    global value, with a gradient that is this device's share: summing the devices'
    gradients (as the training step does) then gives exactly the gradient of the global
    objective, so that a region loss (a ratio of sums over the whole batch, e.g. Dice) or
    a Lovasz loss over the whole batch trains as on one device.

    >>> LOCAL.sum({"a": jnp.ones(2)})["a"].tolist()  # one device: nothing to combine
    [1.0, 1.0]
    """

    axis_name: str | None = None

    def sum(self, tree: Any) -> Any:
        """The sum of ``tree``'s leaves over the devices; a float leaf's gradient is the
        cotangent itself, an integer leaf (a count) has none."""
        if self.axis_name is None:
            return tree

        def one(x):
            x = jnp.asarray(x)
            if jnp.issubdtype(x.dtype, jnp.floating):
                return _global_sum(x, self.axis_name)
            return lax.psum(x, self.axis_name)

        return jax.tree.map(one, tree)

    def rows(self, x: jax.Array) -> jax.Array:
        """The rows (leading axis) of every device, in device order: ``f[n * N, ...]``;
        the gradient flows to this device's own rows."""
        if self.axis_name is None:
            return x
        if jnp.issubdtype(x.dtype, jnp.floating):
            return _global_rows(x, self.axis_name)
        return lax.all_gather(x, self.axis_name, tiled=True)


LOCAL = Across()
"""One device, or arrays that are global already (``jax.jit`` over a mesh)."""


class EvalAccumulator:
    """Host-side sums of :meth:`Task.eval_sums` over a split -> the task's metrics.

    The loss sums (``sums["loss"]``, a tree of arrays) add in float64, and the loss is
    ``loss_fn`` of their totals (so that a ratio of sums, e.g. Dice, is the split's);
    confusion matrices add in int64 (:class:`metrics.ConfusionMatrix`).
    """

    def __init__(
        self,
        loss_fn: Callable[[Any], Any],
        confusion: metrics.ConfusionMatrix | None = None,
        binary: bool = False,
    ):
        self.loss_fn, self.confusion, self.binary = loss_fn, confusion, binary
        self.loss_sums: Any = None

    def update(self, sums: Mapping[str, Any]) -> None:
        new = jax.tree.map(lambda x: np.asarray(x, np.float64), sums["loss"])
        old = self.loss_sums
        self.loss_sums = new if old is None else jax.tree.map(np.add, old, new)
        if self.confusion is not None:
            self.confusion.update(sums["confusion_matrix"])

    def compute(self) -> dict[str, Any]:
        loss = float("nan") if self.loss_sums is None else float(self.loss_fn(self.loss_sums))
        results: dict[str, Any] = {"loss": loss}
        if self.confusion is not None:
            results.update(self.confusion.compute())
            if self.binary:  # the foreground's scores, the usual figures of a binary task
                results["foreground_iou"] = _at(results["per_class_iou"], 1)
                results["foreground_dice"] = _at(results["per_class_dice"], 1)
            results["confusion_matrix"] = self.confusion.matrix.tolist()
        return results


def _at(per_class: Any, i: int) -> float:
    return list(per_class.values())[i] if isinstance(per_class, dict) else per_class[i]


class Task(Protocol):
    """A task: a frozen dataclass (hashable, so that jitted steps can bind it) with these.

    Its loss comes in two parts, so that devices, hosts and the batches of an evaluation
    combine exactly: :meth:`loss_sums` gives sums over the *global* batch (a tree of arrays
    that add, combined over devices by ``across``), and :meth:`loss` turns sums into the
    objective (e.g. ``total / normaliser``, or a Dice ratio per class).
    """

    name: ClassVar[str]
    metric_names: tuple[str, ...]  # the scalar metrics of `accumulator()`
    num_classes: int | None

    def loss_sums(self, outputs: Any, batch: Batch, across: Across = LOCAL) -> Any: ...

    def loss(self, sums: Any) -> jax.Array: ...

    def eval_sums(self, outputs: Any, batch: Batch, across: Across = LOCAL) -> dict[str, Any]:
        """``{"loss": loss sums, ...}`` over the global batch (e.g. ``confusion_matrix``)."""

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
      threshold: a binary network's foreground probability above which a pixel is
        foreground (``inference.threshold``).
    """

    num_classes: int | None = None
    data_classes: int | None = None
    class_names: tuple[str, ...] | None = None
    info: Mapping[str, Any] | None = None
    needs_loss: bool = True
    train_source: Callable[[], Any] | None = None
    threshold: float = 0.5
