"""COCO instance annotations as semantic masks, decoded by pycocotools.

pycocotools is the ``coco`` extra (``pip install "fcnjax[coco]"``): the masks are exactly
those of its ``COCO.annToMask``, whatever else is installed.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fcnjax.data.core import IGNORE_LABEL, DataError, Example, Source, resolve
from fcnjax.data.images import read_image

INSTALL_HINT = 'pip install "fcnjax[coco]"'


def _mask_utils():
    """``pycocotools.mask``, or an ImportError that says how to install it."""
    try:
        from pycocotools import mask
    except ImportError as e:
        raise ImportError(
            f"the coco source decodes COCO polygons and RLEs with pycocotools, which is not "
            f"installed: {INSTALL_HINT} (or `pip install pycocotools`)."
        ) from e
    return mask


class COCO(Source):
    """COCO instance annotations as semantic masks for chosen categories.

    Class 0 is background and class ``k`` the ``k``-th of ``categories``; crowd regions of
    those categories are ``IGNORE_LABEL``. Larger objects (by ``area``) are painted first so
    a smaller one on top stays visible. Polygons and RLEs are decoded by pycocotools, as its
    ``COCO.annToMask`` does; without it the source raises ImportError naming
    ``pip install "fcnjax[coco]"``.

    Args:
      root: the COCO folder.
      split: e.g. ``"train2017"``: annotations default to
        ``root/annotations/instances_<split>.json`` and images to ``root/<split>``.
      annotations: the instances JSON (relative to ``root``).
      images: the image folder (relative to ``root``).
      categories: category names, in class order (default ``("cat", "dog")``).
      only_with_categories: keep only images showing at least one of ``categories``.
    """

    def __init__(
        self,
        root: str | os.PathLike | None = None,
        split: str | None = "train2017",
        annotations: str | os.PathLike | None = None,
        images: str | os.PathLike | None = None,
        categories: Sequence[str] = ("cat", "dog"),
        only_with_categories: bool = True,
    ):
        _mask_utils()  # fail before reading a large annotation file
        if annotations is None:
            if split is None:
                raise ValueError("the coco source needs `annotations` or `split`.")
            annotations = Path("annotations") / f"instances_{split}.json"
        ann_path = resolve(root, annotations)
        self.images_dir = resolve(root, images if images is not None else (split or "."))
        if not ann_path.is_file():
            raise DataError(f"{ann_path}: the COCO annotation file does not exist.")
        if not self.images_dir.is_dir():
            raise DataError(f"{self.images_dir}: the COCO image directory does not exist.")
        cats, images_info, anns = _read_instances(ann_path)
        if isinstance(categories, str):
            categories = (categories,)
        unknown = [c for c in categories if c not in cats]
        if unknown or not categories:
            raise ValueError(
                f"`categories` {list(unknown) or categories} not in {ann_path.name}; "
                f"its categories: {sorted(cats)}."
            )
        self.class_names = ("background", *categories)
        self.num_classes = len(self.class_names)
        self.cat_to_class = {cats[name]: k + 1 for k, name in enumerate(categories)}
        per_image: dict[int, list[dict]] = {}
        for a in anns:
            if a.get("category_id") in self.cat_to_class:
                per_image.setdefault(a["image_id"], []).append(a)
        ids = sorted(per_image) if only_with_categories else sorted(images_info)
        missing = [i for i in ids if i not in images_info]
        if missing:
            raise DataError(f"{ann_path}: annotations refer to unknown image ids {missing[:5]}.")
        self.records = [
            (images_info[i], sorted(per_image.get(i, []), key=lambda a: -a.get("area", 0)))
            for i in ids
        ]
        self.annotation_file = ann_path
        if not self.records:
            raise DataError(f"{ann_path}: no image shows any of {list(categories)}.")

    def __len__(self) -> int:
        return len(self.records)

    def describe(self, index: int) -> str:
        info = self.records[index][0]
        return f"{self.images_dir / info['file_name']} (image id {info['id']})"

    def load(self, index: int) -> Example:
        info = self.records[index][0]
        return {
            "image": read_image(self.images_dir / info["file_name"]),
            "mask": self.load_mask(index),
        }

    def image_size(self, index: int) -> tuple[int, int]:
        """``(H, W)`` of example ``index``, from the annotation file (nothing decoded)."""
        info = self.records[index][0]
        return int(info["height"]), int(info["width"])

    def load_mask(self, index: int) -> np.ndarray:
        info, anns = self.records[index]
        h, w = int(info["height"]), int(info["width"])
        mask = np.zeros((h, w), np.uint8)
        for a in anns:
            try:
                region = annotation_to_mask(a.get("segmentation"), h, w)
            except (ValueError, TypeError, IndexError) as e:
                raise DataError(
                    f"{self.annotation_file}: annotation id {a.get('id')} of image id "
                    f"{info['id']}: {e}."
                ) from e
            mask[region] = (
                IGNORE_LABEL if a.get("iscrowd", 0) else self.cat_to_class[a["category_id"]]
            )
        return mask


def _read_instances(path: Path) -> tuple[dict[str, Any], dict[Any, dict], list[dict]]:
    """``({category name: id}, {image id: image record}, annotations)`` of an instances file."""
    try:
        data = json.loads(path.read_text())
        cats = {c["name"]: c["id"] for c in data["categories"]}
        images_info = {im["id"]: im for im in data["images"]}
        anns = list(data["annotations"])
        if not all(isinstance(a, dict) and "image_id" in a for a in anns):
            raise TypeError("every annotation must be an object with an 'image_id'")
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as e:
        raise DataError(f"{path}: not a COCO instances file ({e}).") from e
    return cats, images_info, anns


def annotation_to_mask(segmentation: Any, height: int, width: int) -> np.ndarray:
    """A COCO ``segmentation`` (polygons, RLE or compressed RLE) as ``bool[height, width]``.

    Decoded by pycocotools exactly as ``COCO.annToMask`` decodes it; polygons of fewer
    than 3 points cover nothing. Raises ImportError without pycocotools and ValueError for
    a segmentation that is neither, or an RLE whose size or run total is not the image's.
    """
    mask_utils = _mask_utils()
    if isinstance(segmentation, list):
        if not all(isinstance(p, list) for p in segmentation):
            raise ValueError("polygons must be lists of x, y coordinates")
        # Fewer than 3 points cover no area; pycocotools would fail on them.
        segmentation = [p for p in segmentation if len(p) >= 6]
        if not segmentation:
            return np.zeros((height, width), bool)
        rle = mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))
        return mask_utils.decode(rle).astype(bool)
    if not isinstance(segmentation, dict) or "counts" not in segmentation:
        raise ValueError(f"a segmentation must be polygons or an RLE; got {segmentation!r:.80}")
    if [int(v) for v in segmentation.get("size", (height, width))] != [height, width]:
        raise ValueError(
            f"the RLE is {segmentation['size']} but the image is {[height, width]} (height, width)"
        )
    counts = segmentation["counts"]
    if isinstance(counts, list):
        if not all(isinstance(c, int) and c >= 0 for c in counts):
            raise ValueError("RLE counts must be non-negative integers")
        total = sum(counts)
        rle = mask_utils.frPyObjects({"size": [height, width], "counts": counts}, height, width)
    elif isinstance(counts, str | bytes):
        total = _rle_string_total(counts.encode() if isinstance(counts, str) else counts)
        rle = {"size": [height, width], "counts": counts}
    else:
        raise ValueError(f"RLE counts must be a list or a string; got {type(counts).__name__}")
    # pycocotools leaves the pixels after a short RLE uninitialised: refuse it here.
    if total != height * width:
        raise ValueError(f"the RLE covers {total} pixels, not {height} x {width}")
    return mask_utils.decode(rle).astype(bool)


def _rle_string_total(s: bytes) -> int:
    """The pixels covered by COCO's compressed RLE counts (6-bit groups, delta-coded runs)."""
    counts: list[int] = []
    p = 0
    while p < len(s):
        x, k, more = 0, 0, True
        while more:
            if p == len(s):
                raise ValueError("the compressed RLE string ends inside a run")
            c = s[p] - 48
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p += 1
            k += 1
            if not more and (c & 0x10):
                x |= -1 << (5 * k)
        if len(counts) > 2:
            x += counts[-2]
        if x < 0:
            raise ValueError("the compressed RLE string has a negative run")
        counts.append(x)
    return sum(counts)
