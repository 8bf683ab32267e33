"""ResNet's layer names in each release, and fcnjax's, translated both ways.

A convolution or BatchNorm of a ResNet is told by its :data:`Parts`: ``(stage, block, kind,
k)``, with ``stage`` 1-4 (``None`` for the stem), ``block`` counting from 0, ``kind``
``"conv"`` or ``"bn"``, and ``k`` 1-3 on the main path, 0 for the shortcut. fcnjax names it
as torchvision does, with ``layer1.0`` written ``layer1_0`` (:func:`path`); the releases
name it their own way (:func:`torch_parts`, :func:`keras_parts`, :func:`caffe_parts`), and
:func:`torch_label` and :func:`keras_label` give a tensor's name in a file, for messages.

>>> parts = caffe_parts("bn4b2_branch2a")  # ResNet-101's stage 3, block 2, first BatchNorm
>>> parts, path(parts)
((3, 2, 'bn', 1), 'layer3_2/bn1')
>>> torch_label("layer3_2/bn1", "var")
'layer3.2.bn1.running_var'
>>> keras_label("layer3_2/bn1", "var", "keras.applications", 101)
'conv4_block3_1_bn var'
"""

from __future__ import annotations

import re

__all__ = [
    "Parts",
    "caffe_parts",
    "keras_label",
    "keras_parts",
    "parts_of",
    "path",
    "torch_label",
    "torch_parts",
]

Parts = tuple[int | None, int | None, str, int]


def path(parts: Parts) -> str:
    """fcnjax's name: ``conv1``, ``bn1``, ``layer2_3/bn2``, ``layer2_0/downsample_conv``."""
    stage, block, kind, k = parts
    if stage is None:
        return f"{kind}1"
    return f"layer{stage}_{block}/" + (f"downsample_{kind}" if k == 0 else f"{kind}{k}")


def parts_of(name: str) -> Parts:
    """The inverse of :func:`path`."""
    head, _, part = name.rpartition("/")
    if not head:
        return None, None, part[:-1], 1
    stage, block = head[len("layer") :].split("_")
    kind, k = (part[len("downsample_") :], 0) if part.startswith("down") else (part[:-1], part[-1])
    return int(stage), int(block), kind, int(k)


# --------------------------------------------------------------------------------------
# Names in each release: file name -> parts, and parts -> file name (for messages).
# --------------------------------------------------------------------------------------

_TORCH_MODULE = re.compile(r"layer([1-4])\.(\d+)\.(conv[1-3]|bn[1-3]|downsample\.[01])")
_KERAS_NEW = re.compile(r"conv([2-5])_block([1-9]\d*)_([0-3])_(conv|bn)")
_KERAS_OLD = re.compile(r"(res|bn)([2-5])([a-z]|b[1-9]\d*)_branch(1|2[abc])")


def torch_parts(module: str) -> Parts | None:
    """torchvision's module names (``layer1.0.downsample.1``)."""
    if module in ("conv1", "bn1"):
        return None, None, module[:-1], 1
    m = _TORCH_MODULE.fullmatch(module)
    if m is None:
        return None
    part = m[3]
    if part.startswith("downsample"):
        kind, k = ("conv" if part.endswith("0") else "bn"), 0
    else:
        kind, k = part[:-1], int(part[-1])
    return int(m[1]), int(m[2]), kind, k


def keras_parts(name: str) -> Parts | None:
    """keras.applications' names (Keras 2.2+)."""
    if name in ("conv1_conv", "conv1_bn"):
        return None, None, name[len("conv1_") :], 1
    m = _KERAS_NEW.fullmatch(name)
    return None if m is None else (int(m[1]) - 1, int(m[2]) - 1, m[4], int(m[3]))


def caffe_parts(name: str) -> Parts | None:
    """The first Keras ResNet50's (and Caffe's) names."""
    if name in ("conv1", "bn_conv1"):
        return None, None, "conv" if name == "conv1" else "bn", 1
    m = _KERAS_OLD.fullmatch(name)
    if m is None:
        return None
    block = ord(m[3]) - ord("a") if len(m[3]) == 1 else int(m[3][1:])
    k = 0 if m[4] == "1" else "abc".index(m[4][1]) + 1
    return int(m[2]) - 1, block, "conv" if m[1] == "res" else "bn", k


def torch_label(name: str, role: str) -> str:
    """The torchvision tensor of fcnjax's layer ``name`` and ``role`` (``kernel``, ``var``)."""
    stage, block, kind, k = parts_of(name)
    leaf = {"kernel": "weight", "scale": "weight", "bias": "bias"}.get(role, f"running_{role}")
    if stage is None:
        return f"{kind}1.{leaf}"
    module = f"downsample.{int(kind == 'bn')}" if k == 0 else f"{kind}{k}"
    return f"layer{stage}.{block}.{module}.{leaf}"


def keras_label(name: str, role: str, scheme: str, depth: int) -> str:
    """The Keras layer (``scheme``: ``"keras.applications"`` or ``"Caffe"`` names) and role
    of fcnjax's layer ``name`` in a ResNet-``depth``."""
    stage, block, kind, k = parts_of(name)
    if scheme == "keras.applications":
        layer = f"conv1_{kind}" if stage is None else f"conv{stage + 1}_block{block + 1}_{k}_{kind}"
    elif stage is None:
        layer = "conv1" if kind == "conv" else "bn_conv1"
    else:
        letter = chr(ord("a") + block) if depth <= 50 or block == 0 else f"b{block}"
        branch = "1" if k == 0 else "2" + "abc"[k - 1]
        layer = f"{'res' if kind == 'conv' else 'bn'}{stage + 1}{letter}_branch{branch}"
    return f"{layer} {role}"
