"""The shapes of a transposed convolution, worked out without touching any array.

:func:`conv_transpose_geometry` checks and normalises the arguments of
:func:`fcnjax.ops.conv_transpose` once (every method and the shape helper share it) and
returns a :class:`ConvTransposeGeometry`: the per-dimension strides, dilations and crops
and the sizes they give.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from jax import lax

from fcnjax.ops._args import is_int, per_dim
from fcnjax.typing import IntOrSeq, PaddingLike

__all__ = [
    "ConvTransposeGeometry",
    "conv_dimension_numbers",
    "conv_transpose_geometry",
    "conv_transpose_shape",
]


@dataclasses.dataclass(frozen=True)
class ConvTransposeGeometry:
    """Everything about one transposed convolution except the arrays themselves.

    One entry per spatial dimension in every tuple.

    Attributes:
      in_spatial: the input's spatial sizes ``L``.
      window: the kernel's spatial sizes ``k``.
      strides: the upsampling factors ``s``.
      dilation: the kernel dilations ``d``.
      crops: ``(lo, hi)`` samples cropped from the start and the end of the full output;
        a negative ``hi`` adds samples at the end (Keras' VALID with a stride above the
        window, or ``output_padding``).
      groups: ``feature_group_count``.
      c_in: input channels.
      c_out: output channels, all groups together.

    Derived (properties): ``ndim``, ``eff_window`` (``d * (k - 1) + 1``), ``full_spatial``
    (``(L - 1) * s + eff_window``, the output before cropping) and ``out_spatial``
    (``full_spatial - lo - hi``).
    """

    in_spatial: tuple[int, ...]
    window: tuple[int, ...]
    strides: tuple[int, ...]
    dilation: tuple[int, ...]
    crops: tuple[tuple[int, int], ...]
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


def _crop_pair(item) -> tuple[int, int] | None:
    """One dimension's PyTorch crops: an int or an ``(lo, hi)`` pair; None for anything else."""
    if is_int(item):
        return int(item), int(item)
    if (
        not isinstance(item, str)
        and isinstance(item, Sequence)
        and len(item) == 2
        and all(is_int(v) for v in item)
    ):
        return int(item[0]), int(item[1])
    return None


def _torch_crops(padding, n: int) -> tuple[tuple[int, int], ...]:
    expected = (
        f'"SAME", "VALID", an int, a sequence of {n} ints, or a sequence of {n} (lo, hi) pairs'
    )
    if is_int(padding):
        pairs = ((int(padding),) * 2,) * n
    else:
        try:
            pairs = tuple(_crop_pair(item) for item in padding)
        except TypeError:
            raise ValueError(f"`padding` must be {expected}, got {padding!r}.") from None
        if len(pairs) != n or None in pairs:
            raise ValueError(f"`padding` must be {expected}, got {padding!r}.")
    if any(v < 0 for pair in pairs for v in pair):
        raise ValueError(f"`padding` crops must be >= 0, got {padding!r}.")
    return pairs


def _check_shapes(x_shape: tuple, kernel_shape: tuple, feature_group_count) -> int:
    """Checks ranks, channels and groups; returns the number of groups."""
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
    c_in = x_shape[-1]
    if kernel_shape[-2] != c_in:
        raise ValueError(
            f"`kernel` has C_in={kernel_shape[-2]} (its shape is {kernel_shape}, layout "
            f"(*window, C_in, C_out // groups)) but `x` has {c_in} channels (shape {x_shape})."
        )
    if c_in % feature_group_count:
        raise ValueError(
            f"`feature_group_count`={feature_group_count} must divide the {c_in} input "
            f"channels of `x`."
        )
    if any(d < 1 for d in x_shape[1:-1]) or any(k < 1 for k in kernel_shape[:-2]):
        raise ValueError(
            f"spatial sizes must be >= 1: `x` shape {x_shape}, `kernel` shape {kernel_shape}."
        )
    return int(feature_group_count)


def _output_padding(output_padding, strides, dilation) -> tuple[int | None, ...]:
    n = len(strides)
    if output_padding is None:
        return (None,) * n
    values = per_dim("output_padding", output_padding, n, 0)
    if any(op >= max(s, d) for op, s, d in zip(values, strides, dilation)):
        raise ValueError(
            f"`output_padding` must be smaller than max(stride, dilation) in every "
            f"dimension, got output_padding={output_padding!r} with strides={strides} "
            f"and kernel_dilation={dilation}."
        )
    return values


def _crops(padding, k_eff, strides, output_padding) -> tuple[tuple[int, int], ...]:
    if not isinstance(padding, str):
        pairs = _torch_crops(padding, len(strides))
        return tuple((lo, hi - (op or 0)) for (lo, hi), op in zip(pairs, output_padding))
    mode = padding.upper()
    if mode not in ("SAME", "VALID"):
        raise ValueError(
            f'`padding` must be "SAME", "VALID", an int, or per-dimension ints or (lo, hi) '
            f"pairs; got the unknown string {padding!r}."
        )
    return tuple(_keras_crops(mode, k, s, op) for k, s, op in zip(k_eff, strides, output_padding))


def conv_transpose_geometry(
    input_shape: Sequence[int],
    kernel_shape: Sequence[int],
    strides: IntOrSeq,
    padding: PaddingLike = "SAME",
    *,
    output_padding: IntOrSeq | None = None,
    kernel_dilation: IntOrSeq | None = None,
    feature_group_count: int = 1,
) -> ConvTransposeGeometry:
    """Checks the arguments of :func:`conv_transpose` and works out its geometry.

    Args:
      input_shape: ``(N, *spatial, C_in)``.
      kernel_shape: ``(*window, C_in, C_out // feature_group_count)``.
      strides, padding, output_padding, kernel_dilation, feature_group_count: as in
        :func:`conv_transpose`.

    Returns:
      A :class:`ConvTransposeGeometry`: per spatial dimension the strides, dilations,
      crops from the full output, and the sizes before and after cropping.

    Raises:
      ValueError: naming the argument, as :func:`conv_transpose` does.

    Examples:
      >>> from fcnjax import ops
      >>> geo = ops.conv_transpose_geometry((1, 3, 3, 1), (4, 4, 1, 1), 2, "SAME")
      >>> geo.full_spatial, geo.crops, geo.out_spatial  # (3 - 1) * 2 + 4 = 8, crop 1 and 1
      ((8, 8), ((1, 1), (1, 1)), (6, 6))
      >>> ops.conv_transpose_geometry((1, 3, 1), (1, 1, 1), 2, "VALID").crops  # s > k: 1 added
      ((0, -1),)
    """
    x_shape, kernel_shape = tuple(input_shape), tuple(kernel_shape)
    groups = _check_shapes(x_shape, kernel_shape, feature_group_count)
    n = len(x_shape) - 2
    window = tuple(kernel_shape[:-2])
    strides = per_dim("strides", strides, n, 1)
    dilation = per_dim("kernel_dilation", 1 if kernel_dilation is None else kernel_dilation, n, 1)
    ops_ = _output_padding(output_padding, strides, dilation)
    k_eff = tuple(d * (k - 1) + 1 for k, d in zip(window, dilation))
    geo = ConvTransposeGeometry(
        in_spatial=tuple(x_shape[1:-1]),
        window=window,
        strides=strides,
        dilation=dilation,
        crops=_crops(padding, k_eff, strides, ops_),
        groups=groups,
        c_in=x_shape[-1],
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
    geo = conv_transpose_geometry(
        input_shape,
        kernel_shape,
        strides,
        padding,
        output_padding=output_padding,
        kernel_dilation=kernel_dilation,
        feature_group_count=feature_group_count,
    )
    return (tuple(input_shape)[0], *geo.out_spatial, geo.c_out)


def conv_dimension_numbers(n: int) -> lax.ConvDimensionNumbers:
    """``lax`` dimension numbers: channels-last input and output, ``(*window, I, O)`` kernel."""
    spatial = tuple(range(1, n + 1))
    return lax.ConvDimensionNumbers(
        lhs_spec=(0, n + 1, *spatial),
        rhs_spec=(n + 1, n, *range(n)),
        out_spec=(0, n + 1, *spatial),
    )
