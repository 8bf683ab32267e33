"""Kernel layouts: PyTorch's and Keras' transposed-convolution weights to fcnjax's and back.

fcnjax stores a transposed-convolution kernel as ``(*window, C_in, C_out // groups)``.
``torch.nn.ConvTranspose{1,2,3}d.weight`` is ``(C_in, C_out // groups, *window)`` and Keras'
``Conv{1,2,3}DTranspose.kernel`` is ``(*window, C_out, C_in)``; all three index the window
the same way (tap ``j`` lands on output ``i * stride + j * dilation - crop``), so every
conversion is a pure transposition.

>>> import numpy as np
>>> from fcnjax import ops
>>> w = np.zeros((8, 4, 3, 3))  # torch: (C_in, C_out, kh, kw)
>>> ops.kernel_from_torch(w).shape, ops.kernel_to_torch(ops.kernel_from_torch(w)).shape
((3, 3, 8, 4), (8, 4, 3, 3))
"""

from __future__ import annotations

import jax.numpy as jnp

from fcnjax.ops._args import is_int
from fcnjax.typing import Array, ArrayLike

__all__ = ["kernel_from_keras", "kernel_from_torch", "kernel_to_keras", "kernel_to_torch"]


def _as_array(a) -> Array:
    if hasattr(a, "detach"):  # a torch.Tensor, possibly requiring grad; no torch import
        a = a.detach().cpu().numpy()
    return jnp.asarray(a)


def _check_groups(groups, c_in: int, name: str, shape) -> None:
    if not is_int(groups) or groups < 1 or c_in % groups:
        raise ValueError(
            f"`feature_group_count`={groups!r} must be a positive int dividing "
            f"C_in={c_in} of `{name}` (shape {shape})."
        )


def kernel_from_torch(weight: ArrayLike, feature_group_count: int = 1) -> Array:
    """fcnjax kernel from a ``torch.nn.ConvTranspose{1,2,3}d.weight``.

    Args:
      weight: ``(C_in, C_out // groups, *window)`` (a tensor or an array).
      feature_group_count: the layer's ``groups``; must divide ``C_in``. Both layouts keep
        the per-group output channels in the same axis, so it changes no numbers.

    Returns:
      ``(*window, C_in, C_out // groups)``.
    """
    w = _as_array(weight)
    if w.ndim < 3:
        raise ValueError(
            f"`weight` must be (C_in, C_out // groups, *window), rank >= 3; got shape {w.shape}."
        )
    _check_groups(feature_group_count, w.shape[0], "weight", w.shape)
    return jnp.moveaxis(w, (0, 1), (-2, -1))


def kernel_to_torch(kernel: ArrayLike, feature_group_count: int = 1) -> Array:
    """Inverse of :func:`kernel_from_torch`: ``(*window, C_in, C_out // g)`` -> torch."""
    k = jnp.asarray(kernel)
    if k.ndim < 3:
        raise ValueError(f"`kernel` must be (*window, C_in, C_out // groups); got {k.shape}.")
    _check_groups(feature_group_count, k.shape[-2], "kernel", k.shape)
    return jnp.moveaxis(k, (-2, -1), (0, 1))


def kernel_from_keras(kernel: ArrayLike) -> Array:
    """fcnjax kernel from a Keras ``Conv{1,2,3}DTranspose.kernel``.

    Args:
      kernel: ``(*window, C_out, C_in)``.

    Returns:
      ``(*window, C_in, C_out)``.
    """
    k = _as_array(kernel)
    if k.ndim < 3:
        raise ValueError(f"`kernel` must be (*window, C_out, C_in), rank >= 3; got {k.shape}.")
    return jnp.swapaxes(k, -1, -2)


def kernel_to_keras(kernel: ArrayLike) -> Array:
    """Inverse of :func:`kernel_from_keras`: ``(*window, C_in, C_out)`` -> Keras."""
    k = jnp.asarray(kernel)
    if k.ndim < 3:
        raise ValueError(f"`kernel` must be (*window, C_in, C_out), rank >= 3; got {k.shape}.")
    return jnp.swapaxes(k, -1, -2)
