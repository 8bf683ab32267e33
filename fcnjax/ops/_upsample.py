"""Fixed upsamplers: FCN's bilinear kernel and exact bilinear interpolation."""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from fcnjax.ops._args import per_dim
from fcnjax.ops._conv_transpose import conv_transpose
from fcnjax.typing import Array, ArrayLike, DTypeLike, IntOrSeq

__all__ = ["bilinear_filter", "bilinear_kernel", "resize_logits", "upsample_bilinear"]


def bilinear_filter(factor: int) -> np.ndarray:
    """FCN's 1-D linear-interpolation taps for upsampling by ``factor``.

    Length ``k = 2 * factor - factor % 2``, centred at ``factor - 1`` (odd ``k``) or
    ``factor - 0.5`` (even ``k``); tap ``j`` is ``1 - |j - centre| / factor``.

    >>> bilinear_filter(2)
    array([0.25, 0.75, 0.75, 0.25])
    >>> bilinear_filter(3)
    array([0.33333333, 0.66666667, 1.        , 0.66666667, 0.33333333])
    """
    if not isinstance(factor, (int, np.integer)) or isinstance(factor, bool) or factor < 1:
        raise ValueError(f"`factor` must be a positive int, got {factor!r}.")
    size = 2 * factor - factor % 2
    centre = factor - 1 if size % 2 else factor - 0.5
    return 1 - np.abs(np.arange(size) - centre) / factor


def bilinear_window(factors: Sequence[int]) -> np.ndarray:
    """The N-d bilinear window: the outer product of one :func:`bilinear_filter` per factor.

    >>> bilinear_window((2, 1)).shape
    (4, 1)
    """
    taps = [bilinear_filter(f) for f in factors]
    window = taps[0]
    for t in taps[1:]:
        window = np.multiply.outer(window, t)
    return window


def bilinear_kernel(factor: int, channels: int, dtype: DTypeLike = jnp.float32) -> Array:
    """FCN's bilinear upsampling kernel, in fcnjax's ``(k, k, C_in, C_out)`` layout.

    Channel ``c`` maps to channel ``c`` with the outer product of :func:`bilinear_filter`
    taps; every other entry is zero (Long et al.'s ``upsample_filt`` on the diagonal). A
    ``conv_transpose`` with this kernel, ``strides=factor`` and ``padding="SAME"`` is
    bilinear interpolation (half-pixel centres) away from the borders.

    Args:
      factor: upsampling factor ``f``; the kernel size is ``k = 2 * f - f % 2``.
      channels: ``C``; the kernel is ``(k, k, C, C)``.
      dtype: the kernel's dtype.

    Returns:
      ``(k, k, channels, channels)``.

    >>> bilinear_kernel(2, 3).shape
    (4, 4, 3, 3)
    >>> print(bilinear_kernel(2, 1)[:, :, 0, 0])
    [[0.0625 0.1875 0.1875 0.0625]
     [0.1875 0.5625 0.5625 0.1875]
     [0.1875 0.5625 0.5625 0.1875]
     [0.0625 0.1875 0.1875 0.0625]]

    References:
      Long, Shelhamer & Darrell, "Fully Convolutional Networks for Semantic Segmentation",
      CVPR 2015 (``surgery.py``: ``upsample_filt``).
    """
    if not isinstance(channels, (int, np.integer)) or isinstance(channels, bool) or channels < 1:
        raise ValueError(f"`channels` must be a positive int, got {channels!r}.")
    f = bilinear_filter(factor)
    kernel = np.zeros((f.size, f.size, channels, channels), np.float64)
    kernel[:, :, np.arange(channels), np.arange(channels)] = np.outer(f, f)[..., None]
    return jnp.asarray(kernel, dtype)


def upsample_bilinear(x: ArrayLike, factor: IntOrSeq, *, method: str = "auto") -> Array:
    """Bilinear (linear, trilinear) upsampling by an integer factor; not learnable.

    Exact half-pixel interpolation everywhere, borders included: output sample ``o`` reads
    input coordinate ``(o + 0.5) / factor - 0.5``, clamped to the edge. This equals
    ``jax.image.resize(..., "linear")`` and ``torch.nn.functional.interpolate(...,
    mode="bilinear", align_corners=False)``. It is computed as a depthwise transposed
    convolution with FCN's bilinear filter over the edge-padded input.

    Args:
      x: ``(N, *spatial, C)``.
      factor: an int or one int per spatial dimension.
      method: passed to :func:`conv_transpose`.

    Returns:
      ``(N, *[L * f for L, f in zip(spatial, factor)], C)``.

    >>> import jax.numpy as jnp
    >>> upsample_bilinear(jnp.array([0., 4.]).reshape(1, 2, 1), 2)[0, :, 0]
    Array([0., 1., 3., 4.], dtype=float32)
    """
    x = jnp.asarray(x)
    if x.ndim < 3:
        raise ValueError(f"`x` must be (N, *spatial, C); got shape {x.shape}.")
    n = x.ndim - 2
    factors = per_dim("factor", factor, n, 1)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        x = x.astype(jnp.float32)
    kernel = jnp.asarray(bilinear_window(factors)[..., None, None], x.dtype)  # (*window, 1, 1)
    # Every channel uses the same filter: fold channels into the batch, one 1->1 kernel.
    batch, *spatial, channels = x.shape
    y = jnp.moveaxis(x, -1, 1).reshape(batch * channels, *spatial, 1)
    y = jnp.pad(y, [(0, 0)] + [(1, 1)] * n + [(0, 0)], mode="edge")
    y = conv_transpose(y, kernel, factors, "SAME", method=method)
    y = y[(slice(None), *(slice(f, f + s * f) for f, s in zip(factors, spatial)))]
    y = y.reshape(batch, channels, *(s * f for s, f in zip(spatial, factors)))
    return jnp.moveaxis(y, 1, -1)


def resize_logits(logits: ArrayLike, size: Sequence[int]) -> np.ndarray:
    """Class scores ``(h, w, K)`` of a resized input, bilinearly back at the image's ``size``.

    >>> resize_logits(np.zeros((4, 4, 3), np.float32), (8, 6)).shape
    (8, 6, 3)
    """
    logits = np.asarray(logits)
    if logits.shape[:2] == tuple(size):
        return logits
    return np.asarray(jax.image.resize(logits, (*size, logits.shape[-1]), "bilinear"))
