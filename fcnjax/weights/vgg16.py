"""VGG16's key maps and layouts: Keras and torchvision files into :class:`fcnjax.models.vgg.VGG16`.

Files are found and read by :mod:`fcnjax.weights.files` and their shapes checked by
:class:`fcnjax.weights.backbone.ShapeChecker`; this module names VGG16's tensors in each
release and converts them.

* **Keras HDF5** (``keras.applications``): one group per layer, ``block1_conv1`` ...
  ``block5_conv3``, ``fc1``, ``fc2``, ``predictions``. A layer's kernel is its dataset of
  rank >= 2 and its bias its 1-D one, whatever their names (``block1_conv1_W_1:0`` in the
  released files, ``block1_conv1/kernel:0`` in newer ones). Caffe preprocessing.
* **torchvision** ``vgg16`` state dicts (``.pth``/``.pt`` or ``.safetensors``):
  ``features.{0,2,5,...,28}`` and ``classifier.{0,3,6}``. torchvision preprocessing.

Convolution kernels become ``(3, 3, C_in, C_out)`` (torch's ``(C_out, C_in, 3, 3)`` is
transposed). The classifier is "convolutionalised" as in Long et al. (FCN, 2015): ``fc1``
becomes ``fc6``, a ``(7, 7, C5, F)`` kernel, where Keras' dense kernel
``(7 * 7 * C5, F)`` flattened ``pool5`` in ``(H, W, C)`` order and torch's weight
``(F, C5 * 7 * 7)`` in ``(C, H, W)`` order; ``fc2`` becomes ``fc7``, a ``(1, 1, F, F)``
kernel. The ImageNet ``predictions`` layer (``classifier.6``) is dropped.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import numpy as np

from fcnjax.data.transforms import KERAS_CAFFE, TORCHVISION, Preprocessing
from fcnjax.models.vgg import VGG16_CONVS
from fcnjax.weights import files
from fcnjax.weights.backbone import Raw, ShapeChecker

__all__ = ["TORCHVISION_VGG16_URL", "VGG16_CHECKSUMS", "VGG16_URLS", "load_vgg16"]

_KERAS_BASE = "https://storage.googleapis.com/tensorflow/keras-applications/vgg16/"
# The defaults of load_vgg16(None, fc=...): keras.applications' ImageNet VGG16.
VGG16_URLS = {
    True: _KERAS_BASE + "vgg16_weights_tf_dim_ordering_tf_kernels.h5",
    False: _KERAS_BASE + "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5",
}
TORCHVISION_VGG16_URL = "https://download.pytorch.org/models/vgg16-397923af.pth"
# Keras publishes the md5 of its files; torchvision names its files after the first 8 hex
# digits of the sha256.
VGG16_CHECKSUMS = {
    VGG16_URLS[True]: ("md5", "64373286793e3c8b2b4e3219cbf3544b"),
    VGG16_URLS[False]: ("md5", "6d6bbae143d832006294945121d1f1fc"),
    TORCHVISION_VGG16_URL: ("sha256", "397923af"),
}
files.KNOWN_CHECKSUMS.update(VGG16_CHECKSUMS)

# torchvision's vgg16: indices of the 13 convolutions in `features` and of the 3 linear
# layers in `classifier` (ReLU, max pooling and dropout in between hold no tensors).
_TORCH_CONVS = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)
_TORCH_NAMES = {
    **{f"features.{i}": name for i, name in zip(_TORCH_CONVS, VGG16_CONVS)},
    "classifier.0": "fc1",
    "classifier.3": "fc2",
    "classifier.6": "predictions",
}
_TORCH_MODULES = {layer: module for module, layer in _TORCH_NAMES.items()}
_CLASSIFIER = ("fc1", "fc2", "predictions")
_FC_TARGETS = {"fc1": "fc6", "fc2": "fc7"}

_Params = dict[str, dict[str, np.ndarray]]


# --------------------------------------------------------------------------------------
# Key maps: each gives the tensors by layer, the names of unexpected tensors, and other
# problems found.
# --------------------------------------------------------------------------------------


def _from_keras(keras: files.KerasLayers) -> tuple[Raw, list[str], list[str]]:
    raw: Raw = {}
    unexpected = [
        f"{n} {shape} in layer {layer!r}"
        for layer, found in keras.shapes.items()
        if layer not in VGG16_CONVS and layer not in _CLASSIFIER
        for n, shape in found
    ]
    problems = list(keras.problems)
    for layer, found in keras.arrays.items():
        kernels = [(n, a) for n, a in found if a.ndim >= 2]
        biases = [(n, a) for n, a in found if a.ndim == 1]
        if len(kernels) > 1 or len(biases) > 1 or len(kernels) + len(biases) < len(found):
            problems.append(
                f"layer {layer!r}: expected one kernel (rank >= 2) and one bias (1-D), "
                f"found {[(n, tuple(a.shape)) for n, a in found]}"
            )
            continue
        entry = raw.setdefault(layer, {})
        for role, items in (("kernel", kernels), ("bias", biases)):
            if items:
                n, a = items[0]
                entry[role] = (f"{layer} {role} ({n})", a)
    return raw, unexpected, problems


def _from_state_dict(
    tensors: Mapping[str, np.ndarray], wanted: set[str]
) -> tuple[Raw, list[str], list[str]]:
    raw: Raw = {}
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


# --------------------------------------------------------------------------------------
# Validation and conversion to fcnjax's layout.
# --------------------------------------------------------------------------------------


def _label(torch_layout: bool):
    """A tensor's name in the file (``block1_conv1 kernel``, ``features.0.weight``)."""

    def label(layer: str, role: str) -> str:
        if torch_layout:
            return f"{_TORCH_MODULES[layer]}.{'weight' if role == 'kernel' else 'bias'}"
        return f"{layer} {role}"

    return label


def _tensors(check: ShapeChecker, layer: str):
    """``layer``'s ``(label, kernel)`` and ``(label, bias)``, ``None`` for a missing one."""
    entry = check.take(layer, ("kernel", "bias"))
    return entry.get("kernel"), entry.get("bias")


def _convert_convs(check: ShapeChecker, torch_layout: bool, out: _Params) -> int | None:
    """The 13 convolutions into ``out``; returns ``C5`` (``None`` if unknown)."""
    c_in: int | None = 3
    for layer in VGG16_CONVS:
        kernel, bias = _tensors(check, layer)
        c_out = None
        if kernel is not None:
            lab, k = kernel
            expected = (None, c_in, 3, 3) if torch_layout else (3, 3, c_in, None)
            if check.shape_ok(lab, k, expected):
                c_out = k.shape[0] if torch_layout else k.shape[3]
                k = k.transpose(2, 3, 1, 0) if torch_layout else k
        if bias is not None:
            check.shape_ok(bias[0], bias[1], (c_out,))
        if c_out is not None and bias is not None and bias[1].shape == (c_out,):
            out[layer] = {"kernel": k, "bias": bias[1]}
        c_in = c_out
    return c_in


def _convert_fc(check: ShapeChecker, torch_layout: bool, c5: int | None, out: _Params) -> None:
    """``fc1``/``fc2`` convolutionalised into ``out["fc6"]``/``out["fc7"]``."""
    if "fc1" not in check.raw and "fc2" not in check.raw:
        check.problems.append(
            "no classifier tensors (fc1, fc2): this looks like a 'notop' file "
            "(include_top=False); load it with fc=False, or use the file with the top"
        )
        return
    width = None  # fc1's output features: fc2 must be (width, width)
    for layer, window in (("fc1", 7), ("fc2", 1)):
        kernel, bias = _tensors(check, layer)
        f_in = f_out = None
        if kernel is not None:
            lab, k = kernel
            if layer == "fc1":
                f_in = None if c5 is None else window * window * c5
            else:
                f_in = width
            expected = (width, f_in) if torch_layout else (f_in, width)
            if check.shape_ok(lab, k, expected):
                f_out = k.shape[0] if torch_layout else k.shape[1]
                if torch_layout:  # (F, C * H * W): pool5 flattened in (C, H, W) order
                    k = k.reshape(f_out, -1, window, window).transpose(2, 3, 1, 0)
                else:  # (H * W * C, F): pool5 flattened in (H, W, C) order
                    k = k.reshape(window, window, -1, f_out)
        if bias is not None:
            check.shape_ok(bias[0], bias[1], (f_out,))
        if f_out is not None and f_in is not None and bias is not None:
            if bias[1].shape == (f_out,):
                out[_FC_TARGETS[layer]] = {"kernel": k, "bias": bias[1]}
        if layer == "fc1":
            width = f_out


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
      cache_dir: where downloads go; default :func:`~fcnjax.weights.default_cache_dir`.
      sha256: the file's full sha256 (hex), checked in addition to the known checksums
        of :data:`~fcnjax.weights.KNOWN_CHECKSUMS`.

    Returns:
      ``(params, preprocessing)``. ``params`` maps ``block1_conv1`` ... ``block5_conv3``
      to ``{"kernel": (3, 3, C_in, C_out), "bias": (C_out,)}`` and, with ``fc=True``,
      ``fc6`` to ``(7, 7, C5, F)``/``(F,)`` and ``fc7`` to ``(1, 1, F, F)``/``(F,)``: float32
      NumPy arrays, as ``VGG16(width=...)``'s params (widths come from the file). Use it
      as ``{"params": params}`` for a bare VGG16 or with
      :func:`~fcnjax.weights.into_backbone`. ``preprocessing`` is :data:`KERAS_CAFFE` for
      Keras files and :data:`TORCHVISION` for PyTorch/safetensors ones.

    Raises:
      WeightsUnavailableError: a URL that is not cached could not be downloaded; the
        message names the path to place the file at.
      FileNotFoundError: a local path that does not exist.
      ValueError: a checksum mismatch, an unknown format, or a file that does not hold a
        VGG16; the message lists every missing, unexpected and misshapen tensor.
      ImportError: a ``.pth`` file without torch installed.
    """
    url = VGG16_URLS[bool(fc)] if path_or_url is None else path_or_url
    path = files.weights_file(url, cache_dir=cache_dir, sha256=sha256, what="VGG16")
    kind = files.file_format(path)
    wanted = set(VGG16_CONVS) | ({"fc1", "fc2"} if fc else set())
    if kind == "keras":
        raw, unexpected, problems = _from_keras(files.read_keras_h5(path, wanted))
    else:
        raw, unexpected, problems = _from_state_dict(files.read_state_dict(path, kind), wanted)
    torch_layout = kind != "keras"
    check = ShapeChecker(raw, _label(torch_layout), problems)
    params: _Params = {}
    c5 = _convert_convs(check, torch_layout, params)
    if fc:
        _convert_fc(check, torch_layout, c5, params)
    check.raise_problems(f"{path} does not hold VGG16 weights in the {kind} layout", unexpected)
    params = {
        name: {k: np.ascontiguousarray(v, np.float32) for k, v in leaves.items()}
        for name, leaves in params.items()
    }
    return params, (KERAS_CAFFE if kind == "keras" else TORCHVISION)
