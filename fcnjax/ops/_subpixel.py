"""The sub-pixel (phase) method of a transposed convolution.

Write a full-output index as ``o = s*m + r`` with ``0 <= r < s``. With kernel taps
``j = r + s*t``, ``full[s*m + r] = sum_t x[m - t] * kernel[r + s*t]``: each of the
``prod(s)`` output phases ``r`` is a stride-1 convolution of the *undilated* input with its
own sub-kernel, and depth-to-space interleaves the phases (Shi et al., "Real-Time Single
Image and Video Super-Resolution Using an Efficient Sub-Pixel Convolutional Neural
Network", CVPR 2016). In 1-D at stride 2 that is one kernel for the even outputs and
another for the odd ones.
"""

from __future__ import annotations

import itertools
import math

import jax.numpy as jnp
from jax import lax

from fcnjax.ops._geometry import ConvTransposeGeometry, conv_dimension_numbers

__all__ = ["subpixel"]

# The sub-pixel method computes its stride-1 phase convolution as one GEMM over
# the prod(T) shifted views of the input (im2col), unless there are more than
# _MAX_IM2COL_TAPS taps (the copies cost more than they save) or the GEMM depth,
# taps * C_in per group, is below _MIN_IM2COL_DEPTH (XLA:CPU's convolution
# measured faster, bench/RESULTS.md); then it uses an XLA convolution. The autoencoder's
# last layer (7x7, stride 2, 32 -> 1: 16 taps per phase) took 53 ms forward+backward with
# im2col and 16 ms with the convolution (batch 32, 2 cores), so 9 taps (3x3) is the limit.
_MAX_IM2COL_TAPS = 9
_MIN_IM2COL_DEPTH = 32


def _phase_groups(k: int, s: int) -> list[tuple[int, int, int]]:
    # Phase r of a window of k taps at stride s has ceil((k - r) / s) taps: the first k % s
    # phases one more than the rest. Returns (first phase, last phase + 1, taps) per group.
    hi, lo, split = -(-k // s), k // s, k % s
    return [(0, split, hi), (split, s, lo)] if split else [(0, s, hi)]


def subpixel(x, kernel, geo: ConvTransposeGeometry, precision, preferred_element_type):
    """``conv_transpose`` by phases: ``(N, *geo.in_spatial, C_in)`` -> ``(N, *out, C_out)``.

    Phases with the same number of taps (at most two groups per dimension) share one GEMM
    or convolution with ``phases * C_out`` outputs; depth-to-space interleaves all phases.
    """
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
            dimension_numbers=conv_dimension_numbers(n),
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
