"""ResNet's key maps and layouts: torchvision and Keras files into fcnjax's ResNet.

Files are found and read by :mod:`fcnjax.weights.files` and their shapes checked by
:class:`fcnjax.weights.backbone.ShapeChecker`; this module reads ResNet's tensors in each
release and converts them to fcnjax's names (torchvision's, with ``layer1.0`` written
``layer1_0``, :mod:`fcnjax.models.resnet`; the names of each release are translated by
:mod:`fcnjax.weights.resnet_names`):

* **torchvision** ``resnet18`` ... ``resnet152`` state dicts (``.pth``/``.pt`` or
  ``.safetensors``): ``conv1.weight``, ``bn1.{weight,bias,running_mean,running_var}``,
  ``layer{i}.{j}.conv{k}.weight``, ``layer{i}.{j}.bn{k}.*``,
  ``layer{i}.{j}.downsample.0.weight`` and ``downsample.1.*``. ResNet v1.5 arithmetic
  (``style="torchvision"``), torchvision preprocessing.
* **Keras HDF5** (``keras.applications.ResNet50/101/152``, Keras 2.2+ and 3):
  ``conv1_conv``, ``conv1_bn``, ``conv{s}_block{b}_{k}_conv``/``_bn`` (stage ``s`` = 2 ... 5
  is ``layer1`` ... ``layer4``, block ``b`` counts from 1, ``k`` = 1, 2, 3 the main path and
  0 the shortcut). Also the names of the first Keras ResNet50 (Caffe's, as in fchollet's
  ``deep-learning-models`` files that keras-segmentation loads): ``conv1``, ``bn_conv1``,
  ``res2a_branch2a``, ``bn2a_branch2a``, ..., ``res2a_branch1`` (the shortcut), blocks
  ``a``, ``b``, ``c``, ... or Caffe's ``a``, ``b1``, ``b2``, ... of ResNet-101/152. ResNet v1
  arithmetic (``style="keras"``: convolutions with biases; the first Keras' BatchNorm
  epsilon was 1e-3 where fcnjax, like today's Keras and Caffe, uses about 1e-5), Caffe
  preprocessing. A BatchNorm's tensors are told apart by name: ``gamma``, ``beta``,
  ``moving_mean`` and ``moving_variance`` (Keras 1's ``running_mean`` and ``running_std``,
  which held the variance).

Convolution kernels become ``(kh, kw, C_in, C_out)`` (torch's ``(C_out, C_in, kh, kw)``
is transposed). The ImageNet classifier (torch ``fc``, Keras ``predictions``/``fc1000``)
and torch's ``num_batches_tracked`` are ignored.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import numpy as np

from fcnjax.data.transforms import KERAS_CAFFE, TORCHVISION, Preprocessing
from fcnjax.models.resnet import DEPTHS
from fcnjax.weights import files
from fcnjax.weights import resnet_names as names
from fcnjax.weights.backbone import Raw, ShapeChecker

__all__ = ["KERAS_RESNET_URLS", "RESNET_CHECKSUMS", "TORCHVISION_RESNET_URLS", "load_resnet"]

_TORCH_BASE = "https://download.pytorch.org/models/"
# The default of load_resnet(None, depth=...): torchvision's IMAGENET1K_V1 weights.
TORCHVISION_RESNET_URLS = {
    18: _TORCH_BASE + "resnet18-f37072fd.pth",
    34: _TORCH_BASE + "resnet34-b627a593.pth",
    50: _TORCH_BASE + "resnet50-0676ba61.pth",
    101: _TORCH_BASE + "resnet101-63fe2227.pth",
    152: _TORCH_BASE + "resnet152-394f9c45.pth",
}
_KERAS_BASE = "https://storage.googleapis.com/tensorflow/keras-applications/resnet/"
# keras.applications' ImageNet ResNets without their classifier ("notop").
KERAS_RESNET_URLS = {
    d: f"{_KERAS_BASE}resnet{d}_weights_tf_dim_ordering_tf_kernels_notop.h5" for d in (50, 101, 152)
}
_KERAS_TOP_URLS = {
    d: f"{_KERAS_BASE}resnet{d}_weights_tf_dim_ordering_tf_kernels.h5" for d in (50, 101, 152)
}
# (with top, notop) md5s: WEIGHTS_HASHES of keras/src/applications/resnet.py.
_KERAS_MD5 = {
    50: ("2cb95161c43110f7111970584f804107", "4d473c1dd8becc155b73f8504c6f6626"),
    101: ("f1aeb4b969a6efcfb50fad2f0c20cfc5", "88cf7a10940856eca736dc7b7e228a21"),
    152: ("100835be76be38e30d865e96f2aaae62", "ee4c566cf9a93f14d82f913c2dc6dd0c"),
}
# torchvision names its files after the first 8 hex digits of the sha256.
RESNET_CHECKSUMS = {
    **{url: ("sha256", url.rsplit("-", 1)[1][:8]) for url in TORCHVISION_RESNET_URLS.values()},
    **{_KERAS_TOP_URLS[d]: ("md5", top) for d, (top, _) in _KERAS_MD5.items()},
    **{KERAS_RESNET_URLS[d]: ("md5", notop) for d, (_, notop) in _KERAS_MD5.items()},
}
files.KNOWN_CHECKSUMS.update(RESNET_CHECKSUMS)

_CONV_ROLES, _BN_ROLES = ("kernel", "bias"), ("scale", "bias", "mean", "var")
_IGNORED_KERAS = {"predictions", "fc1000", "probs"}  # ImageNet classifiers


# --------------------------------------------------------------------------------------
# Reading each layout into {path: {role: (label, array)}}, unexpected tensors, problems.
# --------------------------------------------------------------------------------------

_TORCH_ROLES = {
    "conv": {"weight": "kernel"},
    "bn": {"weight": "scale", "bias": "bias", "running_mean": "mean", "running_var": "var"},
}


def _from_state_dict(tensors: Mapping[str, np.ndarray]) -> tuple[Raw, list[str]]:
    raw: Raw = {}
    unexpected: list[str] = []
    for key in sorted(tensors):
        module, _, leaf = key.rpartition(".")
        parts = names.torch_parts(module)
        if module == "fc" and leaf in ("weight", "bias"):
            continue
        if parts is not None and parts[2] == "bn" and leaf == "num_batches_tracked":
            continue
        role = None if parts is None else _TORCH_ROLES[parts[2]].get(leaf)
        if role is None:
            unexpected.append(f"{key} {tuple(np.shape(tensors[key]))}")
            continue
        raw.setdefault(names.path(parts), {})[role] = (key, np.asarray(tensors[key], np.float32))
    return raw, unexpected


_BN_WORDS = {
    "scale": ("gamma",),
    "bias": ("beta",),
    "mean": ("moving_mean", "running_mean"),
    "var": ("moving_variance", "running_std", "running_var"),
}


def _bn_role(name: str) -> str | None:
    leaf = name.rsplit("/", 1)[-1].split(":")[0].lower()
    return next((r for r, words in _BN_WORDS.items() if leaf.endswith(words)), None)


def _keras_roles(layer, kind, found) -> tuple[dict[str, tuple[str, np.ndarray]], str | None]:
    """A Keras layer's tensors by role, or a problem: kernels by rank, BatchNorm by name."""
    if kind == "conv":
        roles = [("kernel" if a.ndim >= 2 else "bias", n, a) for n, a in found]
    else:
        roles = [(_bn_role(n), n, a) for n, a in found]
    names = [r for r, _, _ in roles]
    if None in names or len(set(names)) < len(names):
        what = "one kernel and one bias" if kind == "conv" else "gamma, beta, moving mean, variance"
        listed = [(n, tuple(a.shape)) for n, a in found]
        return {}, f"layer {layer!r}: expected {what}, found {listed}"
    return {r: (f"{layer} {r} ({n})", a) for r, n, a in roles}, None


def _from_keras(path) -> tuple[Raw, set[str], list[str], list[str], str]:
    """A Keras file's tensors, ResNet layers, unexpected tensors, problems, naming scheme."""
    found = set(files.read_keras_h5(path, ()).shapes)  # every layer with tensors, unread
    new = {n: p for n in found if (p := names.keras_parts(n)) is not None}
    old = {n: p for n in found if (p := names.caffe_parts(n)) is not None}
    scheme, layers = ("keras.applications", new) if len(new) >= len(old) else ("Caffe", old)
    keras = files.read_keras_h5(path, set(layers))
    raw: Raw = {}
    problems = list(keras.problems)
    for layer, found in keras.arrays.items():
        entry, problem = _keras_roles(layer, layers[layer][2], found)
        if problem:
            problems.append(problem)
        else:
            raw[names.path(layers[layer])] = entry
    unexpected = [
        f"{n} {shape} in layer {layer!r}"
        for layer, found in keras.shapes.items()
        if layer not in _IGNORED_KERAS
        for n, shape in found
    ]
    return raw, {names.path(p) for p in layers.values()}, unexpected, problems, scheme


# --------------------------------------------------------------------------------------
# The network's structure, validation and conversion to fcnjax's layout.
# --------------------------------------------------------------------------------------


def _structure(paths) -> tuple[tuple[int, ...], bool]:
    """Blocks per stage and whether they are bottlenecks, as the layer names tell."""
    blocks = [0, 0, 0, 0]
    bottleneck = False
    for stage, block, _, k in map(names.parts_of, paths):
        if stage is not None:
            blocks[stage - 1] = max(blocks[stage - 1], block + 1)
            bottleneck = bottleneck or k == 3
    return tuple(blocks), bottleneck


class _ResNetChecker(ShapeChecker):
    """A :class:`ShapeChecker` that takes each layer's tensors into ``params``/``stats``."""

    def __init__(self, raw: Raw, keras: bool, label, problems: list[str]):
        super().__init__(raw, label, problems)
        self.keras = keras
        self.params: dict[str, dict[str, np.ndarray]] = {}
        self.stats: dict[str, dict[str, np.ndarray]] = {}

    def conv(self, path: str, k: int, c_in: int | None, c_out: int | None) -> int | None:
        """A ``k x k`` convolution; returns its output channels (``None`` if unknown)."""
        entry = self.take(path, _CONV_ROLES if self.keras else _CONV_ROLES[:1])
        out: dict[str, np.ndarray] = {}
        if "kernel" in entry:
            lab, w = entry["kernel"]
            if self.shape_ok(lab, w, (k, k, c_in, c_out) if self.keras else (c_out, c_in, k, k)):
                c_out = w.shape[3] if self.keras else w.shape[0]
                out["kernel"] = w if self.keras else w.transpose(2, 3, 1, 0)
        if "bias" in entry and self.shape_ok(*entry["bias"], (c_out,)):
            out["bias"] = entry["bias"][1]
        if len(out) == len(entry) == (2 if self.keras else 1):
            self.params[path] = out
        return c_out

    def bn(self, path: str, c: int | None) -> None:
        entry = self.take(path, _BN_ROLES)
        ok = [self.shape_ok(lab, a, (c,)) for lab, a in entry.values()]
        if len(ok) == 4 and all(ok) and len({a.shape for _, a in entry.values()}) == 1:
            self.params[path] = {r: entry[r][1] for r in ("scale", "bias")}
            self.stats[path] = {r: entry[r][1] for r in ("mean", "var")}

    def conv_bn(self, block: str, n: int, k: int, c_in, c_out) -> int | None:
        """``{block}/conv{n}`` and ``{block}/bn{n}`` (``n`` 0: the shortcut's)."""
        conv, bn = ("downsample_conv", "downsample_bn") if n == 0 else (f"conv{n}", f"bn{n}")
        c = self.conv(f"{block}{conv}", k, c_in, c_out)
        self.bn(f"{block}{bn}", c)
        return c


def _convert(check: _ResNetChecker, stages: tuple[int, ...], bottleneck: bool) -> None:
    """Every convolution and BatchNorm of the ResNet, in order, each input width checked."""
    c = check.conv_bn("", 1, 7, 3, None)
    for i, blocks in enumerate(stages, 1):
        planes = None  # every block of a stage has the same width
        for j in range(blocks):
            block, c_in = f"layer{i}_{j}/", c
            downsample = j == 0 and (i > 1 or bottleneck)
            if bottleneck:
                planes = check.conv_bn(block, 1, 1, c_in, planes)
                check.conv_bn(block, 2, 3, planes, planes)
                wide = c_in if not downsample else None if planes is None else 4 * planes
                c = check.conv_bn(block, 3, 1, planes, wide)
            else:  # without a shortcut convolution the block keeps its input's width
                planes = check.conv_bn(block, 1, 3, c_in, planes if downsample else c_in)
                c = check.conv_bn(block, 2, 3, planes, planes)
            if downsample:
                check.conv_bn(block, 0, 1, c_in, c)


def _nest(flat: dict[str, dict[str, np.ndarray]]) -> dict:
    out: dict = {}
    for path, leaves in flat.items():
        node = out
        for part in path.split("/"):
            node = node.setdefault(part, {})
        node.update({k: np.ascontiguousarray(v, np.float32) for k, v in leaves.items()})
    return out


def _depth_of(stages: tuple[int, ...], bottleneck: bool) -> int | None:
    return next((d for d, s in DEPTHS.items() if s == (stages, bottleneck)), None)


def _read(path, kind: str, depth: int):
    """``(raw, paths, unexpected, problems, layout, label)`` of a file: its tensors by
    fcnjax layer, every ResNet layer it names, and the labels of its own names."""
    if kind == "keras":
        raw, paths, unexpected, problems, scheme = _from_keras(path)

        def label(p: str, role: str) -> str:
            return names.keras_label(p, role, scheme, depth)

        return raw, paths, unexpected, problems, f"Keras HDF5 ({scheme} names)", label
    raw, unexpected = _from_state_dict(files.read_state_dict(path, kind))
    return raw, set(raw), unexpected, [], f"{kind} (torchvision names)", names.torch_label


# --------------------------------------------------------------------------------------
# Public API.
# --------------------------------------------------------------------------------------


def load_resnet(
    path_or_url: str | os.PathLike[str] | None = None,
    *,
    depth: int = 50,
    cache_dir: str | os.PathLike[str] | None = None,
    sha256: str | None = None,
) -> tuple[dict[str, dict], str, Preprocessing]:
    """Pretrained ResNet variables for :class:`fcnjax.models.resnet.ResNet`.

    Args:
      path_or_url: a local file, or an ``http``/``https``/``file`` URL to download into
        ``cache_dir`` (reused, checksum verified, when already there). ``None`` means
        torchvision's ImageNet ResNet of that depth, :data:`TORCHVISION_RESNET_URLS`
        ``[depth]``. Keras' :data:`KERAS_RESNET_URLS` (50, 101, 152) work too.
      depth: 18, 34, 50, 101 or 152: the ResNet the file must hold.
      cache_dir: where downloads go; default :func:`~fcnjax.weights.default_cache_dir`.
      sha256: the file's full sha256 (hex), checked in addition to the known checksums
        of :data:`~fcnjax.weights.KNOWN_CHECKSUMS`.

    Returns:
      ``(variables, style, preprocessing)``. ``variables`` is ``{"params": ...,
      "batch_stats": ...}`` of float32 NumPy arrays, named and shaped as the variables of
      ``ResNet(depth, style=style, width=...)`` (widths come from the file): e.g.
      ``params["layer1_0"]["conv1"]["kernel"]`` ``(1, 1, C_in, C_out)``,
      ``batch_stats["bn1"]["var"]``. Apply it directly, or put it into a model with
      :func:`~fcnjax.weights.into_backbone` (once for ``params``, once for
      ``batch_stats``). ``style`` is ``"torchvision"`` for PyTorch/safetensors files and
      ``"keras"`` for Keras HDF5 ones; ``preprocessing`` :data:`TORCHVISION` or
      :data:`KERAS_CAFFE` accordingly.

    Raises:
      WeightsUnavailableError: a URL that is not cached could not be downloaded; the
        message names the path to place the file at.
      FileNotFoundError: a local path that does not exist.
      ValueError: a checksum mismatch, an unknown format, a file of another depth (the
        message says which ``depth`` to pass), or a file that does not hold a ResNet; the
        message lists every missing, unexpected and misshapen tensor.
      ImportError: a ``.pth`` file without torch installed.
    """
    if depth not in DEPTHS:
        raise ValueError(f"`depth` must be one of {sorted(DEPTHS)}; got {depth!r}.")
    url = TORCHVISION_RESNET_URLS[depth] if path_or_url is None else path_or_url
    path = files.weights_file(url, cache_dir=cache_dir, sha256=sha256, what="ResNet")
    kind = files.file_format(path)
    raw, paths, unexpected, problems, layout, label = _read(path, kind, depth)
    if not paths:
        raise ValueError(
            f"{path} does not hold ResNet weights in the {layout} layout: none of its "
            f"{len(unexpected)} tensors has a ResNet name (a file of another network? "
            f"{', '.join(unexpected[:3])}, ...)."
        )
    stages, bottleneck = _structure(paths)
    if (stages, bottleneck) != DEPTHS[depth]:
        blocks = f"stages {stages} of {'bottleneck' if bottleneck else 'basic'} blocks"
        other = _depth_of(stages, bottleneck)
        if other is not None:
            raise ValueError(
                f"{path}: this file holds a ResNet with {blocks}, a ResNet-{other}, not the "
                f"ResNet-{depth} asked for: load it with depth={other}."
            )
        problems.append(f"the file holds a ResNet with {blocks}, which is no ResNet depth")
    check = _ResNetChecker(raw, kind == "keras", label, problems)
    _convert(check, *DEPTHS[depth])
    unexpected += [f"{lab} {a.shape}" for entry in check.raw.values() for lab, a in entry.values()]
    check.raise_problems(
        f"{path} does not hold ResNet-{depth} weights in the {layout} layout", unexpected
    )
    variables = {"params": _nest(check.params), "batch_stats": _nest(check.stats)}
    if kind == "keras":
        return variables, "keras", KERAS_CAFFE
    return variables, "torchvision", TORCHVISION
