"""fcnjax's networks, chosen by name: ``fcnjax.models.get("fcn8s", num_classes=21)``.

Names follow the projects users come from: the FCN paper's (``fcn32s``, ``fcn16s``,
``fcn8s``, and ``fcn8s_resnet50`` ... on a ResNet), torchvision's (``fcn_resnet50``,
``fcn_resnet101``, ``deeplabv3_resnet50``, ``deeplabv3_resnet101``,
``deeplabv3_mobilenet_v3_large``, ``lraspp_mobilenet_v3_large``, ``resnet18`` ...
``resnet152``, ``mobilenet_v3_large``), segmentation_models_pytorch's DeepLabV3+
(``deeplabv3plus_resnet50``, ``deeplabv3plus_resnet101``, ``deeplabv3plus_mobilenet_v2``;
``deeplabv3plus`` takes any ``backbone``) and keras-segmentation's
(``unet_mini``, ``unet``, ``vgg_unet``, ``resnet50_unet``, ``vgg_segnet``,
``resnet50_segnet``, ``fcn_8``, ``fcn_32``, ``fcn_8_vgg``, ``fcn_32_vgg``,
``fcn_8_resnet50``, ``fcn_32_resnet50``, ``pspnet``, ``vgg_pspnet``, ``resnet50_pspnet``,
``pspnet_50``, ``pspnet_101``, ``mobilenet_unet``, ``mobilenet_segnet``,
``fcn_8_mobilenet``, ``fcn_32_mobilenet``, ``segnet``; SegNet-Basic is ``segnet_basic``).
Case, ``-`` and ``_`` are ignored.
keras-segmentation's names give fcnjax's network of that name, which differs from
keras-segmentation's where its own docstring says so (``fcn_8_vgg`` ... ``fcn_32_resnet50``
are the FCN paper's head: no learnt final upsampler, and on a ResNet no 7x7, 4096-filter
convolution; U-Net and SegNet: scores resized to the input).
``unet3_plus`` is UNet 3+ as its authors' PyTorch code builds it (:class:`UNet3Plus`).

``unet`` (and :data:`UNet`) and ``segnet`` changed meaning in issue 27: ``unet`` was
keras-segmentation's ``unet_mini`` (now ``unet_mini``, :class:`UNetMini`) and is
keras-segmentation's ``unet``, its U-Net decoder on its vanilla encoder; ``segnet`` was
SegNet-Basic (now ``segnet_basic``; the class :class:`SegNet`) and is keras-segmentation's
``segnet``, its SegNet decoder on its vanilla encoder.

>>> from fcnjax import models
>>> models.get("fcn8s", num_classes=21).variant
'8s'
>>> "fcn8s" in models.NAMES, "deeplabv3_resnet50" in models.NAMES
(True, True)
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import flax.linen as nn

from fcnjax.models import encoders
from fcnjax.models.aspp import ASPP
from fcnjax.models.autoencoder import ConvAutoencoder
from fcnjax.models.checks import check_arguments
from fcnjax.models.deeplab import DeepLabV3, DeepLabV3Plus
from fcnjax.models.encoders import ENCODERS
from fcnjax.models.fcn import FCN, FCN8s, FCN16s, FCN32s, backbone_mask
from fcnjax.models.fcn_resnet import FCNResNet
from fcnjax.models.keras_segmentation import EncoderFCN, EncoderSegNet, EncoderUNet
from fcnjax.models.lraspp import LRASPP, LRASPPHead
from fcnjax.models.mobilenet import MobileNet, MobileNetV2
from fcnjax.models.mobilenet_v3 import MobileNetV3Large
from fcnjax.models.nnx_bridge import to_nnx
from fcnjax.models.pspnet import PSPNet
from fcnjax.models.pspnet_caffe import PSPNetCaffe
from fcnjax.models.resnet import ResNet, ResNet18, ResNet34, ResNet50, ResNet101, ResNet152
from fcnjax.models.segnet import SegNet
from fcnjax.models.unet3_plus import UNet3Plus
from fcnjax.models.unet_mini import UNetMini
from fcnjax.models.vanilla import VanillaEncoder
from fcnjax.models.vgg import VGG16

__all__ = [
    "ASPP",
    "DeepLabV3",
    "DeepLabV3Plus",
    "FCN",
    "FCN8s",
    "FCN16s",
    "FCN32s",
    "ENCODERS",
    "NAMES",
    "VGG16",
    "ConvAutoencoder",
    "EncoderFCN",
    "EncoderSegNet",
    "EncoderUNet",
    "FCNResNet",
    "LRASPP",
    "LRASPPHead",
    "MobileNet",
    "MobileNetV2",
    "MobileNetV3Large",
    "ResNet",
    "ResNet18",
    "ResNet34",
    "ResNet50",
    "ResNet101",
    "ResNet152",
    "PSPNet",
    "PSPNetCaffe",
    "REFERENCES",
    "SegNet",
    "UNet",
    "UNet3Plus",
    "UNetMini",
    "VanillaEncoder",
    "backbone_mask",
    "check_arguments",
    "backbone_of",
    "encoders",
    "field_value",
    "fields",
    "get",
    "renamed",
    "to_nnx",
]

# keras-segmentation's ``unet``: its U-Net decoder on its vanilla encoder.
UNet = functools.partial(EncoderUNet, backbone="vanilla")

_REGISTRY: dict[str, Callable[..., nn.Module]] = {
    "vgg16": VGG16,
    "fcn": FCN,
    "fcn32s": FCN32s,
    "fcn16s": FCN16s,
    "fcn8s": FCN8s,
    "conv_autoencoder": ConvAutoencoder,
    "autoencoder": ConvAutoencoder,
    "segnet_basic": SegNet,
    **{f"resnet{d}": functools.partial(ResNet, depth=d) for d in (18, 34, 50, 101, 152)},
    **{
        f"fcn{v}_resnet{d}": functools.partial(FCN, variant=v, backbone=f"resnet{d}")
        for v in ("32s", "16s", "8s")
        for d in (50, 101)
    },
    "fcn_resnet50": functools.partial(FCNResNet, backbone="resnet50"),
    "fcn_resnet101": functools.partial(FCNResNet, backbone="resnet101"),
    "mobilenet_v3_large": MobileNetV3Large,
    "lraspp_mobilenet_v3_large": LRASPP,
    "deeplabv3_resnet50": functools.partial(DeepLabV3, backbone="resnet50"),
    "deeplabv3_resnet101": functools.partial(DeepLabV3, backbone="resnet101"),
    "deeplabv3_mobilenet_v3_large": functools.partial(DeepLabV3, backbone="mobilenet_v3_large"),
    # segmentation_models_pytorch's DeepLabV3Plus.
    "deeplabv3plus": DeepLabV3Plus,
    "deeplabv3plus_resnet50": functools.partial(DeepLabV3Plus, backbone="resnet50"),
    "deeplabv3plus_resnet101": functools.partial(DeepLabV3Plus, backbone="resnet101"),
    "deeplabv3plus_mobilenet_v2": functools.partial(DeepLabV3Plus, backbone="mobilenet_v2"),
    # keras-segmentation's names.
    "unet_mini": UNetMini,
    "unet": UNet,
    "segnet": functools.partial(EncoderSegNet, backbone="vanilla"),
    "fcn_8": functools.partial(EncoderFCN, variant="8s"),
    "fcn_32": functools.partial(EncoderFCN, variant="32s"),
    "pspnet": PSPNet,
    "vgg_pspnet": functools.partial(PSPNet, backbone="vgg16"),
    "resnet50_pspnet": functools.partial(PSPNet, backbone="resnet50"),
    "pspnet_50": functools.partial(PSPNetCaffe, depth=50),
    "pspnet_101": functools.partial(PSPNetCaffe, depth=101),
    "vgg_unet": functools.partial(EncoderUNet, backbone="vgg16"),
    "resnet50_unet": functools.partial(EncoderUNet, backbone="resnet50"),
    "vgg_segnet": functools.partial(EncoderSegNet, backbone="vgg16"),
    "resnet50_segnet": functools.partial(EncoderSegNet, backbone="resnet50"),
    "fcn_8_vgg": FCN8s,
    "fcn_32_vgg": FCN32s,
    "fcn_8_resnet50": functools.partial(FCN, variant="8s", backbone="resnet50"),
    "fcn_32_resnet50": functools.partial(FCN, variant="32s", backbone="resnet50"),
    "unet3_plus": UNet3Plus,
    "mobilenet_unet": functools.partial(EncoderUNet, backbone="mobilenet"),
    "mobilenet_segnet": functools.partial(EncoderSegNet, backbone="mobilenet"),
    "fcn_8_mobilenet": functools.partial(EncoderFCN, variant="8s", backbone="mobilenet"),
    "fcn_32_mobilenet": functools.partial(EncoderFCN, variant="32s", backbone="mobilenet"),
}
NAMES = tuple(_REGISTRY)

_LONG = "Long et al., 2015"
# What each registered network follows (a paper or a library), for listings such as
# `fcnjax list networks`; tests check that every name has one.
REFERENCES: dict[str, str] = {
    "vgg16": "VGG16 (Simonyan & Zisserman, 2015), an encoder",
    "fcn": f"FCN ({_LONG}) of any variant= and backbone= (8s, vgg16)",
    **{f"fcn{v}": f"FCN-{v} ({_LONG}) on VGG16" for v in ("32s", "16s", "8s")},
    "conv_autoencoder": "the POSTECH segmentation lab's convolutional autoencoder",
    "autoencoder": "the POSTECH lab's autoencoder (= conv_autoencoder)",
    "segnet_basic": "SegNet-Basic (Badrinarayanan et al., 2017; segnet until issue 27)",
    **{f"resnet{d}": f"ResNet-{d} (He et al., 2016), an encoder" for d in (18, 34, 50, 101, 152)},
    **{
        f"fcn{v}_resnet{d}": f"FCN-{v} ({_LONG}) on ResNet-{d}"
        for v in ("32s", "16s", "8s")
        for d in (50, 101)
    },
    "fcn_resnet50": "torchvision's fcn_resnet50",
    "fcn_resnet101": "torchvision's fcn_resnet101",
    "mobilenet_v3_large": "MobileNetV3-Large (Howard et al., 2019), torchvision's, an encoder",
    "lraspp_mobilenet_v3_large": "torchvision's lraspp_mobilenet_v3_large (LR-ASPP)",
    "deeplabv3_resnet50": "torchvision's deeplabv3_resnet50 (Chen et al., 2017)",
    "deeplabv3_resnet101": "torchvision's deeplabv3_resnet101 (Chen et al., 2017)",
    "deeplabv3_mobilenet_v3_large": "torchvision's deeplabv3_mobilenet_v3_large",
    "deeplabv3plus": "segmentation_models_pytorch's DeepLabV3Plus (Chen et al., 2018), "
    "any backbone= (resnet50)",
    "deeplabv3plus_resnet50": "segmentation_models_pytorch's DeepLabV3Plus on ResNet-50",
    "deeplabv3plus_resnet101": "segmentation_models_pytorch's DeepLabV3Plus on ResNet-101",
    "deeplabv3plus_mobilenet_v2": "segmentation_models_pytorch's DeepLabV3Plus on MobileNetV2",
    "unet_mini": "keras-segmentation's unet_mini (32/64/128; fcnjax's unet before issue 27)",
    "unet": "keras-segmentation's unet (U-Net decoder, vanilla encoder)",
    "segnet": "keras-segmentation's segnet (SegNet decoder, vanilla encoder)",
    "fcn_8": "keras-segmentation's fcn_8 (its FCN-8 head, vanilla encoder)",
    "fcn_32": "keras-segmentation's fcn_32 (its FCN-32 head, vanilla encoder)",
    "pspnet": "keras-segmentation's pspnet (pyramid pooling, vanilla encoder)",
    "pspnet_50": "keras-segmentation's pspnet_50 (Caffe PSPNet, dilated ResNet-50)",
    "pspnet_101": "keras-segmentation's pspnet_101 (Caffe PSPNet, dilated ResNet-101)",
    **{
        name: f"keras-segmentation's {name}"
        for name in (
            "vgg_unet",
            "resnet50_unet",
            "vgg_segnet",
            "resnet50_segnet",
            "vgg_pspnet",
            "resnet50_pspnet",
            "mobilenet_unet",
            "mobilenet_segnet",
            "fcn_8_mobilenet",
            "fcn_32_mobilenet",
        )
    },
    "fcn_8_vgg": "keras-segmentation's fcn_8_vgg (= fcn8s)",
    "fcn_32_vgg": "keras-segmentation's fcn_32_vgg (= fcn32s)",
    "fcn_8_resnet50": "keras-segmentation's fcn_8_resnet50 (= fcn8s_resnet50)",
    "fcn_32_resnet50": "keras-segmentation's fcn_32_resnet50 (= fcn32s_resnet50)",
    "unet3_plus": "UNet 3+ (Huang et al., 2020), as its authors' UNet_3Plus (ZJUGiveLab)",
}


# Names whose network changed, with what a user of the former one needs to know.
_RENAMED = {
    "unet": "`unet` is keras-segmentation's unet since issue 27; the former unet (32/64/128 "
    "filters, `widths`, `upsample`) is now `unet_mini` (a workdir trained before: set "
    "model.name to unet_mini in its config.json).",
    "segnet": "`segnet` is keras-segmentation's segnet since issue 27; the former segnet "
    "(SegNet-Basic: `widths`, `kernel_size`, max-unpooling) is now `segnet_basic` (a workdir "
    "trained before: set model.name to segnet_basic in its config.json).",
}


def _squash(name: str) -> str:
    return str(name).lower().replace("-", "").replace("_", "")


def _lookup(name: str) -> Callable[..., nn.Module]:
    found = {_squash(k): v for k, v in _REGISTRY.items()}.get(_squash(name))
    if found is None:
        raise ValueError(f"unknown model {name!r}; choose one of {sorted(_REGISTRY)}.")
    return found


def renamed(name: str) -> str:
    """A sentence for an error about the model ``name`` when its network changed meaning
    (``unet`` and ``segnet`` in issue 27), else ``""``.

    >>> renamed("fcn8s"), renamed("UNet")[:42]
    ('', "`unet` is keras-segmentation's unet since ")
    """
    return _RENAMED.get(_squash(name), "")


def fields(name: str) -> tuple[str, ...]:
    """The keyword arguments the model registered as ``name`` takes."""
    found = _lookup(name)
    cls = found.func if isinstance(found, functools.partial) else found
    return tuple(
        sorted(
            f.name for f in dataclasses.fields(cls) if f.init and f.name not in ("parent", "name")
        )
    )


def field_value(name: str, field: str, **kwargs: Any) -> Any:
    """The value of ``field`` of the model ``name`` built with ``kwargs`` (None if it has
    no such field), without building it.

    >>> field_value("resnet50_unet", "backbone"), field_value("unet_mini", "backbone")
    ('resnet50', None)
    """
    found = _lookup(name)
    if isinstance(found, functools.partial):
        kwargs = {**found.keywords, **kwargs}
        found = found.func
    if field in kwargs:
        return kwargs[field]
    default = {f.name: f.default for f in dataclasses.fields(found)}.get(field)
    return None if default is dataclasses.MISSING else default


def backbone_of(name: str, **kwargs: Any) -> str | None:
    """The pretrainable encoder (``"vgg16"``, ``"resnet50"``, ...) of the model ``name``
    built with ``kwargs``; None for models without one (keras-segmentation's vanilla
    encoder has no pretrained weights).

    >>> backbone_of("vgg_unet"), backbone_of("unet"), backbone_of("unet", backbone="vgg16")
    ('vgg16', None, 'vgg16')
    """
    found = field_value(name, "backbone", **kwargs)
    return found if found in encoders.PRETRAINABLE else None


def get(name: str, **kwargs: Any) -> nn.Module:
    """The model registered as ``name`` (ignoring case, ``-`` and ``_``), built with ``kwargs``."""
    found = _lookup(name)
    fields_ = set(fields(name))
    unknown = sorted(set(kwargs) - fields_)
    if unknown:
        note = renamed(name)
        raise TypeError(
            f"model {name!r} does not take {unknown}; it takes {sorted(fields_)}."
            + (f" {note}" if note else "")
        )
    check_arguments(kwargs)
    return found(**kwargs)
