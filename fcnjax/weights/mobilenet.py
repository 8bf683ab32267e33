"""MobileNet's and MobileNetV2's files: Keras' and torchvision's releases into
:class:`fcnjax.models.MobileNet` and :class:`fcnjax.models.MobileNetV2`.

Files are found and read by :mod:`fcnjax.weights.files` and their shapes checked by
:class:`fcnjax.weights.backbone.ShapeChecker`:

* **Keras HDF5** (``keras.applications.MobileNet`` / ``MobileNetV2`` without their
  classifier, any ``alpha``): layers named as fcnjax's (MobileNetV2's first block
  ``expanded_conv_*`` is ``block_0_*``); depthwise kernels ``(3, 3, C, 1)`` become ``(3, 3,
  1, C)``. keras-segmentation loads :data:`KERAS_MOBILENET_URL` into its MobileNet
  encoder by name. Preprocessing :data:`KERAS_TF` (``x / 127.5 - 1``, Keras' ``"tf"`` mode).
* **torchvision** ``mobilenet_v2`` state dicts (``.pth``/``.pt`` or ``.safetensors``):
  ``features.0.{0,1}`` (``Conv1``, ``bn_Conv1``); ``features.<b+1>.conv.*`` the block ``b``
  (``conv.0.0``/``conv.0.1`` the expansion and its BatchNorm, ``conv.1.0``/``conv.1.1`` the
  depthwise convolution and its BatchNorm, ``conv.2``/``conv.3`` the projection; block 0,
  without expansion, ``conv.0.*``, ``conv.1``, ``conv.2``); ``features.18.{0,1}``
  (``Conv_1``, ``Conv_1_bn``). Kernels ``(C_out, C_in, kh, kw)`` become ``(kh, kw, C_in,
  C_out)``. Preprocessing :data:`~fcnjax.weights.TORCHVISION`.

The ImageNet classifiers (Keras' ``conv_preds``/``predictions``, torch's ``classifier``)
and torch's ``num_batches_tracked`` are ignored. Keras publishes no checksum of either
MobileNet file (``keras.applications`` loads them unchecked), so neither is in
:data:`~fcnjax.weights.KNOWN_CHECKSUMS`; torchvision's is checked against the sha256 prefix
in its name.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import numpy as np

from fcnjax.data.transforms import TORCHVISION, Preprocessing
from fcnjax.models.vgg import VGG16_CONVS
from fcnjax.weights import files, resnet_names
from fcnjax.weights.backbone import Raw, ShapeChecker

__all__ = [
    "KERAS_MOBILENET_URL",
    "KERAS_MOBILENET_V2_URL",
    "KERAS_TF",
    "TORCHVISION_MOBILENET_V2_URL",
    "load_mobilenet",
    "load_mobilenet_v2",
]

_KERAS_BASE = "https://storage.googleapis.com/tensorflow/keras-applications/"
KERAS_MOBILENET_URL = _KERAS_BASE + "mobilenet/mobilenet_1_0_224_tf_no_top.h5"
KERAS_MOBILENET_V2_URL = (
    _KERAS_BASE + "mobilenet_v2/mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5"
)
TORCHVISION_MOBILENET_V2_URL = "https://download.pytorch.org/models/mobilenet_v2-b0353104.pth"
# Keras' "tf" preprocessing (keras.applications.mobilenet.preprocess_input): x / 127.5 - 1.
KERAS_TF = Preprocessing(mean=(127.5,) * 3, std=(127.5,) * 3, bgr=False)

_BN_ROLES = ("scale", "bias", "mean", "var")
_IGNORED = {"conv_preds", "predictions", "classifier.1"}  # the ImageNet classifiers


def _v1_layers() -> list[tuple[str, str]]:
    """MobileNet's layers in order, with their kinds (``conv3``, ``conv1``, ``dw``, ``bn``)."""
    out = [("conv1", "conv3"), ("conv1_bn", "bn")]
    for i in range(1, 14):
        out += [(f"conv_dw_{i}", "dw"), (f"conv_dw_{i}_bn", "bn")]
        out += [(f"conv_pw_{i}", "conv1"), (f"conv_pw_{i}_bn", "bn")]
    return out


def _v2_layers() -> list[tuple[str, str]]:
    """MobileNetV2's layers in order, with their kinds; block 0 has no expansion."""
    out = [("Conv1", "conv3"), ("bn_Conv1", "bn")]
    for b in range(17):
        parts = [("expand", "conv1"), ("expand_BN", "bn")] if b else []
        parts += [("depthwise", "dw"), ("depthwise_BN", "bn")]
        parts += [("project", "conv1"), ("project_BN", "bn")]
        out += [(f"block_{b}_{p}", kind) for p, kind in parts]
    return out + [("Conv_1", "conv1"), ("Conv_1_bn", "bn")]


def _torch_v2_modules() -> dict[str, str]:
    """torchvision's ``mobilenet_v2`` module names -> fcnjax's layers."""
    out = {"features.0.0": "Conv1", "features.0.1": "bn_Conv1"}
    out.update({"features.18.0": "Conv_1", "features.18.1": "Conv_1_bn"})
    for b in range(17):
        f = f"features.{b + 1}.conv"
        names = ("depthwise", "depthwise_BN", "project", "project_BN")
        modules = (f"{f}.0.0", f"{f}.0.1", f"{f}.1", f"{f}.2")
        if b:
            names = ("expand", "expand_BN", *names)
            modules = (f"{f}.0.0", f"{f}.0.1", f"{f}.1.0", f"{f}.1.1", f"{f}.2", f"{f}.3")
        out.update(dict(zip(modules, (f"block_{b}_{n}" for n in names))))
    return out


_NETWORKS = {"MobileNet": _v1_layers(), "MobileNetV2": _v2_layers()}
_TORCH_V2 = _torch_v2_modules()
_TORCH_MODULE = {layer: module for module, layer in _TORCH_V2.items()}
_TORCH_BN = {"weight": "scale", "bias": "bias", "running_mean": "mean", "running_var": "var"}
_BN_WORDS = {"scale": "gamma", "bias": "beta", "mean": "moving_mean", "var": "moving_variance"}


def _keras_layer(name: str) -> str:
    return name.replace("expanded_conv_", "block_0_")


def _bn_role(name: str) -> str | None:
    leaf = name.rsplit("/", 1)[-1].split(":")[0].lower()
    return next((r for r, word in _BN_WORDS.items() if leaf.endswith(word)), None)


def _from_keras(path, kinds: dict[str, str]) -> tuple[Raw, list[str], list[str], list[str]]:
    """A Keras file's tensors by fcnjax layer, every layer name with tensors, unexpected
    tensors and problems."""
    listed = files.read_keras_h5(path, ()).shapes  # every layer with tensors, unread
    wanted = {n for n in listed if _keras_layer(n) in kinds}
    keras = files.read_keras_h5(path, wanted)
    raw: Raw = {}
    problems = list(keras.problems)
    for layer, found in keras.arrays.items():
        ours = _keras_layer(layer)
        if kinds[ours] == "bn":
            roles = {_bn_role(n): (f"{layer} ({n})", a) for n, a in found}
            ok = len(roles) == len(found) == 4 and None not in roles
        else:
            ok = len(found) == 1
            roles = {"kernel": (f"{layer} ({found[0][0]})", found[0][1])} if ok else {}
        if ok:
            raw[ours] = roles
        else:
            listing = [(n, tuple(a.shape)) for n, a in found]
            want = "gamma, beta, moving mean and variance" if kinds[ours] == "bn" else "a kernel"
            problems.append(f"layer {layer!r}: expected {want} (no bias), found {listing}")
    unexpected = [
        f"{n} {shape} in layer {layer!r}"
        for layer, found in keras.shapes.items()
        if layer not in _IGNORED
        for n, shape in found
    ]
    return raw, list(listed), unexpected, problems


def _from_state_dict(tensors: Mapping[str, np.ndarray]) -> tuple[Raw, list[str], list[str]]:
    """torchvision ``mobilenet_v2`` tensors by fcnjax layer, every key, unexpected ones."""
    raw: Raw = {}
    unexpected: list[str] = []
    kinds = dict(_NETWORKS["MobileNetV2"])
    for key in sorted(tensors):
        module, _, leaf = key.rpartition(".")
        layer = _TORCH_V2.get(module)
        if module in _IGNORED or (layer and leaf == "num_batches_tracked"):
            continue
        roles = _TORCH_BN if layer and kinds[layer] == "bn" else {"weight": "kernel"}
        role = roles.get(leaf) if layer else None
        if role is None:
            unexpected.append(f"{key} {tuple(np.shape(tensors[key]))}")
            continue
        raw.setdefault(layer, {})[role] = (key, np.asarray(tensors[key], np.float32))
    return raw, list(tensors), unexpected


def _what_it_holds(names: list[str]) -> str | None:
    """The network whose names a file's are, when it is one fcnjax knows."""
    found = [
        ("a MobileNetV2 (load it with load_mobilenet_v2)", _keras_layer, _NETWORKS["MobileNetV2"]),
        ("a MobileNet v1 (load it with load_mobilenet)", str, _NETWORKS["MobileNet"]),
    ]
    for what, rename, layers in found:
        known = {n for n, _ in layers}
        if any(rename(n) in known for n in names):
            return what
    modules = [n.rpartition(".")[0] for n in names]
    if any(_TORCH_V2.get(m) for m in modules):
        return "a MobileNetV2 (load it with load_mobilenet_v2)"
    resnet = (resnet_names.keras_parts, resnet_names.caffe_parts)
    if any(f(n) for f in resnet for n in names) or any(map(resnet_names.torch_parts, modules)):
        return "a ResNet (load it with load_resnet)"
    if any(n in VGG16_CONVS for n in names):
        return "a VGG16 (load it with load_vgg16)"
    return None


def _torch_label(layer: str, role: str) -> str:
    leaf = {"kernel": "weight", "scale": "weight", "mean": "running_mean", "var": "running_var"}
    return f"{_TORCH_MODULE[layer]}.{leaf.get(role, role)}"


def _keras_label(layer: str, role: str) -> str:
    return f"layer {layer.replace('block_0_', 'expanded_conv_')!r} {role}"


class _Checker(ShapeChecker):
    """Takes the network's layers in order, each input width checked against the previous
    layer's output, into ``params`` and ``stats``."""

    def __init__(self, raw: Raw, torch_layout: bool, problems: list[str]):
        super().__init__(raw, _torch_label if torch_layout else _keras_label, problems)
        self.torch = torch_layout
        self.params: dict[str, dict[str, np.ndarray]] = {}
        self.stats: dict[str, dict[str, np.ndarray]] = {}

    def kernel(self, layer: str, kind: str, c: int | None) -> int | None:
        """A convolution's kernel in fcnjax's layout; returns its output channels."""
        entry = self.take(layer, ("kernel",))
        if "kernel" not in entry:
            return None if kind != "dw" else c
        label, w = entry["kernel"]
        k = 1 if kind == "conv1" else 3
        c_in = 3 if kind == "conv3" else c
        if kind == "dw":
            expected = (c_in, 1, 3, 3) if self.torch else (3, 3, c_in, 1)
        else:
            expected = (None, c_in, k, k) if self.torch else (k, k, c_in, None)
        if not self.shape_ok(label, w, expected):
            return None
        w = w.transpose(2, 3, 1, 0) if self.torch else w
        w = w.transpose(0, 1, 3, 2) if kind == "dw" and not self.torch else w
        self.params[layer] = {"kernel": np.ascontiguousarray(w, np.float32)}
        return w.shape[3]

    def bn(self, layer: str, c: int | None) -> None:
        entry = self.take(layer, _BN_ROLES)
        ok = [self.shape_ok(label, a, (c,)) for label, a in entry.values()]
        if len(ok) == 4 and all(ok) and len({a.shape for _, a in entry.values()}) == 1:
            self.params[layer] = {r: entry[r][1] for r in ("scale", "bias")}
            self.stats[layer] = {r: entry[r][1] for r in ("mean", "var")}


def _load(path_or_url, network: str, cache_dir, sha256):
    """``(variables, format)`` of a file holding ``network``."""
    path = files.weights_file(path_or_url, cache_dir=cache_dir, sha256=sha256, what=network)
    kind = files.file_format(path)
    layers = _NETWORKS[network]
    if kind == "keras":
        raw, names, unexpected, problems = _from_keras(path, dict(layers))
        layout = "Keras HDF5"
    elif network == "MobileNetV2":
        raw, names, unexpected = _from_state_dict(files.read_state_dict(path, kind))
        problems, layout = [], f"{kind} (torchvision names)"
    else:  # no torch release of MobileNet v1
        tensors = files.read_state_dict(path, kind)
        raw, names, problems, layout = {}, list(tensors), [], kind
        unexpected = [f"{k} {tuple(np.shape(v))}" for k, v in sorted(tensors.items())]
    if not raw:
        held = _what_it_holds(names) or f"no {network} tensor (a file of another network?)"
        raise ValueError(
            f"{path} does not hold {network} weights in the {layout} layout: it holds "
            f"{held}; its {len(unexpected)} tensors: {', '.join(unexpected[:3])}, ..."
        )
    check = _Checker(raw, kind != "keras", problems)
    c: int | None = None
    for layer, kind_ in layers:
        if kind_ == "bn":
            check.bn(layer, c)
        else:
            c = check.kernel(layer, kind_, c)
    unexpected += [f"{lab} {a.shape}" for entry in check.raw.values() for lab, a in entry.values()]
    check.raise_problems(
        f"{path} does not hold {network} weights in the {layout} layout", unexpected
    )
    variables = {"params": check.params, "batch_stats": check.stats}
    return variables, kind


def load_mobilenet(
    path_or_url: str | os.PathLike[str] | None = None,
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    sha256: str | None = None,
) -> tuple[dict[str, dict], Preprocessing]:
    """Pretrained variables for :class:`fcnjax.models.MobileNet` (keras-segmentation's
    MobileNet v1 encoder) from a Keras HDF5 file.

    Args:
      path_or_url: a local file, or an ``http``/``https``/``file`` URL to download into
        ``cache_dir`` (reused when already there). ``None``: Keras' ImageNet MobileNet of
        alpha 1.0, :data:`KERAS_MOBILENET_URL` (the file keras-segmentation loads).
      cache_dir: where downloads go; default :func:`~fcnjax.weights.default_cache_dir`.
      sha256: the file's full sha256 (hex), checked.

    Returns:
      ``(variables, preprocessing)``: ``{"params": ..., "batch_stats": ...}`` of float32
      NumPy arrays named and shaped as ``MobileNet(width=alpha)``'s (``alpha`` the file's),
      e.g. ``params["conv_dw_1"]["kernel"]`` ``(3, 3, 1, 32)``; and :data:`KERAS_TF`.

    Raises:
      WeightsUnavailableError: a URL not cached could not be downloaded.
      FileNotFoundError: a local path that does not exist.
      ValueError: a file of another network (the message says which, when fcnjax knows
        it), or one whose tensors do not make a MobileNet: every missing, unexpected and
        misshapen tensor listed.
    """
    url = KERAS_MOBILENET_URL if path_or_url is None else path_or_url
    variables, _ = _load(url, "MobileNet", cache_dir, sha256)
    return variables, KERAS_TF


def load_mobilenet_v2(
    path_or_url: str | os.PathLike[str] | None = None,
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    sha256: str | None = None,
) -> tuple[dict[str, dict], str, Preprocessing]:
    """Pretrained variables for :class:`fcnjax.models.MobileNetV2`, from Keras' HDF5 or
    torchvision's state dict.

    Args:
      path_or_url: a local file or a URL (as :func:`load_mobilenet`). ``None``:
        torchvision's ImageNet ``mobilenet_v2``, :data:`TORCHVISION_MOBILENET_V2_URL`;
        :data:`KERAS_MOBILENET_V2_URL` is Keras'.
      cache_dir: where downloads go; sha256: the file's full sha256 (hex), checked.

    Returns:
      ``(variables, style, preprocessing)``: the variables of ``MobileNetV2(width,
      style=style)``, ``style`` ``"keras"`` for HDF5 files (preprocessing :data:`KERAS_TF`)
      and ``"torchvision"`` for the others (:data:`~fcnjax.weights.TORCHVISION`).

    Raises:
      As :func:`load_mobilenet`; ImportError for a ``.pth`` file without torch.
    """
    url = TORCHVISION_MOBILENET_V2_URL if path_or_url is None else path_or_url
    variables, kind = _load(url, "MobileNetV2", cache_dir, sha256)
    if kind == "keras":
        return variables, "keras", KERAS_TF
    return variables, "torchvision", TORCHVISION
