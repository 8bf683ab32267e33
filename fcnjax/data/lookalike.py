"""Look-alike TFDS datasets: made-up data in the real formats, for demos and tests.

The notebooks' smoke mode (:func:`fcnjax.colab.data_context`), the README's figures
(``docs/figures.py``) and the tests use these where the real datasets cannot be
downloaded. Nothing here is a real dataset: the records are drawn at random.

:func:`tfds_release` writes look-alike *release files* in the real formats (MNIST's
gzipped idx files, Oxford-IIIT Pet's image and annotation archives) with their checksums,
so that the real, TensorFlow-free preparation (:mod:`fcnjax.data.prepare`) runs on them
offline, as for a user. :func:`mock_tfds` is ``tfds.testing.mock_data`` with records that
look like the real ones, for code that does not care how a dataset was prepared. The
records: MNIST digits drawn as glyphs (so an autoencoder has something to learn), and
Oxford-IIIT Pet images with an elliptical "pet" and a trimap that outlines it.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import os
import struct
import tarfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

__all__ = ["mnist_records", "mock_tfds", "pet_records", "tfds_release", "write_release"]


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
        records.append(
            {
                "image": image,
                "segmentation_mask": trimap[..., None],
                "label": i % 37,
                "species": i % 2,
                "file_name": f"mock_{i}.jpg",
                "head_bbox": np.zeros(4, np.float32),
            }
        )
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


# --------------------------------------------------------------------------------------
# Release files in the real formats.
# --------------------------------------------------------------------------------------

_MNIST_URL = "https://storage.googleapis.com/cvdf-datasets/mnist/"
_FASHION_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
_PETS_URL = "https://thor.robots.ox.ac.uk/~vgg/data/pets/"
# Oxford-IIIT Pet names its files "<Breed>_<n>": capitalised breeds are cats (species 1).
_BREEDS = ("Abyssinian", "american_bulldog", "Bengal", "beagle", "Birman", "boxer")


def _idx(array: np.ndarray) -> bytes:
    """MNIST's idx format: zero, zero, 0x08 (unsigned bytes), ndim, big-endian dims."""
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return gzip.compress(header + np.ascontiguousarray(array, np.uint8).tobytes(), mtime=0)


def _mnist_files(num_examples: int) -> dict[str, bytes]:
    files = {}
    for prefix, seed in (("train", 0), ("t10k", 1)):
        records = mnist_records(num_examples, seed)
        files[f"{prefix}-images-idx3-ubyte.gz"] = _idx(
            np.stack([r["image"][..., 0] for r in records])
        )
        files[f"{prefix}-labels-idx1-ubyte.gz"] = _idx(np.array([r["label"] for r in records]))
    return files


def _encoded(image: np.ndarray, fmt: str, mode: str = "RGB") -> bytes:
    buf = io.BytesIO()
    options = {"quality": 95} if fmt == "JPEG" else {}
    Image.fromarray(image).convert(mode).save(buf, format=fmt, **options)
    return buf.getvalue()


def _tar(members: dict[str, bytes], compress: bool) -> bytes:
    """A tar archive (gzipped with ``compress``), byte for byte the same on every call."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return gzip.compress(buf.getvalue(), mtime=0) if compress else buf.getvalue()


def _pets_files(num_examples: int) -> dict[str, bytes]:
    """``images.tar.gz`` (JPEGs; example 0 is an RGBA PNG named ``.jpg`` and example 1 a
    CMYK JPEG, as in the real archive) and ``annotations.tar.gz`` (``list.txt``,
    ``trainval.txt``, ``test.txt``, ``trimaps/*.png`` and ``xmls/*.xml`` for trainval)."""
    images, annotations, lines = {}, {}, {"trainval": [], "test": []}
    for split, seed in (("trainval", 0), ("test", 1)):
        for i, record in enumerate(pet_records(num_examples, seed)):
            breed = i % len(_BREEDS)
            name = f"{_BREEDS[breed]}_{seed * 1000 + i + 1}"
            species = 1 if _BREEDS[breed][0].isupper() else 2
            fmt, mode = {0: ("PNG", "RGBA"), 1: ("JPEG", "CMYK")}.get(i, ("JPEG", "RGB"))
            images[f"images/{name}.jpg"] = _encoded(record["image"], fmt, mode)
            trimap = record["segmentation_mask"][..., 0]
            annotations[f"annotations/trimaps/{name}.png"] = _encoded(trimap, "PNG", "L")
            if split == "trainval":
                h, w = trimap.shape
                annotations[f"annotations/xmls/{name}.xml"] = (
                    f"<annotation><size><width>{w}</width><height>{h}</height></size><object>"
                    f"<bndbox><xmin>1</xmin><ymin>2</ymin><xmax>{w // 2}</xmax>"
                    f"<ymax>{h // 2}</ymax></bndbox></object></annotation>"
                ).encode()
            lines[split].append(f"{name} {breed + 1} {species} {i + 1}")
    annotations["annotations/trainval.txt"] = "\n".join(lines["trainval"]).encode() + b"\n"
    annotations["annotations/test.txt"] = "\n".join(lines["test"]).encode() + b"\n"
    annotations["annotations/list.txt"] = (
        "#Image CLASS-ID SPECIES BREED ID\n#ID: 1:37 Class ids\n"
        + "\n".join(lines["trainval"] + lines["test"])
        + "\n"
    ).encode()
    return {"images.tar.gz": _tar(images, True), "annotations.tar.gz": _tar(annotations, True)}


_RELEASES = {
    "mnist": (_MNIST_URL, _mnist_files),
    "fashion_mnist": (_FASHION_URL, _mnist_files),
    "oxford_iiit_pet": (_PETS_URL, _pets_files),
}


def write_release(
    name: str, directory: str | os.PathLike, num_examples: int = 64
) -> dict[str, Path]:
    """Writes look-alike release files of TFDS dataset ``name`` into ``directory`` and
    their checksums, in TFDS's format, into ``directory/checksums/NAME.tsv``.

    ``num_examples`` per split; the records are :func:`mnist_records` and
    :func:`pet_records` (seed 0 for ``train``, 1 for ``test``). Returns the files by name.
    """
    if name not in _RELEASES:
        raise ValueError(f"no look-alike release of {name!r}; there are {sorted(_RELEASES)}.")
    url, make = _RELEASES[name]
    directory = Path(directory)
    (directory / "checksums").mkdir(parents=True, exist_ok=True)
    rows, paths = [], {}
    for fname, data in make(num_examples).items():
        paths[fname] = directory / fname
        paths[fname].write_bytes(data)
        rows.append(f"{url}{fname}\t{len(data)}\t{hashlib.sha256(data).hexdigest()}\t{fname}")
    (directory / "checksums" / f"{name}.tsv").write_text("\n".join(rows) + "\n")
    return paths


@contextlib.contextmanager
def tfds_release(
    directory: str | os.PathLike,
    names: tuple[str, ...] = ("mnist", "oxford_iiit_pet"),
    num_examples: int = 64,
) -> Iterator[Path]:
    """Within the block, TFDS datasets ``names`` come from look-alike release files.

    Writes them into ``directory/release`` (:func:`write_release`) and points
    ``$FCNJAX_TFDS_MIRROR`` and ``$FCNJAX_TFDS_CHECKSUMS`` at them and ``$TFDS_DATA_DIR``
    at ``directory/tensorflow_datasets``, so that the first use of a dataset runs the real
    preparation (:mod:`fcnjax.data.prepare`). Yields the TFDS data directory.

    >>> import tempfile
    >>> from fcnjax import data
    >>> with tfds_release(tempfile.mkdtemp(), ("mnist",), num_examples=10):
    ...     source = data.get_source({"name": "tfds", "dataset": "mnist", "digits": (1, 5)})
    ...     len(source), sorted({int(source[i]["label"]) for i in range(len(source))})
    (2, [1, 5])
    """
    from fcnjax.data.prepare import CHECKSUMS_ENV, MIRROR_ENV

    directory = Path(directory)
    for name in names:
        write_release(name, directory / "release", num_examples)
    data_dir = directory / "tensorflow_datasets"
    env = {
        MIRROR_ENV: str(directory / "release"),
        CHECKSUMS_ENV: str(directory / "release" / "checksums"),
        "TFDS_DATA_DIR": str(data_dir),
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield data_dir
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
