"""NumPy-backed source: images, masks and labels from ``.npy``/``.npz`` files or arrays.

The autoencoder's image-only data and Keras-style one-hot masks (``(N, H, W, K)``) both
come through here; see :class:`NumpyArrays`.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from fcnjax.data.core import (
    IGNORE_LABEL,
    DataError,
    Example,
    Source,
    check_num_classes,
    log,
    resolve,
)


class NumpyArrays(Source):
    """Images (and optionally masks or labels) from ``.npy``/``.npz`` files or arrays.

    Images are ``(N, H, W, C)`` or ``(N, H, W)`` (greyscale), uint8, or float with values
    in ``[0, 1]`` or ``[0, 255]`` (``value_range``; by default ``1`` when the array's
    maximum is <= 1, else 255). Masks are class indices ``(N, H, W)`` or ``(N, H, W, 1)``,
    or one-hot ``(N, H, W, K)`` with K >= 2 (Keras' ``to_categorical`` layout); a one-hot
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
        self.scale = self._check_images(value_range)
        n = len(self.images)
        self.masks, self.one_hot = None, False
        self.has_masks = masks is not None
        if masks is not None:
            self.masks, self.masks_name = _load_array(
                masks, root, mask_key, ("masks", "y", "y_train")
            )
            self.num_classes = self._check_masks(n, num_classes)
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

    def _check_images(self, value_range: float | None) -> float:
        """Checks ``self.images`` (made 4-D); returns the factor that maps them to [0, 255]."""
        if self.images.ndim == 3:
            self.images = self.images[..., None]
        if self.images.ndim != 4 or self.images.shape[-1] not in (1, 3):
            raise DataError(
                f"{self.images_name}: images must be (N, H, W), (N, H, W, 1) or (N, H, W, 3); "
                f"got shape {self.images.shape}."
            )
        if len(self.images) == 0:
            raise DataError(f"{self.images_name}: no images.")
        if self.images.dtype == np.uint8:
            return 1.0
        if not np.issubdtype(self.images.dtype, np.floating):
            raise DataError(
                f"{self.images_name}: images must be uint8 or float; got {self.images.dtype}."
            )
        if value_range is None:
            value_range = 1 if float(np.max(self.images)) <= 1.0 else 255
            log.info("%s: float images taken to be in [0, %d].", self.images_name, value_range)
        if value_range not in (1, 255):
            raise ValueError(f"`value_range` must be 1 or 255; got {value_range}.")
        return 255.0 / value_range

    def _check_masks(self, n: int, num_classes: int | None) -> int:
        """Checks ``self.masks`` (``(N, H, W, 1)`` squeezed); returns the number of classes."""
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
        return check_num_classes(num_classes, "numpy")

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

    def image_size(self, index: int) -> tuple[int, int]:
        """``(H, W)`` of example ``index``: the images array's, for every example."""
        return tuple(self.images.shape[1:3])

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
    try:
        return loaded[key], f"{path}[{key}]"
    except ValueError as e:  # an object array: loading it would run pickled code
        raise DataError(
            f"{path}[{key}]: holds Python objects, not numbers ({e}); fcnjax loads no pickled "
            "objects: save the images as a numeric array (np.savez(path, images=uint8_array))."
        ) from None
