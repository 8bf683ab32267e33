"""Pretrained VGG16 weights for :class:`fcnjax.models.vgg.VGG16`, from Keras or torchvision files.

FCN starts from an ImageNet-trained VGG16. :func:`load_vgg16` reads one of the two
public releases, or a file of the same layout (any width), and returns plain NumPy
parameters for :class:`~fcnjax.models.vgg.VGG16` together with the input normalisation
the weights were trained with (:class:`Preprocessing`); :func:`into_backbone` places them
in a model's parameter tree.

Formats
-------
* **Keras HDF5** (``keras.applications``; ``model.save_weights("w.h5")`` in Keras 2, or
  ``legacy_h5_format`` in Keras 3): a ``layer_names`` attribute and one group per layer,
  at the root or under ``model_weights`` (full-model files). A layer's kernel is its
  dataset of rank >= 2 and its bias its 1-D one, whatever their names (``block1_conv1_W_1:0``
  in the released files, ``block1_conv1/kernel:0`` in newer ones). Caffe preprocessing.
* **torchvision** ``vgg16`` state dicts, as ``.pth``/``.pt`` (read with
  ``torch.load(..., weights_only=True)``; needs torch) or ``.safetensors`` (no torch):
  ``features.{0,2,5,...,28}`` and ``classifier.{0,3,6}``. torchvision preprocessing.

No code from a file is ever executed: HDF5 and safetensors hold only arrays, and
PyTorch's pickles are read with ``weights_only=True``.

Layouts
-------
Convolution kernels become ``(3, 3, C_in, C_out)`` (torch's ``(C_out, C_in, 3, 3)`` is
transposed). The classifier is "convolutionalised" as in FCN: ``fc1`` becomes ``fc6``,
a ``(7, 7, C5, F)`` kernel, where Keras' dense kernel ``(7 * 7 * C5, F)`` flattened
``pool5`` in ``(H, W, C)`` order and torch's weight ``(F, C5 * 7 * 7)`` in ``(C, H, W)``
order; ``fc2`` becomes ``fc7``, a ``(1, 1, F, F)`` kernel. The ImageNet ``predictions``
layer (``classifier.6``) is dropped.
"""

from __future__ import annotations

import dataclasses
import os
import re
import urllib.parse
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from fcnjax import download
from fcnjax.models.vgg import VGG16_CONVS

__all__ = [
    "KERAS_CAFFE",
    "KNOWN_CHECKSUMS",
    "TORCHVISION",
    "TORCHVISION_VGG16_URL",
    "VGG16_URLS",
    "Preprocessing",
    "WeightsUnavailableError",
    "default_cache_dir",
    "into_backbone",
    "load_vgg16",
]

_KERAS_BASE = "https://storage.googleapis.com/tensorflow/keras-applications/vgg16/"
# The defaults of load_vgg16(None, fc=...): keras.applications' ImageNet VGG16.
VGG16_URLS = {
    True: _KERAS_BASE + "vgg16_weights_tf_dim_ordering_tf_kernels.h5",
    False: _KERAS_BASE + "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5",
}
TORCHVISION_VGG16_URL = "https://download.pytorch.org/models/vgg16-397923af.pth"
# URL -> (hash algorithm, expected hex digest or its leading digits). Keras publishes the
# md5 of its files; torchvision names its files after the first 8 hex digits of the sha256.
KNOWN_CHECKSUMS: dict[str, tuple[str, str]] = {
    VGG16_URLS[True]: ("md5", "64373286793e3c8b2b4e3219cbf3544b"),
    VGG16_URLS[False]: ("md5", "6d6bbae143d832006294945121d1f1fc"),
    TORCHVISION_VGG16_URL: ("sha256", "397923af"),
}
# Any other torch hub file: "name-<sha256 prefix>.pth", as torch.hub's check_hash reads it.
_TORCH_HUB_HASH = re.compile(r"-([0-9a-f]{8,64})\.[A-Za-z]+$")

# torchvision's vgg16: indices of the 13 convolutions in `features` and of the 3 linear
# layers in `classifier` (ReLU, max pooling and dropout in between hold no tensors).
_TORCH_CONVS = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)
_TORCH_NAMES = {
    **{f"features.{i}": name for i, name in zip(_TORCH_CONVS, VGG16_CONVS)},
    "classifier.0": "fc1",
    "classifier.3": "fc2",
    "classifier.6": "predictions",
}
_CLASSIFIER = ("fc1", "fc2", "predictions")
_FC_TARGETS = {"fc1": "fc6", "fc2": "fc7"}


class WeightsUnavailableError(download.DownloadError):
    """The weights file is neither cached nor downloadable (e.g. no network)."""


# --------------------------------------------------------------------------------------
# Preprocessing.
# --------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Preprocessing:
    """The input normalisation a set of weights was trained with.

    Calling it maps RGB images with values in ``[0, 255]`` to the network's input:
    ``x * scale``, then (if ``bgr``) channels reversed to BGR, then ``(x - mean) / std``.
    ``mean`` and ``std`` are given in the network's channel order (BGR when ``bgr``).

    Attributes:
      mean: per-channel mean subtracted after scaling.
      std: per-channel divisor.
      bgr: reverse RGB to BGR (Caffe-trained weights, as Keras' VGG16).
      scale: multiplier applied first (``1 / 255`` for torchvision).

    >>> import numpy as np
    >>> KERAS_CAFFE(np.array([[[10, 20, 30]]], np.uint8))
    array([[[ -73.939,  -96.779, -113.68 ]]], dtype=float32)
    >>> TORCHVISION(np.full((2, 4, 4, 3), 255.0)).shape
    (2, 4, 4, 3)
    """

    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    bgr: bool
    scale: float = 1.0

    def __post_init__(self):
        for field in ("mean", "std"):
            value = tuple(float(v) for v in getattr(self, field))
            if len(value) != 3:
                raise ValueError(f"`{field}` must have 3 values (one per channel); got {value}.")
            object.__setattr__(self, field, value)
        if any(s == 0 for s in self.std):
            raise ValueError(f"`std` must be non-zero; got {self.std}.")

    def __call__(self, images: Any) -> Any:
        """Normalise RGB images.

        Args:
          images: ``(..., H, W, 3)`` RGB, uint8 or float with values in ``[0, 255]``; a
            NumPy array (or anything ``np.asarray`` takes) or a JAX array (also traced).

        Returns:
          ``(..., H, W, 3)`` float32, the network's input; a JAX array for JAX input and
          a NumPy array otherwise.
        """
        xp = jnp if isinstance(images, jax.Array) else np
        x = xp.asarray(images)
        if x.ndim < 1 or x.shape[-1] != 3:
            raise ValueError(
                f"Preprocessing expects RGB images (..., H, W, 3) with 3 channels last; "
                f"got shape {x.shape}."
            )
        x = x.astype(np.float32)
        if self.scale != 1.0:
            x = x * np.float32(self.scale)
        if self.bgr:
            x = x[..., ::-1]
        x = x - np.asarray(self.mean, np.float32)
        if self.std != (1.0, 1.0, 1.0):
            x = x / np.asarray(self.std, np.float32)
        return x


# Keras' "caffe" mode (keras.applications.vgg16.preprocess_input): BGR, ImageNet mean.
KERAS_CAFFE = Preprocessing(mean=(103.939, 116.779, 123.68), std=(1.0, 1.0, 1.0), bgr=True)
# torchvision's ImageNet models: [0, 1], then ImageNet mean and standard deviation.
TORCHVISION = Preprocessing(
    mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), bgr=False, scale=1 / 255
)


# --------------------------------------------------------------------------------------
# Download, cache and checksums.
# --------------------------------------------------------------------------------------


def default_cache_dir() -> Path:
    """``$FCNJAX_CACHE`` if set, else ``~/.cache/fcnjax``."""
    env = os.environ.get("FCNJAX_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "fcnjax"


def _is_url(s: Any) -> bool:
    return isinstance(s, str) and urllib.parse.urlparse(s).scheme in ("http", "https", "file")


def _expected_digests(url: str | None, sha256: str | None) -> list[download.Check]:
    checks = []
    if url is not None:
        if url in KNOWN_CHECKSUMS:
            checks.append(download.Check(*KNOWN_CHECKSUMS[url], "published checksum"))
        elif urllib.parse.urlparse(url).netloc == "download.pytorch.org":
            m = _TORCH_HUB_HASH.search(urllib.parse.urlparse(url).path)
            if m:
                prefix = download.Check("sha256", m.group(1), "sha256 prefix in the file name")
                checks.append(prefix)
    if sha256 is not None:
        digest = sha256.strip().lower()
        if not re.fullmatch(r"[0-9a-f]{64}", digest):
            raise ValueError(f"`sha256` must be 64 hex digits; got {sha256!r}.")
        checks.append(download.Check("sha256", digest, "the given sha256"))
    return checks


def _fetch(url: str, cache_dir: Path, checks: list[download.Check]) -> Path:
    """The cached, verified copy of ``url`` (:func:`fcnjax.download.fetch`)."""
    name = os.path.basename(urllib.parse.unquote(urllib.parse.urlparse(url).path))
    try:
        return download.fetch(
            url, cache_dir, checks, fname=name or "vgg16_weights", progressbar=True
        )
    except download.DownloadError as e:
        raise WeightsUnavailableError(f"{e} Or pass a local file path instead.") from e


# --------------------------------------------------------------------------------------
# Readers: each returns {canonical layer: {"kernel"/"bias": (label, array)}} in the
# file's own layout, the names of unexpected tensors, and other problems found.
# --------------------------------------------------------------------------------------

_Raw = dict[str, dict[str, tuple[str, np.ndarray]]]


def _h5_attr_list(obj, name: str) -> list[str] | None:
    """A string-list attribute, also when Keras split it into ``name0``, ``name1``, ..."""
    import h5py

    if name in obj.attrs:
        value = obj.attrs[name]
        values = [] if isinstance(value, h5py.Empty) else list(np.atleast_1d(value))
    elif f"{name}0" in obj.attrs:
        values, i = [], 0
        while f"{name}{i}" in obj.attrs:
            values.extend(np.atleast_1d(obj.attrs[f"{name}{i}"]))
            i += 1
    else:
        return None
    return [v.decode("utf8") if isinstance(v, bytes) else str(v) for v in values]


def _datasets(group) -> list[tuple[str, Any]]:
    """Every dataset under an HDF5 group, with its path relative to the group."""
    import h5py

    found: list[tuple[str, Any]] = []
    group.visititems(lambda n, o: found.append((n, o)) if isinstance(o, h5py.Dataset) else None)
    return found


def _read_keras_h5(path: Path, wanted: set[str]) -> tuple[_Raw, list[str], list[str]]:
    import h5py

    raw: _Raw = {}
    unexpected: list[str] = []
    problems: list[str] = []
    with h5py.File(path, "r") as f:
        root = f["model_weights"] if "model_weights" in f else f
        layer_names = _h5_attr_list(root, "layer_names")
        if layer_names is None:
            raise ValueError(
                f"{path}: an HDF5 file but not a legacy Keras weights file (no 'layer_names' "
                f"attribute). Keras 3 '.weights.h5' files are not supported: save with "
                f"keras.src.legacy.saving.legacy_h5_format.save_weights_to_hdf5_group."
            )
        for layer in layer_names:
            if layer not in root:
                problems.append(f"layer {layer!r} is listed in layer_names but has no group")
                continue
            group = root[layer]
            weight_names = _h5_attr_list(group, "weight_names")
            if weight_names is None:  # no list: take every dataset in the group
                found = _datasets(group)
            else:
                absent = [n for n in weight_names if n not in group]
                if absent:
                    problems.append(f"layer {layer!r}: weight_names lists absent {absent}")
                found = [(n, group[n]) for n in weight_names if n in group]
            if not found:
                continue  # input, pooling, flatten, dropout
            if layer not in VGG16_CONVS and layer not in _CLASSIFIER:
                unexpected += [f"{n} {tuple(d.shape)} in layer {layer!r}" for n, d in found]
                continue
            if layer not in wanted:
                continue
            kernels = [(n, d) for n, d in found if d.ndim >= 2]
            biases = [(n, d) for n, d in found if d.ndim == 1]
            if len(kernels) > 1 or len(biases) > 1 or len(kernels) + len(biases) < len(found):
                problems.append(
                    f"layer {layer!r}: expected one kernel (rank >= 2) and one bias (1-D), "
                    f"found {[(n, tuple(d.shape)) for n, d in found]}"
                )
                continue
            entry = raw.setdefault(layer, {})
            for role, items in (("kernel", kernels), ("bias", biases)):
                if items:
                    n, d = items[0]
                    entry[role] = (f"{layer} {role} ({n})", np.asarray(d, np.float32))
    return raw, unexpected, problems


def _from_state_dict(
    tensors: Mapping[str, np.ndarray], wanted: set[str]
) -> tuple[_Raw, list[str], list[str]]:
    raw: _Raw = {}
    unexpected: list[str] = []
    for key in sorted(tensors):
        module, _, leaf = key.rpartition(".")
        layer = _TORCH_NAMES.get(module)
        if layer is None or leaf not in ("weight", "bias"):
            unexpected.append(f"{key} {tuple(np.shape(tensors[key]))}")
            continue
        if layer in wanted:
            role = "kernel" if leaf == "weight" else "bias"
            raw.setdefault(layer, {})[role] = (key, np.asarray(tensors[key], np.float32))
    return raw, unexpected, []


def _read_torch(path: Path, wanted: set[str]) -> tuple[_Raw, list[str], list[str]]:
    try:
        import torch
    except ImportError as e:
        raise ImportError(
            f"Reading {path} (a PyTorch file) needs torch: `pip install torch`, or convert "
            f"it once to safetensors on a machine with torch: `safetensors.torch.save_file("
            f"torch.load(path, weights_only=True), 'vgg16.safetensors')`."
        ) from e
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ValueError(
            f"{path}: could not read it as a PyTorch state dict with weights_only=True "
            f"({type(e).__name__}: {e})."
        ) from e
    if isinstance(state, Mapping) and isinstance(state.get("state_dict"), Mapping):
        state = state["state_dict"]
    if not isinstance(state, Mapping) or not all(
        isinstance(v, torch.Tensor) for v in state.values()
    ):
        raise ValueError(f"{path}: expected a state dict (name -> tensor); got {type(state)}.")
    tensors = {k: v.detach().to(torch.float32).numpy() for k, v in state.items()}
    return _from_state_dict(tensors, wanted)


def _read_safetensors(path: Path, wanted: set[str]) -> tuple[_Raw, list[str], list[str]]:
    from safetensors.numpy import load_file

    return _from_state_dict(load_file(path), wanted)


def _sniff(path: Path) -> str:
    import h5py

    if h5py.is_hdf5(path):
        return "keras"
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        return "safetensors"
    if suffix in (".pth", ".pt", ".bin", ".ckpt"):
        return "torch"
    with open(path, "rb") as f:
        head = f.read(16)
    if head[:4] == b"PK\x03\x04":  # torch.save's zip format
        return "torch"
    if len(head) >= 10 and head[8:10] == b'{"':  # 8-byte header length, then JSON
        return "safetensors"
    raise ValueError(
        f"{path}: unrecognised weights format: expected a Keras .h5, a PyTorch .pth/.pt or "
        f"a .safetensors file."
    )


# --------------------------------------------------------------------------------------
# Validation and conversion to fcnjax's layout.
# --------------------------------------------------------------------------------------


def _fmt(shape) -> str:
    return "(" + ", ".join("*" if s is None else str(s) for s in shape) + ")"


def _shape_ok(label: str, arr: np.ndarray, expected: tuple, problems: list[str]) -> bool:
    ok = arr.ndim == len(expected) and all(e is None or e == s for e, s in zip(expected, arr.shape))
    if not ok:
        problems.append(f"{label}: expected shape {_fmt(expected)}, got {tuple(arr.shape)}")
    return ok


def _convert(
    raw: _Raw, torch_layout: bool, fc: bool, missing: list[str], problems: list[str]
) -> dict[str, dict[str, np.ndarray]]:
    """Check every shape against VGG16's structure and convert to fcnjax's layout."""
    if torch_layout:
        modules = {v: k for k, v in _TORCH_NAMES.items()}
        label = lambda layer, role: f"{modules[layer]}.{'weight' if role == 'kernel' else 'bias'}"
    else:
        label = lambda layer, role: f"{layer} {role}"

    def tensors(layer):
        entry = raw.get(layer, {})
        for role in ("kernel", "bias"):
            if role not in entry:
                missing.append(label(layer, role))
        return entry.get("kernel"), entry.get("bias")

    out: dict[str, dict[str, np.ndarray]] = {}
    c_in: int | None = 3
    for layer in VGG16_CONVS:
        kernel, bias = tensors(layer)
        c_out = None
        if kernel is not None:
            lab, k = kernel
            expected = (None, c_in, 3, 3) if torch_layout else (3, 3, c_in, None)
            if _shape_ok(lab, k, expected, problems):
                c_out = k.shape[0] if torch_layout else k.shape[3]
                k = k.transpose(2, 3, 1, 0) if torch_layout else k
        if bias is not None:
            _shape_ok(bias[0], bias[1], (c_out,), problems)
        if c_out is not None and bias is not None and bias[1].shape == (c_out,):
            out[layer] = {"kernel": k, "bias": bias[1]}
        c_in = c_out
    if not fc:
        return out

    if "fc1" not in raw and "fc2" not in raw:
        problems.append(
            "no classifier tensors (fc1, fc2): this looks like a 'notop' file "
            "(include_top=False); load it with fc=False, or use the file with the top"
        )
        return out
    c5 = c_in
    width = None  # fc1's output features: fc2 must be (width, width)
    for layer, window in (("fc1", 7), ("fc2", 1)):
        kernel, bias = tensors(layer)
        f_in = f_out = None
        if kernel is not None:
            lab, k = kernel
            if layer == "fc1":
                f_in = None if c5 is None else window * window * c5
            else:
                f_in = width
            expected = (width, f_in) if torch_layout else (f_in, width)
            if _shape_ok(lab, k, expected, problems):
                f_out = k.shape[0] if torch_layout else k.shape[1]
                if torch_layout:  # (F, C * H * W): pool5 flattened in (C, H, W) order
                    k = k.reshape(f_out, -1, window, window).transpose(2, 3, 1, 0)
                else:  # (H * W * C, F): pool5 flattened in (H, W, C) order
                    k = k.reshape(window, window, -1, f_out)
        if bias is not None:
            _shape_ok(bias[0], bias[1], (f_out,), problems)
        if f_out is not None and f_in is not None and bias is not None:
            if bias[1].shape == (f_out,):
                out[_FC_TARGETS[layer]] = {"kernel": k, "bias": bias[1]}
        if layer == "fc1":
            width = f_out
    return out


# --------------------------------------------------------------------------------------
# Public API.
# --------------------------------------------------------------------------------------


def load_vgg16(
    path_or_url: str | os.PathLike[str] | None = None,
    *,
    fc: bool = True,
    cache_dir: str | os.PathLike[str] | None = None,
    sha256: str | None = None,
) -> tuple[dict[str, dict[str, np.ndarray]], Preprocessing]:
    """Pretrained VGG16 parameters for :class:`fcnjax.models.vgg.VGG16`.

    Args:
      path_or_url: a local file, or an ``http``/``https``/``file`` URL to download into
        ``cache_dir`` (reused, checksum verified, when already there). ``None`` means
        ``keras.applications``' ImageNet VGG16, :data:`VGG16_URLS` ``[fc]``. torchvision's
        ``https://download.pytorch.org/models/vgg16-397923af.pth`` works too.
      fc: also return ``fc6`` and ``fc7`` (the convolutionalised fc1 and fc2). With
        ``False`` the classifier is ignored and "notop" files are accepted.
      cache_dir: where downloads go; default :func:`default_cache_dir`.
      sha256: the file's full sha256 (hex), checked in addition to the known checksums
        of :data:`KNOWN_CHECKSUMS`.

    Returns:
      ``(params, preprocessing)``. ``params`` maps ``block1_conv1`` ... ``block5_conv3``
      to ``{"kernel": (3, 3, C_in, C_out), "bias": (C_out,)}`` and, with ``fc=True``,
      ``fc6`` to ``(7, 7, C5, F)``/``(F,)`` and ``fc7`` to ``(1, 1, F, F)``/``(F,)``: float32
      NumPy arrays, as ``VGG16(width=...)``'s params (widths come from the file). Use it
      as ``{"params": params}`` for a bare VGG16 or with :func:`into_backbone`.
      ``preprocessing`` is :data:`KERAS_CAFFE` for Keras files and :data:`TORCHVISION`
      for PyTorch/safetensors ones.

    Raises:
      WeightsUnavailableError: a URL that is not cached could not be downloaded; the
        message names the path to place the file at.
      FileNotFoundError: a local path that does not exist.
      ValueError: a checksum mismatch, an unknown format, or a file that does not hold a
        VGG16; the message lists every missing, unexpected and misshapen tensor.
      ImportError: a ``.pth`` file without torch installed.
    """
    url = VGG16_URLS[bool(fc)] if path_or_url is None else path_or_url
    if _is_url(url):
        cache = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
        path = _fetch(url, cache, _expected_digests(url, sha256))
    else:
        path = Path(os.fspath(url)).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"No VGG16 weights file at {path}.")
        download.verify(path, _expected_digests(None, sha256), str(path))

    kind = _sniff(path)
    wanted = set(VGG16_CONVS) | ({"fc1", "fc2"} if fc else set())
    reader = {"keras": _read_keras_h5, "torch": _read_torch, "safetensors": _read_safetensors}
    raw, unexpected, problems = reader[kind](path, wanted)
    missing: list[str] = []
    params = _convert(raw, kind != "keras", fc, missing, problems)
    lines = [f"missing: {m}" for m in missing] + [f"unexpected: {u}" for u in unexpected] + problems
    if lines:
        raise ValueError(
            f"{path} does not hold VGG16 weights in the {kind} layout:\n  - " + "\n  - ".join(lines)
        )
    params = {
        name: {k: np.ascontiguousarray(v, np.float32) for k, v in leaves.items()}
        for name, leaves in params.items()
    }
    return params, (KERAS_CAFFE if kind == "keras" else TORCHVISION)


def into_backbone(
    params: Mapping[str, Any], vgg_params: Mapping[str, Any], *, key: str = "backbone"
) -> Any:
    """A copy of ``params`` whose ``params[key][name]`` is ``vgg_params[name]`` for each name.

    Args:
      params: a model's parameter tree (dict or flax ``FrozenDict``), with the VGG16 under
        ``params[key]``, e.g. ``variables["params"]`` of an FCN.
      vgg_params: from :func:`load_vgg16` (or any ``{name: {leaf: array}}``).
      key: the backbone's submodule name.

    Returns:
      A new tree of the same type as ``params`` (``params`` itself is not modified), the
      loaded arrays cast to the dtypes of the arrays they replace. Names of
      ``params[key]`` absent from ``vgg_params`` (e.g. ``fc6``/``fc7`` after
      ``load_vgg16(fc=False)``) keep their values.

    Raises:
      ValueError: listing every name or leaf of ``vgg_params`` missing in ``params[key]``
        and every shape mismatch.
    """
    from flax.core import FrozenDict, freeze

    new = _copy_dicts(params)
    if key not in new or not isinstance(new[key], dict):
        raise ValueError(f"params has no backbone {key!r}; its keys are {sorted(new)}.")
    backbone = new[key]
    problems = []
    for name, leaves in vgg_params.items():
        if not isinstance(backbone.get(name), dict):
            problems.append(f"{name}: not in params[{key!r}]")
            continue
        for leaf, value in leaves.items():
            old = backbone[name].get(leaf)
            if old is None:
                problems.append(f"{name}/{leaf}: not in params[{key!r}][{name!r}]")
            elif tuple(np.shape(value)) != tuple(np.shape(old)):
                problems.append(
                    f"{name}/{leaf}: shape {tuple(np.shape(value))} does not fit the model's "
                    f"{tuple(np.shape(old))}"
                )
            else:
                backbone[name][leaf] = jnp.asarray(value, dtype=jnp.result_type(old))
    if problems:
        raise ValueError(
            f"Cannot place the weights into params[{key!r}]:\n  - " + "\n  - ".join(problems)
        )
    return freeze(new) if isinstance(params, FrozenDict) else new


def _copy_dicts(tree: Any) -> Any:
    """Copy every mapping of ``tree`` into a new dict; leaves are shared."""
    if isinstance(tree, Mapping):
        return {k: _copy_dicts(v) for k, v in tree.items()}
    return tree
