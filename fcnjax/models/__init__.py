"""fcnjax's networks, chosen by name: ``fcnjax.models.get("fcn8s", num_classes=21)``.

>>> from fcnjax import models
>>> models.get("fcn8s", num_classes=21).variant
'8s'
>>> sorted(models.NAMES)[:4]
['autoencoder', 'conv_autoencoder', 'fcn', 'fcn16s']
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import flax.linen as nn

from fcnjax.models.autoencoder import ConvAutoencoder
from fcnjax.models.fcn import FCN, FCN8s, FCN16s, FCN32s, backbone_mask
from fcnjax.models.segnet import SegNet
from fcnjax.models.unet import UNet
from fcnjax.models.vgg import VGG16

__all__ = [
    "FCN",
    "FCN8s",
    "FCN16s",
    "FCN32s",
    "NAMES",
    "VGG16",
    "ConvAutoencoder",
    "SegNet",
    "UNet",
    "backbone_mask",
    "fields",
    "get",
]

_REGISTRY: dict[str, Callable[..., nn.Module]] = {
    "vgg16": VGG16,
    "fcn": FCN,
    "fcn32s": FCN32s,
    "fcn16s": FCN16s,
    "fcn8s": FCN8s,
    "conv_autoencoder": ConvAutoencoder,
    "autoencoder": ConvAutoencoder,
    "unet": UNet,
    "segnet": SegNet,
}
NAMES = tuple(_REGISTRY)


def _lookup(name: str) -> Callable[..., nn.Module]:
    squash = lambda s: str(s).lower().replace("-", "").replace("_", "")  # noqa: E731
    found = {squash(k): v for k, v in _REGISTRY.items()}.get(squash(name))
    if found is None:
        raise ValueError(f"unknown model {name!r}; choose one of {sorted(_REGISTRY)}.")
    return found


def fields(name: str) -> tuple[str, ...]:
    """The keyword arguments the model registered as ``name`` takes."""
    found = _lookup(name)
    cls = found.func if isinstance(found, functools.partial) else found
    return tuple(
        sorted(
            f.name for f in dataclasses.fields(cls) if f.init and f.name not in ("parent", "name")
        )
    )


def get(name: str, **kwargs: Any) -> nn.Module:
    """The model registered as ``name`` (ignoring case, ``-`` and ``_``), built with ``kwargs``."""
    found = _lookup(name)
    fields_ = set(fields(name))
    unknown = sorted(set(kwargs) - fields_)
    if unknown:
        raise TypeError(f"model {name!r} does not take {unknown}; it takes {sorted(fields_)}.")
    return found(**kwargs)
