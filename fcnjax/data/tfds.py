"""TFDS-backed source: MNIST-like digits, Oxford-IIIT Pet trimaps, any segmentation dataset.

Read through ``tfds.data_source`` (ArrayRecord, no TensorFlow); see :class:`TFDS`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from fcnjax.data.core import (
    IGNORE_LABEL,
    DataError,
    Example,
    Source,
    apply_label_map,
    check_num_classes,
    resolve,
)


class TFDS(Source):
    """Any TFDS dataset through ``tfds.data_source`` (no TensorFlow needed).

    Adapters:

    - ``mnist`` (and ``fashion_mnist``, ``kmnist``, ``emnist``): image-only with ``'label'``;
      ``digits=(1, 5, 6)`` keeps those classes;
    - ``oxford_iiit_pet``: the trimap as ``pet_classes=3`` (0 background, 1 pet, 2 border)
      or ``2`` (0 background, 1 pet, border ignored);
    - any other dataset with an image and a segmentation feature: name them with
      ``image_key``/``mask_key`` and give ``num_classes``.

    TFDS's ``voc`` has no segmentation masks; use the ``voc`` source on a VOCdevkit.

    The dataset is read in TFDS's ArrayRecord format from ``data_dir`` (default TFDS's,
    ``$TFDS_DATA_DIR`` or ``~/tensorflow_datasets``). Online, a missing ``mnist``,
    ``fashion_mnist`` or ``oxford_iiit_pet`` is downloaded and prepared without TensorFlow
    (:mod:`fcnjax.data.prepare`; ``mirror`` and ``checksums`` are explained there); any
    other dataset is prepared by TFDS, which needs TensorFlow. Offline, or with
    ``download=False``, a :class:`DataError` says what is missing and where to put it.
    """

    _LABEL_DATASETS = ("mnist", "fashion_mnist", "kmnist", "emnist")

    def __init__(
        self,
        name: str,
        split: str = "train",
        data_dir: str | os.PathLike | None = None,
        download: bool = True,
        digits: Sequence[int] | None = None,
        pet_classes: int = 3,
        image_key: str = "image",
        mask_key: str | None = None,
        num_classes: int | None = None,
        mirror: str | os.PathLike | None = None,
        checksums: str | os.PathLike | None = None,
    ):
        from fcnjax.data import prepare

        base = name.split("/")[0].split(":")[0]
        if base == "voc":
            raise DataError(
                "TFDS's voc dataset has detection boxes but no segmentation masks; use the "
                "`voc` source on a VOCdevkit folder (data.name='voc', data.root=...)."
            )
        data_dir = None if data_dir is None else str(resolve(None, data_dir))
        self.ds = prepare.data_source(
            name, split, data_dir, download=download, mirror=mirror, checksums=checksums
        )
        self.name, self.split = name, split
        self.image_key = image_key
        self.kind = "labels" if base in self._LABEL_DATASETS else "mask"
        if base == "oxford_iiit_pet":
            if pet_classes not in (2, 3):
                raise ValueError(f"`pet_classes` must be 2 or 3; got {pet_classes}.")
            mask_key = mask_key or "segmentation_mask"
            # TFDS trimap: 1 pet, 2 background, 3 border.
            self.label_map = (
                {1: 1, 2: 0, 3: 2} if pet_classes == 3 else {1: 1, 2: 0, 3: IGNORE_LABEL}
            )
            self.class_names = ("background", "pet", "border")[:pet_classes]
            num_classes = pet_classes
        else:
            self.label_map = {}
        self.mask_key = mask_key
        self.index = np.arange(len(self.ds))
        if self.kind == "labels":
            self.has_masks, self.has_labels = False, True
            self.num_classes = None
            if digits is not None:
                self.index = self._with_digits(digits)
        else:
            if digits is not None:
                raise ValueError(f"`digits` applies to MNIST-like datasets, not {name!r}.")
            if mask_key is None:
                raise ValueError(
                    f"TFDS dataset {name!r} has no built-in adapter: name its segmentation "
                    "feature with `mask_key` (and give `num_classes`)."
                )
            self.num_classes = check_num_classes(num_classes, f"tfds {name}")

    def _with_digits(self, digits: Sequence[int]) -> np.ndarray:
        """The record indices whose ``label`` is one of ``digits``."""
        digits = {int(d) for d in digits}
        labels = np.array([int(self.ds[i]["label"]) for i in range(len(self.ds))])
        index = np.flatnonzero(np.isin(labels, list(digits)))
        if not len(index):
            raise DataError(
                f"TFDS {self.name}[{self.split}] has no examples of digits {sorted(digits)}."
            )
        return index

    def __len__(self) -> int:
        return len(self.index)

    def describe(self, index: int) -> str:
        return f"tfds {self.name}[{self.split}] record {int(self.index[index])}"

    def load(self, index: int) -> Example:
        record = self.ds[int(self.index[index])]
        image = np.asarray(record[self.image_key])
        if image.ndim == 2:
            image = image[..., None]
        example: Example = {"image": image}
        if self.kind == "labels":
            example["label"] = np.asarray(record["label"], np.int32)
        else:
            example["mask"] = self._mask(record)
        return example

    def image_size(self, index: int) -> tuple[int, int]:
        """``(H, W)`` of example ``index``: the dataset's, where its images have one fixed
        size (MNIST), else the decoded image's."""
        try:
            shape = tuple(self.ds.dataset_info.features[self.image_key].shape)[:2]
        except (AttributeError, KeyError, TypeError):  # no feature spec (a mock, a list)
            shape = (None,)
        if None in shape:
            return tuple(np.shape(self.ds[int(self.index[index])][self.image_key])[:2])
        return shape

    def load_mask(self, index: int) -> np.ndarray:
        return self._mask(self.ds[int(self.index[index])])

    def _mask(self, record) -> np.ndarray:
        mask = np.asarray(record[self.mask_key])
        if mask.ndim == 3 and mask.shape[-1] == 1:
            mask = mask[..., 0]
        if self.label_map:
            unknown = set(np.unique(mask).tolist()) - set(self.label_map)
            if unknown:
                raise DataError(
                    f"trimap values {sorted(unknown)} are not the expected 1 (pet), "
                    "2 (background), 3 (border)."
                )
            return apply_label_map(mask.astype(np.uint8), self.label_map)
        if mask.ndim != 2 or (mask.size and (mask.min() < 0 or mask.max() > 255)):
            raise DataError(f"expected a 2-D mask with values in [0, 255]; got {mask.shape}.")
        return mask.astype(np.uint8)
