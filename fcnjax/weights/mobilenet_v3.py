"""MobileNetV3-Large's key map: torchvision files into
:class:`fcnjax.models.mobilenet_v3.MobileNetV3Large`.

Files are found and read by :mod:`fcnjax.weights.files` and their shapes checked by
:class:`fcnjax.weights.backbone.ShapeChecker`. torchvision's ``mobilenet_v3_large`` state
dicts (``.pth``/``.pt`` or ``.safetensors``) name the encoder's tensors:

* ``features.{0,16}.0.weight`` (convolution) and ``features.{0,16}.1.{weight, bias,
  running_mean, running_var}`` (BatchNorm): fcnjax's ``features_{0,16}/conv`` and ``bn``;
* ``features.{i}.block.{j}.0.weight`` and ``.1.*`` (blocks ``i`` = 1 ... 15; ``j`` counts
  the optional expansion, the depthwise convolution, the optional squeeze-and-excitation
  and the projection): ``features_{i}/block_{j}/conv`` and ``bn``;
* ``features.{i}.block.{j}.fc1.{weight, bias}`` and ``fc2`` (squeeze-and-excitation):
  ``features_{i}/block_{j}/fc1`` and ``fc2``.

Kernels become ``(kh, kw, C_in, C_out)``, a depthwise one ``(kh, kw, 1, C)`` (torch's
``(C_out, C_in / groups, kh, kw)`` transposed). The ImageNet ``classifier`` and torch's
``num_batches_tracked`` are ignored. Widths come from the file (any ``width_mult``); the
kernel sizes, strides and which blocks have an SE are torchvision's table
(:data:`fcnjax.models.mobilenet_v3.LARGE`). torchvision preprocessing.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

import numpy as np

from fcnjax.data.transforms import TORCHVISION, Preprocessing
from fcnjax.models.mobilenet_v3 import LARGE
from fcnjax.weights import files
from fcnjax.weights.backbone import Raw, ShapeChecker

__all__ = ["MOBILENET_V3_CHECKSUMS", "TORCHVISION_MOBILENET_V3_LARGE_URL", "load_mobilenet_v3"]

# The default of load_mobilenet_v3(None): torchvision's MobileNet_V3_Large IMAGENET1K_V1,
# the backbone weights of its lraspp_ and deeplabv3_mobilenet_v3_large.
TORCHVISION_MOBILENET_V3_LARGE_URL = (
    "https://download.pytorch.org/models/mobilenet_v3_large-8738ca79.pth"
)
# torchvision names its files after the first 8 hex digits of the sha256.
MOBILENET_V3_CHECKSUMS = {TORCHVISION_MOBILENET_V3_LARGE_URL: ("sha256", "8738ca79")}
files.KNOWN_CHECKSUMS.update(MOBILENET_V3_CHECKSUMS)

_MODULES = len(LARGE) + 2  # features.0 ... features.16
_KEY = re.compile(r"features\.(\d+)\.(?:block\.(\d+)\.)?(0|1|fc1|fc2)\.(\w+)")
_LAYERS = {"0": "conv", "1": "bn", "fc1": "fc1", "fc2": "fc2"}
_ROLES = {
    "conv": {"weight": "kernel"},
    "bn": {"weight": "scale", "bias": "bias", "running_mean": "mean", "running_var": "var"},
    "fc1": {"weight": "kernel", "bias": "bias"},
    "fc2": {"weight": "kernel", "bias": "bias"},
}
_TORCH = {layer: {r: k for k, r in roles.items()} for layer, roles in _ROLES.items()}
_BN_ROLES = ("scale", "bias", "mean", "var")


def _label(path: str, role: str) -> str:
    """A tensor's name in torchvision's state dict: ``features_4/block_2/fc1``, ``bias``
    is ``features.4.block.2.fc1.bias``."""
    *modules, layer = path.split("/")
    torch_layer = {"conv": "0", "bn": "1"}.get(layer, layer)
    return ".".join([*(m.replace("_", ".") for m in modules), torch_layer, _TORCH[layer][role]])


def _from_state_dict(tensors: Mapping[str, np.ndarray]) -> tuple[Raw, list[str]]:
    raw: Raw = {}
    unexpected: list[str] = []
    for key in sorted(tensors):
        if key.startswith("classifier."):
            continue
        match = _KEY.fullmatch(key)
        layer = _LAYERS[match[3]] if match else None
        if layer == "bn" and match[4] == "num_batches_tracked":
            continue
        role = _ROLES[layer].get(match[4]) if layer else None
        if role is None:
            unexpected.append(f"{key} {tuple(np.shape(tensors[key]))}")
            continue
        i, j = match[1], match[2]
        path = f"features_{i}" + ("" if j is None else f"/block_{j}") + f"/{layer}"
        raw.setdefault(path, {})[role] = (key, np.asarray(tensors[key], np.float32))
    return raw, unexpected


class _Checker(ShapeChecker):
    """A :class:`ShapeChecker` that takes each layer's tensors into ``params``/``stats``."""

    def __init__(self, raw: Raw, problems: list[str]):
        super().__init__(raw, _label, problems)
        self.params: dict[str, dict[str, np.ndarray]] = {}
        self.stats: dict[str, dict[str, np.ndarray]] = {}

    def conv(self, path: str, k: int, c_in, c_out, *, depthwise=False, bias=False) -> int | None:
        """A ``k x k`` convolution; returns its output channels (``None`` if unknown)."""
        entry = self.take(path, ("kernel", "bias") if bias else ("kernel",))
        out: dict[str, np.ndarray] = {}
        if "kernel" in entry:
            lab, w = entry["kernel"]
            expected = (c_in, 1, k, k) if depthwise else (c_out, c_in, k, k)
            if self.shape_ok(lab, w, expected):
                c_out = w.shape[0]
                out["kernel"] = w.transpose(2, 3, 1, 0)
        if "bias" in entry and self.shape_ok(*entry["bias"], (c_out,)):
            out["bias"] = entry["bias"][1]
        if len(out) == len(entry) == (2 if bias else 1):
            self.params[path] = out
        return c_out

    def conv_bn(self, path: str, k: int, c_in, c_out=None, *, depthwise=False) -> int | None:
        """``{path}/conv`` and ``{path}/bn``."""
        c = self.conv(f"{path}/conv", k, c_in, c_out, depthwise=depthwise)
        entry = self.take(f"{path}/bn", _BN_ROLES)
        ok = [self.shape_ok(lab, a, (c,)) for lab, a in entry.values()]
        if len(ok) == 4 and all(ok) and len({a.shape for _, a in entry.values()}) == 1:
            self.params[f"{path}/bn"] = {r: entry[r][1] for r in ("scale", "bias")}
            self.stats[f"{path}/bn"] = {r: entry[r][1] for r in ("mean", "var")}
        return c

    def expands(self, block: str, cnf) -> bool:
        """Whether the file's block has an expansion (torchvision leaves it out where the
        expanded width equals the input's): its ``block.0`` is a 1x1 convolution, where a
        depthwise one would be ``k x k``."""
        entry = self.raw.get(f"{block}/block_0/conv", {}).get("kernel")
        if entry is None or entry[1].ndim != 4:
            return cnf.expanded != cnf.input  # width 1's structure
        return entry[1].shape[-1] == 1


def _convert(check: _Checker) -> None:
    """Every layer of MobileNetV3-Large, in order, each input width checked."""
    c = check.conv_bn("features_0", 3, 3)
    for i, cnf in enumerate(LARGE, 1):
        block, c_in, j = f"features_{i}", c, 0
        if check.expands(block, cnf):
            c, j = check.conv_bn(f"{block}/block_0", 1, c_in), 1
        c = check.conv_bn(f"{block}/block_{j}", cnf.kernel, c, depthwise=True)
        if cnf.se:
            j += 1
            squeeze = check.conv(f"{block}/block_{j}/fc1", 1, c, None, bias=True)
            check.conv(f"{block}/block_{j}/fc2", 1, squeeze, c, bias=True)
        residual = cnf.stride == 1 and cnf.input == cnf.out
        c = check.conv_bn(f"{block}/block_{j + 1}", 1, c, c_in if residual else None)
    check.conv_bn(f"features_{_MODULES - 1}", 1, c)


def _nest(flat: dict[str, dict[str, np.ndarray]]) -> dict:
    out: dict = {}
    for path, leaves in flat.items():
        node = out
        for part in path.split("/"):
            node = node.setdefault(part, {})
        node.update({k: np.ascontiguousarray(v, np.float32) for k, v in leaves.items()})
    return out


def load_mobilenet_v3(
    path_or_url: str | os.PathLike[str] | None = None,
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    sha256: str | None = None,
) -> tuple[dict[str, dict], Preprocessing]:
    """Pretrained MobileNetV3-Large variables for
    :class:`fcnjax.models.mobilenet_v3.MobileNetV3Large` (dilated or not).

    Args:
      path_or_url: a local file, or an ``http``/``https``/``file`` URL to download into
        ``cache_dir`` (reused, checksum verified, when already there). ``None`` means
        torchvision's ImageNet weights, :data:`TORCHVISION_MOBILENET_V3_LARGE_URL`.
      cache_dir: where downloads go; default :func:`~fcnjax.weights.default_cache_dir`.
      sha256: the file's full sha256 (hex), checked in addition to the known checksums.

    Returns:
      ``(variables, preprocessing)``: ``{"params": ..., "batch_stats": ...}`` of float32
      NumPy arrays, named and shaped as the variables of ``MobileNetV3Large(width=...)``
      (widths come from the file), e.g. ``params["features_4"]["block_1"]["conv"]["kernel"]``
      ``(5, 5, 1, 72)``; put them into a model with :func:`~fcnjax.weights.into_backbone`
      (once for ``params``, once for ``batch_stats``). ``preprocessing`` is
      :data:`~fcnjax.weights.TORCHVISION`.

    Raises:
      WeightsUnavailableError: a URL that is not cached could not be downloaded.
      FileNotFoundError: a local path that does not exist.
      ValueError: a checksum mismatch, a Keras file, a file of another network (the
        message names what it holds), or a file whose tensors do not make a
        MobileNetV3-Large (every missing, unexpected and misshapen tensor listed).
      ImportError: a ``.pth`` file without torch installed.
    """
    url = TORCHVISION_MOBILENET_V3_LARGE_URL if path_or_url is None else path_or_url
    path = files.weights_file(url, cache_dir=cache_dir, sha256=sha256, what="MobileNetV3")
    kind = files.file_format(path)
    if kind == "keras":
        raise ValueError(
            f"{path} is a Keras HDF5 file; fcnjax reads MobileNetV3-Large from torchvision's "
            f"state dict (.pth or .safetensors)."
        )
    tensors = files.read_state_dict(path, kind)
    raw, unexpected = _from_state_dict(tensors)
    layout = f"{kind} (torchvision names)"
    if not raw:
        listed = ", ".join(f"{k} {tuple(np.shape(tensors[k]))}" for k in sorted(tensors)[:3])
        raise ValueError(
            f"{path} does not hold MobileNetV3 weights in the {layout} layout: none of its "
            f"{len(tensors)} tensors has a MobileNetV3 name (a file of another network? "
            f"{listed}, ...)."
        )
    modules = 1 + max(int(p.split("/")[0].split("_")[1]) for p in raw)
    if modules != _MODULES:
        known = {13: " (MobileNetV3-Small's count)", 19: " (MobileNetV2's count)"}
        raise ValueError(
            f"{path}: this file's `features` has {modules} modules{known.get(modules, '')}, not "
            f"MobileNetV3-Large's {_MODULES} (features.0 ... features.16)."
        )
    check = _Checker(raw, [])
    _convert(check)
    unexpected += [f"{lab} {a.shape}" for entry in check.raw.values() for lab, a in entry.values()]
    check.raise_problems(
        f"{path} does not hold MobileNetV3-Large weights in the {layout} layout", unexpected
    )
    return {"params": _nest(check.params), "batch_stats": _nest(check.stats)}, TORCHVISION
