"""The pure training and evaluation steps, and the state they carry.

The steps are functions of ``(state, batch)`` and ``(variables, batch)``; their constant
collaborators (the task, the pmap axis, the model's ``apply``) are keyword-only and bound
with ``functools.partial`` once, before ``jax.jit`` or ``jax.pmap``
(:mod:`fcnjax.training.parallel` does it for the trainer):

>>> import functools, jax, jax.numpy as jnp, optax
>>> from fcnjax import models
>>> from fcnjax.training import tasks
>>> model = models.get("fcn8s", num_classes=3, width=0.0625, dropout=0.0)
>>> state = create_train_state(model, optax.sgd(0.1), jnp.zeros((1, 32, 32, 3)), jax.random.key(0))
>>> batch = {"image": jnp.ones((2, 32, 32, 3)), "mask": jnp.ones((2, 32, 32), jnp.int32)}
>>> task = tasks.Segmentation(num_classes=3)
>>> state, metrics = jax.jit(functools.partial(train_step, task=task))(state, batch)
>>> int(state.step), round(float(metrics["loss"]), 4)  # zero-initialised scores: log(3)
(1, 1.0986)
>>> evaluate = jax.jit(functools.partial(eval_step, apply_fn=model.apply, task=task))
>>> evaluate(state.variables(), batch)["confusion_matrix"].tolist()[1]  # truth 1: all counted
[0, 2048, 0]
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax import struct

from fcnjax.training.tasks import Across, Task

__all__ = ["TrainState", "create_train_state", "eval_step", "train_step"]


class TrainState(struct.PyTreeNode):
    """Everything that changes during training (and goes into a checkpoint).

    ``apply_fn`` and ``tx`` are static (not saved). ``batch_stats`` is ``{}`` for models
    without BatchNorm.
    """

    step: jax.Array
    params: Any
    opt_state: Any
    batch_stats: Any
    rng: jax.Array  # dropout key data; the key of step s is fold_in(rng, s)
    apply_fn: Callable = struct.field(pytree_node=False)
    tx: optax.GradientTransformation = struct.field(pytree_node=False)

    def variables(self, params: Any = None) -> dict[str, Any]:
        """``{'params': ..., 'batch_stats': ...}`` as ``apply_fn`` takes them."""
        v = {"params": self.params if params is None else params}
        return {**v, "batch_stats": self.batch_stats} if self.batch_stats else v


def create_train_state(
    model: nn.Module,
    tx: optax.GradientTransformation,
    example: jax.Array,
    rng: jax.Array,
    params: Any = None,
    batch_stats: Any = None,
) -> TrainState:
    """Initialises ``model`` on ``example`` (a batch of inputs) and ``tx`` on its params.

    ``params`` and ``batch_stats`` replace the initial parameters and BatchNorm
    statistics (e.g. with an ImageNet backbone's).
    """
    init_rng, dropout_rng = jax.random.split(rng)
    variables = jax.jit(model.init)(init_rng, example)  # called eagerly: one compilation
    params = variables["params"] if params is None else params
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        opt_state=tx.init(params),
        batch_stats=variables.get("batch_stats", {}) if batch_stats is None else batch_stats,
        rng=jax.random.key_data(dropout_rng),
        apply_fn=model.apply,
        tx=tx,
    )


def _psum(x: Any, axis_name: str | None) -> Any:
    return x if axis_name is None else jax.lax.psum(x, axis_name)


def train_step(
    state: TrainState,
    batch: Mapping[str, jax.Array],
    *,
    task: Task,
    axis_name: str | None = None,
) -> tuple[TrainState, dict[str, jax.Array]]:
    """One optimizer step on a batch ``{'image': f[N,H,W,C], 'mask': i32[N,H,W]}``.

    Under ``jax.jit`` with the batch sharded, the sums are global and the step equals the
    single-device one. Under ``pmap``/``shard_map`` pass ``axis_name``: the task's loss
    sums are combined over the axis (:class:`~fcnjax.training.tasks.Across`), gradients
    are summed over it (BatchNorm statistics are averaged); dropout keys are folded with
    the device index.

    Returns the new state and ``{'loss': the objective}`` over the global batch.
    """
    rng = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)
    if axis_name is not None:
        rng = jax.random.fold_in(rng, jax.lax.axis_index(axis_name))
    mutable = ["batch_stats"] if state.batch_stats else False
    across = Across(axis_name)

    def objective(params):
        variables = state.variables(params)
        rngs = {"dropout": rng}
        out = state.apply_fn(variables, batch["image"], train=True, rngs=rngs, mutable=mutable)
        outputs, updates = out if mutable else (out, {})
        loss = task.loss(task.loss_sums(outputs, batch, across))  # global, on every device
        return loss, (loss, updates)

    # Under pmap each device's gradient is its own share of the global objective's (see
    # tasks.Across): their sum is the gradient of one device holding the whole batch.
    grads, (loss, updates) = jax.grad(objective, has_aux=True)(state.params)
    grads = _psum(grads, axis_name)
    batch_stats = updates.get("batch_stats", state.batch_stats)
    if axis_name is not None and batch_stats:
        batch_stats = jax.lax.pmean(batch_stats, axis_name)
    param_updates, opt_state = state.tx.update(grads, state.opt_state, state.params)
    new_state = state.replace(
        step=state.step + 1,
        params=optax.apply_updates(state.params, param_updates),
        opt_state=opt_state,
        batch_stats=batch_stats,
    )
    return new_state, {"loss": loss}


def eval_step(
    variables: Any,
    batch: Mapping[str, jax.Array],
    *,
    apply_fn: Callable,
    task: Task,
    axis_name: str | None = None,
) -> dict[str, jax.Array]:
    """The task's sums over the global batch (padding excluded by ``batch['valid']``):
    ``loss`` (the task's loss sums) and e.g. ``confusion_matrix`` (``int32[K, K]``, rows =
    ground truth). Accumulate them over the split; never average per-batch metrics."""
    outputs = apply_fn(variables, batch["image"], train=False)
    return task.eval_sums(outputs, batch, Across(axis_name))
