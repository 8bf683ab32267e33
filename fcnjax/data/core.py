"""What every source shares: the example format, errors and checks (decoding: :mod:`.images`).

An *example* is a dict of NumPy arrays:

- ``'image'``: ``uint8[H, W, C]`` (C = 3, or 1 for greyscale sources such as MNIST);
- ``'mask'``: ``uint8[H, W]`` class indices in ``[0, num_classes)`` or ``IGNORE_LABEL``;
  absent for image-only sources (MNIST, NumPy images alone);
- ``'label'``: ``int32[]`` image-level class, for classification sources (MNIST).

A *source* is random access (``len(source)``, ``source[i]``), which is what
``grain.MapDataset.source`` takes. ``source[i]`` decodes example ``i`` and checks it
(:func:`check_example`), raising :class:`DataError` naming the file and the problem.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fcnjax.labels import IGNORE_LABEL

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
MASK_EXTENSIONS = (".png", ".bmp", ".tif", ".tiff")

log = logging.getLogger("fcnjax.data")

Example = dict[str, np.ndarray]


class DataError(ValueError):
    """A dataset problem: missing or unpaired files, unreadable images, bad labels or shapes.

    The message names the file (or record) and what was expected.
    """


class Source:
    """Base class of the random-access sources.

    Subclasses set ``num_classes`` (``None`` for image-only sources), ``class_names``,
    ``has_masks`` and ``has_labels`` and implement ``__len__``, :meth:`load` and
    :meth:`describe`. ``source[i]`` is ``load(i)`` followed by :func:`check_example`.
    """

    num_classes: int | None = None
    class_names: tuple[str, ...] | None = None
    has_masks: bool = True
    has_labels: bool = False
    #: Whether :func:`verify` reads every example by default (False for generated data).
    verify_by_default: bool = True

    def __len__(self) -> int:
        raise NotImplementedError

    def load(self, index: int) -> Example:
        """Decodes example ``index`` (unchecked)."""
        raise NotImplementedError

    def describe(self, index: int) -> str:
        """Where example ``index`` comes from (a file path, a record), for messages."""
        return f"{type(self).__name__}[{index}]"

    def load_mask(self, index: int) -> np.ndarray:
        """The mask of example ``index`` alone (sources override it to skip the image)."""
        return self.load(index)["mask"]

    def __getitem__(self, index: int) -> Example:
        index = int(index)
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for a source of {len(self)} examples")
        where = self.describe(index)
        try:
            example = self.load(index)
        except DataError as e:
            if where in str(e) or any(str(p) in str(e) for p in _paths(where)):
                raise
            raise DataError(f"{where}: {e}") from e
        except Exception as e:  # noqa: BLE001 (any failure to decode is this example's)
            raise DataError(f"{where}: cannot read the example ({type(e).__name__}: {e}).") from e
        check_example(example, self.num_classes, where, self.has_masks)
        return example


def _paths(where: str) -> list[str]:
    # "a.jpg (mask b.png)" -> ["a.jpg", "b.png"]: a message naming either names the example.
    return [w.strip("()") for w in where.replace("(mask ", " ").split() if os.sep in w]


def check_example(
    example: Example, num_classes: int | None, where: str, has_masks: bool = True
) -> None:
    """Raises :class:`DataError` (naming ``where``) unless ``example`` is well formed.

    >>> ok = {'image': np.zeros((2, 3, 3), np.uint8), 'mask': np.array([[0, 1, 255]] * 2, np.uint8)}
    >>> check_example(ok, 2, 'a.png')
    >>> check_example(dict(ok, mask=ok['mask'][:1]), 2, 'a.png')
    Traceback (most recent call last):
    ...
    fcnjax.data.core.DataError: a.png: the mask is 1x3 but the image is 2x3; masks must have \
the image's height and width.
    """
    image = example["image"]
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] not in (1, 3):
        raise DataError(
            f"{where}: expected a uint8 image of shape (H, W, 1 or 3); "
            f"got {image.dtype} {image.shape}."
        )
    if not has_masks:
        return
    mask = example.get("mask")
    if mask is None or mask.ndim != 2:
        raise DataError(
            f"{where}: expected a 2-D mask; got {None if mask is None else mask.shape}."
        )
    if mask.shape != image.shape[:2]:
        raise DataError(
            f"{where}: the mask is {mask.shape[0]}x{mask.shape[1]} but the image is "
            f"{image.shape[0]}x{image.shape[1]}; masks must have the image's height and width."
        )
    if num_classes is not None:
        label_histogram(mask, num_classes, where)


def label_histogram(mask: np.ndarray, num_classes: int, where: str) -> np.ndarray:
    """``int64[256]`` pixel counts of each value of ``mask``; raises :class:`DataError`
    naming ``where`` for a label that is neither a class nor ``IGNORE_LABEL``."""
    counts = np.bincount(mask.ravel(), minlength=256)
    labels = np.flatnonzero(counts)
    bad = labels[(labels >= num_classes) & (labels != IGNORE_LABEL)]
    if bad.size:
        raise DataError(
            f"{where}: mask labels {bad.tolist()} are >= num_classes={num_classes} and are not "
            f"the ignore label {IGNORE_LABEL}."
        )
    return counts


def check_on_error(on_error: str) -> None:
    """ValueError unless ``on_error`` is ``"raise"`` or ``"skip"``."""
    if on_error not in ("raise", "skip"):
        raise ValueError(f"`on_error` must be 'raise' or 'skip'; got {on_error!r}.")


def apply_label_map(mask: np.ndarray, label_map: dict[int, int] | None) -> np.ndarray:
    """Relabels ``mask`` by ``label_map`` (e.g. ``{11: 255}`` for CamVid's void)."""
    if not label_map:
        return mask
    lut = np.arange(256, dtype=np.uint8)
    for src, dst in check_label_map(label_map).items():
        lut[src] = dst
    return lut[mask]


def check_label_map(label_map: dict[int, int] | None) -> dict[int, int]:
    """``label_map`` as ints in [0, 255], or ValueError naming the bad entry."""
    out = {}
    for src, dst in (label_map or {}).items():
        if not (0 <= int(src) <= 255 and 0 <= int(dst) <= 255):
            raise ValueError(
                f"`label_map` entries must map [0, 255] to [0, 255]; got {src}: {dst}."
            )
        out[int(src)] = int(dst)
    return out


def check_num_classes(num_classes: Any, source: str) -> int:
    """``num_classes`` as an int in ``[1, IGNORE_LABEL]``, or ValueError naming ``source``."""
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


def pair_by_stem(
    images_dir: Path, masks_dir: Path, names: Sequence[str] | None = None, where: str = ""
) -> list[tuple[Path, Path]]:
    """Pairs ``images_dir/<stem>.<img ext>`` with ``masks_dir/<stem>.<mask ext>``.

    Raises :class:`DataError` for a missing or empty directory, an image without a mask,
    a mask without an image, or two files with one stem. ``names`` (stems) restricts the
    pairing to a list, each of which must exist.
    """
    images = _index_dir(images_dir, IMAGE_EXTENSIONS, "images")
    masks = _index_dir(masks_dir, MASK_EXTENSIONS, "masks")
    if names is None:
        lonely_images = sorted(set(images) - set(masks))
        lonely_masks = sorted(set(masks) - set(images))
        problems = []
        if lonely_images:
            problems.append(
                f"{len(lonely_images)} image(s) in {images_dir} have no mask in {masks_dir}: "
                + some(images[s].name for s in lonely_images)
            )
        if lonely_masks:
            problems.append(
                f"{len(lonely_masks)} mask(s) in {masks_dir} have no image in {images_dir}: "
                + some(masks[s].name for s in lonely_masks)
            )
        if problems:
            raise DataError("; ".join(problems) + ".")
        names = sorted(images)
    else:
        missing = [n for n in names if n not in images or n not in masks]
        if missing:
            raise DataError(
                f"{where or 'the list'}: {len(missing)} listed name(s) lack an image in "
                f"{images_dir} or a mask in {masks_dir}: {some(missing)}."
            )
    return [(images[n], masks[n]) for n in names]


def read_list_file(path: Path) -> list[str]:
    """Stems listed one per line (blank lines and ``#`` comments skipped; a trailing image or
    mask extension dropped, so ``scan.v2`` stays ``scan.v2``)."""
    if not path.is_file():
        raise DataError(f"{path}: the list file does not exist.")
    names = []
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name = line.split()[0]
            suffix = Path(name).suffix.lower()
            names.append(
                name[: -len(suffix)] if suffix in IMAGE_EXTENSIONS + MASK_EXTENSIONS else name
            )
    if not names:
        raise DataError(f"{path}: the list file names no examples.")
    return names


def _index_dir(directory: Path, extensions: Sequence[str], what: str) -> dict[str, Path]:
    if not directory.is_dir():
        raise DataError(f"{directory}: the {what} directory does not exist.")
    found: dict[str, Path] = {}
    for path in sorted(directory.iterdir()):
        if path.suffix.lower() not in extensions or not path.is_file():
            continue
        if path.stem in found:
            raise DataError(
                f"{directory}: two {what} files share the stem {path.stem!r} "
                f"({found[path.stem].name}, {path.name}); pairing by stem needs one."
            )
        found[path.stem] = path
    if not found:
        raise DataError(
            f"{directory}: the {what} directory has no files with extension {'/'.join(extensions)}."
        )
    return found


def some(items, limit: int = 5) -> str:
    """The first ``limit`` items joined by commas, and how many more there are."""
    items = list(items)
    shown = ", ".join(str(i) for i in items[:limit])
    return shown + (f", ... ({len(items) - limit} more)" if len(items) > limit else "")


def resolve(root: str | os.PathLike | None, path: str | os.PathLike) -> Path:
    """``path`` if absolute (or no root), else ``root/path``; ``~`` expanded."""
    path = Path(os.path.expanduser(str(path)))
    if root is None or path.is_absolute():
        return path
    return Path(os.path.expanduser(str(root))) / path


# --------------------------------------------------------------------------------------
# verify.


@dataclasses.dataclass(frozen=True)
class Problem:
    """One bad example found by :func:`verify` or skipped while loading."""

    index: int
    where: str
    message: str


class Subset(Source):
    """``source`` restricted to ``indices`` (what :func:`verify` returns after skipping)."""

    def __init__(self, source: Source, indices: Sequence[int], skipped: Sequence[Problem] = ()):
        self.source = source
        self.indices = np.asarray(indices, dtype=np.int64)
        self.skipped = tuple(skipped)
        self.num_classes = source.num_classes
        self.class_names = source.class_names
        self.has_masks = source.has_masks
        self.has_labels = source.has_labels

    def __len__(self) -> int:
        return len(self.indices)

    def load(self, index: int) -> Example:
        return self.source.load(int(self.indices[index]))

    def load_mask(self, index: int) -> np.ndarray:
        return self.source.load_mask(int(self.indices[index]))

    def describe(self, index: int) -> str:
        return self.source.describe(int(self.indices[index]))


def verify(source: Source, on_error: str = "raise", workers: int | None = None) -> Source:
    """Reads and checks every example before training, like keras-segmentation's
    ``verify_dataset``.

    Args:
      source: any :class:`Source`.
      on_error: ``"raise"``: one :class:`DataError` listing every bad example (file and
        problem); ``"skip"``: log them and return a :class:`Subset` without them (its
        ``skipped`` attribute lists each :class:`Problem`).
      workers: decoding threads (default: CPU count, at most 8).

    Returns:
      ``source`` itself when every example is good, else the :class:`Subset`.
    """
    check_on_error(on_error)
    if len(source) == 0:
        raise DataError(f"{type(source).__name__}: the source has no examples.")
    workers = workers or min(8, os.cpu_count() or 1)

    def check(i: int) -> Problem | None:
        try:
            source[i]
        except DataError as e:
            return Problem(i, source.describe(i), str(e))
        return None

    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        problems = [p for p in pool.map(check, range(len(source))) if p is not None]
    if not problems:
        return source
    if on_error == "raise":
        raise DataError(
            f"{len(problems)} of {len(source)} examples are bad (pass on_error='skip' to "
            "train without them):\n" + "\n".join(f"  {p.message}" for p in problems)
        )
    log.warning(
        "Skipping %d of %d examples:\n%s",
        len(problems),
        len(source),
        "\n".join(f"  {p.message}" for p in problems),
    )
    bad = {p.index for p in problems}
    keep = [i for i in range(len(source)) if i not in bad]
    if not keep:
        raise DataError(f"every one of the {len(source)} examples is bad; first: {problems[0]}")
    return Subset(source, keep, problems)


def as_int_tuple(value: Any, name: str, length: int = 2) -> tuple[int, ...]:
    """``7`` -> ``(7, 7)``; checks a positive int sequence of ``length``."""
    if isinstance(value, int | np.integer):
        value = (int(value),) * length
    try:
        out = tuple(int(v) for v in value)
    except TypeError:
        raise ValueError(f"`{name}` must be an int or {length} ints; got {value!r}.") from None
    if len(out) != length or any(v <= 0 for v in out):
        raise ValueError(f"`{name}` must be {length} positive ints; got {value!r}.")
    return out
