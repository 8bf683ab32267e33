"""Transposed ("fractionally strided", "deconvolution") convolution as pure functions.

Layout and convention
---------------------
Inputs are channels-last, ``(N, *spatial, C_in)``, with any number of spatial
dimensions. fcnjax stores a transposed-convolution kernel as
``(*window, C_in, C_out // feature_group_count)`` and defines the operation by
scattering: input sample ``i`` adds ``x[i] * kernel[j]`` to output position
``i * stride + j * dilation - crop_lo`` ("reverse the arrows" of a strided
convolution). This is the same indexing as ``torch.nn.ConvTranspose{1,2,3}d``
(whose weight is ``(C_in, C_out // groups, *window)``) and as Keras'
``Conv{1,2,3}DTranspose`` (whose kernel is ``(*window, C_out, C_in)``), so
``kernel_from_torch`` and ``kernel_from_keras`` are pure transpositions.

Before cropping, the "full" output has ``(L - 1) * stride + dilation * (k - 1) + 1``
samples per dimension. ``padding`` says how much to crop from each end of it:

* ``"SAME"`` and ``"VALID"`` follow Keras exactly: outputs of ``L * stride`` and
  ``(L - 1) * stride + max(k_eff, stride)`` samples, odd crops split with the
  extra sample taken from the *end*, and ``output_padding`` as in Keras.
* an int, one int per dimension, or one ``(lo, hi)`` pair per dimension follow
  PyTorch: crop ``lo`` samples from the start and ``hi`` from the end; then
  ``output_padding`` samples are given back at the end.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from fcnjax.ops._args import is_int, per_dim
from fcnjax.typing import Array, ArrayLike, DTypeLike, IntOrSeq, PaddingLike, PrecisionLike

__all__ = [
    "METHODS",
    "conv_transpose",
    "conv_transpose_shape",
    "kernel_from_keras",
    "kernel_from_torch",
    "kernel_to_keras",
    "kernel_to_torch",
    "select_method",
    "zero_insert",
]

METHODS = ("auto", "dilated", "subpixel", "zero_insert")

# The sub-pixel method computes its stride-1 phase convolution as one GEMM over
# the prod(T) shifted views of the input (im2col), unless there are more than
# _MAX_IM2COL_TAPS taps (the copies cost more than they save) or the GEMM depth,
# taps * C_in per group, is below _MIN_IM2COL_DEPTH (XLA:CPU's convolution
# measured faster, bench/RESULTS.md); then it uses an XLA convolution. The autoencoder's
# last layer (7x7, stride 2, 32 -> 1: 16 taps per phase) took 53 ms forward+backward with
# im2col and 16 ms with the convolution (batch 32, 2 cores), so 9 taps (3x3) is the limit.
_MAX_IM2COL_TAPS = 9
_MIN_IM2COL_DEPTH = 32


# --------------------------------------------------------------------------------------
# Argument normalisation (pure Python; shared by every method and by the shape helper).
# --------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Geometry:
    """Everything about one transposed convolution except the arrays themselves."""

    in_spatial: tuple[int, ...]
    window: tuple[int, ...]
    strides: tuple[int, ...]
    dilation: tuple[int, ...]
    crops: tuple[tuple[int, int], ...]  # (lo, hi) cropped from the full output; hi < 0 pads
    groups: int
    c_in: int
    c_out: int

    @property
    def ndim(self) -> int:
        return len(self.in_spatial)

    @property
    def eff_window(self) -> tuple[int, ...]:
        return tuple(d * (k - 1) + 1 for k, d in zip(self.window, self.dilation))

    @property
    def full_spatial(self) -> tuple[int, ...]:
        return tuple(
            (n - 1) * s + k for n, s, k in zip(self.in_spatial, self.strides, self.eff_window)
        )

    @property
    def out_spatial(self) -> tuple[int, ...]:
        return tuple(f - lo - hi for f, (lo, hi) in zip(self.full_spatial, self.crops))


def _keras_crops(mode: str, k_eff: int, s: int, op: int | None) -> tuple[int, int]:
    # Keras' conv-transpose padding rule (keras.src.backend.common.backend_utils,
    # `_convert_conv_tranpose_padding_args_from_keras_to_jax`), restated as crops.
    if mode == "VALID":
        op = max(k_eff, s) - k_eff if op is None else op
        return 0, -op
    pad_len = s + k_eff - 2 if op is None else k_eff + k_eff % 2 - 2 + op
    left = min(pad_len // 2 + pad_len % 2, k_eff - 1)
    return k_eff - 1 - left, k_eff - 1 - (pad_len - left)


def _torch_crops(padding, n: int) -> tuple[tuple[int, int], ...]:
    expected = (
        f'"SAME", "VALID", an int, a sequence of {n} ints, or a sequence of {n} (lo, hi) pairs'
    )
    if is_int(padding):
        pairs = ((int(padding),) * 2,) * n
    else:
        try:
            items = tuple(padding)
        except TypeError:
            raise ValueError(f"`padding` must be {expected}, got {padding!r}.") from None
        if len(items) != n:
            raise ValueError(f"`padding` must be {expected}, got {padding!r}.")
        pairs = []
        for item in items:
            if is_int(item):
                pairs.append((int(item), int(item)))
            elif (
                not isinstance(item, str)
                and isinstance(item, Sequence)
                and len(item) == 2
                and all(is_int(v) for v in item)
            ):
                pairs.append((int(item[0]), int(item[1])))
            else:
                raise ValueError(f"`padding` must be {expected}, got {padding!r}.")
        pairs = tuple(pairs)
    if any(v < 0 for pair in pairs for v in pair):
        raise ValueError(f"`padding` crops must be >= 0, got {padding!r}.")
    return pairs


def _geometry(
    x_shape: Sequence[int],
    kernel_shape: Sequence[int],
    strides,
    padding,
    output_padding,
    kernel_dilation,
    feature_group_count,
) -> _Geometry:
    x_shape, kernel_shape = tuple(x_shape), tuple(kernel_shape)
    if len(x_shape) < 3:
        raise ValueError(
            f"`x` must be channels-last (N, *spatial, C_in) with at least one spatial "
            f"dimension, got shape {x_shape}."
        )
    n = len(x_shape) - 2
    if len(kernel_shape) != n + 2:
        raise ValueError(
            f"`kernel` must have rank {n + 2}, (*window, C_in, C_out // groups), to match `x` "
            f"of shape {x_shape} with {n} spatial dimension(s); got kernel shape {kernel_shape}."
        )
    if not is_int(feature_group_count) or feature_group_count < 1:
        raise ValueError(
            f"`feature_group_count` must be a positive int, got {feature_group_count!r}."
        )
    groups = int(feature_group_count)
    c_in = x_shape[-1]
    if kernel_shape[-2] != c_in:
        raise ValueError(
            f"`kernel` has C_in={kernel_shape[-2]} (its shape is {kernel_shape}, layout "
            f"(*window, C_in, C_out // groups)) but `x` has {c_in} channels (shape {x_shape})."
        )
    if c_in % groups:
        raise ValueError(
            f"`feature_group_count`={groups} must divide the {c_in} input channels of `x`."
        )
    if any(d < 1 for d in x_shape[1:-1]) or any(k < 1 for k in kernel_shape[:-2]):
        raise ValueError(
            f"spatial sizes must be >= 1: `x` shape {x_shape}, `kernel` shape {kernel_shape}."
        )
    window = tuple(kernel_shape[:-2])
    strides = per_dim("strides", strides, n, 1)
    dilation = per_dim("kernel_dilation", 1 if kernel_dilation is None else kernel_dilation, n, 1)
    if output_padding is None:
        ops_ = (None,) * n
    else:
        ops_ = per_dim("output_padding", output_padding, n, 0)
        for op, s, d in zip(ops_, strides, dilation):
            if op >= max(s, d):
                raise ValueError(
                    f"`output_padding` must be smaller than max(stride, dilation) in every "
                    f"dimension, got output_padding={output_padding!r} with strides={strides} "
                    f"and kernel_dilation={dilation}."
                )
    k_eff = tuple(d * (k - 1) + 1 for k, d in zip(window, dilation))
    if isinstance(padding, str):
        mode = padding.upper()
        if mode not in ("SAME", "VALID"):
            raise ValueError(
                f'`padding` must be "SAME", "VALID", an int, or per-dimension ints or (lo, hi) '
                f"pairs; got the unknown string {padding!r}."
            )
        crops = tuple(_keras_crops(mode, k, s, op) for k, s, op in zip(k_eff, strides, ops_))
    else:
        crops = tuple((lo, hi - (op or 0)) for (lo, hi), op in zip(_torch_crops(padding, n), ops_))
    geo = _Geometry(
        in_spatial=tuple(x_shape[1:-1]),
        window=window,
        strides=strides,
        dilation=dilation,
        crops=crops,
        groups=groups,
        c_in=c_in,
        c_out=kernel_shape[-1] * groups,
    )
    if any(o < 1 for o in geo.out_spatial):
        raise ValueError(
            f"`padding`={padding!r} crops the whole output: the full output is "
            f"{geo.full_spatial} and the result would be {geo.out_spatial}."
        )
    return geo


def conv_transpose_shape(
    input_shape: Sequence[int],
    kernel_shape: Sequence[int],
    strides: IntOrSeq,
    padding: PaddingLike = "SAME",
    *,
    output_padding: IntOrSeq | None = None,
    kernel_dilation: IntOrSeq | None = None,
    feature_group_count: int = 1,
) -> tuple[int, ...]:
    """The shape ``conv_transpose`` returns, computed without touching any array.

    Args:
      input_shape: ``(N, *spatial, C_in)``.
      kernel_shape: ``(*window, C_in, C_out // feature_group_count)``.
      strides, padding, output_padding, kernel_dilation, feature_group_count: as in
        :func:`conv_transpose`.

    Returns:
      ``(N, *out_spatial, C_out)``.

    Examples:
      >>> from fcnjax import ops
      >>> ops.conv_transpose_shape((1, 7, 7, 64), (3, 3, 64, 32), 2, "SAME")
      (1, 14, 14, 32)
      >>> ops.conv_transpose_shape((1, 7, 7, 64), (3, 3, 64, 32), 2, "VALID")
      (1, 15, 15, 32)
      >>> ops.conv_transpose_shape((1, 7, 7, 64), (3, 3, 64, 32), 2, 1, output_padding=1)
      (1, 14, 14, 32)
    """
    geo = _geometry(
        input_shape,
        kernel_shape,
        strides,
        padding,
        output_padding,
        kernel_dilation,
        feature_group_count,
    )
    return (tuple(input_shape)[0], *geo.out_spatial, geo.c_out)


# --------------------------------------------------------------------------------------
# Kernel layout converters.
# --------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------
# The operation.
# --------------------------------------------------------------------------------------


def zero_insert(x: ArrayLike, strides: IntOrSeq) -> Array:
    """Insert ``stride - 1`` zeros between neighbouring samples of every spatial dimension.

    This is the seeds' picture of a transposed convolution: after zero insertion, a
    stride-1 convolution with the flipped kernel is the transposed convolution.

    Args:
      x: ``(N, *spatial, C)``.
      strides: an int or one int per spatial dimension, each ``>= 1``.

    Returns:
      ``(N, *[(L - 1) * s + 1 for L, s in zip(spatial, strides)], C)``.

    Examples:
      >>> import jax.numpy as jnp
      >>> from fcnjax import ops
      >>> ops.zero_insert(jnp.array([1., 2., 3.]).reshape(1, 3, 1), 2)[0, :, 0]
      Array([1., 0., 2., 0., 3.], dtype=float32)
    """
    x = jnp.asarray(x)
    if x.ndim < 3:
        raise ValueError(f"`x` must be (N, *spatial, C); got shape {x.shape}.")
    s = per_dim("strides", strides, x.ndim - 2, 1)
    cfg = [(0, 0, 0)] + [(0, 0, si - 1) for si in s] + [(0, 0, 0)]
    return lax.pad(x, jnp.zeros((), x.dtype), cfg)


def _dimension_numbers(n: int) -> lax.ConvDimensionNumbers:
    spatial = tuple(range(1, n + 1))
    return lax.ConvDimensionNumbers(
        lhs_spec=(0, n + 1, *spatial),
        rhs_spec=(n + 1, n, *range(n)),
        out_spec=(0, n + 1, *spatial),
    )


def _forward_conv_kernel(kernel: Array, groups: int) -> Array:
    """(*window, C_in, C_out//g) scatter kernel -> flipped (*window, C_in//g, C_out) conv kernel."""
    n = kernel.ndim - 2
    *win, c_in, c_out_g = kernel.shape
    k = kernel.reshape(*win, groups, c_in // groups, c_out_g)
    k = jnp.swapaxes(k, -3, -2).reshape(*win, c_in // groups, groups * c_out_g)
    return jnp.flip(k, axis=tuple(range(n)))


def _conv(x, k, geo, padding, lhs_dilation, precision, preferred_element_type):
    return lax.conv_general_dilated(
        x,
        k,
        window_strides=(1,) * geo.ndim,
        padding=padding,
        lhs_dilation=lhs_dilation,
        rhs_dilation=geo.dilation,
        dimension_numbers=_dimension_numbers(geo.ndim),
        feature_group_count=geo.groups,
        precision=precision,
        preferred_element_type=preferred_element_type,
    )


def _dilated(x, kernel, geo, precision, preferred_element_type):
    # One convolution over the input dilated by the strides: the fractional stride made literal.
    pads = [(k - 1 - lo, k - 1 - hi) for k, (lo, hi) in zip(geo.eff_window, geo.crops)]
    k = _forward_conv_kernel(kernel, geo.groups)
    return _conv(x, k, geo, pads, geo.strides, precision, preferred_element_type)


def _zero_insert(x, kernel, geo, precision, preferred_element_type):
    # Zeros inserted and borders padded (or cropped) by lax.pad, then a VALID stride-1
    # convolution: no convolution sees padding, which keeps XLA:CPU's gradients on fast paths.
    cfg = [(0, 0, 0)]
    for k, s, (lo, hi) in zip(geo.eff_window, geo.strides, geo.crops):
        cfg.append((k - 1 - lo, k - 1 - hi, s - 1))
    xp = lax.pad(x, jnp.zeros((), x.dtype), cfg + [(0, 0, 0)])
    k = _forward_conv_kernel(kernel, geo.groups)
    return _conv(xp, k, geo, "VALID", None, precision, preferred_element_type)


def _phase_groups(k: int, s: int) -> list[tuple[int, int, int]]:
    # Phase r of a window of k taps at stride s has ceil((k - r) / s) taps: the first k % s
    # phases one more than the rest. Returns (first phase, last phase + 1, taps) per group.
    hi, lo, split = -(-k // s), k // s, k % s
    return [(0, split, hi), (split, s, lo)] if split else [(0, s, hi)]


def _subpixel(x, kernel, geo, precision, preferred_element_type):
    # Phase (sub-pixel) decomposition. Write a full-output index as o = s*m + r, 0 <= r < s.
    # With kernel taps j = r + s*t, full[s*m + r] = sum_t x[m - t] * kernel[r + s*t]: each of
    # the prod(s) phases r is a stride-1 convolution of the *undilated* input with its own
    # sub-kernel (the seed's "one kernel for odd outputs, another for even"). Phases with the
    # same number of taps (at most two groups per dimension) share one GEMM or convolution
    # with (phases * C_out) outputs; depth-to-space interleaves all phases.
    n, g = geo.ndim, geo.groups
    if any(d > 1 for d in geo.dilation):
        cfg = [(0, 0, d - 1) for d in geo.dilation] + [(0, 0, 0)] * 2
        kernel = lax.pad(kernel, jnp.zeros((), kernel.dtype), cfg)
    win = geo.eff_window
    taps = tuple(-(-k // s) for k, s in zip(win, geo.strides))
    # Output positions [a, b) of the full output, computed as phase rows m in [m0, m1).
    m0 = tuple(lo // s for (lo, _), s in zip(geo.crops, geo.strides))
    m1 = tuple(-(-(f - hi) // s) for f, (_, hi), s in zip(geo.full_spatial, geo.crops, geo.strides))
    rows = tuple(b - a for a, b in zip(m0, m1))
    cfg = [(0, 0, 0)]
    for t, a, b, length in zip(taps, m0, m1, geo.in_spatial):
        cfg.append((t - 1 - a, b - length, 0))
    xp = lax.pad(x, jnp.zeros((), x.dtype), cfg + [(0, 0, 0)])

    # Phase kernels: pad each window to taps*s, split taps from phases, flip the taps.
    cfg = [(0, t * s - k, 0) for t, s, k in zip(taps, geo.strides, win)] + [(0, 0, 0)] * 2
    w = lax.pad(kernel, jnp.zeros((), kernel.dtype), cfg)
    split = [v for t, s in zip(taps, geo.strides) for v in (t, s)]
    w = w.reshape(*split, g, geo.c_in // g, geo.c_out // g)
    w = jnp.flip(w, axis=tuple(range(0, 2 * n, 2)))
    # -> (*taps, g, C_in/g, *phases, C_out/g). After the flip, a group with t of the T taps
    # uses the last t of them, and the input window starting at offset T - t.
    w = w.transpose(*range(0, 2 * n, 2), 2 * n, 2 * n + 1, *range(1, 2 * n, 2), 2 * n + 2)
    groups = [_phase_groups(k, s) for k, s in zip(win, geo.strides)]

    def block(dim, chosen):
        # The phases chosen[0] x ... x chosen[n-1], concatenated along each phase axis.
        if dim < n:
            parts = [block(dim + 1, (*chosen, grp)) for grp in groups[dim]]
            return parts[0] if len(parts) == 1 else jnp.concatenate(parts, axis=2 + n + dim)
        return _phase_block(xp, w, taps, rows, chosen, geo, precision, preferred_element_type)

    y = block(0, ())  # (N, *rows, g, *phases, C_out/g)
    # -> (N, rows_0, s_0, rows_1, s_1, ..., g, C_out/g)
    perm = [0]
    for i in range(n):
        perm += [1 + i, n + 2 + i]
    y = y.transpose(*perm, n + 1, 2 * n + 2)
    y = y.reshape(x.shape[0], *(r * s for r, s in zip(rows, geo.strides)), geo.c_out)
    start = [lo - a * s for (lo, _), a, s in zip(geo.crops, m0, geo.strides)]
    index = tuple(slice(st, st + o) for st, o in zip(start, geo.out_spatial))
    return y[(slice(None), *index)]


def _phase_block(xp, w, taps, rows, chosen, geo, precision, preferred_element_type):
    """One group of phases: (N, *rows, g, *phases_in_group, C_out/g)."""
    n, g = geo.ndim, geo.groups
    batch, c_in_g, c_out_g = xp.shape[0], geo.c_in // g, geo.c_out // g
    t_b = tuple(t for _, _, t in chosen)
    n_ph = tuple(p1 - p0 for p0, p1, _ in chosen)
    if 0 in t_b:  # phases no kernel tap reaches (stride > window): zeros
        dtype = preferred_element_type or jnp.result_type(xp.dtype, w.dtype)
        return jnp.zeros((batch, *rows, g, *n_ph, c_out_g), dtype)
    w = w[
        (
            *(slice(t - tb, t) for t, tb in zip(taps, t_b)),
            slice(None),
            slice(None),
            *(slice(p0, p1) for p0, p1, _ in chosen),
        )
    ]
    n_taps, n_phases = math.prod(t_b), math.prod(n_ph)
    offsets = [t - tb for t, tb in zip(taps, t_b)]

    if n_taps <= _MAX_IM2COL_TAPS and n_taps * c_in_g >= _MIN_IM2COL_DEPTH:
        views = [
            xp[(slice(None), *(slice(o + u, o + u + r) for o, u, r in zip(offsets, off, rows)))]
            for off in itertools.product(*(range(t) for t in t_b))
        ]
        cols = jnp.stack(views, axis=-2).reshape(-1, n_taps, g, c_in_g)
        y = _im2col_gemm(cols, w.reshape(n_taps, g, c_in_g, -1), precision, preferred_element_type)
    else:
        xb = xp[(slice(None), *(slice(o, o + r + tb - 1) for o, r, tb in zip(offsets, rows, t_b)))]
        k = jnp.swapaxes(w.reshape(*t_b, g, c_in_g, n_phases * c_out_g), -3, -2)
        k = k.reshape(*t_b, c_in_g, g * n_phases * c_out_g)
        y = lax.conv_general_dilated(
            xb,
            k,
            window_strides=(1,) * n,
            padding="VALID",
            dimension_numbers=_dimension_numbers(n),
            feature_group_count=g,
            precision=precision,
            preferred_element_type=preferred_element_type,
        )
    return y.reshape(batch, *rows, g, *n_ph, c_out_g)


def _im2col_gemm(cols, w, precision, preferred_element_type):
    """(M, taps, g, C_in/g) columns times (taps, g, C_in/g, P) weights -> (M, g, P)."""
    m, taps, g, c = cols.shape
    p = w.shape[-1]
    if g == 1:
        cols, w = cols.reshape(m, taps * c), w.reshape(taps * c, p)
    # The weight gradient contracts M, the long axis of the columns and of the cotangent;
    # XLA:CPU's fast GEMMs want it last on one side, so it copies one of the two transposed.
    # Computing y^T = w^T cols^T makes that copy the columns' (M x taps*C), y = cols w the
    # cotangent's (M x P): pick the smaller. (Measured: kernel 16, stride 8, 21 channels
    # forward+backward 51 -> 32 ms, bench/RESULTS.md.)
    transposed = p > taps * c
    if g == 1:
        dims = (((0,), (1,)), ((), ())) if transposed else (((1,), (0,)), ((), ()))
    else:
        dims = (((0, 2), (1, 3)), ((1,), (2,))) if transposed else (((1, 3), (0, 2)), ((2,), (1,)))
    lhs, rhs = (w, cols) if transposed else (cols, w)
    y = lax.dot_general(
        lhs, rhs, dims, precision=precision, preferred_element_type=preferred_element_type
    )  # g == 1: (P, M) or (M, P); g > 1: (g, P, M) or (g, M, P)
    if transposed:
        return y.T.reshape(m, g, p) if g == 1 else y.transpose(2, 0, 1)
    return y.reshape(m, g, p) if g == 1 else y.transpose(1, 0, 2)


_IMPLS = {"dilated": _dilated, "subpixel": _subpixel, "zero_insert": _zero_insert}


def select_method(geometry_or_strides: IntOrSeq | _Geometry, backend: str | None = None) -> str:
    """The method ``method="auto"`` uses for these strides on this backend.

    The rule is a table of measurements (``bench/conv_transpose.py``, recorded in
    ``bench/RESULTS.md``). On XLA:CPU every strided shape measured fastest, forward and
    backward, as ``"subpixel"``; stride 1 (no phases) measured fastest as ``"zero_insert"``.
    GPU and TPU have not been measured yet: they get ``"dilated"``, the form XLA lowers to
    their native backward-data convolution kernels.

    Args:
      geometry_or_strides: the strides (an int or a sequence), or a normalised geometry.
      backend: ``"cpu"``, ``"gpu"``, ``"tpu"``...; defaults to ``jax.default_backend()``.
    """
    strides = (
        geometry_or_strides.strides
        if isinstance(geometry_or_strides, _Geometry)
        else np.atleast_1d(geometry_or_strides)
    )
    backend = backend or jax.default_backend()
    if backend != "cpu":
        return "dilated"
    return "zero_insert" if all(int(s) == 1 for s in strides) else "subpixel"


def conv_transpose(
    x: ArrayLike,
    kernel: ArrayLike,
    strides: IntOrSeq,
    padding: PaddingLike = "SAME",
    *,
    output_padding: IntOrSeq | None = None,
    kernel_dilation: IntOrSeq | None = None,
    feature_group_count: int = 1,
    method: str = "auto",
    precision: PrecisionLike = None,
    preferred_element_type: DTypeLike | None = None,
) -> Array:
    """Transposed convolution (fractionally strided convolution, "deconvolution").

    Every input sample scatters ``x[i] * kernel[j]`` onto output position
    ``i * stride + j * dilation - crop_lo``. Equivalently, it is an ordinary convolution
    with the spatially flipped kernel over the input with ``stride - 1`` zeros inserted
    between samples: a stride of ``1 / stride``.

    The seed's 1-D example, kernel 4 and stride 2, SAME padding (crop 1 at the start, 1 at
    the end)::

        full output index  o = 2*i + j      (i: input sample, j: kernel tap)
        out[0] = full[1] = x[0]*k[1]
        out[1] = full[2] = x[0]*k[2] + x[1]*k[0]
        out[2] = full[3] = x[0]*k[3] + x[1]*k[1]
        out[3] = full[4] = x[1]*k[2] + x[2]*k[0]

    Even outputs see taps ``k[1], k[3]``, odd outputs ``k[0], k[2]``: two kernels, one per
    output phase. ``method="subpixel"`` computes exactly that; ``method="dilated"`` inserts
    the zeros, after which one kernel serves every output.

    >>> import jax.numpy as jnp
    >>> from fcnjax import ops
    >>> x = jnp.array([1., 2., 3.]).reshape(1, 3, 1)           # (N, L, C_in)
    >>> k = jnp.array([1., 10., 100., 1000.]).reshape(4, 1, 1)  # (window, C_in, C_out)
    >>> ops.conv_transpose(x, k, strides=2, padding="SAME")[0, :, 0]
    Array([  10.,  102., 1020.,  203., 2030.,  300.], dtype=float32)
    >>> ops.conv_transpose(x, k, 2, "SAME", method="dilated")[0, :, 0]
    Array([  10.,  102., 1020.,  203., 2030.,  300.], dtype=float32)
    >>> ops.conv_transpose(x, k, 2, "VALID").shape  # (3 - 1) * 2 + 4
    (1, 8, 1)

    Args:
      x: ``(N, *spatial, C_in)``, channels-last, 1 or more spatial dimensions.
      kernel: ``(*window, C_in, C_out // feature_group_count)``. Use
        :func:`kernel_from_torch` / :func:`kernel_from_keras` for other layouts.
      strides: the upsampling factor: an int or one int per spatial dimension.
      padding: ``"SAME"`` or ``"VALID"`` (Keras' rules: outputs ``L * s`` and
        ``(L - 1) * s + max(k_eff, s)``; an odd crop takes the extra sample from the end),
        or PyTorch's crops: an int, one int per dimension, or one ``(lo, hi)`` pair per
        dimension, cropped from the full output of ``(L - 1) * s + k_eff`` samples.
      output_padding: samples added at the end of each dimension, ``< max(stride,
        dilation)``. With explicit padding, PyTorch's meaning; with SAME/VALID, Keras'.
      kernel_dilation: ``k_eff = dilation * (k - 1) + 1`` (an int or one per dimension).
      feature_group_count: groups; must divide ``C_in``. Output channels are ordered group
        by group, as in PyTorch.
      method: ``"dilated"`` (one ``lax.conv_general_dilated`` with ``lhs_dilation``),
        ``"zero_insert"`` (``lax.pad`` with interior padding, then a VALID stride-1
        convolution), ``"subpixel"`` (one stride-1 GEMM/convolution over the undilated input
        with ``prod(strides) * C_out`` outputs, then depth-to-space) or ``"auto"``
        (see :func:`select_method`). All agree to float rounding, forward and backward.
      precision: passed to the underlying ``lax`` contraction.
      preferred_element_type: accumulation/result dtype passed to ``lax``.

    Returns:
      ``(N, *out_spatial, C_out)``; see :func:`conv_transpose_shape`.

    Raises:
      ValueError: at trace time, naming the argument, for a rank or channel mismatch, a
        stride or dilation below 1, ``output_padding >= max(stride, dilation)``, groups that
        do not divide the channels, an unknown padding string or method, or a padding that
        leaves no output.

    References:
      Dumoulin & Visin, "A guide to convolution arithmetic for deep learning", 2016.
      Shi et al., "Real-Time Single Image and Video Super-Resolution Using an Efficient
      Sub-Pixel Convolutional Neural Network", CVPR 2016.
    """
    if method not in METHODS:
        raise ValueError(f"`method` must be one of {METHODS}, got {method!r}.")
    x, kernel = jnp.asarray(x), jnp.asarray(kernel)
    geo = _geometry(
        x.shape,
        kernel.shape,
        strides,
        padding,
        output_padding,
        kernel_dilation,
        feature_group_count,
    )
    dtype = jnp.result_type(x, kernel)
    x, kernel = x.astype(dtype), kernel.astype(dtype)
    if method == "auto":
        method = select_method(geo)
    return _IMPLS[method](x, kernel, geo, precision, preferred_element_type)
