"""MobileNet (Howard et al., 2017) and MobileNetV2 (Sandler et al., 2018) as segmentation
encoders, channels-last, with Keras' layer names. Neither convolution has a bias; every
activation is ReLU6 (``min(max(x, 0), 6)``).

* :class:`MobileNet` is keras-segmentation's ``get_mobilenet_encoder``
  (``keras_segmentation/models/mobilenet.py``): keras.applications' MobileNet v1 layers
  (``conv1``, then 13 blocks of a 3x3 depthwise convolution ``conv_dw_<i>`` and a 1x1 one
  ``conv_pw_<i>``, each with BatchNorm ``<name>_bn``: Keras' default momentum 0.99, epsilon
  1e-3) with keras-segmentation's own padding: every 3x3 convolution, of stride 1 or 2,
  zero-pads one pixel on each side (``ZeroPadding2D((1, 1))`` + ``"valid"``), where
  keras.applications pads a stride-2 one at the end only. keras-segmentation loads Keras'
  ImageNet file into it by name all the same (:func:`fcnjax.weights.load_mobilenet`).
  Levels ``f1`` ... ``f5``: the outputs of blocks 1, 3, 5, 11 and 13 (strides 2 ... 32; 64,
  128, 256, 512, 1024 channels at width 1). keras-segmentation asserts multiples of 32 (224
  by default); here any size works, each stride-2 layer giving ``ceil(H / 2)`` rows.
* :class:`MobileNetV2`: inverted residual blocks (a 1x1 expansion by 6, a 3x3 depthwise
  convolution, a linear 1x1 projection; a residual sum where the shape allows), in two
  arithmetic styles so that both public ImageNet releases load exactly
  (:func:`fcnjax.weights.load_mobilenet_v2`): ``"keras"``
  (``keras.applications.MobileNetV2``: ``"same"`` padding, which on a stride-2 layer is
  ``correct_pad``'s zero padding, one pixel at the end of an even size and on both sides
  of an odd one; BatchNorm momentum 0.999, epsilon 1e-3) and ``"torchvision"``
  (``torchvision.models.mobilenet_v2``: one pixel on each side; momentum 0.1 in torch's
  convention, epsilon 1e-5). Levels as segmentation_models_pytorch takes them (its
  ``MobileNetV2Encoder``, which DeepLabV3+ uses): after blocks 0, 2, 5, 12 and the last
  1x1 convolution (16, 24, 32, 96, 1280 channels at width 1).

Layer names are Keras' (MobileNetV2's first block ``expanded_conv_*`` is ``block_0_*``
here); :mod:`fcnjax.weights.mobilenet` maps torchvision's onto them.
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax.numpy as jnp

from fcnjax.layers import Conv
from fcnjax.typing import Array, ArrayLike, DTypeLike

__all__ = [
    "MOBILENET_BLOCKS",
    "MOBILENET_TAPS",
    "MOBILENET_V2_SETTING",
    "MOBILENET_V2_TAPS",
    "MobileNet",
    "MobileNetV2",
    "is_mobilenet_layer",
    "make_divisible",
]

# MobileNet v1's blocks: (pointwise filters, stride).
MOBILENET_BLOCKS = (
    *((64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2)),
    *((512, 1),) * 5,
    *((1024, 2), (1024, 1)),
)
_V1_LEVELS = (1, 3, 5, 11, 13)  # the blocks whose outputs are f1 ... f5
MOBILENET_TAPS = tuple(f"conv_pw_{i}_relu" for i in _V1_LEVELS)
# MobileNetV2's stages: (expansion t, channels c, blocks n, stride s), the paper's Table 2.
MOBILENET_V2_SETTING = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)
_V2_LEVELS = (0, 2, 5, 12, 17)  # 17: the last 1x1 convolution (Conv_1)
MOBILENET_V2_TAPS = ("block_0_project_BN", "block_2_add", "block_5_add", "block_12_add", "out_relu")
V2_STYLES = ("torchvision", "keras")
_glorot = nn.initializers.glorot_uniform()  # Keras' default
_kaiming_out = nn.initializers.variance_scaling(2.0, "fan_out", "normal")  # torchvision's
_PAD1 = ((1, 1), (1, 1))


def make_divisible(v: float, divisor: int = 8) -> int:
    """``v`` rounded to the nearest multiple of ``divisor`` (at least ``divisor``), not
    below 90% of ``v``: MobileNetV2's channel counts (``_make_divisible`` of Keras and
    torchvision alike).

    >>> make_divisible(32 * 0.35), make_divisible(1280), make_divisible(16 * 0.25)
    (16, 1280, 8)
    """
    new = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new + divisor if new < 0.9 * v else new


def is_mobilenet_layer(name: str) -> bool:
    """Whether ``name`` is a layer of :class:`MobileNet` or :class:`MobileNetV2` (for
    :func:`fcnjax.models.backbone_mask`)."""
    return name.startswith(("conv1", "conv_dw_", "conv_pw_", "Conv1", "bn_Conv1", "block_"))


def _depthwise(x, stride, padding, dilation=1, *, name, kernel_init, **kw) -> Array:
    """A bias-free 3x3 depthwise convolution (one filter per channel: kernel ``(3, 3, 1,
    C)``; Keras stores ``(3, 3, C, 1)``, torch ``(C, 1, 3, 3)``)."""
    c = x.shape[-1]
    return nn.Conv(
        c,
        (3, 3),
        stride,
        padding=padding,
        kernel_dilation=dilation,
        feature_group_count=c,
        use_bias=False,
        kernel_init=kernel_init,
        name=name,
        **kw,
    )(x)


def _check(x: ArrayLike, levels: int, width: float, what: str) -> Array:
    x = jnp.asarray(x)
    if x.ndim != 4:
        raise ValueError(f"{what} input must be (N, H, W, C); got shape {x.shape}.")
    if levels not in range(1, 6):
        raise ValueError(f"`levels` must be 1 ... 5 (f1 ... f5); got {levels!r}.")
    if not width > 0:
        raise ValueError(f"`width` must be a positive number; got {width!r}.")
    return x


class MobileNet(nn.Module):
    """keras-segmentation's MobileNet v1 encoder (see the module docstring).

    Attributes:
      width: Keras' ``alpha``: every layer has ``int(filters * width)`` filters (at least
        1; keras-segmentation uses 1.0, Keras publishes 0.25, 0.5, 0.75 and 1.0).
      levels: how many of ``f1`` ... ``f5`` to compute (keras-segmentation's U-Net and
        SegNet read four, and have no blocks 12 and 13).
      bn_axis_name: the mapped (``pmap``) axis whose devices share batch statistics.
      dtype: computation dtype; param_dtype: parameter dtype.

    Returns a dict of ``(N, h, w, C)`` arrays :data:`MOBILENET_TAPS` (``conv_pw_1_relu``
    ... ``conv_pw_13_relu``; as many as ``levels``) at strides 2 ... 32.

    >>> import jax, jax.numpy as jnp
    >>> taps = jax.eval_shape(lambda x: MobileNet().init_with_output(
    ...     jax.random.key(0), x)[0], jnp.ones((1, 97, 131, 3)))
    >>> taps["conv_pw_1_relu"].shape, taps["conv_pw_13_relu"].shape
    ((1, 49, 66, 64), (1, 4, 5, 1024))
    """

    width: float = 1.0
    levels: int = 5
    bn_axis_name: str | None = None
    dtype: DTypeLike | None = None
    param_dtype: DTypeLike = jnp.float32

    @nn.compact
    def __call__(self, x: ArrayLike, train: bool = False) -> dict[str, Array]:
        x = _check(x, self.levels, self.width, "MobileNet")
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        bn = functools.partial(
            nn.BatchNorm,
            use_running_average=not train,
            momentum=0.99,
            epsilon=1e-3,
            axis_name=self.bn_axis_name,
            **kw,
        )
        conv = functools.partial(Conv, use_bias=False, kernel_init=_glorot, **kw)
        filters = lambda f: max(1, int(f * self.width))  # noqa: E731
        x = conv(filters(32), 3, 2, padding=_PAD1, name="conv1")(x)
        x = nn.relu6(bn(name="conv1_bn")(x))
        taps = {}
        for i, (f, stride) in enumerate(MOBILENET_BLOCKS[: _V1_LEVELS[self.levels - 1]], 1):
            x = _depthwise(x, stride, _PAD1, name=f"conv_dw_{i}", kernel_init=_glorot, **kw)
            x = nn.relu6(bn(name=f"conv_dw_{i}_bn")(x))
            x = nn.relu6(bn(name=f"conv_pw_{i}_bn")(conv(filters(f), 1, name=f"conv_pw_{i}")(x)))
            if i in _V1_LEVELS:
                taps[f"conv_pw_{i}_relu"] = x
        return taps


def _dilations(output_stride: int) -> tuple[int, int]:
    """The dilation of blocks 6 ... 12 and of blocks 13 ... 16 (segmentation_models_pytorch's
    ``make_dilated``: each stage past ``output_stride`` keeps its resolution, every
    convolution in it dilated by its former stride over ``output_stride``)."""
    return {32: (1, 1), 16: (1, 2), 8: (2, 4)}[output_stride]


def _inverted_residual(x, t, c_out, stride, dilation, down, pre, *, conv, bn, init, kw) -> Array:
    """MobileNetV2's block ``pre`` (``block_<i>_``): a 1x1 expansion by ``t`` (none when
    ``t`` is 1), a 3x3 depthwise convolution (``stride``, or stride 1 and ``dilation``), a
    linear 1x1 projection to ``c_out``; plus the input at stride 1 when the widths agree."""
    h, residual = x, stride == 1 and x.shape[-1] == c_out  # before any dilation
    if t != 1:
        h = nn.relu6(bn(name=f"{pre}expand_BN")(conv(t * x.shape[-1], 1, name=f"{pre}expand")(h)))
    if dilation > 1:  # smp's make_dilated: stride 1, padding = dilation
        stride, padding = 1, ((dilation, dilation), (dilation, dilation))
    else:
        padding = down if stride == 2 else _PAD1
    h = _depthwise(h, stride, padding, dilation, name=f"{pre}depthwise", kernel_init=init, **kw)
    h = nn.relu6(bn(name=f"{pre}depthwise_BN")(h))
    h = bn(name=f"{pre}project_BN")(conv(c_out, 1, name=f"{pre}project")(h))
    return x + h if residual else h


class MobileNetV2(nn.Module):
    """MobileNetV2 as keras.applications or torchvision computes it (see the module
    docstring).

    Attributes:
      width: the width multiplier (Keras' ``alpha``, torchvision's ``width_mult``): a
        stage of ``c`` channels has ``make_divisible(c * width)`` (Keras:
        ``make_divisible(int(c * width))``), the last 1x1 convolution 1280 for widths up to 1.
      style: ``"torchvision"`` or ``"keras"``.
      output_stride: 32, 16 or 8: the stride of ``f5``; below 32, the last one or two
        stages keep their resolution and dilate their depthwise convolutions instead
        (segmentation_models_pytorch's ``make_dilated``, as its DeepLabV3+ uses).
      levels: how many of ``f1`` ... ``f5`` to compute.
      bn_momentum: BatchNorm running-average momentum (default: the style's, 0.999 or 0.9).
      bn_axis_name: the mapped axis whose devices share batch statistics (pmap).
      dtype: computation dtype; param_dtype: parameter dtype.

    Returns a dict of ``(N, h, w, C)`` arrays :data:`MOBILENET_V2_TAPS` (as many as
    ``levels``), at strides 2, 4, 8, 16, 32 at ``output_stride=32``.

    >>> import jax, jax.numpy as jnp
    >>> taps = jax.eval_shape(lambda x: MobileNetV2(output_stride=16).init_with_output(
    ...     jax.random.key(0), x)[0], jnp.ones((1, 97, 131, 3)))
    >>> taps["block_0_project_BN"].shape, taps["out_relu"].shape
    ((1, 49, 66, 16), (1, 7, 9, 1280))
    """

    width: float = 1.0
    style: str = "torchvision"
    output_stride: int = 32
    levels: int = 5
    bn_momentum: float | None = None
    bn_axis_name: str | None = None
    dtype: DTypeLike | None = None
    param_dtype: DTypeLike = jnp.float32

    @nn.compact
    def __call__(self, x: ArrayLike, train: bool = False) -> dict[str, Array]:
        x = _check(x, self.levels, self.width, "MobileNetV2")
        if self.style not in V2_STYLES:
            raise ValueError(f"`style` must be one of {V2_STYLES}; got {self.style!r}.")
        if self.output_stride not in (8, 16, 32):
            raise ValueError(f"`output_stride` must be 8, 16 or 32; got {self.output_stride!r}.")
        keras = self.style == "keras"
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        momentum = (0.999 if keras else 0.9) if self.bn_momentum is None else self.bn_momentum
        bn = functools.partial(
            nn.BatchNorm,
            use_running_average=not train,
            momentum=momentum,
            epsilon=1e-3 if keras else 1e-5,
            axis_name=self.bn_axis_name,
            **kw,
        )
        init = _glorot if keras else _kaiming_out
        conv = functools.partial(Conv, use_bias=False, kernel_init=init, **kw)
        down = "SAME" if keras else _PAD1  # a stride-2 3x3's padding (Keras: correct_pad)
        x = conv(make_divisible(32 * self.width), 3, 2, padding=down, name="Conv1")(x)
        x = nn.relu6(bn(name="bn_Conv1")(x))
        parts = dict(conv=conv, bn=bn, init=init, kw=kw)
        blocks = [
            (t, c, s if j == 0 else 1) for t, c, n, s in MOBILENET_V2_SETTING for j in range(n)
        ]
        taps, last = {}, _V2_LEVELS[self.levels - 1]
        dilate16, dilate32 = _dilations(self.output_stride)
        for i, (t, c, stride) in enumerate(blocks[: last + 1]):
            dilation = dilate32 if i >= 13 else dilate16 if i >= 6 else 1
            c_out = make_divisible(int(c * self.width) if keras else c * self.width)
            x = _inverted_residual(x, t, c_out, stride, dilation, down, f"block_{i}_", **parts)
            if i in _V2_LEVELS:
                taps[MOBILENET_V2_TAPS[_V2_LEVELS.index(i)]] = x
        if last == 17:
            x = conv(make_divisible(1280 * max(1.0, self.width)), 1, name="Conv_1")(x)
            taps["out_relu"] = nn.relu6(bn(name="Conv_1_bn")(x))
        return taps
