"""Fully convolutional networks (Long, Shelhamer & Darrell, 2015) on VGG16 or ResNet."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from fcnjax.layers import ConvTranspose, Upsample, bilinear_init, crop_to
from fcnjax.models.encoders import RESNETS, encoder
from fcnjax.models.mobilenet import is_mobilenet_layer
from fcnjax.models.vgg import VGG16, VGG16_CONVS, scaled
from fcnjax.typing import Array, ArrayLike, DTypeLike

__all__ = ["FCN", "FCN8s", "FCN16s", "FCN32s", "VARIANTS", "SKIPS", "backbone_mask"]

VARIANTS = ("32s", "16s", "8s")
SKIPS = ("score", "features")
# keras-segmentation's fcn_8 on its vanilla encoder and MobileNet: EncoderFCN.
BACKBONES = ("vgg16", "vgg16_bn", *RESNETS)
_glorot = nn.initializers.glorot_uniform()  # Keras' default, for the POSTECH lab's network


class FCN(nn.Module):
    """FCN-32s / 16s / 8s: a VGG16 classifier turned fully convolutional, with skips.

    On a ResNet (``backbone="resnet50"``, ...), which has no fully connected layers to
    convolutionalise, ``score_fr`` scores ``layer4`` (stride 32) and the skips are
    ``layer3`` (16) and ``layer2`` (8). keras-segmentation's ``fcn_8_resnet50`` puts a
    7x7, 4096-filter convolution (411 million parameters) on ``layer4`` first; fcnjax
    does not.

    ``skip="score"`` is the paper's network. VGG16 with fc6/fc7 as convolutions; a 1x1
    score layer on fc7 (``score_fr``); for 16s and 8s a learnable x2 transposed
    convolution (kernel 4, bilinear initialisation, no bias) added to a 1x1 score layer on
    pool4 (``score_pool4``), and for 8s once more with pool3 (``score_pool3``); all score
    layers start at zero. A fixed bilinear upsampler (x32 / x16 / x8, never trained)
    returns to the input resolution.

    ``skip="features"`` is the POSTECH segmentation lab's network: conv6 (7x7, 4096,
    ReLU), conv7 (1x1, 4096, ReLU), a 1x1 score layer with ReLU, a learnable x2
    transposed convolution to 512 channels added to pool4's *features*, another to 256
    channels added to pool3, and a learnable x8 transposed convolution (kernel 16) to the
    classes. All use Keras' default initialisers, as the lab does. With ``num_classes=2``
    at 224x224 it has 136,514,116 parameters, 14,714,688 of them VGG16's convolutions.

    Any input size works: pooling is ceil-mode (SAME), each upsampled map is cropped to
    its skip's size from the top-left corner (SAME padding puts the extra samples at the
    end), and the logits are cropped to the input's ``(H, W)``.

    Attributes:
      num_classes: number of classes ``K``.
      variant: ``"32s"``, ``"16s"`` or ``"8s"``: the stride of the finest skip.
      backbone: ``"vgg16"``, ``"vgg16_bn"`` (BatchNorm after each convolution, as
        torchvision's ``vgg16_bn``: trains from scratch in far fewer steps), or a ResNet
        (``"resnet18"`` ... ``"resnet152"``, with ``skip="score"``).
      backbone_style: a ResNet's arithmetic: ``"torchvision"`` or ``"keras"``
        (:class:`fcnjax.models.resnet.ResNet`); the weights file decides.
      skip: ``"score"`` (the paper) or ``"features"`` (the POSTECH lab).
      width: channel multiplier of the backbone and conv6/conv7 (``1.0``: the real network).
      dropout: dropout after fc6 / fc7 in training (VGG16 only: a ResNet has neither).
      bn_axis_name: with ``backbone="vgg16_bn"`` under ``pmap``, the axis whose devices
        share batch statistics (the trainer sets it in ``parallel="pmap"`` mode).
      final_upsample: fixed final upsampler of ``skip="score"``: ``"transposed"`` (FCN's
        bilinear deconvolution) or ``"bilinear"`` (exact interpolation).
      dtype: computation dtype (e.g. ``jnp.bfloat16``); param_dtype: parameter dtype.

    Returns logits ``(N, H, W, num_classes)``, aligned with the input (no softmax).

    The VGG16 convolutions are ``params['backbone']['block*']``; :func:`backbone_mask`
    marks them (to freeze them, or to load ImageNet weights with
    :func:`fcnjax.weights.into_backbone`).

    >>> import jax, jax.numpy as jnp
    >>> model = FCN8s(num_classes=21, width=0.0625)
    >>> x = jnp.ones((1, 97, 131, 3))
    >>> params = jax.eval_shape(model.init, jax.random.key(0), x)  # shapes only: fast
    >>> jax.eval_shape(model.apply, params, x).shape
    (1, 97, 131, 21)
    """

    num_classes: int
    variant: str = "8s"
    backbone: str = "vgg16"
    skip: str = "score"
    width: float = 1.0
    dropout: float = 0.5
    final_upsample: str = "transposed"
    backbone_style: str = "torchvision"
    bn_axis_name: str | None = None
    dtype: DTypeLike | None = None
    param_dtype: DTypeLike = jnp.float32

    def _check(self) -> None:
        if not isinstance(self.num_classes, int) or self.num_classes < 1:
            raise ValueError(f"`num_classes` must be a positive int; got {self.num_classes!r}.")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"`dropout` must be a rate in [0, 1); got {self.dropout!r}.")
        if self.variant not in VARIANTS:
            raise ValueError(f"`variant` must be one of {VARIANTS}; got {self.variant!r}.")
        if self.skip not in SKIPS:
            raise ValueError(f"`skip` must be one of {SKIPS}; got {self.skip!r}.")
        if self.backbone not in BACKBONES:
            hint = " (keras-segmentation's fcn_8 / fcn_32 on it: models.get('fcn_8'))"
            raise ValueError(
                f"`backbone` must be one of {BACKBONES}; got {self.backbone!r}"
                f"{hint if self.backbone == 'vanilla' else ''}."
            )
        if self.skip == "features" and self.backbone in RESNETS:
            raise ValueError(
                "`skip='features'` is the POSTECH lab's VGG16 network; on a ResNet use "
                "skip='score'."
            )

    @nn.compact
    def __call__(self, x: ArrayLike, train: bool = False) -> Array:
        """``(N, H, W, 3) -> (N, H, W, num_classes)`` logits."""
        self._check()
        x = jnp.asarray(x)
        if x.ndim != 4:
            raise ValueError(f"FCN input must be (N, H, W, C); got shape {x.shape}.")
        size = x.shape[1:3]
        k = self.num_classes
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        bn = dict(batch_norm=self.backbone == "vgg16_bn", bn_axis_name=self.bn_axis_name)
        steps = {"32s": [], "16s": ["pool4"], "8s": ["pool4", "pool3"]}[self.variant]
        factor = {"32s": 32, "16s": 16, "8s": 8}[self.variant]

        if self.skip == "score":
            if self.backbone in RESNETS:
                found = encoder(
                    self.backbone,
                    width=self.width,
                    style=self.backbone_style,
                    bn_axis_name=self.bn_axis_name,
                    **kw,
                )(x, train)
                taps = {"fc7": found["layer4"], "pool4": found["layer3"], "pool3": found["layer2"]}
            else:
                vgg = VGG16(
                    self.width, fc=True, fc_dropout=self.dropout, name="backbone", **bn, **kw
                )
                taps = vgg(x, train)
            score = nn.Conv(k, (1, 1), kernel_init=nn.initializers.zeros, name="score_fr", **kw)(
                taps["fc7"]
            )
            for tap in steps:
                up = ConvTranspose(
                    k,
                    4,
                    2,
                    use_bias=False,
                    kernel_init=bilinear_init,
                    name="upscore2" if tap == "pool4" else "upscore_pool4",
                    **kw,
                )(score)
                side = nn.Conv(
                    k, (1, 1), kernel_init=nn.initializers.zeros, name=f"score_{tap}", **kw
                )(taps[tap])
                score = crop_to(up, side.shape[1:3]) + side
            logits = Upsample(factor, self.final_upsample, dtype=self.dtype)(score)
            return crop_to(logits, size)

        # skip == "features": the POSTECH lab's variant.
        taps = VGG16(self.width, fc=False, name="backbone", **bn, **kw)(x, train)
        conv = functools.partial(nn.Conv, kernel_init=_glorot, padding="SAME", **kw)
        h = nn.relu(conv(scaled(4096, self.width), (7, 7), name="conv6")(taps["pool5"]))
        h = nn.relu(conv(scaled(4096, self.width), (1, 1), name="conv7")(h))
        h = nn.relu(conv(k, (1, 1), name="score")(h))
        for tap, name in zip(steps, ("upscore2", "upscore_pool4")):
            side = taps[tap]
            up = ConvTranspose(side.shape[-1], 4, 2, kernel_init=_glorot, name=name, **kw)(h)
            h = crop_to(up, side.shape[1:3]) + side
        up = ConvTranspose(
            k, 2 * factor, factor, kernel_init=_glorot, name=f"upscore{factor}", **kw
        )(h)
        return crop_to(up, size)


FCN32s = functools.partial(FCN, variant="32s")
FCN16s = functools.partial(FCN, variant="16s")
FCN8s = functools.partial(FCN, variant="8s")


def _is_resnet_layer(name: str) -> bool:
    return name in ("conv1", "bn1") or (name.startswith("layer") and "_" in name)


def _is_mobilenet_v3_layer(name: str) -> bool:
    return name.startswith("features_")


def backbone_mask(params: Mapping[str, Any], key: str = "backbone") -> Any:
    """A pytree of bools like ``params``: True for the encoder's pretrainable layers.

    These are the VGG16 convolutions (``block*_conv*``), a ResNet's or MobileNet's every
    layer (``conv1``, ``bn1``, ``layer*``; ``conv_dw_*``, ``block_*``, ...; MobileNetV3's
    ``features_*``), under ``key``.

    Use it to freeze the backbone (the POSTECH lab sets ``base_model.trainable = False``), e.g.
    ``optax.multi_transform({True: optax.set_to_zero(), False: tx}, backbone_mask(p))``.
    fc6/fc7 are not marked: FCN fine-tunes them. Accepts the ``params`` collection or the
    whole variables dict (``{'params': ...}``).

    >>> import jax, jax.numpy as jnp
    >>> p = jax.eval_shape(FCN32s(2).init, jax.random.key(0), jnp.ones((1, 32, 32, 3)))
    >>> mask = backbone_mask(p)
    >>> mask["params"]["backbone"]["block1_conv1"]["kernel"], mask["params"]["score_fr"]["bias"]
    (True, False)
    """

    def mark(path, _):
        names = [getattr(p, "key", None) for p in path]
        if key not in names:
            return False
        after = names[names.index(key) + 1 :]
        first = after[0] if after else ""
        return (
            first in VGG16_CONVS
            or _is_resnet_layer(first)
            or is_mobilenet_layer(first)
            or _is_mobilenet_v3_layer(first)
        )

    return jax.tree_util.tree_map_with_path(mark, params)
