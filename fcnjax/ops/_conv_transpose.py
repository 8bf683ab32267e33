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

Here: the operation and its ``"dilated"`` and ``"zero_insert"`` methods. Argument checks
and sizes are in ``_geometry.py`` (:func:`conv_transpose_geometry`), the ``"subpixel"``
method in ``_subpixel.py``, the kernel layout converters in ``_kernels.py``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from fcnjax.ops._args import is_int, per_dim
from fcnjax.ops._geometry import (
    ConvTransposeGeometry,
    conv_dimension_numbers,
    conv_transpose_geometry,
)
from fcnjax.ops._subpixel import subpixel
from fcnjax.typing import Array, ArrayLike, DTypeLike, IntOrSeq, PaddingLike, PrecisionLike

__all__ = ["METHODS", "conv_transpose", "select_method", "zero_insert"]

METHODS = ("auto", "dilated", "subpixel", "zero_insert")


def zero_insert(x: ArrayLike, strides: IntOrSeq) -> Array:
    """Insert ``stride - 1`` zeros between neighbouring samples of every spatial dimension.

    This is how Dumoulin & Visin's guide to convolution arithmetic (2016) draws a
    transposed convolution: after zero insertion, a stride-1 convolution with the flipped
    kernel is the transposed convolution.

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
        dimension_numbers=conv_dimension_numbers(geo.ndim),
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


_IMPLS = {"dilated": _dilated, "subpixel": subpixel, "zero_insert": _zero_insert}


def select_method(
    geometry_or_strides: IntOrSeq | ConvTransposeGeometry, backend: str | None = None
) -> str:
    """The method ``method="auto"`` uses for these strides on this backend.

    The rule is a table of measurements (``bench/conv_transpose.py``, recorded in
    ``bench/RESULTS.md``), forward and backward together. On XLA:CPU:

    - strided: ``"subpixel"`` (every bench shape), except a single output channel from a
      window over twice the stride (the autoencoder's last layer, 32->1, 7x7, stride 2:
      8.2 ms ``"dilated"`` against 12.6 ms), where the phases' one-channel convolutions
      cost more than the zeros;
    - stride 1: ``"zero_insert"``, except an input smaller than the window (a decoder's
      first layer from a 1x1 code: 0.8 ms ``"dilated"`` against 5.7 ms), where the
      explicit padding is most of the work.

    Given only strides (no geometry), the shape rules do not apply. GPU and TPU have not
    been measured yet: they get ``"dilated"``, the form XLA lowers to their native
    backward-data convolution kernels.

    Args:
      geometry_or_strides: the strides (an int or one int per spatial dimension, each
        ``>= 1``), or a geometry from :func:`conv_transpose_geometry`.
      backend: ``"cpu"``, ``"gpu"``, ``"tpu"``...; defaults to ``jax.default_backend()``.

    >>> select_method(2, "cpu"), select_method((1, 1), "cpu"), select_method(2, "gpu")
    ('subpixel', 'zero_insert', 'dilated')
    """
    if isinstance(geometry_or_strides, ConvTransposeGeometry):
        strides = geometry_or_strides.strides
    else:
        strides = np.atleast_1d(geometry_or_strides).tolist()
        if not strides or not all(is_int(s) and s >= 1 for s in strides):
            raise ValueError(
                f"`geometry_or_strides` must be a ConvTransposeGeometry, an int >= 1 or a "
                f"sequence of ints >= 1; got {geometry_or_strides!r}."
            )
    backend = backend or jax.default_backend()
    if backend != "cpu":
        return "dilated"
    geo = geometry_or_strides if isinstance(geometry_or_strides, ConvTransposeGeometry) else None
    if all(s == 1 for s in strides):
        tiny = geo is not None and all(n < k for n, k in zip(geo.in_spatial, geo.eff_window))
        return "dilated" if tiny else "zero_insert"
    if geo is not None and geo.c_out == 1 and max(geo.eff_window) > 2 * max(strides):
        return "dilated"
    return "subpixel"


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

    A 1-D example, kernel 4 and stride 2, SAME padding (crop 1 at the start, 1 at
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
    geo = conv_transpose_geometry(
        x.shape,
        kernel.shape,
        strides,
        padding,
        output_padding=output_padding,
        kernel_dilation=kernel_dilation,
        feature_group_count=feature_group_count,
    )
    dtype = jnp.result_type(x, kernel)
    x, kernel = x.astype(dtype), kernel.astype(dtype)
    if method == "auto":
        method = select_method(geo)
    return _IMPLS[method](x, kernel, geo, precision, preferred_element_type)
