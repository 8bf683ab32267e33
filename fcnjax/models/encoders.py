"""Pretrainable encoders by name, and their features at strides 2, 4, 8, 16 and 32.

A decoder (FCN, keras-segmentation's U-Net and SegNet, torchvision's FCN head) asks for
an encoder by name (``"vgg16"``, ``"resnet50"``, ...) and reads its five feature maps,
``f1`` ... ``f5`` at strides 2 ... 32 (keras-segmentation's ``levels``):

* VGG16: ``pool1`` ... ``pool5``;
* ResNet: ``stem`` (after the stem's ReLU), ``layer1`` ... ``layer4``;
* MobileNet v1 (``"mobilenet"``, keras-segmentation's, :class:`MobileNet`): the outputs of
  blocks 1, 3, 5, 11, 13 (``conv_pw_<i>_relu``);
* MobileNetV2 (``"mobilenet_v2"``, :class:`MobileNetV2`, Keras' or torchvision's arithmetic
  by ``style``): after blocks 0, 2, 5, 12 and the last 1x1 convolution, as
  segmentation_models_pytorch takes them;
* torchvision's MobileNetV3-Large (``"mobilenet_v3_large"``,
  :class:`~fcnjax.models.mobilenet_v3.MobileNetV3Large`): ``features_1``, ``features_3``,
  ``features_6``, ``features_12``, ``features_16``; at ``output_stride=16`` (torchvision's
  ``dilated=True``) ``features_16`` stays at stride 16. Its taps also hold torchvision's
  segmentation taps ``low`` (stride 8, 40 channels: the aux head's and LR-ASPP's) and
  ``high`` (= ``features_16``, 960 channels: DeepLabV3's and LR-ASPP's ``out``);
* keras-segmentation's vanilla encoder (``"vanilla"``, :class:`VanillaEncoder`):
  ``pool1`` ... ``pool5``. It has no pretrained weights (it is not in :data:`PRETRAINABLE`).

The encoder is always the submodule ``backbone``, so :func:`fcnjax.models.backbone_mask`
and :func:`fcnjax.weights.into_backbone` find it in every model.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn

from fcnjax.models import mobilenet_v3
from fcnjax.models.mobilenet import MOBILENET_TAPS, MOBILENET_V2_TAPS, MobileNet, MobileNetV2
from fcnjax.models.resnet import STYLES, ResNet
from fcnjax.models.vanilla import VanillaEncoder
from fcnjax.models.vgg import VGG16
from fcnjax.typing import Array

__all__ = ["ENCODERS", "MOBILENETS", "PRETRAINABLE", "RESNETS", "encoder", "levels"]

RESNETS = {"resnet18": 18, "resnet34": 34, "resnet50": 50, "resnet101": 101, "resnet152": 152}
MOBILENETS = ("mobilenet", "mobilenet_v2")
# The encoders that ImageNet weights exist for (init.backbone_weights).
PRETRAINABLE = ("vgg16", "vgg16_bn", *RESNETS, *MOBILENETS, "mobilenet_v3_large")
ENCODERS = (*PRETRAINABLE, "vanilla")


def encoder(
    name: str,
    *,
    width: float = 1.0,
    style: str = "torchvision",
    output_stride: int = 32,
    levels: int = 5,
    bn_axis_name: str | None = None,
    **kw: Any,
) -> nn.Module:
    """The encoder ``name`` as the submodule ``backbone`` of the calling module.

    Args:
      name: one of :data:`ENCODERS`.
      width: channel multiplier.
      style: a ResNet's or MobileNetV2's arithmetic, ``"torchvision"`` or ``"keras"``
        (ignored otherwise).
      output_stride: a ResNet's or MobileNetV2's stride of ``f5`` (32, 16 or 8),
        MobileNetV3's (32 or 16); the others only have 32.
      levels: how many of ``f1`` ... ``f5`` the decoder reads: the encoder stops there
        (keras-segmentation's U-Net and SegNet read four, and have no ``block5`` or
        ``layer4`` parameters).
      bn_axis_name: the mapped axis of the BatchNorm statistics (``vgg16_bn``, ResNets,
        MobileNets, ``vanilla``).
      **kw: ``dtype``, ``param_dtype``, and VGG16's ``fc`` and ``fc_dropout``.
    """
    if name not in ENCODERS:
        raise ValueError(f"unknown backbone {name!r}; choose one of {ENCODERS}.")
    if levels not in range(1, 6):
        raise ValueError(f"`levels` must be 1 ... 5 (f1 ... f5); got {levels!r}.")
    if style not in STYLES and (name in RESNETS or name == "mobilenet_v2"):
        raise ValueError(f"`backbone_style` must be one of {STYLES}; got {style!r}.")
    common = dict(bn_axis_name=bn_axis_name, name="backbone")
    vgg = {k: kw.pop(k) for k in ("fc", "fc_dropout") if k in kw}  # VGG16's alone
    if name in RESNETS:
        return ResNet(RESNETS[name], style, output_stride, width, stages=levels - 1, **common, **kw)
    if name == "mobilenet_v2":
        return MobileNetV2(width, style, output_stride, levels, **common, **kw)
    if name == "mobilenet_v3_large":
        if output_stride not in (16, 32):
            raise ValueError(f"`output_stride` must be 32 or 16 for {name}; got {output_stride!r}.")
        dilated = output_stride == 16
        return mobilenet_v3.MobileNetV3Large(width, dilated, levels, **common, **kw)
    if output_stride != 32:
        raise ValueError(f"`output_stride` must be 32 for {name}; got {output_stride!r}.")
    if name == "mobilenet":
        return MobileNet(width, levels, **common, **kw)
    if name == "vanilla":
        return VanillaEncoder(width, levels, **common, **kw)
    return VGG16(width, batch_norm=name == "vgg16_bn", blocks=levels, **common, **vgg, **kw)


def levels(taps: dict[str, Array]) -> tuple[Array, ...]:
    """``(f1, f2, f3, f4, f5)``: an encoder's features at strides 2 ... 32, from its taps
    (as many as it computed)."""
    known = (
        ("stem", "layer1", "layer2", "layer3", "layer4"),
        MOBILENET_TAPS,
        MOBILENET_V2_TAPS,
        mobilenet_v3.LEVELS,
    )
    names = next((n for n in known if n[0] in taps), ("pool1", "pool2", "pool3", "pool4", "pool5"))
    return tuple(taps[n] for n in names if n in taps)
