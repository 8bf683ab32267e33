"""Class statistics of a source's masks, and SegNet's median-frequency-balancing weights."""

from __future__ import annotations

import concurrent.futures
import dataclasses
import os

import numpy as np

from fcnjax.data.core import IGNORE_LABEL, Source, label_histogram


@dataclasses.dataclass(frozen=True)
class ClassCounts:
    """Pixel statistics per class.

    Attributes:
      pixels: ``int64[K]``: pixels labelled with each class.
      image_pixels: ``int64[K]``: total pixels of the images in which each class appears
        (the denominator of SegNet's class frequency).
      ignored: pixels labelled ``IGNORE_LABEL``.
      images: images counted.
    """

    pixels: np.ndarray
    image_pixels: np.ndarray
    ignored: int
    images: int

    @property
    def frequency(self) -> np.ndarray:
        """``pixels / image_pixels`` per class (0 for a class that never appears)."""
        return np.divide(
            self.pixels,
            self.image_pixels,
            out=np.zeros(len(self.pixels)),
            where=self.image_pixels > 0,
        )


def class_counts(
    source: Source, num_classes: int | None = None, workers: int | None = None
) -> ClassCounts:
    """Counts the pixels of every class over every mask of ``source`` (masks only decoded).

    Raises :class:`~fcnjax.data.core.DataError` naming the file for a label that is neither a
    class nor ``IGNORE_LABEL``.
    """
    num_classes = num_classes or source.num_classes
    if not source.has_masks or num_classes is None:
        raise ValueError(f"{type(source).__name__} has no masks to count classes of.")
    workers = workers or min(8, os.cpu_count() or 1)

    def count(i: int) -> tuple[np.ndarray, int]:
        mask = source.load_mask(i)
        return label_histogram(mask, num_classes, source.describe(i)), mask.size

    pixels = np.zeros(num_classes, np.int64)
    image_pixels = np.zeros(num_classes, np.int64)
    ignored = 0
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        for hist, size in pool.map(count, range(len(source))):
            pixels += hist[:num_classes]
            image_pixels += np.where(hist[:num_classes] > 0, size, 0)
            ignored += int(hist[IGNORE_LABEL])
    return ClassCounts(pixels, image_pixels, ignored, len(source))


def median_frequency_weights(counts: ClassCounts) -> np.ndarray:
    """SegNet's class weights (Eigen & Fergus): ``median(freq) / freq[c]``.

    ``freq[c]`` is the pixels of class ``c`` divided by the total pixels of the images in
    which ``c`` appears; the median is over classes that appear. A class that never
    appears gets weight 0.

    >>> counts = ClassCounts(np.array([30, 10, 0]), np.array([40, 20, 0]), 0, 2)
    >>> median_frequency_weights(counts)  # freq = (0.75, 0.5, -); median 0.625
    array([0.83333333, 1.25      , 0.        ])
    """
    freq = counts.frequency
    present = counts.pixels > 0
    if not present.any():
        raise ValueError("no class appears in the masks; cannot balance frequencies.")
    median = np.median(freq[present])
    return np.where(present, median / np.where(present, freq, 1.0), 0.0)
