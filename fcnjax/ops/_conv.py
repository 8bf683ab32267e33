"""A stride-1 convolution whose kernel gradient is one GEMM per tap (XLA:CPU's slow path).

XLA:CPU computes the kernel gradient of a convolution as a convolution whose window is
the whole activation, which is 2.5-3.4x slower than the same sums as matrix products
(VGG16's 3x3 layers at batch 4 x 224x224, bench/RESULTS.md). ``conv`` keeps the forward
and input gradient of ``lax.conv_general_dilated`` and computes
``dK[i, j] = sum_{n,y,x} x_pad[n, y + i, x + j, :]^T g[n, y, x, :]``, one
``(C_in, N*H*W) @ (N*H*W, C_out)`` product per tap.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax

from fcnjax.typing import Array, ArrayLike

__all__ = ["conv"]

_DN = ("NHWC", "HWIO", "NHWC")
_MIN_GEMM_CHANNELS = 64


def _pads(padding, window, size) -> tuple[tuple[int, int], ...]:
    if isinstance(padding, str):
        return tuple(lax.padtype_to_pads(size, window, (1,) * len(window), padding))
    return tuple((int(lo), int(hi)) for lo, hi in padding)


def conv(
    x: ArrayLike,
    kernel: ArrayLike,
    padding: str | tuple[tuple[int, int], ...] = "SAME",
    *,
    method: str = "auto",
) -> Array:
    """2-D stride-1 convolution, ``(N, H, W, C_in) * (kh, kw, C_in, C_out)``, channels-last.

    Same numbers as ``lax.conv_general_dilated(x, kernel, (1, 1), padding,
    dimension_numbers=("NHWC", "HWIO", "NHWC"))`` (up to float summation order), and the
    same gradients.

    Args:
      x: ``(N, H, W, C_in)``.
      kernel: ``(kh, kw, C_in, C_out)``.
      padding: ``"SAME"``, ``"VALID"`` or ``((lo, hi), (lo, hi))``.
      method: ``"gemm"`` (kernel gradient as per-tap matrix products), ``"xla"`` (plain
        ``lax``), or ``"auto"``: ``"gemm"`` on CPU when both channel counts are at least
        64, else ``"xla"`` (measured: the products win on VGG16's layers, 1.3-1.9x
        forward+backward, and lose on narrow ones, where the slices' copies dominate).

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
    if method not in ("auto", "gemm", "xla"):
        raise ValueError(f"`method` must be 'auto', 'gemm' or 'xla'; got {method!r}.")
    pads = _pads(padding, kernel.shape[:2], x.shape[1:3])
    if method == "auto":
        wide = min(kernel.shape[2], kernel.shape[3]) >= _MIN_GEMM_CHANNELS
        method = "gemm" if jax.default_backend() == "cpu" and wide else "xla"
    if method == "xla":
        return lax.conv_general_dilated(x, kernel, (1, 1), pads, dimension_numbers=_DN)
    return _conv_gemm(x, kernel, pads)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _conv_gemm(x, kernel, pads):
    return lax.conv_general_dilated(x, kernel, (1, 1), pads, dimension_numbers=_DN)


def _fwd(x, kernel, pads):
    return _conv_gemm(x, kernel, pads), (x, kernel)


def _bwd(pads, residuals, g):
    x, kernel = residuals
    _, input_vjp = jax.vjp(
        lambda x_: lax.conv_general_dilated(x_, kernel, (1, 1), pads, dimension_numbers=_DN), x
    )
    (dx,) = input_vjp(g)
    kh, kw = kernel.shape[:2]
    h, w = g.shape[1:3]
    xp = jnp.pad(x, ((0, 0), *pads, (0, 0)))
    taps = [
        lax.dot_general(
            xp[:, i : i + h, j : j + w, :],
            g,
            (((0, 1, 2), (0, 1, 2)), ((), ())),
            preferred_element_type=jnp.float32,
        )  # fmt: skip
        for i in range(kh)
        for j in range(kw)
    ]
    dk = jnp.stack(taps).reshape(kernel.shape).astype(kernel.dtype)
    return dx.astype(x.dtype), dk


_conv_gemm.defvjp(_fwd, _bwd)
