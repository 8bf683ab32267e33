"""Input pipelines: sources, joint transforms, grain loaders and class statistics.

>>> from fcnjax import data
>>> source = data.get_source({'name': 'shapes', 'num_examples': 8, 'size': 32})
>>> loader = data.train_loader(source, 4, data.TrainTransform(size=(32, 32)), num_epochs=1)
>>> batch = next(iter(loader))
>>> {k: (v.dtype.name, v.shape) for k, v in batch.items()}
{'image': ('float32', (4, 32, 32, 3)), 'mask': ('int32', (4, 32, 32))}

Sources (``data.name``): ``shapes`` (the offline default), ``folder``, ``voc``, ``camvid``
(:mod:`~fcnjax.data.sources`), ``coco`` (:mod:`~fcnjax.data.coco`; needs pycocotools,
``pip install "fcnjax[coco]"``), ``numpy`` (:mod:`~fcnjax.data.arrays`) and ``tfds`` with
``dataset``, e.g. ``'mnist'`` (:mod:`~fcnjax.data.tfds`).
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

from fcnjax.data.arrays import NumpyArrays
from fcnjax.data.coco import COCO, annotation_to_mask
from fcnjax.data.core import (
    IGNORE_LABEL,
    DataError,
    Example,
    Problem,
    Source,
    Subset,
    check_example,
    verify,
)
from fcnjax.data.images import image_size, read_image, read_mask
from fcnjax.data.pipeline import eval_loader, global_batch, stack, steps_per_epoch, train_loader
from fcnjax.data.shapes import SHAPE_CLASSES, Shapes
from fcnjax.data.sources import CAMVID_CLASSES, SOURCES, VOC, VOC_CLASSES, CamVid, Folder
from fcnjax.data.stats import ClassCounts, class_counts, median_frequency_weights
from fcnjax.data.tfds import TFDS
from fcnjax.data.transforms import (
    NORMALIZATIONS,
    EvalTransform,
    Preprocessing,
    TrainTransform,
    color_jitter,
    hflip,
    normalize,
    pad_to,
    random_crop,
    random_flip,
    random_scale,
    random_scale_crop,
    resize,
)

SOURCES = {**SOURCES, "shapes": Shapes}


def get_source(config: Mapping[str, Any]) -> Source:
    """The source a config names, verified unless ``verify=False``.

    ``config`` (a dict or ``ml_collections.ConfigDict``) holds ``name`` (a key of
    :data:`SOURCES`), the source's own arguments (``root``, ``split``, ...; for ``tfds``
    the TFDS name goes in ``dataset``), and optionally ``verify`` (default: the source's
    ``verify_by_default``) and ``on_error`` (``"raise"`` or ``"skip"``, for
    :func:`~fcnjax.data.core.verify`). Keys set to ``None`` count as not given.
    """
    config = {k: v for k, v in dict(config).items() if v is not None}
    name = config.pop("name", None)
    if name not in SOURCES:
        raise ValueError(f"`data.name` must be one of {sorted(SOURCES)}; got {name!r}.")
    do_verify = config.pop("verify", None)
    on_error = config.pop("on_error", "raise")
    cls = SOURCES[name]
    if name == "tfds":
        if "dataset" not in config:
            raise ValueError("the tfds source needs `data.dataset` (a TFDS name such as 'mnist').")
        config["name"] = config.pop("dataset")
    params = inspect.signature(cls.__init__).parameters
    unknown = sorted(set(config) - set(params) - {"self"})
    if unknown:
        accepted = sorted(set(params) - {"self"} | {"name", "verify", "on_error"})
        if name == "tfds":
            accepted = sorted((set(accepted) - {"name"}) | {"dataset"})
        raise ValueError(f"data.name={name!r} does not take {unknown}; it takes {accepted}.")
    source = cls(**config)
    if do_verify if do_verify is not None else source.verify_by_default:
        source = verify(source, on_error=on_error)
    return source


__all__ = [
    "CAMVID_CLASSES",
    "COCO",
    "IGNORE_LABEL",
    "NORMALIZATIONS",
    "SHAPE_CLASSES",
    "SOURCES",
    "TFDS",
    "VOC",
    "VOC_CLASSES",
    "CamVid",
    "ClassCounts",
    "DataError",
    "EvalTransform",
    "Example",
    "Folder",
    "NumpyArrays",
    "Preprocessing",
    "Problem",
    "Shapes",
    "Source",
    "Subset",
    "TrainTransform",
    "annotation_to_mask",
    "check_example",
    "class_counts",
    "color_jitter",
    "eval_loader",
    "get_source",
    "global_batch",
    "hflip",
    "median_frequency_weights",
    "normalize",
    "pad_to",
    "random_crop",
    "random_flip",
    "random_scale",
    "random_scale_crop",
    "image_size",
    "read_image",
    "read_mask",
    "resize",
    "stack",
    "steps_per_epoch",
    "train_loader",
    "verify",
]
