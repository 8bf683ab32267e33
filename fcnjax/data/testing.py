"""Stand-ins for TFDS datasets, for tests and offline notebook runs.

:func:`mock_tfds` is ``tfds.testing.mock_data`` with records that look like the real
ones: MNIST digits drawn as glyphs (so an autoencoder has something to learn), and
Oxford-IIIT Pet images with an elliptical "pet" and a trimap that outlines it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np
from PIL import Image, ImageDraw, ImageFont

__all__ = ["mnist_records", "mock_tfds", "pet_records"]


def mnist_records(num_examples: int, seed: int = 0) -> list[dict]:
    """``{'image': uint8 (28, 28, 1), 'label': int}``: digit ``label`` drawn at a random place."""
    rng = np.random.default_rng(seed)
    try:
        font = ImageFont.load_default(size=20)
    except (TypeError, ValueError, OSError):
        font = ImageFont.load_default()
    records = []
    for i in range(num_examples):
        label = int(i % 10)
        im = Image.new("L", (28, 28), 0)
        dx, dy = rng.integers(-3, 4, 2)
        ImageDraw.Draw(im).text((14 + dx, 14 + dy), str(label), fill=255, font=font, anchor="mm")
        records.append({"image": np.asarray(im)[..., None], "label": label})
    return records


def pet_records(num_examples: int, seed: int = 0, size: tuple[int, int] = (48, 64)) -> list[dict]:
    """Records shaped like TFDS ``oxford_iiit_pet``: an ellipse on noise; trimap 1 pet,
    2 background, 3 the border between them. Sizes vary around ``size``."""
    rng = np.random.default_rng(seed)
    records = []
    for i in range(num_examples):
        h, w = (int(s * rng.uniform(0.8, 1.2)) for s in size)
        image = rng.integers(0, 120, (h, w, 3), dtype=np.uint8)
        yy, xx = np.mgrid[:h, :w]
        cy, cx = rng.uniform(0.35, 0.65) * h, rng.uniform(0.35, 0.65) * w
        ry, rx = rng.uniform(0.2, 0.3) * h, rng.uniform(0.2, 0.3) * w
        d = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2
        pet = d <= 1
        image[pet] = rng.integers(140, 256, 3, dtype=np.uint8)
        trimap = np.where(pet, 1, 2).astype(np.uint8)
        trimap[(d > 0.8) & (d <= 1.25)] = 3
        records.append({
            "image": image, "segmentation_mask": trimap[..., None], "label": i % 37,
            "species": i % 2, "file_name": f"mock_{i}.jpg",
            "head_bbox": np.zeros(4, np.float32),
        })  # fmt: skip
    return records


@contextlib.contextmanager
def mock_tfds(num_examples: int = 64) -> Iterator[None]:
    """Within the block, ``tfds.data_source`` returns generated records; nothing is read
    from disk or downloaded.

    ``mnist`` (and friends) and ``oxford_iiit_pet`` get the look-alike records above,
    ``num_examples`` per split (a different seed per split); any other dataset gets
    ``tfds.testing.mock_data``'s random records of its feature spec.

    >>> from fcnjax import data
    >>> with mock_tfds(num_examples=10):
    ...     source = data.get_source({"name": "tfds", "dataset": "mnist", "digits": (1, 5)})
    ...     len(source), sorted({int(source[i]["label"]) for i in range(len(source))})
    (2, [1, 5])
    """
    import tensorflow_datasets as tfds

    def as_data_source(builder, split, **kwargs):
        name = builder.name
        seed = {"train": 0, "test": 1, "validation": 2}.get(str(split).split("[")[0], 3)
        if name in ("mnist", "fashion_mnist", "kmnist", "emnist"):
            return mnist_records(num_examples, seed)
        if name == "oxford_iiit_pet":
            return pet_records(num_examples, seed)
        return original(builder, split, **kwargs)

    original = tfds.core.DatasetBuilder.as_data_source
    with tfds.testing.mock_data(num_examples=num_examples, as_data_source_fn=as_data_source):
        yield
