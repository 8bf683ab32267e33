"""A convolution that avoids XLA:CPU's slow convolution paths.

XLA:CPU computes the kernel gradient of a convolution as a convolution whose window is
the whole activation, which is 2.5-3.4x slower than the same sums as matrix products
(VGG16's 3x3 layers at batch 4 x 224x224, bench/RESULTS.md). ``conv`` keeps the forward
and input gradient of ``lax.conv_general_dilated`` and computes
``dK[i, j] = sum_{n,y,x} x_pad[n, y + i, x + j, :]^T g[n, y, x, :]``, one
``(C_in, N*H*W) @ (N*H*W, C_out)`` product per tap, or, when ``C_in * C_out <= 4096``
(one tap's product would keep a single core busy), one product of all taps' columns.

Large windows over small maps (VGG16's fc6: 7x7 over pool5's 7x7, 512 -> 4096) are one
im2col matrix product instead, forward and backward: 2.4-3x faster than either (1.2 s
against 2.9 s and 3.7 s forward+backward at batch 4; PyTorch: 3.3 s).

Strided and dilated convolutions (ResNet's 1x1 projections, stride-2 3x3 and dilated
3x3) take the same per-tap products over strided, dilated slices. XLA:CPU's kernel
gradient of a 1x1 convolution, a single matrix product, took 85 ms where its forward took
9 ms (batch 2 x 40x40, 1024 -> 256); as a product it takes about the forward's time.
"""

from __future__ import annotations

import functools
import numbers

import jax
import jax.export  # a submodule jax < 0.8 does not import by itself
import jax.numpy as jnp
from jax import lax

from fcnjax.typing import Array, ArrayLike

__all__ = ["conv"]

_DN = ("NHWC", "HWIO", "NHWC")
_MIN_GEMM_CHANNELS = 64
_MIN_IM2COL_TAPS = 25  # 5x5 and larger windows
_MAX_IM2COL_BYTES = 512 * 2**20  # the columns' size: N * H * W * taps * C_in values
_MAX_TAP_OUTPUTS = 64 * 64  # kernel gradients of narrower layers: one im2col product
_ROWS = 24  # output rows per block of _kernel_grad_by_rows (measured: 24 < 48 < 96 ms)


def _pads(padding, window, size, strides, dilation) -> tuple[tuple[int, int], ...]:
    if isinstance(padding, str):
        effective = [(k - 1) * d + 1 for k, d in zip(window, dilation)]
        return tuple(lax.padtype_to_pads(size, effective, strides, padding))
    if isinstance(padding, numbers.Integral):  # as flax's nn.Conv: the same on every side
        return ((int(padding),) * 2,) * 2
    try:
        pads = tuple((int(lo), int(hi)) for lo, hi in padding)
    except (TypeError, ValueError):
        pads = ()
    if len(pads) != 2:
        raise ValueError(
            f"`padding` must be 'SAME', 'VALID', an int or ((lo, hi), (lo, hi)); got {padding!r}."
        )
    return pads


def _pad(x, pads):
    """``x`` padded with zeros (negative padding crops, as in ``lax.conv_general_dilated``)."""
    config = ((0, 0, 0), *((lo, hi, 0) for lo, hi in pads), (0, 0, 0))
    return lax.pad(x, jnp.zeros((), x.dtype), config)


def _pair(name: str, value) -> tuple[int, int]:
    pair = (value, value) if isinstance(value, numbers.Integral) else tuple(value)
    if len(pair) != 2 or not all(isinstance(v, numbers.Integral) and v >= 1 for v in pair):
        raise ValueError(f"`{name}` must be a positive int or a pair of them; got {value!r}.")
    return (int(pair[0]), int(pair[1]))


def conv(
    x: ArrayLike,
    kernel: ArrayLike,
    padding: str | tuple[tuple[int, int], ...] = "SAME",
    *,
    strides: int | tuple[int, int] = 1,
    dilation: int | tuple[int, int] = 1,
    method: str = "auto",
) -> Array:
    """2-D convolution, ``(N, H, W, C_in) * (kh, kw, C_in, C_out)``, channels-last.

    Same numbers as ``lax.conv_general_dilated(x, kernel, strides, padding,
    rhs_dilation=dilation, dimension_numbers=("NHWC", "HWIO", "NHWC"))`` (up to float
    summation order), and the same gradients.

    Args:
      x: ``(N, H, W, C_in)``.
      kernel: ``(kh, kw, C_in, C_out)``.
      padding: ``"SAME"``, ``"VALID"``, an int (every side) or ``((lo, hi), (lo, hi))``.
      strides: the output's stride, an int or one per spatial dimension.
      dilation: the kernel's dilation (atrous convolution), an int or a pair.
      method: ``"gemm"`` (kernel gradient as per-tap matrix products), ``"im2col"`` (the
        window's taps gathered into columns, then one matrix product; its gradients are
        matrix products and slice sums; stride 1 and no dilation only), ``"xla"`` (plain
        ``lax``), or ``"auto"``: on CPU, ``"im2col"`` for undilated stride-1 windows of
        25 taps or more whose columns fit in 512 MiB, ``"gemm"`` for 1x1 kernels and when
        both channel counts are at least 64, else ``"xla"`` (measured: the products win on
        VGG16's and ResNet's layers, 1.3-9x on the kernel gradient, and lose on narrow
        ones, where the slices' copies dominate); ``"xla"`` on other backends.

    >>> import jax, jax.numpy as jnp
    >>> x, k = jnp.ones((2, 5, 5, 3)), jnp.ones((3, 3, 3, 4))
    >>> ref = lambda x, k: jax.lax.conv_general_dilated(
    ...     x, k, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
    >>> loss = lambda f: lambda x, k: (f(x, k) ** 2).sum()
    >>> g1, g2 = jax.grad(loss(conv), 1)(x, k), jax.grad(loss(ref), 1)(x, k)
    >>> bool(jnp.allclose(g1, g2)), conv(x, k).shape
    (True, (2, 5, 5, 4))
    """
    x, kernel = jnp.asarray(x), jnp.asarray(kernel)
    if x.ndim != 4 or kernel.ndim != 4 or kernel.shape[2] != x.shape[3]:
        raise ValueError(
            f"conv needs x (N, H, W, C_in) and kernel (kh, kw, C_in, C_out) with the same C_in; "
            f"got {x.shape} and {kernel.shape}."
        )
    if method not in METHODS:
        raise ValueError(f"`method` must be one of {METHODS}; got {method!r}.")
    strides, dilation = _pair("strides", strides), _pair("dilation", dilation)
    pads = _pads(padding, kernel.shape[:2], x.shape[1:3], strides, dilation)
    plain = strides == (1, 1) and dilation == (1, 1)
    if method == "auto":
        method = _select(x.shape, kernel.shape, pads, x.dtype, plain)
    if method == "im2col" and not plain:
        raise ValueError(
            f"`method='im2col'` needs strides=1 and dilation=1; got strides={strides}, "
            f"dilation={dilation}."
        )
    if method == "xla":
        return lax.conv_general_dilated(
            x, kernel, strides, pads, rhs_dilation=dilation, dimension_numbers=_DN
        )
    if method == "im2col":
        return _conv_im2col(x, kernel, pads)
    return _conv_gemm(x, kernel, (pads, strides, dilation))


METHODS = ("auto", "gemm", "im2col", "xla")


def _select(x_shape, k_shape, pads, dtype, plain) -> str:
    if jax.default_backend() != "cpu":
        return "xla"
    kh, kw, c_in, c_out = k_shape
    n, h, w = x_shape[0], x_shape[1] + sum(pads[0]) - kh + 1, x_shape[2] + sum(pads[1]) - kw + 1
    if plain and kh * kw >= _MIN_IM2COL_TAPS and _columns_fit(n * h * w, k_shape, dtype):
        return "im2col"
    if kh * kw == 1:
        return "gemm"
    return "gemm" if min(c_in, c_out) >= _MIN_GEMM_CHANNELS else "xla"


def _columns_fit(outputs: int, k_shape, dtype) -> bool:
    """Whether the im2col columns of ``outputs`` positions stay under the memory bound."""
    kh, kw, c_in, _ = k_shape
    if jax.export.is_symbolic_dim(outputs):
        # A symbolic batch or size (jax.export, fcnjax.export): the columns' size is
        # unknown until the call, so the bound cannot be kept; lax's form needs none.
        return False
    return outputs * kh * kw * c_in * jnp.dtype(dtype).itemsize <= _MAX_IM2COL_BYTES


def _tap(xp, i, j, h, w, strides=(1, 1), dilation=(1, 1)):
    """The padded input's samples that kernel tap ``(i, j)`` meets: ``(N, h, w, C_in)``."""
    (sh, sw), (dh, dw) = strides, dilation
    return xp[:, i * dh : i * dh + sh * (h - 1) + 1 : sh, j * dw : j * dw + sw * (w - 1) + 1 : sw]


def _columns(xp, kh, kw, h, w, strides=(1, 1), dilation=(1, 1)):
    """``(N, h, w, kh * kw * C_in)``: the padded input's taps, tap-major like a
    ``(kh, kw, C_in, C_out)`` kernel reshaped to ``(kh * kw * C_in, C_out)``."""
    taps = [_tap(xp, i, j, h, w, strides, dilation) for i in range(kh) for j in range(kw)]
    return jnp.concatenate(taps, axis=-1) if len(taps) > 1 else taps[0]


def _conv_im2col(x, kernel, pads):
    kh, kw, c_in, c_out = kernel.shape
    xp = _pad(x, pads)
    cols = _columns(xp, kh, kw, xp.shape[1] - kh + 1, xp.shape[2] - kw + 1)
    return lax.dot_general(cols, kernel.reshape(kh * kw * c_in, c_out), (((3,), (0,)), ((), ())))


def _lax_conv(x, kernel, geometry):
    pads, strides, dilation = geometry
    return lax.conv_general_dilated(
        x, kernel, strides, pads, rhs_dilation=dilation, dimension_numbers=_DN
    )


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _conv_gemm(x, kernel, geometry):
    return _lax_conv(x, kernel, geometry)


def _fwd(x, kernel, geometry):
    return _conv_gemm(x, kernel, geometry), (x, kernel)


def _bwd(geometry, residuals, g):
    x, kernel = residuals
    _, input_vjp = jax.vjp(lambda x_: _lax_conv(x_, kernel, geometry), x)
    (dx,) = input_vjp(g)
    return dx.astype(x.dtype), _kernel_grad(x, g, kernel.shape, geometry).astype(kernel.dtype)


def _kernel_grad(x, g, k_shape, geometry):
    """``dK[i, j] = sum_{n,y,x} tap(i, j)[n, y, x, :]^T g[n, y, x, :]`` as matrix products."""
    pads, strides, dilation = geometry
    kh, kw, c_in, c_out = k_shape
    n, h, w = g.shape[:3]
    xp = _pad(x, pads)
    over_nhw = (((0, 1, 2), (0, 1, 2)), ((), ()))
    if c_in * c_out <= _MAX_TAP_OUTPUTS and _columns_fit(n * h * w, k_shape, x.dtype):
        # One (taps * C_in, N*H*W) @ (N*H*W, C_out) product: a tap's small C_in x C_out
        # output leaves a core idle (VGG16's 224x224 64 -> 64 layer: 1.25 -> 0.67 s).
        cols = _columns(xp, kh, kw, h, w, strides, dilation)
        dk = lax.dot_general(cols, g, over_nhw, preferred_element_type=jnp.float32)
        return dk.reshape(k_shape)
    plain = strides == (1, 1) and dilation == (1, 1)
    if plain and kh * kw >= _MIN_IM2COL_TAPS:
        return _kernel_grad_by_rows(xp, g, kh, kw).reshape(k_shape)
    taps = [
        lax.dot_general(
            _tap(xp, i, j, h, w, strides, dilation), g, over_nhw, preferred_element_type=jnp.float32
        )
        for i in range(kh)
        for j in range(kw)
    ]
    return jnp.stack(taps).reshape(k_shape)


_conv_gemm.defvjp(_fwd, _bwd)


def _kernel_grad_by_rows(xp: Array, g: Array, kh: int, kw: int) -> Array:
    """``dK`` of a large window (SegNet's 7x7) over a large map, ``(kh, kw, C_in, C_out)``.

    Per image and block of ``_ROWS`` output rows, the block's ``kw`` horizontal taps are
    gathered once into ``(rows + kh - 1, W, kw * C_in)`` columns, and each kernel row ``i``
    is one ``(C_out, rows * W) @ (rows * W, kw * C_in)`` product of the columns' rows
    ``i .. i + rows``: the columns stay small (no ``kh * kw``-fold copy of the input) and the
    products have a wide output. Measured at batch 4 x 192x240, 64 -> 64 channels: 0.69 s
    against 1.84 s for XLA's kernel-gradient convolution and 2.7 s for per-tap products
    (PyTorch/oneDNN: 0.22 s).
    """
    n, h, w, c_out = g.shape
    c_in = xp.shape[-1]
    rows = min(_ROWS, h)
    blocks = -(-h // rows)
    g = jnp.pad(g, ((0, 0), (0, blocks * rows - h), (0, 0), (0, 0)))  # zero rows add nothing
    xp = jnp.pad(xp, ((0, 0), (0, blocks * rows - h), (0, 0), (0, 0)))
    starts = jnp.stack(
        jnp.meshgrid(jnp.arange(n), jnp.arange(blocks) * rows, indexing="ij"), -1
    ).reshape(-1, 2)

    def block(acc, start):
        xs = lax.dynamic_slice(xp, (start[0], start[1], 0, 0), (1, rows + kh - 1, w + kw - 1, c_in))
        gs = lax.dynamic_slice(g, (start[0], start[1], 0, 0), (1, rows, w, c_out))
        cols = jnp.concatenate([xs[0, :, j : j + w, :] for j in range(kw)], axis=-1)
        gs = gs.reshape(rows * w, c_out)
        parts = [
            lax.dot_general(
                gs,
                cols[i : i + rows].reshape(rows * w, kw * c_in),
                (((0,), (0,)), ((), ())),
                preferred_element_type=jnp.float32,
            )
            for i in range(kh)
        ]
        return acc + jnp.stack(parts), None

    acc, _ = lax.scan(block, jnp.zeros((kh, c_out, kw * c_in), jnp.float32), starts)
    return acc.reshape(kh, c_out, kw, c_in).transpose(0, 2, 3, 1)
