"""MobileNetV3-Large (Howard et al., 2019) as a segmentation encoder, torchvision's
arithmetic and names, channels-last.

torchvision's ``mobilenet_v3_large`` (``torchvision/models/mobilenetv3.py``) is a
sequence ``features``: ``features.0``, a 3x3 stride-2 convolution to 16 channels,
BatchNorm and hardswish; ``features.1`` ... ``features.15``, the inverted residual blocks
of :data:`LARGE` (the paper's Table 1); ``features.16``, a 1x1 convolution to 960
channels, BatchNorm and hardswish. Each block has an optional 1x1 expansion, a depthwise
``k x k`` convolution, an optional squeeze-and-excitation (SE) and a 1x1 projection, each
convolution without bias followed by BatchNorm (epsilon 0.001, torch momentum 0.01); a
residual sum where the block keeps its stride and width. The ImageNet classifier is not
built.

Parameters are named as torchvision's state dict with ``.`` between a module and its
index written ``_``, and the Sequential's convolution and BatchNorm named: torch's
``features.0.0`` and ``features.0.1`` are ``features_0/conv`` and ``features_0/bn``;
``features.4.block.2.fc1`` (an SE) is ``features_4/block_2/fc1``; ``features.4.block.3.1``
is ``features_4/block_3/bn``. BatchNorm statistics are in ``batch_stats``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from fcnjax.layers import Conv
from fcnjax.typing import Array, ArrayLike, DTypeLike

__all__ = ["LARGE", "LEVELS", "Bneck", "MobileNetV3Large", "make_divisible"]


class Bneck(NamedTuple):
    """One row of torchvision's ``InvertedResidualConfig`` table (width 1)."""

    input: int
    kernel: int
    expanded: int
    out: int
    se: bool
    hardswish: bool  # torchvision's "HS"; else "RE" (ReLU)
    stride: int


# torchvision's _mobilenet_v3_conf("mobilenet_v3_large"): features.1 ... features.15.
LARGE = (
    Bneck(16, 3, 16, 16, False, False, 1),
    Bneck(16, 3, 64, 24, False, False, 2),  # C1, stride 4
    Bneck(24, 3, 72, 24, False, False, 1),
    Bneck(24, 5, 72, 40, True, False, 2),  # C2, stride 8
    Bneck(40, 5, 120, 40, True, False, 1),
    Bneck(40, 5, 120, 40, True, False, 1),
    Bneck(40, 3, 240, 80, False, True, 2),  # C3, stride 16
    Bneck(80, 3, 200, 80, False, True, 1),
    Bneck(80, 3, 184, 80, False, True, 1),
    Bneck(80, 3, 184, 80, False, True, 1),
    Bneck(80, 3, 480, 112, True, True, 1),
    Bneck(112, 3, 672, 112, True, True, 1),
    Bneck(112, 5, 672, 160, True, True, 2),  # C4, stride 32 (dilated: 16)
    Bneck(160, 5, 960, 160, True, True, 1),
    Bneck(160, 5, 960, 160, True, True, 1),
)
# torchvision's `dilated=True` (its segmentation models): from C4 on, dilation 2, stride 1.
_FIRST_DILATED = 13
# The taps f1 ... f5 (strides 2 ... 32 undilated): the last output at each stride.
LEVELS = ("features_1", "features_3", "features_6", "features_12", "features_16")
# torchvision's _lraspp_mobilenetv3 / _deeplabv3_mobilenetv3: 'low' is the output of C2
# (stage_indices[-4], features.4, stride 8) and 'high' (and 'out') that of features.16.
LOW, HIGH = "features_4", "features_16"
# torchvision initialises convolutions with Kaiming normal, fan-out.
_kaiming_out = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


def make_divisible(v: float, divisor: int = 8, min_value: int | None = None) -> int:
    """torchvision's ``_make_divisible``: ``v`` rounded to the nearest multiple of
    ``divisor`` (at least ``min_value``, default ``divisor``), one multiple more where
    rounding lost more than 10%.

    >>> make_divisible(72 // 4), make_divisible(120 // 4), make_divisible(40 * 0.25)
    (24, 32, 16)
    """
    min_value = divisor if min_value is None else min_value
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    return new_v + divisor if new_v < 0.9 * v else new_v


class _ConvBN(nn.Module):
    """torchvision's ``Conv2dNormActivation``: a convolution without bias (padding
    ``(k - 1) // 2 * dilation``), BatchNorm and the activation (none for a projection)."""

    features: int
    kernel: int
    norm: Callable[..., nn.Module]
    activation: Callable[[Array], Array] | None = None
    stride: int = 1
    dilation: int = 1
    depthwise: bool = False
    dtype: DTypeLike | None = None
    param_dtype: DTypeLike = jnp.float32

    @nn.compact
    def __call__(self, x: Array) -> Array:
        pad = (self.kernel - 1) // 2 * self.dilation
        kw = dict(
            padding=((pad, pad), (pad, pad)),
            kernel_dilation=self.dilation,
            use_bias=False,
            kernel_init=_kaiming_out,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            name="conv",
        )
        k, s = (self.kernel, self.kernel), (self.stride, self.stride)
        if self.depthwise:  # kernel (k, k, 1, C), torch's (C, 1, k, k)
            x = nn.Conv(self.features, k, s, feature_group_count=x.shape[-1], **kw)(x)
        else:  # fcnjax's Conv: the kernel gradient as matrix products, faster on CPU
            x = Conv(self.features, k, s, **kw)(x)
        x = self.norm(name="bn")(x)
        return x if self.activation is None else self.activation(x)


class _SqueezeExcitation(nn.Module):
    """torchvision's ``SqueezeExcitation`` (Hu et al., 2018) with ``Hardsigmoid``: the
    input scaled per channel by ``hardsigmoid(fc2(relu(fc1(mean over H, W))))``, ``fc1``
    and ``fc2`` 1x1 convolutions with bias; ``hardsigmoid(x) = relu6(x + 3) / 6``."""

    squeeze: int
    dtype: DTypeLike | None = None
    param_dtype: DTypeLike = jnp.float32

    @nn.compact
    def __call__(self, x: Array) -> Array:
        kw = dict(kernel_init=_kaiming_out, dtype=self.dtype, param_dtype=self.param_dtype)
        s = jnp.mean(x, axis=(1, 2), keepdims=True)
        s = nn.relu(Conv(self.squeeze, 1, name="fc1", **kw)(s))
        return x * jax.nn.hard_sigmoid(Conv(x.shape[-1], 1, name="fc2", **kw)(s))


class _InvertedResidual(nn.Module):
    """torchvision's ``InvertedResidual`` for one row of :data:`LARGE` (channels already
    scaled): ``block_0`` ... ``block_3``, as torch's ``block.0`` ... ``block.3``."""

    cnf: Bneck
    dilation: int
    norm: Callable[..., nn.Module]
    dtype: DTypeLike | None = None
    param_dtype: DTypeLike = jnp.float32

    @nn.compact
    def __call__(self, x: Array) -> Array:
        cnf, kw = self.cnf, dict(dtype=self.dtype, param_dtype=self.param_dtype)
        act = jax.nn.hard_swish if cnf.hardswish else nn.relu
        layers = []
        if cnf.expanded != cnf.input:
            layers.append(functools.partial(_ConvBN, cnf.expanded, 1, self.norm, act))
        stride = 1 if self.dilation > 1 else cnf.stride
        dw = functools.partial(_ConvBN, cnf.expanded, cnf.kernel, self.norm, act, stride)
        layers.append(functools.partial(dw, dilation=self.dilation, depthwise=True))
        if cnf.se:
            layers.append(functools.partial(_SqueezeExcitation, make_divisible(cnf.expanded // 4)))
        layers.append(functools.partial(_ConvBN, cnf.out, 1, self.norm, None))
        h = x
        for j, layer in enumerate(layers):
            h = layer(name=f"block_{j}", **kw)(h)
        return h + x if cnf.stride == 1 and cnf.input == cnf.out else h


class MobileNetV3Large(nn.Module):
    """torchvision's ``mobilenet_v3_large`` ``features``, returning the taps a
    segmentation decoder needs.

    Activations: ReLU in the first six blocks, hardswish (``x * relu6(x + 3) / 6``) in the
    stem, the others and ``features_16``. Channels are torchvision's ``width_mult``
    arithmetic, ``make_divisible(c * width, 8)`` (so at least 8), ``features_16`` six times
    the last block's.

    With ``dilated=True`` (torchvision's ``mobilenet_v3_large(dilated=True)``, as its
    ``lraspp_mobilenet_v3_large`` and ``deeplabv3_mobilenet_v3_large`` build it) the last
    three blocks (``features_13`` ... ``features_15``) dilate their depthwise
    convolutions by 2 and keep stride 16 instead of going to 32.

    Attributes:
      width: torchvision's ``width_mult``.
      dilated: output stride 16 instead of 32.
      levels: how many of the taps f1 ... f5 (:data:`LEVELS`) to compute: the encoder
        stops there (4: no ``features_13`` ... ``features_16`` parameters).
      bn_momentum: BatchNorm running-average momentum (torchvision's 0.01 is 0.99 here).
      bn_axis_name: the mapped axis whose devices share batch statistics (pmap).
      dtype: computation dtype; param_dtype: parameter dtype.

    Returns a dict of ``(N, h, w, C)`` arrays, for an input ``(N, H, W, 3)``: the levels
    ``features_1``, ``features_3``, ``features_6``, ``features_12``, ``features_16`` (the
    outputs of those modules of torchvision's ``features``; strides 2, 4, 8, 16, 32 or 16
    with ``dilated``; 16, 24, 40, 112, 960 channels), and torchvision's segmentation taps
    ``low`` (``features_4``'s output: stride 8, 40 channels) and ``high``
    (= ``features_16``). A stride-2 convolution maps ``h`` to ``ceil(h / 2)``.

    >>> import jax, jax.numpy as jnp
    >>> taps = jax.eval_shape(lambda x: MobileNetV3Large(dilated=True).init_with_output(
    ...     jax.random.key(0), x)[0], jnp.ones((1, 65, 71, 3)))
    >>> taps["low"].shape, taps["high"].shape
    ((1, 9, 9, 40), (1, 5, 5, 960))
    """

    width: float = 1.0
    dilated: bool = False
    levels: int = 5
    bn_momentum: float = 0.99
    bn_axis_name: str | None = None
    dtype: DTypeLike | None = None
    param_dtype: DTypeLike = jnp.float32

    @nn.compact
    def __call__(self, x: ArrayLike, train: bool = False) -> dict[str, Array]:
        if not self.width > 0:
            raise ValueError(f"`width` must be a positive number; got {self.width!r}.")
        if self.levels not in range(1, 6):
            raise ValueError(f"`levels` must be 1 ... 5 (f1 ... f5); got {self.levels!r}.")
        x = jnp.asarray(x)
        if x.ndim != 4:
            raise ValueError(f"MobileNetV3 input must be (N, H, W, C); got shape {x.shape}.")
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        norm = functools.partial(
            nn.BatchNorm,
            use_running_average=not train,
            momentum=self.bn_momentum,
            epsilon=1e-3,
            axis_name=self.bn_axis_name,
            **kw,
        )

        def adjust(c: int) -> int:
            return make_divisible(c * self.width)

        last = int(LEVELS[self.levels - 1].split("_")[1])
        hs = jax.nn.hard_swish
        x = _ConvBN(adjust(16), 3, norm, hs, stride=2, name="features_0", **kw)(x)
        taps = {}
        for i, row in enumerate(LARGE[:last], 1):
            cnf = row._replace(input=adjust(row.input), expanded=adjust(row.expanded))
            cnf = cnf._replace(out=adjust(row.out))
            dilation = 2 if self.dilated and i >= _FIRST_DILATED else 1
            x = _InvertedResidual(cnf, dilation, norm, name=f"features_{i}", **kw)(x)
            taps[f"features_{i}"] = x
        if last == 16:
            x = _ConvBN(6 * x.shape[-1], 1, norm, hs, name="features_16", **kw)(x)
            taps["features_16"] = taps["high"] = x
        if LOW in taps:
            taps["low"] = taps[LOW]
        return {k: taps[k] for k in (*LEVELS, "low", "high") if k in taps}
