"""TFDS datasets prepared without TensorFlow, and the one way fcnjax opens any TFDS dataset.

TFDS reads a prepared ArrayRecord dataset without TensorFlow (``tfds.data_source``), but
its ``download_and_prepare`` needs TensorFlow to extract archives, to read MNIST's idx
files and to encode images (tensorflow/datasets#11058), and Colab's TPU runtimes have no
TensorFlow. For the datasets in :data:`PREPARERS` (``mnist``, ``fashion_mnist``,
``oxford_iiit_pet``) fcnjax therefore prepares them itself, with TFDS's own builder: its
features, splits, file names, example order (TFDS shuffles by key, and the keys are
TFDS's), statistics and atomic writing (into ``incomplete.*``, renamed when complete).
Only the reading of the release files is replaced, by the TensorFlow-free
``_split_generators`` of a subclass; the release files themselves are the ones, with the
sizes and sha256 checksums, that TFDS records for the dataset (``builder.url_infos``),
downloaded through :func:`fcnjax.download.fetch` (pooch). The result is a dataset in
TFDS's ArrayRecord format that ``tfds.data_source`` -- and TFDS with TensorFlow -- reads
as if TFDS had prepared it.

Where things go:

- ``data_dir``: the TFDS data directory; default TFDS's own (``$TFDS_DATA_DIR`` or
  ``~/tensorflow_datasets``). The dataset lands in ``DATA_DIR/NAME/VERSION/``.
- release files: ``DATA_DIR/downloads/NAME/`` under their own names, so that files copied
  there by hand are used (after their checksums are checked) without a download.
- ``mirror``: a folder or a base URL that holds the release files under their own names,
  used instead of the official URLs (``$FCNJAX_TFDS_MIRROR``); checksums still apply.
- ``checksums``: a file in TFDS's checksums format (``url<TAB>size<TAB>sha256<TAB>name``),
  or a folder of them named ``NAME.tsv``, that replaces the recorded checksums
  (``$FCNJAX_TFDS_CHECKSUMS``): for your own copies of a release, and for the tests, which
  generate release files in the real formats (:func:`fcnjax.data.lookalike.tfds_release`).

Every other TFDS dataset is prepared by TFDS itself, which needs TensorFlow; without it a
:class:`~fcnjax.data.core.DataError` says how to prepare it elsewhere
(``tfds build NAME --file_format=array_record``). fcnjax always asks TFDS for ArrayRecord
(a ``data_dir`` alone would make TFDS choose TFRecord, which data sources cannot read).
"""

from __future__ import annotations

import contextlib
import functools
import gzip
import importlib.util
import io
import os
import struct
import sys
import tarfile
import urllib.parse
import xml.etree.ElementTree as ET
import zlib
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from fcnjax import download
from fcnjax.data.core import DataError

__all__ = [
    "CHECKSUMS_ENV",
    "MIRROR_ENV",
    "PREPARERS",
    "builder",
    "data_source",
    "release_files",
]

MIRROR_ENV = "FCNJAX_TFDS_MIRROR"
CHECKSUMS_ENV = "FCNJAX_TFDS_CHECKSUMS"

Examples = Iterator[tuple[Any, dict[str, Any]]]
Splits = Callable[[Mapping[str, Path]], dict[str, Examples]]


# --------------------------------------------------------------------------------------
# Reading the release files (one function per release format).
# --------------------------------------------------------------------------------------


def _read_idx(path: Path) -> np.ndarray:
    """An MNIST idx file (gzipped, big-endian header: 0, 0, dtype 0x08, ndim; dims)."""
    try:
        with gzip.open(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as e:
        raise DataError(f"{path}: not a readable gzip file ({e}).") from e
    if len(raw) < 4 or raw[:2] != b"\0\0" or raw[2] != 0x08:
        raise DataError(f"{path}: not an idx file of unsigned bytes (header {raw[:4]!r}).")
    ndim = raw[3]
    dims = struct.unpack(f">{ndim}I", raw[4 : 4 + 4 * ndim])
    data = np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise DataError(
            f"{path}: the header promises {'x'.join(map(str, dims))} values but the file "
            f"holds {data.size}."
        )
    return data.reshape(dims)


def _png(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()


def _mnist_splits(files: Mapping[str, Path]) -> dict[str, Examples]:
    """MNIST's four idx files (also Fashion-MNIST's): ``train`` and ``test``."""

    def examples(prefix: str) -> Examples:
        images = _read_idx(files[f"{prefix}-images-idx3-ubyte.gz"])
        labels = _read_idx(files[f"{prefix}-labels-idx1-ubyte.gz"])
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise DataError(
                f"{prefix}: {images.shape} images do not pair with {labels.shape} labels."
            )
        for index, (image, label) in enumerate(zip(images, labels)):
            yield index, {"image": _png(image), "label": int(label)}  # TFDS's keys: indices

    return {"train": examples("train"), "test": examples("t10k")}


_ARCHIVE_ERRORS = (tarfile.TarError, OSError, EOFError, zlib.error)


def _members(tar: tarfile.TarFile, archive: Path) -> dict[str, tarfile.TarInfo]:
    try:
        return {m.name.removeprefix("./"): m for m in tar.getmembers() if m.isfile()}
    except _ARCHIVE_ERRORS as e:
        raise DataError(f"{archive}: a damaged or truncated archive ({e}).") from e


def _open_tar(archive: Path) -> tarfile.TarFile:
    try:
        return tarfile.open(archive, "r:*")
    except _ARCHIVE_ERRORS as e:
        raise DataError(f"{archive}: not a readable tar archive ({e}).") from e


def _member(tar: tarfile.TarFile, members: dict, name: str, archive: Path) -> bytes:
    if name not in members:
        raise DataError(f"{archive}: the archive has no {name}.")
    try:
        return tar.extractfile(members[name]).read()
    except _ARCHIVE_ERRORS as e:
        raise DataError(f"{archive}: cannot read {name} ({e}).") from e


def _rgb_jpeg(data: bytes, where: str) -> bytes:
    """``data`` if it is an RGB JPEG, else the image re-encoded as one. The release has
    PNG files named ``.jpg``, CMYK and greyscale JPEGs, and RGBA images; TFDS's feature
    is 3-channel JPEG (TFDS re-encodes a listed few with TensorFlow; this checks all)."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            if im.format == "JPEG" and im.mode == "RGB":
                return data
            buf = io.BytesIO()
            im.convert("RGB").save(buf, format="JPEG", quality=95)
            return buf.getvalue()
    except OSError as e:
        raise DataError(f"{where}: not a readable image ({e}).") from e


def _head_bbox(xml: bytes | None) -> Any:
    import tensorflow_datasets as tfds

    if xml is None:  # the test images have no head box; TFDS stores zeros
        return tfds.features.BBox(0.0, 0.0, 0.0, 0.0)
    root = ET.fromstring(xml)
    size = root.find("size")
    h, w = float(size.findtext("height")), float(size.findtext("width"))
    box = root.find("object").find("bndbox")
    y0, x0, y1, x1 = (float(box.findtext(k)) for k in ("ymin", "xmin", "ymax", "xmax"))
    return tfds.features.BBox(y0 / h, x0 / w, y1 / h, x1 / w)


def _pets_splits(files: Mapping[str, Path]) -> dict[str, Examples]:
    """Oxford-IIIT Pet's ``images.tar.gz`` and ``annotations.tar.gz``: ``train`` from
    ``annotations/trainval.txt``, ``test`` from ``annotations/test.txt``."""
    images_tar, annotations_tar = files["images.tar.gz"], files["annotations.tar.gz"]

    def examples(list_name: str) -> Examples:
        # "r:*": the release's images.tar.gz has been an uncompressed tar at times.
        images, annotations = _open_tar(images_tar), _open_tar(annotations_tar)
        with images, annotations:
            image_members = _members(images, images_tar)
            annotation_members = _members(annotations, annotations_tar)
            listing = _member(annotations, annotation_members, list_name, annotations_tar)
            for line in listing.decode().splitlines():
                if not line.strip() or line.startswith("#"):
                    continue
                name, label, species, _ = line.split()
                where = f"{images_tar}: images/{name}.jpg"
                image = _member(images, image_members, f"images/{name}.jpg", images_tar)
                xml_name = f"annotations/xmls/{name}.xml"
                xml = None
                if xml_name in annotation_members:
                    xml = _member(annotations, annotation_members, xml_name, annotations_tar)
                trimap = _member(
                    annotations,
                    annotation_members,
                    f"annotations/trimaps/{name}.png",
                    annotations_tar,
                )
                yield (
                    f"{name}.jpg",
                    {
                        "image": _rgb_jpeg(image, where),
                        "label": int(label) - 1,
                        "species": int(species) - 1,
                        "file_name": f"{name}.jpg",
                        "segmentation_mask": trimap,
                        "head_bbox": _head_bbox(xml),
                    },
                )

    return {
        "train": examples("annotations/trainval.txt"),
        "test": examples("annotations/test.txt"),
    }


#: TFDS name -> the TensorFlow-free reader of its release files.
PREPARERS: dict[str, Splits] = {
    "mnist": _mnist_splits,
    "fashion_mnist": _mnist_splits,
    "oxford_iiit_pet": _pets_splits,
}


# --------------------------------------------------------------------------------------
# Release files and the builder.
# --------------------------------------------------------------------------------------


def release_files(
    builder: Any,
    mirror: str | os.PathLike | None = None,
    checksums: str | os.PathLike | None = None,
) -> dict[str, Path]:
    """The verified release files of ``builder``'s dataset, by file name.

    Each file TFDS records for the dataset (URL, size, sha256) is taken from
    ``DATA_DIR/downloads/NAME/`` if there, else downloaded from its URL or from
    ``mirror``; a file that does not match its checksum is an error naming it.
    """
    import tensorflow_datasets as tfds

    mirror = mirror or os.environ.get(MIRROR_ENV) or None
    checksums = checksums or os.environ.get(CHECKSUMS_ENV) or None
    if checksums is not None:
        path = Path(checksums).expanduser()
        path = path / f"{builder.name}.tsv" if path.is_dir() else path
        if not path.is_file():
            raise DataError(f"no checksums file {path} (for {builder.name}).")
        infos = tfds.core.download.checksums.load_url_infos(path)
        what = f"the checksums file {path}"
    else:
        infos = builder.url_infos
        what = "TFDS's recorded checksums"
    if not infos:
        raise DataError(f"{what} list no release files for {builder.name}.")
    cache = Path(builder.data_dir_root) / "downloads" / builder.name
    files = {}
    for url, info in infos.items():
        name = info.filename or os.path.basename(url)
        check = download.Check("sha256", info.checksum, what)
        source = url
        if mirror is not None:
            source = _mirrored(mirror, name, builder.name)
        try:
            files[name] = download.fetch(source, cache, [check], fname=name, progressbar=True)
        except download.DownloadError as e:
            raise DataError(
                f"{builder.name}: {e} Or set data.mirror (or ${MIRROR_ENV}) to a folder "
                "holding the release files."
            ) from e
        except ValueError as e:
            raise DataError(f"{builder.name}: {e}") from e
    return files


def _mirrored(mirror: str | os.PathLike, name: str, dataset: str) -> str:
    """The URL of release file ``name`` in ``mirror`` (a folder or a base URL)."""
    text = os.fspath(mirror)
    if urllib.parse.urlparse(text).scheme in ("http", "https", "ftp", "file"):
        return f"{text.rstrip('/')}/{name}"
    local = Path(text).expanduser()
    if not local.is_dir():
        raise DataError(f"the mirror {local} is neither a folder nor an http(s)/ftp/file URL.")
    if not (local / name).is_file():
        raise DataError(f"the mirror {local} has no {name} (needed for {dataset}).")
    return (local / name).absolute().as_uri()


@functools.cache
def _tensorflow_free(cls: type) -> type:
    """``cls`` (a TFDS builder class) reading its release files without TensorFlow."""

    class Builder(cls, skip_registration=True):
        name = cls.name  # the same folder, version and dataset_info as TFDS's own builder

        def __init__(self, *, mirror=None, checksums=None, **kwargs):
            self._release = (mirror, checksums)
            super().__init__(**kwargs)

        def _split_generators(self, dl_manager):
            del dl_manager  # TensorFlow's file system is what we avoid
            return PREPARERS[self.name](release_files(self, *self._release))

    Builder.__module__ = cls.__module__  # TFDS finds the checksums next to the module
    Builder.__qualname__ = Builder.__name__ = cls.__name__
    return Builder


_TFRECORD = (
    "TFDS dataset {name!r} in {where} was prepared as TFRecord, which random access cannot "
    "read: rebuild it with `tfds build {name} --file_format=array_record` (or delete it "
    "there and let fcnjax prepare it), or give another data_dir."
)


def builder(
    name: str,
    data_dir: str | os.PathLike | None = None,
    *,
    mirror: str | os.PathLike | None = None,
    checksums: str | os.PathLike | None = None,
) -> Any:
    """The TFDS builder of ``name`` writing ArrayRecord: fcnjax's TensorFlow-free one for
    the datasets of :data:`PREPARERS`, TFDS's own for the rest."""
    import tensorflow_datasets as tfds

    if data_dir is None:  # read now: TFDS's DATA_DIR froze $TFDS_DATA_DIR at import
        data_dir = tfds.core.constants.get_default_data_dir()
    kwargs = dict(data_dir=os.fspath(data_dir), file_format="array_record")
    try:
        own = tfds.builder(name, **kwargs)
    except Exception as e:  # noqa: BLE001 (unknown names, versions, configs)
        if "File format is already set" in str(e):
            raise DataError(_TFRECORD.format(name=name, where=data_dir)) from e
        raise DataError(f"TFDS cannot open dataset {name!r} ({type(e).__name__}: {e}).") from e
    if own.name not in PREPARERS:
        return own
    cls = _tensorflow_free(type(own))
    config = own.builder_config.name if own.builder_config else None
    return cls(
        version=str(own.version), config=config, mirror=mirror, checksums=checksums, **kwargs
    )


def _has_tensorflow() -> bool:
    try:
        return importlib.util.find_spec("tensorflow") is not None
    except (ImportError, ValueError):
        return False


def data_source(
    name: str,
    split: str,
    data_dir: str | os.PathLike | None = None,
    *,
    download: bool = True,
    mirror: str | os.PathLike | None = None,
    checksums: str | os.PathLike | None = None,
) -> Any:
    """``tfds.data_source(name, split=split, ...)`` in ArrayRecord, prepared without
    TensorFlow where :data:`PREPARERS` can; see the module docstring."""
    import tensorflow_datasets as tfds

    b = builder(name, data_dir, mirror=mirror, checksums=checksums)
    where = f"{b.data_dir_root}"
    if download and not b.is_prepared():
        if b.name not in PREPARERS and not _has_tensorflow():  # before TFDS downloads it
            raise DataError(
                f"TFDS dataset {name!r} is not prepared in {where}, and TFDS needs TensorFlow "
                f"to prepare it (fcnjax prepares {sorted(PREPARERS)} without it). On a "
                f"machine with TensorFlow run `tfds build {name} --file_format=array_record "
                "--data_dir DIR`, then set data.data_dir to DIR."
            )
        config = tfds.download.DownloadConfig(compute_stats=tfds.download.ComputeStatsMode.SKIP)
        with contextlib.redirect_stdout(sys.stderr):  # TFDS prints its progress
            b.download_and_prepare(file_format="array_record", download_config=config)
    try:
        return b.as_data_source(split=split)
    except NotImplementedError as e:  # prepared as TFRecord only
        raise DataError(_TFRECORD.format(name=name, where=b.data_dir)) from e
    except Exception as e:  # noqa: BLE001 (not prepared, unknown split, ...)
        if not b.is_prepared():
            raise DataError(
                f"TFDS dataset {name!r} (split {split!r}) is not prepared in {where} "
                "(download=False)."
            ) from e
        raise DataError(f"TFDS dataset {name!r} split {split!r}: {type(e).__name__}: {e}") from e
