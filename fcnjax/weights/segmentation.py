"""Whole segmentation networks from PyTorch state dicts: torchvision's ``fcn_resnet50``,
``fcn_resnet101``, ``deeplabv3_resnet50``, ``deeplabv3_resnet101``,
``deeplabv3_mobilenet_v3_large`` and segmentation_models_pytorch's ``DeepLabV3Plus`` on a
ResNet or MobileNetV2 encoder.

torchvision's names (``backbone.layer1.0.conv1.weight``, ``classifier.0.convs.1.0.weight``,
``aux_classifier.4.bias``, ...) and smp's (``encoder.layer1.0.conv1.weight``,
``decoder.aspp.0.convs.1.0.0.weight``, ``segmentation_head.0.bias``, ...) become fcnjax's
(:class:`~fcnjax.models.FCNResNet`, :class:`~fcnjax.models.DeepLabV3`,
:class:`~fcnjax.models.DeepLabV3Plus`): the ResNet under ``backbone`` as
:func:`~fcnjax.weights.load_resnet` names it (a MobileNetV3's ``backbone.4.block.2.fc1``,
torchvision's ``IntermediateLayerGetter`` over its ``features``, as ``features_4/block_2/fc1``;
smp's MobileNetV2, torchvision's ``features``, as :func:`~fcnjax.weights.load_mobilenet_v2`),
the heads as the modules' docstrings do.
Kernels ``(C_out, C_in / groups, kh, kw)`` become ``(kh, kw, C_in / groups, C_out)``;
BatchNorm's ``running_mean``/``running_var`` go to ``batch_stats``; ``num_batches_tracked``
is ignored. Every missing, unexpected and misshapen tensor is listed in one error.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from fcnjax.models.deeplab import DeepLabV3, DeepLabV3Plus
from fcnjax.models.fcn_resnet import FCNResNet
from fcnjax.weights import files
from fcnjax.weights import resnet_names as names
from fcnjax.weights.backbone import Raw, ShapeChecker
from fcnjax.weights.mobilenet import _TORCH_V2 as _MOBILENET_V2  # torchvision's names

__all__ = ["load_torchvision_segmentation", "segmentation_variables"]

_ROLES = ("weight", "bias", "running_mean", "running_var")
_BN_LEAVES = {"weight": "scale", "bias": "bias", "running_mean": "mean", "running_var": "var"}


def _fcn_head(torch: str, ours: str) -> dict[str, str]:
    """torchvision's ``FCNHead`` (``Sequential``: conv, bn, relu, dropout, conv)."""
    return {f"{torch}.0": f"{ours}_conv", f"{torch}.1": f"{ours}_bn", f"{torch}.4": f"{ours}_out"}


# Per network: (the backbone's prefix, ASPP's prefix or None, the other modules by name).
_LAYOUTS = {
    "fcn": ("backbone.", None, {**_fcn_head("classifier", "classifier")}),
    "deeplabv3": (
        "backbone.",
        "classifier.0.",
        {
            "classifier.1": "classifier_conv",
            "classifier.2": "classifier_bn",
            "classifier.4": "classifier_out",
        },
    ),
    "smp": (
        "encoder.",
        "decoder.aspp.0.",
        {
            "decoder.aspp.1.0": "aspp_conv/depthwise",
            "decoder.aspp.1.1": "aspp_conv/pointwise",
            "decoder.aspp.2": "aspp_bn",
            "decoder.block1.0": "block1_conv",
            "decoder.block1.1": "block1_bn",
            "decoder.block2.0.0": "block2_conv/depthwise",
            "decoder.block2.0.1": "block2_conv/pointwise",
            "decoder.block2.1": "block2_bn",
            "segmentation_head.0": "segmentation_head",
        },
    ),
}
_LAYOUTS["deeplabv3_mobilenet"] = _LAYOUTS["deeplabv3"]
_LAYOUTS["smp_mobilenet_v2"] = _LAYOUTS["smp"]
_AUX = _fcn_head("aux_classifier", "aux_classifier")
# torchvision's MobileNetV3 ``features`` modules (see fcnjax.weights.mobilenet_v3).
_MOBILENET = re.compile(r"(\d+)\.(?:block\.(\d+)\.)?(0|1|fc1|fc2)")
_MOBILENET_LAYERS = {"0": "conv", "1": "bn", "fc1": "fc1", "fc2": "fc2"}


def _mobilenet_layer(module: str) -> str | None:
    m = _MOBILENET.fullmatch(module)
    if m is None:
        return None
    block = f"block_{m[2]}/" if m[2] is not None else ""
    return f"backbone/features_{m[1]}/{block}{_MOBILENET_LAYERS[m[3]]}"


_ASPP_BRANCH = re.compile(r"convs\.(\d+)\.(\d+)((?:\.[01])?)")


def _aspp_layer(module: str, pool: int) -> str | None:
    """fcnjax's name in :class:`~fcnjax.models.aspp.ASPP` of a module of torchvision's or
    smp's ``ASPP``; ``pool`` is the index of the pooling branch (the last)."""
    if module in ("project.0", "project.1"):
        return "project_" + ("conv" if module.endswith("0") else "bn")
    m = _ASPP_BRANCH.fullmatch(module)
    if m is None:
        return None
    branch, layer, sub = int(m[1]), int(m[2]), m[3]
    if branch == pool:  # AdaptiveAvgPool2d, conv, bn, relu
        return {1: "pool_conv", 2: "pool_bn"}.get(layer) if not sub else None
    if layer == 1 and not sub:
        return f"bn{branch}"
    if layer == 0:  # smp's separable branches: SeparableConv2d(depthwise, pointwise)
        return f"conv{branch}" + {"": "", ".0": "/depthwise", ".1": "/pointwise"}[sub]
    return None


def _layer(module: str, layout: str, pool: int) -> str | None:
    """fcnjax's layer path of the torch module ``module``; None for a name it lacks."""
    backbone, aspp, heads = _LAYOUTS[layout]
    if module.startswith(backbone) and layout == "deeplabv3_mobilenet":
        return _mobilenet_layer(module[len(backbone) :])
    if module.startswith(backbone) and layout == "smp_mobilenet_v2":
        layer = _MOBILENET_V2.get(module[len(backbone) :])
        return None if layer is None else f"backbone/{layer}"
    if module.startswith(backbone):
        parts = names.torch_parts(module[len(backbone) :])
        return None if parts is None else "backbone/" + names.path(parts)
    if aspp and module.startswith(aspp):
        inner = _aspp_layer(module[len(aspp) :], pool)
        return None if inner is None else f"aspp/{inner}"
    return {**heads, **_AUX}.get(module)


def _layout(model: nn.Module) -> str:
    if getattr(model, "backbone_style", "torchvision") != "torchvision":
        raise ValueError(
            "torchvision's and smp's networks have torchvision's ResNets: build the model "
            f"with backbone_style='torchvision' (got {model.backbone_style!r})."
        )
    if isinstance(model, DeepLabV3) and model.backbone == "mobilenet_v3_large":
        return "deeplabv3_mobilenet"
    if isinstance(model, DeepLabV3Plus) and model.backbone == "mobilenet_v2":
        return "smp_mobilenet_v2"
    for cls, layout in ((FCNResNet, "fcn"), (DeepLabV3, "deeplabv3"), (DeepLabV3Plus, "smp")):
        if isinstance(model, cls):
            return layout
    raise TypeError(
        "segmentation_variables reads FCNResNet (torchvision's fcn_resnet*), DeepLabV3 "
        f"(deeplabv3_resnet*, deeplabv3_mobilenet_v3_large) and DeepLabV3Plus (smp's); got "
        f"{type(model).__name__}."
    )


def _raw(state: Mapping[str, np.ndarray], layout: str) -> tuple[Raw, list[str]]:
    """The state dict's tensors by fcnjax layer, and the ones that name no layer."""
    aspp = _LAYOUTS[layout][1] or "-"
    branches = [int(m[1]) for k in state if (m := re.match(re.escape(aspp) + r"convs\.(\d+)", k))]
    pool = max(branches, default=-1)
    raw: Raw = {}
    unexpected = []
    for key in sorted(state):
        module, _, leaf = key.rpartition(".")
        if leaf == "num_batches_tracked":
            continue
        path = _layer(module, layout, pool)
        if path is None or leaf not in _ROLES:
            unexpected.append(f"{key} {tuple(np.shape(state[key]))}")
            continue
        raw.setdefault(path, {})[leaf] = (key, np.asarray(state[key], np.float32))
    return raw, unexpected


def _flat(tree: Mapping, prefix: str = "") -> dict[str, dict[str, tuple[int, ...]]]:
    """``{layer path: {leaf: shape}}`` of a variables tree."""
    out: dict[str, dict[str, tuple[int, ...]]] = {}
    for key, value in tree.items():
        if isinstance(value, Mapping) and all(not isinstance(v, Mapping) for v in value.values()):
            out[prefix + key] = {k: tuple(v.shape) for k, v in value.items()}
        elif isinstance(value, Mapping):
            out.update(_flat(value, f"{prefix}{key}/"))
    return out


def _nest(flat: Mapping[str, Mapping[str, np.ndarray]]) -> dict:
    out: dict = {}
    for path, leaves in flat.items():
        node = out
        for part in path.split("/"):
            node = node.setdefault(part, {})
        node.update(leaves)
    return out


def _convert(
    check: ShapeChecker,
    layer: str,
    leaves: Mapping[str, tuple[int, ...]],
    stats: Mapping[str, tuple[int, ...]] | None,
    out: dict[str, dict],
) -> None:
    """Takes ``layer``'s tensors from ``check`` into ``out`` (``params``, ``batch_stats``):
    a convolution's (``leaves``: kernel, bias) or a BatchNorm's (``stats``: its mean and
    var shapes)."""
    if stats is not None:  # BatchNorm
        for leaf, (lab, arr) in check.take(layer, tuple(_BN_LEAVES)).items():
            ours = _BN_LEAVES[leaf]
            collection = "batch_stats" if ours in stats else "params"
            if check.shape_ok(lab, arr, {**leaves, **stats}[ours]):
                out[collection].setdefault(layer, {})[ours] = arr
        return
    wanted = ("weight", "bias") if "bias" in leaves else ("weight",)
    for leaf, (lab, arr) in check.take(layer, wanted).items():
        if leaf == "weight":
            kh, kw, c_in, c_out = leaves["kernel"]
            if check.shape_ok(lab, arr, (c_out, c_in, kh, kw)):
                out["params"].setdefault(layer, {})["kernel"] = arr.transpose(2, 3, 1, 0).copy()
        elif check.shape_ok(lab, arr, leaves["bias"]):
            out["params"].setdefault(layer, {})["bias"] = arr


def segmentation_variables(
    state: Mapping[str, np.ndarray], model: nn.Module, *, what: str = "the state dict"
) -> dict[str, dict]:
    """The variables of ``model`` (an :class:`~fcnjax.models.FCNResNet`,
    :class:`~fcnjax.models.DeepLabV3` or :class:`~fcnjax.models.DeepLabV3Plus`, any width,
    classes and ``aux_loss``) from a PyTorch state dict of the same network with
    torchvision's (or, for DeepLabV3Plus, smp's) names.

    Args:
      state: ``{name: array}`` (NumPy or anything ``np.asarray`` takes).
      model: the network to fill; its shapes decide what the state dict must hold.
      what: the source, for messages.

    Returns:
      ``{"params": ..., "batch_stats": ...}`` of float32 NumPy arrays, ``model``'s tree.

    Raises:
      ValueError: listing every missing, unexpected and misshapen tensor.
    """
    layout = _layout(model)
    example = jnp.zeros((1, 64, 64, 3))
    shapes = jax.eval_shape(model.init, jax.random.key(0), example)
    params, stats = _flat(shapes["params"]), _flat(shapes.get("batch_stats", {}))
    raw, unexpected = _raw(state, layout)

    def label(layer: str, leaf: str) -> str:
        return f"{leaf} of {layer}"

    check = ShapeChecker(raw, label)
    out: dict[str, dict] = {"params": {}, "batch_stats": {}}
    for layer, leaves in params.items():
        _convert(check, layer, leaves, stats.get(layer), out)
    unexpected += [f"{lab} {a.shape}" for entry in check.raw.values() for lab, a in entry.values()]
    check.raise_problems(f"{what} does not hold this {type(model).__name__}", unexpected)
    return {k: _nest(v) for k, v in out.items()}


def load_torchvision_segmentation(
    path_or_url: str | os.PathLike[str],
    model: nn.Module,
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    sha256: str | None = None,
) -> dict[str, dict]:
    """:func:`segmentation_variables` of a ``.pth``/``.pt`` or ``.safetensors`` file: e.g.
    torchvision's ``deeplabv3_resnet50_coco-cd0a2569.pth`` into
    ``fcnjax.models.get("deeplabv3_resnet50", num_classes=21, aux_loss=True)``, or an smp
    ``DeepLabV3Plus``'s state dict into ``deeplabv3plus_resnet50``.

    Args:
      path_or_url: a local file, or an ``http``/``https``/``file`` URL downloaded once into
        ``cache_dir``.
      model: the network to fill.
      cache_dir: where downloads go; default :func:`~fcnjax.weights.default_cache_dir`.
      sha256: the file's full sha256 (hex), checked.

    Returns ``{"params": ..., "batch_stats": ...}``: apply ``model`` with it directly.
    """
    path = files.weights_file(path_or_url, cache_dir=cache_dir, sha256=sha256, what="network")
    kind = files.file_format(path)
    if kind == "keras":
        raise ValueError(f"{path} is a Keras HDF5 file; expected a PyTorch state dict.")
    return segmentation_variables(files.read_state_dict(path, kind), model, what=str(path))
