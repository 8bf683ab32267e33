"""TFDS datasets prepared without TensorFlow (fcnjax.data.prepare), offline.

Release files are generated in the real formats (fcnjax.data.lookalike.write_release) and
served from a folder or from an HTTP server on 127.0.0.1; TensorFlow is blocked
(an import hook makes any import of it fail, as on a Colab TPU runtime). The prepared datasets are
read back through TFDS's own ``as_data_source`` and fcnjax's TFDS source and compared
with the generated originals.
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import importlib.util
import io
import socket
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fcnjax import data
from fcnjax.data import prepare
from fcnjax.data.core import IGNORE_LABEL, DataError
from fcnjax.data.lookalike import mnist_records, pet_records, write_release

N = 12  # examples per split


class _HideTensorFlow:
    """A meta path finder that finds what ``finder`` finds, except TensorFlow."""

    def __init__(self, finder):
        self.finder = finder

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "tensorflow" or not hasattr(self.finder, "find_spec"):
            return None
        return self.finder.find_spec(name, path, target)

    def __getattr__(self, attr):
        return getattr(self.finder, attr)


@pytest.fixture(autouse=True)
def no_tensorflow(monkeypatch):
    for name in [m for m in sys.modules if m.split(".")[0] == "tensorflow"]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setattr(sys, "meta_path", [_HideTensorFlow(f) for f in sys.meta_path])
    assert importlib.util.find_spec("tensorflow") is None
    for var in (prepare.MIRROR_ENV, prepare.CHECKSUMS_ENV):
        monkeypatch.delenv(var, raising=False)


@contextlib.contextmanager
def serve(directory: Path, handler=None):
    """``http://127.0.0.1:PORT`` serving ``directory``."""
    handler = handler or functools.partial(
        http.server.SimpleHTTPRequestHandler, directory=str(directory)
    )
    handler.log_message = lambda *a, **k: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def source(name, tmp_path, split="train", **kwargs):
    kwargs.setdefault("checksums", tmp_path / "release" / "checksums")
    kwargs.setdefault("mirror", tmp_path / "release")
    return data.TFDS(name, split, data_dir=tmp_path / "tfds", **kwargs)


def nothing_prepared(tmp_path, name):
    root = tmp_path / "tfds" / name
    leftovers = sorted(p.name for p in root.iterdir()) if root.exists() else []
    assert not [p for p in leftovers if not p.startswith("incomplete")] or not any(
        (root / p / "dataset_info.json").exists() for p in leftovers
    )
    assert not any(p.startswith("incomplete") for p in leftovers), leftovers


def test_recorded_release_files_are_what_the_readers_read():
    # The official URLs and checksums come from TFDS itself; the readers need these names.
    expected = {
        "mnist": {
            f"{p}-{k}.gz"
            for p in ("train", "t10k")
            for k in ("images-idx3-ubyte", "labels-idx1-ubyte")
        },
        "oxford_iiit_pet": {"images.tar.gz", "annotations.tar.gz"},
    }
    expected["fashion_mnist"] = expected["mnist"]
    for name, files in expected.items():
        infos = prepare.builder(name, "/nonexistent").url_infos
        assert {i.filename for i in infos.values()} == files, name
        assert all(len(i.checksum) == 64 and i.size > 0 for i in infos.values())
    assert set(prepare.PREPARERS) == set(expected)


def test_mnist_from_http_without_tensorflow(tmp_path):
    write_release("mnist", tmp_path / "release", N)
    with serve(tmp_path / "release") as url:
        train = source("mnist", tmp_path, mirror=url)
        test = source("mnist", tmp_path, "test", mirror=url)
    assert "tensorflow" not in {m.split(".")[0] for m in sys.modules if sys.modules[m]}
    # Prepared where TFDS would put it, in TFDS's layout, readable by TFDS itself.
    version_dir = tmp_path / "tfds" / "mnist" / "3.0.1"
    assert '"fileFormat": "array_record"' in (version_dir / "dataset_info.json").read_text()
    assert sorted(p.name for p in (tmp_path / "tfds" / "downloads" / "mnist").iterdir()) == [
        "t10k-images-idx3-ubyte.gz",
        "t10k-labels-idx1-ubyte.gz",
        "train-images-idx3-ubyte.gz",
        "train-labels-idx1-ubyte.gz",
    ]
    for split, src, seed in (("train", train, 0), ("test", test, 1)):
        originals = {r["image"].tobytes(): r["label"] for r in mnist_records(N, seed)}
        raw = prepare.data_source("mnist", split, tmp_path / "tfds", download=False)
        assert len(src) == len(raw) == N
        seen = set()
        for i in range(N):
            ex = src[i]
            assert ex["image"].shape == (28, 28, 1) and ex["image"].dtype == np.uint8
            key = ex["image"].tobytes()
            assert originals[key] == int(ex["label"]) == int(raw[i]["label"])
            seen.add(key)
        assert seen == set(originals)  # every original once, pixels exact


def test_pets_from_a_folder_without_tensorflow(tmp_path):
    files = write_release("oxford_iiit_pet", tmp_path / "release", N)
    three = source("oxford_iiit_pet", tmp_path)
    two = source("oxford_iiit_pet", tmp_path, pet_classes=2)
    raw = prepare.data_source("oxford_iiit_pet", "train", tmp_path / "tfds", download=False)
    assert len(three) == len(raw) == N and len(source("oxford_iiit_pet", tmp_path, "test")) == N
    originals = pet_records(N, 0)
    import tarfile

    with tarfile.open(files["images.tar.gz"]) as tar:
        encoded = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}
    names = [raw[i]["file_name"] for i in range(N)]  # TFDS's Text: bytes or str
    by_name = {n.decode() if isinstance(n, bytes) else str(n): i for i, n in enumerate(names)}
    assert len(by_name) == N
    for k, rec in enumerate(originals):
        name = next(n for n in encoded if n.endswith(f"_{k + 1}.jpg"))[len("images/") :]
        i = by_name[name]
        image, mask = three[i]["image"], three[i]["mask"]
        trimap = rec["segmentation_mask"][..., 0]
        np.testing.assert_array_equal(mask, np.choose(trimap - 1, [1, 0, 2]))
        np.testing.assert_array_equal(two[i]["mask"], np.choose(trimap - 1, [1, 0, IGNORE_LABEL]))
        assert image.shape == rec["image"].shape
        if k >= 2:  # an RGB JPEG is kept byte for byte: the decode equals the original's
            expected = np.asarray(Image.open(io.BytesIO(encoded[f"images/{name}"])))
            np.testing.assert_array_equal(image, expected)
        else:  # the RGBA PNG named .jpg (0) and the CMYK JPEG (1) are re-encoded as RGB
            # JPEGs: the flat "pet" keeps its colour, the noise around it correlates.
            pet = trimap == 1
            colour = rec["image"][pet].mean(0)
            np.testing.assert_allclose(image[pet].mean(0), colour, atol=6)
            assert np.corrcoef(image.ravel(), rec["image"].ravel())[0, 1] > 0.9
        assert int(raw[i]["label"]) == k % 6 and int(raw[i]["species"]) in (0, 1)
        assert raw[i]["head_bbox"].shape == (4,) and raw[i]["head_bbox"][2] > 0


def test_offline_names_the_url_and_where_to_put_the_file(tmp_path):
    write_release("mnist", tmp_path / "release", N)
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(DataError) as info:
        source("mnist", tmp_path, mirror=f"http://127.0.0.1:{port}")
    msg = str(info.value)
    assert f"http://127.0.0.1:{port}/" in msg and "no network connection" in msg
    assert str(tmp_path / "tfds" / "downloads" / "mnist") in msg and "sha256" in msg
    nothing_prepared(tmp_path, "mnist")
    # download=False: no attempt, one line saying it is not prepared.
    with pytest.raises(
        DataError, match=r"'mnist' .split 'train'. is not prepared in .*download=False"
    ):
        source("mnist", tmp_path, download=False)


def test_wrong_checksum_keeps_nothing(tmp_path):
    files = write_release("mnist", tmp_path / "release", N)
    bad = files["train-labels-idx1-ubyte.gz"]
    good = bad.read_bytes()
    bad.write_bytes(good[:-1] + bytes([good[-1] ^ 1]))
    with serve(tmp_path / "release") as url, pytest.raises(DataError) as info:
        source("mnist", tmp_path, mirror=url)
    assert "train-labels-idx1-ubyte.gz" in str(info.value)
    assert "Checksum mismatch" in str(info.value) and "expected sha256" in str(info.value)
    downloads = tmp_path / "tfds" / "downloads" / "mnist"
    assert "train-labels-idx1-ubyte.gz" not in {p.name for p in downloads.iterdir()}
    nothing_prepared(tmp_path, "mnist")
    # A folder mirror is checked the same way.
    with pytest.raises(DataError, match="Checksum mismatch.*train-labels-idx1-ubyte.gz"):
        source("mnist", tmp_path)


def test_interrupted_download_keeps_nothing(tmp_path):
    write_release("mnist", tmp_path / "release", N)

    class CutOff(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # promises 10,000 bytes, sends 10, hangs up
            self.send_response(200)
            self.send_header("Content-Length", "10000")
            self.end_headers()
            self.wfile.write(b"0123456789")
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)

    with serve(tmp_path, CutOff) as url, pytest.raises(DataError) as info:
        source("mnist", tmp_path, mirror=url)
    assert url in str(info.value)
    downloads = tmp_path / "tfds" / "downloads" / "mnist"
    assert not downloads.exists() or not any(downloads.iterdir())
    nothing_prepared(tmp_path, "mnist")


def test_truncated_archive_leaves_no_half_prepared_dataset(tmp_path):
    files = write_release("oxford_iiit_pet", tmp_path / "release", N)
    archive = files["images.tar.gz"]
    archive.write_bytes(archive.read_bytes()[: len(archive.read_bytes()) // 2])
    write_checksums = tmp_path / "release" / "checksums" / "oxford_iiit_pet.tsv"
    import hashlib

    rows = []
    for line in write_checksums.read_text().splitlines():
        url, size, digest, name = line.split("\t")
        if name == "images.tar.gz":  # the user's checksums match the truncated file
            data_ = archive.read_bytes()
            size, digest = str(len(data_)), hashlib.sha256(data_).hexdigest()
        rows.append("\t".join((url, size, digest, name)))
    write_checksums.write_text("\n".join(rows) + "\n")
    with pytest.raises(DataError) as info:
        source("oxford_iiit_pet", tmp_path)
    assert "images.tar.gz" in str(info.value)
    nothing_prepared(tmp_path, "oxford_iiit_pet")
    # With the good archive, a second run prepares it from scratch, once the cached copy
    # that no longer matches is deleted, as the message says.
    write_release("oxford_iiit_pet", tmp_path / "release", N)
    cached = tmp_path / "tfds" / "downloads" / "oxford_iiit_pet" / "images.tar.gz"
    with pytest.raises(DataError, match=f"cached file {cached} .delete it"):
        source("oxford_iiit_pet", tmp_path)
    cached.unlink()
    assert len(source("oxford_iiit_pet", tmp_path)) == N


def test_other_datasets_need_tensorflow_or_a_prepared_copy(tmp_path):
    with pytest.raises(DataError) as info:
        prepare.data_source("cifar10", "train", tmp_path / "tfds")
    msg = str(info.value)
    assert "tfds build cifar10 --file_format=array_record" in msg and "TensorFlow" in msg
    with pytest.raises(DataError, match="TFDS cannot open dataset 'no_such_dataset'"):
        prepare.data_source("no_such_dataset", "train", tmp_path)


def test_mirror_without_the_file_and_bad_idx(tmp_path):
    files = write_release("mnist", tmp_path / "release", N)
    files["t10k-images-idx3-ubyte.gz"].unlink()
    with pytest.raises(DataError, match=r"mirror .* has no t10k-images-idx3-ubyte.gz"):
        source("mnist", tmp_path)
    nothing_prepared(tmp_path, "mnist")
    with pytest.raises(DataError, match=r"mirror .*nowhere is neither a folder nor"):
        source("mnist", tmp_path, mirror=tmp_path / "nowhere")
    with pytest.raises(DataError, match="no checksums file"):
        source("mnist", tmp_path, checksums=tmp_path / "missing.tsv")


def test_a_tfrecord_copy_is_named_not_misread(tmp_path):
    # TFDS itself prepares TFRecord when given a data_dir alone; data sources need
    # ArrayRecord. Such a copy (here: a prepared one relabelled) gets one clear message.
    write_release("mnist", tmp_path / "release", N)
    source("mnist", tmp_path)
    version_dir = tmp_path / "tfds" / "mnist" / "3.0.1"
    info = version_dir / "dataset_info.json"
    info.write_text(info.read_text().replace('"array_record"', '"tfrecord"'))
    for f in version_dir.glob("*array_record*"):
        f.rename(f.with_name(f.name.replace("array_record", "tfrecord")))
    with pytest.raises(DataError, match=r"prepared as TFRecord.*--file_format=array_record"):
        source("mnist", tmp_path)
