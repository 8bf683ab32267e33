"""Flax (linen) layers around :mod:`fcnjax.ops`: they hold parameters and call one op.

Every layer is channels-last, ``(N, *spatial, C)``. ``dtype`` is the computation dtype
(e.g. ``jnp.bfloat16`` on TPU) and ``param_dtype`` the storage dtype of parameters.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax.numpy as jnp
import numpy as np
from flax.linen.dtypes import promote_dtype

from fcnjax import ops
from fcnjax.ops._args import per_dim
from fcnjax.ops._upsample import bilinear_window
from fcnjax.typing import Array, ArrayLike, DTypeLike, IntOrSeq, PaddingLike, PrecisionLike

__all__ = [
    "ConvTranspose",
    "MaxPoolWithArgmax",
    "MaxUnpool",
    "Upsample",
    "UPSAMPLE_METHODS",
    "bilinear_init",
    "center_crop",
    "crop_to",
    "pad_to_multiple",
]

Initializer = Callable[..., Array]
UPSAMPLE_METHODS = ("bilinear", "nearest", "transposed")


def bilinear_init(key: Array, shape: Sequence[int], dtype: DTypeLike = jnp.float32) -> Array:
    """FCN's bilinear initialisation for a :class:`ConvTranspose` kernel.

    The kernel ``(*window, C, C)`` maps channel ``c`` to channel ``c`` with the outer
    product of :func:`fcnjax.ops.bilinear_filter` taps and is zero elsewhere, so that a
    layer with ``strides=f`` and kernel size ``2 * f - f % 2`` starts as bilinear
    upsampling (FCN's ``surgery.interp``). ``key`` is unused (the initialiser is
    deterministic); it is accepted so that it is a Flax initializer.

    Args:
      key: unused.
      shape: ``(*window, C_in, C_out)`` with ``C_in == C_out`` and every window size of the
        form ``2 * f - f % 2`` (1, 4, 5, 8, 9, 12, 13, 16, ...).
      dtype: the kernel's dtype.

    >>> import jax
    >>> k = bilinear_init(jax.random.key(0), (4, 4, 2, 2))
    >>> print(k[:, :, 0, 0][1])
    [0.1875 0.5625 0.5625 0.1875]
    >>> float(k[:, :, 0, 1].sum())
    0.0
    """
    del key
    *window, c_in, c_out = shape
    if c_in != c_out:
        raise ValueError(
            f"bilinear_init needs C_in == C_out (one interpolation per channel); got kernel "
            f"shape {tuple(shape)}: use features == input channels and feature_group_count=1."
        )
    factors = [(k + 1) // 2 for k in window]
    if any(2 * f - f % 2 != k for f, k in zip(factors, window)):
        raise ValueError(
            f"bilinear_init needs window sizes 2 * factor - factor % 2 (1, 4, 5, 8, 9, 12, "
            f"13, 16, ...); got kernel shape {tuple(shape)}."
        )
    kernel = np.zeros((*window, c_in, c_out), np.float64)
    kernel[..., np.arange(c_in), np.arange(c_in)] = bilinear_window(factors)[..., None]
    return jnp.asarray(kernel, dtype)


class Conv(nn.Module):
    """A 2-D convolution layer (kernel ``(kh, kw, C_in, C_out)`` and bias, as
    ``flax.linen.Conv``, with ``strides`` and ``kernel_dilation``) that calls
    :func:`fcnjax.ops.conv`, whose kernel gradient avoids XLA:CPU's slow path.
    Parameters are interchangeable with ``nn.Conv``'s.

    >>> import jax, jax.numpy as jnp
    >>> layer = Conv(8, 3)
    >>> params = layer.init(jax.random.key(0), jnp.ones((1, 7, 7, 3)))
    >>> params["params"]["kernel"].shape, layer.apply(params, jnp.ones((1, 7, 7, 3))).shape
    ((3, 3, 3, 8), (1, 7, 7, 8))
    """

    features: int
    kernel_size: IntOrSeq
    strides: IntOrSeq = 1
    padding: str | Sequence[tuple[int, int]] = "SAME"
    kernel_dilation: IntOrSeq = 1
    use_bias: bool = True
    kernel_init: Initializer = nn.initializers.lecun_normal()
    bias_init: Initializer = nn.initializers.zeros_init()
    method: str = "auto"
    dtype: DTypeLike | None = None
    param_dtype: DTypeLike = jnp.float32

    @nn.compact
    def __call__(self, x: ArrayLike) -> Array:
        """``(N, H, W, C_in) -> (N, H', W', features)``."""
        x = jnp.asarray(x)
        window = per_dim("kernel_size", self.kernel_size, 2, 1)
        kernel = self.param(
            "kernel", self.kernel_init, (*window, x.shape[-1], self.features), self.param_dtype
        )
        bias = (
            self.param("bias", self.bias_init, (self.features,), self.param_dtype)
            if self.use_bias
            else None
        )
        x, kernel, bias = promote_dtype(x, kernel, bias, dtype=self.dtype)
        y = ops.conv(
            x,
            kernel,
            self.padding,
            strides=per_dim("strides", self.strides, 2, 1),
            dilation=per_dim("kernel_dilation", self.kernel_dilation, 2, 1),
            method=self.method,
        )
        return y if bias is None else y + bias


class ConvTranspose(nn.Module):
    """A transposed convolution layer: creates the kernel and calls ``ops.conv_transpose``.

    Same numbers as ``keras.layers.Conv{1,2,3}DTranspose`` and ``torch.nn.ConvTranspose*``
    with the same settings and weights (see :func:`fcnjax.ops.conv_transpose` for the
    padding rules and :func:`fcnjax.ops.kernel_from_keras` / ``kernel_from_torch``).

    Attributes:
      features: ``C_out``.
      kernel_size: an int (every spatial dimension) or one int per dimension.
      strides, padding, output_padding, kernel_dilation, feature_group_count, method,
        precision: as in :func:`fcnjax.ops.conv_transpose`.
      use_bias: add a learned ``(C_out,)`` bias.
      kernel_init: initializer for the ``(*window, C_in, C_out // groups)`` kernel;
        :func:`bilinear_init` gives FCN's bilinear upsampling.
      bias_init: initializer for the bias.
      dtype: computation dtype (``None``: inferred from inputs and parameters).
      param_dtype: parameter dtype.

    >>> import jax, jax.numpy as jnp
    >>> layer = ConvTranspose(8, 4, strides=2)
    >>> params = layer.init(jax.random.key(0), jnp.ones((1, 7, 7, 3)))
    >>> params["params"]["kernel"].shape, layer.apply(params, jnp.ones((1, 7, 7, 3))).shape
    ((4, 4, 3, 8), (1, 14, 14, 8))
    """

    features: int
    kernel_size: IntOrSeq
    strides: IntOrSeq = 1
    padding: PaddingLike = "SAME"
    output_padding: IntOrSeq | None = None
    kernel_dilation: IntOrSeq = 1
    feature_group_count: int = 1
    use_bias: bool = True
    kernel_init: Initializer = nn.initializers.lecun_normal()
    bias_init: Initializer = nn.initializers.zeros_init()
    method: str = "auto"
    precision: PrecisionLike = None
    dtype: DTypeLike | None = None
    param_dtype: DTypeLike = jnp.float32

    @nn.compact
    def __call__(self, x: ArrayLike) -> Array:
        """``(N, *spatial, C_in) -> (N, *out_spatial, features)``."""
        x = jnp.asarray(x)
        if x.ndim < 3:
            raise ValueError(f"ConvTranspose input must be (N, *spatial, C); got {x.shape}.")
        n = x.ndim - 2
        window = per_dim("kernel_size", self.kernel_size, n, 1)
        g = self.feature_group_count
        if not isinstance(self.features, (int, np.integer)) or self.features < 1:
            raise ValueError(f"`features` must be a positive int, got {self.features!r}.")
        if self.features % g or x.shape[-1] % g:
            raise ValueError(
                f"`features` ({self.features}) and the input channels ({x.shape[-1]}) must "
                f"be divisible by `feature_group_count` ({g})."
            )
        kernel = self.param(
            "kernel", self.kernel_init, (*window, x.shape[-1], self.features // g), self.param_dtype
        )
        bias = (
            self.param("bias", self.bias_init, (self.features,), self.param_dtype)
            if self.use_bias
            else None
        )
        x, kernel, bias = promote_dtype(x, kernel, bias, dtype=self.dtype)
        y = ops.conv_transpose(
            x,
            kernel,
            self.strides,
            self.padding,
            output_padding=self.output_padding,
            kernel_dilation=self.kernel_dilation,
            feature_group_count=g,
            method=self.method,
            precision=self.precision,
        )
        return y if bias is None else y + bias


class Upsample(nn.Module):
    """A fixed (parameter-free, never trained) upsampler by an integer factor.

    * ``"bilinear"``: exact half-pixel bilinear interpolation
      (:func:`fcnjax.ops.upsample_bilinear`, = ``jax.image.resize``), borders included.
    * ``"nearest"``: each sample repeated ``factor`` times (Keras ``UpSampling2D``, U-Net).
    * ``"transposed"``: FCN's fixed deconvolution, a transposed convolution with the
      bilinear kernel, ``strides=factor`` and ``"SAME"`` padding (equal to ``"bilinear"``
      away from the borders; near them it fades towards zero, as in the FCN reference).

    Output: ``(N, *[L * factor], C)``.

    >>> import jax.numpy as jnp
    >>> up = Upsample(2, "nearest")
    >>> up.apply({}, jnp.array([1., 2.]).reshape(1, 2, 1))[0, :, 0]
    Array([1., 1., 2., 2.], dtype=float32)
    """

    factor: IntOrSeq
    method: str = "bilinear"
    dtype: DTypeLike | None = None

    @nn.compact
    def __call__(self, x: ArrayLike) -> Array:
        x = jnp.asarray(x, self.dtype)
        if x.ndim < 3:
            raise ValueError(f"Upsample input must be (N, *spatial, C); got {x.shape}.")
        factors = per_dim("factor", self.factor, x.ndim - 2, 1)
        if self.method == "bilinear":
            return ops.upsample_bilinear(x, factors).astype(x.dtype)
        if self.method == "nearest":
            for axis, f in enumerate(factors, start=1):
                x = jnp.repeat(x, f, axis=axis)
            return x
        if self.method == "transposed":
            # Every channel gets the same filter: fold channels into the batch, 1 -> 1 kernel.
            kernel = jnp.asarray(bilinear_window(factors)[..., None, None], x.dtype)
            batch, *spatial, c = x.shape
            y = jnp.moveaxis(x, -1, 1).reshape(batch * c, *spatial, 1)
            y = ops.conv_transpose(y, kernel, factors, "SAME")
            return jnp.moveaxis(y.reshape(batch, c, *y.shape[1:-1]), 1, -1)
        raise ValueError(f"`method` must be one of {UPSAMPLE_METHODS}; got {self.method!r}.")


class MaxPoolWithArgmax(nn.Module):
    """Max pooling that also returns the switches (:func:`fcnjax.ops.max_pool_with_argmax`).

    Returns ``(pooled, indices)``, both ``(N, *pooled_spatial, C)``, for :class:`MaxUnpool`.
    """

    window: IntOrSeq = 2
    strides: IntOrSeq | None = None
    padding: str = "VALID"

    def __call__(self, x: ArrayLike) -> tuple[Array, Array]:
        return ops.max_pool_with_argmax(x, self.window, self.strides, self.padding)


class MaxUnpool(nn.Module):
    """Places each value back where the max came from (:func:`fcnjax.ops.max_unpool`)."""

    def __call__(self, x: ArrayLike, indices: ArrayLike, output_shape: Sequence[int]) -> Array:
        """``x``, ``indices``: ``(N, *pooled, C)``; returns ``(N, *output_shape, C)``."""
        return ops.max_unpool(x, indices, output_shape)


def _spatial_sizes(name: str, size: Any, n: int) -> tuple[int, ...]:
    return per_dim(name, size, n, 0)


def crop_to(x: ArrayLike, size: IntOrSeq, offset: IntOrSeq = 0) -> Array:
    """Crops ``(N, *spatial, C)`` to ``size`` starting at ``offset`` in each dimension.

    FCN uses ``offset=0``: with SAME (ceil) pooling the extra samples of an upsampled map
    are at the end, so its top-left corner is aligned with the skip connection.

    >>> import jax.numpy as jnp
    >>> crop_to(jnp.zeros((1, 8, 9, 3)), (7, 5)).shape
    (1, 7, 5, 3)
    """
    x = jnp.asarray(x)
    n = x.ndim - 2
    sizes = _spatial_sizes("size", size, n)
    offsets = _spatial_sizes("offset", offset, n)
    for d, (o, s, have) in enumerate(zip(offsets, sizes, x.shape[1:-1])):
        if o + s > have:
            raise ValueError(
                f"cannot crop {s} samples at offset {o} from spatial dimension {d} of size "
                f"{have} (input shape {x.shape})."
            )
    return x[(slice(None), *(slice(o, o + s) for o, s in zip(offsets, sizes)))]


def center_crop(x: ArrayLike, size: IntOrSeq) -> Array:
    """Crops the centre ``size`` of ``(N, *spatial, C)``; odd margins leave the extra at the end.

    >>> import jax.numpy as jnp
    >>> center_crop(jnp.arange(5.).reshape(1, 5, 1), 2)[0, :, 0]
    Array([1., 2.], dtype=float32)
    """
    x = jnp.asarray(x)
    sizes = _spatial_sizes("size", size, x.ndim - 2)
    offsets = [max(have - s, 0) // 2 for have, s in zip(x.shape[1:-1], sizes)]
    return crop_to(x, sizes, offsets)


def pad_to_multiple(
    x: ArrayLike, multiple: IntOrSeq, mode: str = "constant", value: float = 0.0
) -> tuple[Array, tuple[int, ...]]:
    """Pads ``(N, *spatial, C)`` at the end of each spatial dimension to a multiple.

    Returns the padded array and the original spatial size, so a network that needs sizes
    divisible by ``2 ** depth`` can run on any input and crop its output back with
    ``crop_to(y, size)``.

    >>> import jax.numpy as jnp
    >>> y, size = pad_to_multiple(jnp.ones((1, 97, 131, 3)), 32)
    >>> y.shape, size
    ((1, 128, 160, 3), (97, 131))
    """
    x = jnp.asarray(x)
    if x.ndim < 3:
        raise ValueError(f"`x` must be (N, *spatial, C); got shape {x.shape}.")
    mult = per_dim("multiple", multiple, x.ndim - 2, 1)
    size = tuple(x.shape[1:-1])
    pads = [(0, 0)] + [(0, -s % m) for s, m in zip(size, mult)] + [(0, 0)]
    if mode == "constant":
        return jnp.pad(x, pads, constant_values=value), size
    return jnp.pad(x, pads, mode=mode), size
