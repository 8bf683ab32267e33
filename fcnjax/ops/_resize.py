"""Bilinear resizing with the corner samples aligned: PyTorch's ``align_corners=True``."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from fcnjax.ops._args import per_dim
from fcnjax.typing import Array, ArrayLike, IntOrSeq

__all__ = ["resize_align_corners"]


def _interpolation_matrix(n_in: int, n_out: int) -> np.ndarray:
    """``(n_out, n_in)``: output sample ``o`` reads input coordinate ``o (n_in - 1) /
    (n_out - 1)`` (0 when ``n_out`` is 1), linearly between its two neighbours."""
    scale = (n_in - 1) / (n_out - 1) if n_out > 1 else 0.0
    src = np.arange(n_out) * scale
    lo = np.minimum(np.floor(src).astype(int), n_in - 1)
    hi = np.minimum(lo + 1, n_in - 1)
    frac = src - lo
    m = np.zeros((n_out, n_in))
    np.add.at(m, (np.arange(n_out), lo), 1 - frac)
    np.add.at(m, (np.arange(n_out), hi), frac)
    return m


def resize_align_corners(x: ArrayLike, size: IntOrSeq) -> Array:
    """Bilinear (linear, trilinear) resizing with the first and last samples of every
    spatial dimension aligned: ``torch.nn.functional.interpolate(..., mode="bilinear",
    align_corners=True)`` and ``nn.Upsample(..., align_corners=True)``, as
    segmentation_models_pytorch's DeepLabV3+ upsamples.

    Output sample ``o`` of a dimension of ``L`` samples resized to ``S`` reads input
    coordinate ``o (L - 1) / (S - 1)``, interpolated linearly between its neighbours (no
    clamping is needed: every coordinate is inside). It differs from half-pixel resizing
    (``jax.image.resize``, ``align_corners=False``) everywhere but at the corners. It is
    one matrix product per spatial dimension, so its gradient is another.

    Args:
      x: ``(N, *spatial, C)``.
      size: the output's spatial size: an int or one int per spatial dimension.

    Returns:
      ``(N, *size, C)``, in ``x``'s dtype (float32 for integer input).

    >>> import jax.numpy as jnp
    >>> resize_align_corners(jnp.array([0., 3.]).reshape(1, 2, 1), 4)[0, :, 0]
    Array([0., 1., 2., 3.], dtype=float32)
    """
    x = jnp.asarray(x)
    if x.ndim < 3:
        raise ValueError(f"`x` must be (N, *spatial, C); got shape {x.shape}.")
    sizes = per_dim("size", size, x.ndim - 2, 1)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        x = x.astype(jnp.float32)
    for axis, (n_in, n_out) in enumerate(zip(x.shape[1:-1], sizes), 1):
        if n_in == n_out:
            continue
        m = jnp.asarray(_interpolation_matrix(n_in, n_out), x.dtype)
        x = jnp.moveaxis(jnp.tensordot(m, x, axes=((1,), (axis,))), 0, axis)
    return x
