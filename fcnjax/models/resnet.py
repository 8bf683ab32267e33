"""ResNet (He et al., 2016) as a segmentation encoder, channels-last, torchvision's names.

Two arithmetic styles, so that both public ImageNet releases load exactly
(:func:`fcnjax.weights.load_resnet`):

* ``"torchvision"`` (ResNet v1.5, torchvision's ``resnet18`` ... ``resnet152``): a
  bottleneck's stride on its 3x3 convolution, convolutions without bias, BatchNorm
  epsilon 1e-5;
* ``"keras"`` (ResNet v1 as Caffe and ``keras.applications.ResNet50/101/152``): the
  stride on the first 1x1 convolution, every convolution with a bias, epsilon 1.001e-5.

Parameters are named as torchvision's state dict with ``.`` between a layer and its
block index written ``_``: ``conv1``, ``bn1``, ``layer1_0/conv1`` ... ``layer4_2/bn3``,
``layer*_0/downsample_conv`` and ``downsample_bn``. BatchNorm statistics are in
``batch_stats``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import flax.linen as nn
import jax.numpy as jnp

from fcnjax.layers import Conv
from fcnjax.models.vgg import scaled
from fcnjax.typing import Array, ArrayLike, DTypeLike

__all__ = [
    "DEPTHS",
    "STYLES",
    "ResNet",
    "ResNet18",
    "ResNet34",
    "ResNet50",
    "ResNet101",
    "ResNet152",
]

# Blocks per stage, and whether the stage uses bottleneck blocks (expansion 4).
DEPTHS = {
    18: ((2, 2, 2, 2), False),
    34: ((3, 4, 6, 3), False),
    50: ((3, 4, 6, 3), True),
    101: ((3, 4, 23, 3), True),
    152: ((3, 8, 36, 3), True),
}
STYLES = ("torchvision", "keras")
# torchvision initialises convolutions with Kaiming normal, fan-out.
_kaiming_out = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


def _pad(d: int) -> tuple[tuple[int, int], tuple[int, int]]:
    return ((d, d), (d, d))


class _Block(nn.Module):
    """A basic (two 3x3) or bottleneck (1x1, 3x3, 1x1 with 4x channels) residual block."""

    planes: int
    stride: int
    dilation: int
    bottleneck: bool
    downsample: bool
    conv: Callable[..., nn.Module]
    norm: Callable[..., nn.Module]
    keras: bool

    @nn.compact
    def __call__(self, x: Array) -> Array:
        conv, norm, s, d = self.conv, self.norm, self.stride, self.dilation
        if self.bottleneck:
            # v1 (Keras, Caffe) strides the first 1x1; v1.5 (torchvision) the 3x3.
            s1, s2 = (s, 1) if self.keras else (1, s)
            h = nn.relu(norm(name="bn1")(conv(self.planes, 1, s1, name="conv1")(x)))
            h = conv(self.planes, 3, s2, dilation=d, name="conv2")(h)
            h = nn.relu(norm(name="bn2")(h))
            out = norm(name="bn3")(conv(self.planes * 4, 1, name="conv3")(h))
        else:
            h = nn.relu(norm(name="bn1")(conv(self.planes, 3, s, dilation=d, name="conv1")(x)))
            out = norm(name="bn2")(conv(self.planes, 3, dilation=d, name="conv2")(h))
        if self.downsample:
            x = norm(name="downsample_bn")(conv(out.shape[-1], 1, s, name="downsample_conv")(x))
        return nn.relu(out + x)


class ResNet(nn.Module):
    """ResNet-18/34/50/101/152 returning the taps a segmentation decoder needs.

    The stem is a 7x7 stride-2 convolution (padding 3), BatchNorm, ReLU and 3x3 stride-2
    max pooling (padding 1); then four stages of residual blocks, the first at stride 1
    and the others at stride 2. With ``output_stride`` 16 or 8, the last one or two
    stages keep their resolution and dilate their 3x3 convolutions instead (Chen et al.,
    DeepLab; torchvision's ``replace_stride_with_dilation``, as its ``fcn_resnet50``
    uses): a stage's first block keeps the previous dilation, the others double it.
    ``dilate_first_block`` dilates the first block too, as segmentation_models_pytorch's
    ``make_dilated`` does (every convolution of the stage; its DeepLabV3+).

    Attributes:
      depth: 18, 34, 50, 101 or 152.
      style: ``"torchvision"`` (v1.5) or ``"keras"`` (v1; see the module docstring).
      output_stride: 32, 16 or 8: the stride of ``layer4``.
      width: channel multiplier (``0.125`` for fast tests).
      stages: how many of the four stages to compute (a decoder that stops at ``layer3``
        needs 3).
      bn_momentum: BatchNorm running-average momentum (torchvision's 0.1 is 0.9 here).
      bn_axis_name: the mapped axis whose devices share batch statistics (pmap).
      dtype: computation dtype; param_dtype: parameter dtype.
      dilate_first_block: a dilated stage's first block takes the stage's dilation
        (smp's rule) rather than the previous one (torchvision's).

    Returns a dict of ``(N, h, w, C)`` arrays: ``stem`` (stride 2, after the stem's ReLU,
    ``64 * width`` channels), ``layer1`` ... ``layer4`` (strides 4, 8, 16, 32 at
    ``output_stride=32``; ResNet-50: 256, 512, 1024, 2048 channels).

    >>> import jax, jax.numpy as jnp
    >>> taps = jax.eval_shape(lambda x: ResNet(50, output_stride=8).init_with_output(
    ...     jax.random.key(0), x)[0], jnp.ones((1, 97, 131, 3)))
    >>> taps["layer2"].shape, taps["layer4"].shape
    ((1, 13, 17, 512), (1, 13, 17, 2048))
    """

    depth: int = 50
    style: str = "torchvision"
    output_stride: int = 32
    width: float = 1.0
    stages: int = 4
    bn_momentum: float = 0.9
    bn_axis_name: str | None = None
    dtype: DTypeLike | None = None
    param_dtype: DTypeLike = jnp.float32
    dilate_first_block: bool = False

    def _check(self) -> None:
        if self.depth not in DEPTHS:
            raise ValueError(f"`depth` must be one of {sorted(DEPTHS)}; got {self.depth!r}.")
        if self.style not in STYLES:
            raise ValueError(f"`style` must be one of {STYLES}; got {self.style!r}.")
        if self.output_stride not in (8, 16, 32):
            raise ValueError(f"`output_stride` must be 8, 16 or 32; got {self.output_stride!r}.")
        if self.stages not in range(1, 5):
            raise ValueError(f"`stages` must be 1, 2, 3 or 4; got {self.stages!r}.")

    @nn.compact
    def __call__(self, x: ArrayLike, train: bool = False) -> dict[str, Array]:
        self._check()
        x = jnp.asarray(x)
        if x.ndim != 4:
            raise ValueError(f"ResNet input must be (N, H, W, C); got shape {x.shape}.")
        keras = self.style == "keras"
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)

        def conv(features, k, stride=1, *, dilation=1, name):
            pad = dilation * (k - 1) // 2
            # fcnjax's Conv: XLA:CPU's kernel gradient of a 1x1 convolution took 9x its
            # forward; as matrix products (ops.conv) it takes about the forward's time.
            return Conv(
                features,
                (k, k),
                (stride, stride),
                padding=_pad(pad),
                kernel_dilation=dilation,
                use_bias=keras,
                kernel_init=_kaiming_out,
                name=name,
                **kw,
            )

        norm = functools.partial(
            nn.BatchNorm,
            use_running_average=not train,
            momentum=self.bn_momentum,
            epsilon=1.001e-5 if keras else 1e-5,
            axis_name=self.bn_axis_name,
            **kw,
        )
        x = nn.relu(norm(name="bn1")(conv(scaled(64, self.width), 7, 2, name="conv1")(x)))
        taps = {"stem": x}
        x = nn.max_pool(x, (3, 3), (2, 2), padding=_pad(1))  # -inf padding, as torch
        stages, bottleneck = DEPTHS[self.depth]
        dilate_from = {32: 5, 16: 4, 8: 3}[self.output_stride]  # first stage to dilate (1-based)
        dilation = 1
        for i, blocks in enumerate(stages[: self.stages]):
            stage = i + 1
            planes = scaled(64 * 2**i, self.width)
            stride = 1 if stage == 1 else 2
            previous = dilation
            if stage >= dilate_from and stride == 2:
                dilation, stride = dilation * 2, 1
            previous = dilation if self.dilate_first_block else previous
            out_channels = planes * 4 if bottleneck else planes
            for j in range(blocks):
                x = _Block(
                    planes,
                    stride if j == 0 else 1,
                    previous if j == 0 else dilation,
                    bottleneck,
                    downsample=j == 0 and (stride != 1 or x.shape[-1] != out_channels),
                    conv=conv,
                    norm=norm,
                    keras=keras,
                    name=f"layer{stage}_{j}",
                )(x)
            taps[f"layer{stage}"] = x
        return taps


ResNet18 = functools.partial(ResNet, 18)
ResNet34 = functools.partial(ResNet, 34)
ResNet50 = functools.partial(ResNet, 50)
ResNet101 = functools.partial(ResNet, 101)
ResNet152 = functools.partial(ResNet, 152)
