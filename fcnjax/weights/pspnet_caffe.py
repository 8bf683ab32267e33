"""keras-segmentation's pretrained ``pspnet_50`` / ``pspnet_101`` files into
:class:`fcnjax.models.PSPNetCaffe`.

keras-segmentation's ``pretrained.py`` loads the Caffe PSPNet weights that
Vladkryvoruchko converted to Keras: ``pspnet50_ade20k.h5`` (ADE20K, 150 classes, 473x473),
``pspnet101_cityscapes.h5`` (Cityscapes, 19 classes, 713x713) and
``pspnet101_voc2012.h5`` (VOC 2012, 21 classes, 473x473), legacy Keras HDF5 files
(:data:`PSPNET_URLS`), one group per layer named as keras-segmentation's ``_pspnet_2.py``
names it (:func:`fcnjax.models.pspnet_caffe.layer_names`): a convolution's kernel is its
dataset of rank 4 and ``conv6``'s bias its 1-D one; a BatchNorm's tensors (``<conv>_bn``)
are told apart by name (``gamma``, ``beta``, ``moving_mean``, ``moving_variance``).

The files are read by name, where keras-segmentation's ``load_weights`` reads them in
layer order; fcnjax has not read the released files themselves (no network here): a file
whose names differ fails with the list of every missing and unexpected tensor.

The Caffe model was trained on BGR images less the Caffe means (the Keras port's
``preprocess_image``): :data:`~fcnjax.weights.KERAS_CAFFE`. keras-segmentation's
``predict`` (``get_image_array``, ``imgNorm="sub_mean"``) feeds the same values with the
channels in RGB order instead.
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np

from fcnjax.data.transforms import KERAS_CAFFE, Preprocessing
from fcnjax.models.pspnet_caffe import BLOCKS, PSPNetCaffe, layer_names
from fcnjax.weights import files
from fcnjax.weights.backbone import Raw, ShapeChecker

__all__ = ["PSPNET_URLS", "load_pspnet_caffe"]

# keras-segmentation's pretrained.py: (file, depth, classes, input size). Dropbox links,
# without published checksums.
PSPNET_URLS = {
    "pspnet_50_ADE_20K": "https://www.dropbox.com/s/0uxn14y26jcui4v/pspnet50_ade20k.h5?dl=1",
    "pspnet_101_cityscapes": (
        "https://www.dropbox.com/s/c17g94n946tpalb/pspnet101_cityscapes.h5?dl=1"
    ),
    "pspnet_101_voc12": "https://www.dropbox.com/s/uvqj2cjo4b9c5wg/pspnet101_voc2012.h5?dl=1",
}

_BN_WORDS = {
    "scale": ("gamma",),
    "bias": ("beta",),
    "mean": ("moving_mean", "running_mean"),
    "var": ("moving_variance", "running_var"),
}


def _bn_role(name: str) -> str | None:
    leaf = name.rsplit("/", 1)[-1].split(":")[0].lower()
    return next((r for r, words in _BN_WORDS.items() if leaf.endswith(words)), None)


def _depth(layers: set[str], asked: int | None, path) -> int:
    """The file's depth from its stage-4 blocks; a file of another depth than ``asked`` is
    an error saying which to pass."""
    found = next((d for d in (101, 50) if f"conv4_{BLOCKS[d][2]}_1x1_reduce" in layers), None)
    if asked is not None and asked not in BLOCKS:
        raise ValueError(f"`depth` must be 50, 101 or None; got {asked!r}.")
    if asked is not None and found is not None and found != asked:
        raise ValueError(
            f"{path}: this file holds pspnet_{found}, not the pspnet_{asked} asked for: load "
            f"it with depth={found}."
        )
    return asked or found or 50


def _raw(keras: files.KerasLayers) -> tuple[Raw, list[str]]:
    """The file's tensors by layer and role, and the layers whose tensors are not a
    convolution's or a BatchNorm's."""
    raw: Raw = {}
    problems = list(keras.problems)
    for layer, found in keras.arrays.items():
        if layer.endswith("_bn"):
            roles = [(_bn_role(n), n, a) for n, a in found]
        else:
            roles = [("kernel" if a.ndim >= 2 else "bias", n, a) for n, a in found]
        names = [r for r, _, _ in roles]
        if None in names or len(set(names)) < len(names):
            listed = [(n, tuple(a.shape)) for n, a in found]
            problems.append(f"layer {layer!r}: tensors of no known role: {listed}")
            continue
        raw[layer] = {r: (f"{layer} {r} ({n})", a) for r, n, a in roles}
    return raw, problems


def load_pspnet_caffe(
    path_or_url: str | os.PathLike[str],
    *,
    depth: int | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    sha256: str | None = None,
) -> tuple[dict[str, dict], dict[str, int | float], Preprocessing]:
    """Pretrained variables for :class:`~fcnjax.models.PSPNetCaffe` from a Keras HDF5 file
    of keras-segmentation's ``pspnet_50`` / ``pspnet_101`` (``model.save_weights`` in
    Keras 2, or ``legacy_h5_format`` in Keras 3).

    Args:
      path_or_url: a local file, or a URL (e.g. of :data:`PSPNET_URLS`) to download into
        ``cache_dir``.
      depth: 50 or 101, the network the file must hold; ``None``: the file's.
      cache_dir: where downloads go; default :func:`~fcnjax.weights.default_cache_dir`.
      sha256: the file's full sha256 (hex), checked if given.

    Returns:
      ``(variables, fields, preprocessing)``: ``{"params": ..., "batch_stats": ...}`` of
      float32 NumPy arrays for ``PSPNetCaffe(**fields)``, where ``fields`` gives the
      file's ``num_classes``, ``depth`` and ``width`` (1.0 for the released files); and
      :data:`~fcnjax.weights.KERAS_CAFFE`.

    Raises:
      ValueError: an unreadable file, a file of another depth than ``depth``, or one that
        does not hold the network: every missing, unexpected and misshapen tensor listed.
    """
    path = files.weights_file(path_or_url, cache_dir=cache_dir, sha256=sha256, what="PSPNet")
    if files.file_format(path) != "keras":
        raise ValueError(f"{path}: keras-segmentation's PSPNet files are Keras HDF5 (.h5).")
    depth = _depth(set(files.read_keras_h5(path, ()).shapes), depth, path)
    convs = layer_names(depth)
    keras = files.read_keras_h5(path, {*convs, *(f"{c}_bn" for c in convs[:-1])})
    raw, problems = _raw(keras)
    stem, top = raw.get(convs[0], {}).get("kernel"), raw.get("conv6", {}).get("kernel")
    if stem is None or top is None or stem[1].ndim != 4 or top[1].ndim != 4:
        raise ValueError(
            f"{path} does not hold pspnet_{depth} weights: it has no 4-D kernel of "
            f"{'conv6' if stem is not None and stem[1].ndim == 4 else convs[0]!r}."
        )
    fields = dict(num_classes=int(top[1].shape[-1]), depth=depth, width=stem[1].shape[-1] / 64)
    x = jax.ShapeDtypeStruct((1, 33, 33, 3), jnp.float32)
    shapes = jax.eval_shape(PSPNetCaffe(**fields).init, jax.random.key(0), x)
    check = ShapeChecker(raw, lambda layer, role: f"{layer} {role}", problems)
    params: dict[str, dict[str, np.ndarray]] = {}
    stats: dict[str, dict[str, np.ndarray]] = {}
    extra: list[str] = []  # tensors of a layer beyond its roles (a bias where none is)
    for layer, expected in shapes["params"].items():
        more = shapes["batch_stats"].get(layer, {})
        wanted = {**expected, **more}
        entry = check.take(layer, tuple(wanted))
        extra += [f"{lab} {a.shape}" for r, (lab, a) in entry.items() if r not in wanted]
        ok = {r for r in wanted if r in entry and check.shape_ok(*entry[r], wanted[r].shape)}
        params[layer] = {r: entry[r][1] for r in expected if r in ok}
        if more:
            stats[layer] = {r: entry[r][1] for r in more if r in ok}
    unexpected = [f"{n} {s} in layer {layer!r}" for layer, f in keras.shapes.items() for n, s in f]
    unexpected += extra + [
        f"{lab} {a.shape}" for entry in check.raw.values() for lab, a in entry.values()
    ]
    check.raise_problems(f"{path} does not hold pspnet_{depth} weights", unexpected)
    tree = {"params": params, "batch_stats": stats}
    return jax.tree.map(lambda a: np.ascontiguousarray(a, np.float32), tree), fields, KERAS_CAFFE
