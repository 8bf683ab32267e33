"""fcnjax's networks as Flax NNX modules, through flax's ``nnx.bridge.ToNNX``.

fcnjax's networks are Linen modules; :func:`to_nnx` wraps one for NNX code (flax's
recommended API for new code) and initialises it on a sample batch:

>>> import jax.numpy as jnp, optax
>>> from flax import nnx
>>> from fcnjax import models
>>> model = models.to_nnx(
...     models.get("segnet_basic", num_classes=3, widths=(4, 8), kernel_size=3),
...     jnp.zeros((1, 32, 32, 3)),
...     rngs=nnx.Rngs(0, dropout=1),
... )
>>> optimizer = nnx.Optimizer(model, optax.adam(1e-3), wrt=nnx.Param)
>>> @nnx.jit
... def train_step(model, optimizer, x, mask):
...     def loss_fn(model):
...         logits = model(x, train=True)  # BatchNorm statistics are updated in place
...         return optax.softmax_cross_entropy_with_integer_labels(logits, mask).mean()
...     loss, grads = nnx.value_and_grad(loss_fn)(model)
...     optimizer.update(model, grads)  # flax >= 0.11
...     return loss
>>> x, mask = jnp.ones((2, 32, 32, 3)), jnp.zeros((2, 32, 32), jnp.int32)
>>> loss = train_step(model, optimizer, x, mask)
>>> model(x).shape  # evaluation: train=False, the running statistics
(2, 32, 32, 3)
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import nnx, traverse_util

from fcnjax.typing import ArrayLike

__all__ = ["ToNNX", "to_nnx"]


class ToNNX(nnx.bridge.ToNNX):
    """flax's ``nnx.bridge.ToNNX`` for a network whose ``__call__`` takes ``train``.

    ``model(x, train=True)`` is the training forward pass: BatchNorm uses the batch's
    statistics and updates the running ones (``nnx.BatchStat`` variables) in place;
    dropout draws its mask from the ``dropout`` stream of the ``nnx.Rngs`` given at
    construction, or of ``rngs=`` given to the call (a call takes each stream's next key,
    ``fold_in(stream key, count)``: ``rngs=nnx.Rngs(dropout=k)`` is Linen's
    ``rngs={"dropout": jax.random.fold_in(k, 0)}``). ``model(x)`` evaluates (running
    statistics, no dropout). Anything else goes to flax's ``ToNNX.__call__``.

    What this adds to flax's wrapper: ``mutable=["batch_stats"]`` in training (flax's
    Linen apply refuses to update immutable statistics), and the variables kept that
    flax 0.11's wrapper drops after such an update (it merges the updated statistics
    into each top-level submodule's dictionary one level deep, losing the parameters of
    nested submodules; flax 0.12 merges them at every depth).
    """

    def __call__(self, *args: Any, train: bool = False, **kwargs: Any) -> Any:
        if not train or "mutable" in kwargs:
            return super().__call__(*args, train=train, **kwargs)
        kept = {
            name: traverse_util.flatten_dict(value)
            for name, value in vars(self).items()
            if isinstance(value, dict) and value
        }
        out = super().__call__(*args, train=True, mutable=["batch_stats"], **kwargs)
        for name, flat in kept.items():
            now = traverse_util.flatten_dict(getattr(self, name))
            if flat.keys() - now.keys():  # flax 0.11: nested variables lost
                setattr(self, name, traverse_util.unflatten_dict({**flat, **now}))
        return out


def to_nnx(model: nn.Module, sample: ArrayLike, *, rngs: nnx.Rngs | int = 0) -> ToNNX:
    """``model`` (any fcnjax network) as an initialised NNX module (:class:`ToNNX`).

    Args:
      model: the Linen network, e.g. ``models.get("unet", num_classes=21)``.
      sample: a batch of inputs ``(N, H, W, C)`` to initialise on, as Linen's ``init``
        takes it (only its shape and dtype matter; one image suffices).
      rngs: an ``nnx.Rngs`` with a ``params`` (or default) stream for the initial
        parameters and a ``dropout`` stream for training; an int seeds both.

    Returns:
      The NNX module: ``model(x, train=True)`` trains (BatchNorm statistics updated in
      place, dropout on), ``model(x)`` evaluates. Its parameters are ``nnx.Param``, its
      BatchNorm statistics ``nnx.BatchStat``, at Linen's paths (its top-level submodules
      are the attributes): ``nnx.state(model, nnx.Param)`` holds the tree of Linen's
      ``variables["params"]``, ``nnx.state(model, nnx.BatchStat)`` that of
      ``variables["batch_stats"]``.
    """
    if isinstance(rngs, int):
        params, dropout = jax.random.split(jax.random.key(rngs))
        rngs = nnx.Rngs(params=params, dropout=dropout)
    wrapped = ToNNX(model, rngs=rngs)
    nnx.bridge.lazy_init(wrapped, jnp.asarray(sample))
    return wrapped
