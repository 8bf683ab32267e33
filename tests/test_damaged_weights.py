"""Damaged and hostile backbone weights files end in one line that names the file.

Each file starts as a real file of its format (h5py's legacy Keras layout, safetensors,
``torch.save``, NumPy) and is then cut short, overwritten or made hostile, as an
interrupted download, a failing disk or an untrusted source leaves it. The loaders raise
:class:`fcnjax.weights.WeightsFileError`, a :class:`fcnjax.data.DataError` (bad data: the
command line exits with status 1), whose message is one line naming the file; no code
from a file runs, and no message advises an unsafe step such as ``weights_only=False``.
"""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
import requests

from fcnjax import cli
from fcnjax.data import DataError
from fcnjax.weights import WeightsFileError, load_resnet, load_vgg16
from tests.test_failures import one_line
from tests.test_weights import (
    _offline,
    _serve,
    keras_layout_layers,
    torch_layout_state,
    write_keras_h5,
)

UNSAFE = ("weights_only=False", "`weights_only` set to `False`", "safe_globals", "trust")
LOADERS = {"vgg16": load_vgg16, "resnet50": lambda path: load_resnet(path, depth=50)}


def _h5(path: Path) -> bytes:
    write_keras_h5(path, keras_layout_layers(1 / 64, np.random.default_rng(0)))
    return path.read_bytes()


def _safetensors(path: Path) -> bytes:
    from safetensors.numpy import save_file

    save_file(torch_layout_state(1 / 64, np.random.default_rng(0)), path)
    return path.read_bytes()


def _torch(path: Path, obj=None, legacy: bool = False) -> bytes:
    import torch

    if obj is None:
        state = torch_layout_state(1 / 64, np.random.default_rng(0))
        obj = {k: torch.from_numpy(v) for k, v in state.items()}
    torch.save(obj, path, _use_new_zipfile_serialization=not legacy)
    return path.read_bytes()


def _with_header(data: bytes, edit) -> bytes:
    """A safetensors file whose JSON header ``edit(header) -> header`` rewrote."""
    n = int.from_bytes(data[:8], "little")
    header = edit(json.loads(data[8 : 8 + n]))
    text = header if isinstance(header, bytes) else json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    return len(text).to_bytes(8, "little") + text + data[8 + n :]


def _past_the_end(header: dict) -> dict:
    header["features.0.weight"]["data_offsets"][1] += 10**6
    return header


def _broken_json(header: dict) -> bytes:
    return json.dumps(header).encode().replace(b'"dtype":', b'"dtype";', 1)


def _objects_npz(path: Path) -> bytes:
    np.savez(path, features=np.array([{"a": 1}], dtype=object))
    return path.read_bytes()


def _half(data: bytes) -> bytes:
    return data[: len(data) // 2]


_RANDOM = np.random.default_rng(1).bytes(4096)
# name -> (bytes of the damaged file from a scratch path, words of the message).
CASES = {
    "truncated.h5": (lambda p: _half(_h5(p)), "damaged or truncated"),
    "superblock_only.h5": (lambda p: _h5(p)[:96], "damaged or truncated"),
    "broken_json.safetensors": (
        lambda p: _with_header(_safetensors(p), _broken_json),
        "not a readable safetensors file",
    ),
    "past_the_end.safetensors": (
        lambda p: _with_header(_safetensors(p), _past_the_end),
        "not a readable safetensors file",
    ),
    "truncated.safetensors": (lambda p: _safetensors(p)[:-100], "not a readable safetensors"),
    "objects.npz": (_objects_npz, ".npz"),
    **{f"empty{ext}": (lambda p: b"", "empty") for ext in (".h5", ".safetensors", ".pth", "")},
    "random.h5": (lambda p: _RANDOM, "unrecognised weights format"),
    "random.safetensors": (lambda p: _RANDOM, "not a readable safetensors file"),
    "random.npz": (lambda p: _RANDOM, ".npz files are not read as weights"),
    "random": (lambda p: _RANDOM, "unrecognised weights format"),
    "truncated.pth": (lambda p: _half(_torch(p)), "damaged or truncated"),
    "truncated_legacy.pth": (
        lambda p: _torch(p, legacy=True)[:-100],
        "damaged or truncated",
    ),
    "random.pth": (lambda p: _RANDOM, "torch.save"),
    "numpy_arrays.pth": (
        lambda p: _torch(p, {"features.0.weight": np.zeros(3)}),
        "pickled Python objects beyond tensors",
    ),
}
NEEDS_TORCH = {"truncated.pth", "truncated_legacy.pth", "random.pth", "numpy_arrays.pth"}


def damaged(tmp_path: Path, name: str) -> Path:
    scratch = tmp_path / "scratch"
    scratch.mkdir(exist_ok=True)
    make, _ = CASES[name]
    data = make(scratch / ("good" + Path(name).suffix))
    path = tmp_path / name
    path.write_bytes(data)
    return path


def assert_names_the_file(error: BaseException, path: Path) -> str:
    message = str(error)
    assert isinstance(error, WeightsFileError) and isinstance(error, DataError), repr(error)
    assert str(path) in message and "\n" not in message, message
    assert not any(word in message for word in UNSAFE), message
    return message


@pytest.mark.parametrize("loader", LOADERS)
@pytest.mark.parametrize(
    "name",
    [pytest.param(n, marks=pytest.mark.requires_torch) if n in NEEDS_TORCH else n for n in CASES],
)
def test_damaged_file_is_one_line_naming_it(tmp_path, name, loader):
    path = damaged(tmp_path, name)
    with pytest.raises(Exception) as info:
        LOADERS[loader](path)
    assert CASES[name][1] in assert_names_the_file(info.value, path)


@pytest.mark.parametrize(
    "make, words",
    [
        (lambda group, name: group.create_dataset(name, data=[b"text"] * 4), "not numbers"),
        (  # 10**11 channels: reading it would allocate 10 TiB
            lambda group, name: group.create_dataset(
                name, shape=(3, 3, 3, 10**11), dtype="f4", chunks=(1, 1, 1, 1024)
            ),
            "declares shape (3, 3, 3, 100000000000) but stores no data",
        ),
    ],
)
def test_hdf5_tensor_that_no_weights_file_holds(tmp_path, make, words):
    path = tmp_path / "vgg16.h5"
    _h5(path)
    with h5py.File(path, "a") as f:
        del f["block1_conv1"]["block1_conv1/kernel:0"]
        make(f["block1_conv1"], "block1_conv1/kernel:0")
    with pytest.raises(WeightsFileError) as info:
        load_vgg16(path)
    message = assert_names_the_file(info.value, path)
    assert "'block1_conv1/kernel:0'" in message and words in message, message


class _Hostile:
    """Pickles as a call of ``open(path, "w")``: unpickling it would create the file."""

    def __init__(self, path: Path):
        self.path = path

    def __reduce__(self):
        return open, (str(self.path), "w")


@pytest.mark.requires_torch
def test_pickled_code_never_runs_and_no_unsafe_advice(tmp_path):
    sentinel = tmp_path / "the_pickle_ran"
    path = tmp_path / "hostile.pth"
    _torch(path, {"features.0.weight": _Hostile(sentinel)})
    assert not sentinel.exists()
    for load in LOADERS.values():
        with pytest.raises(WeightsFileError) as info:
            load(path)
        message = assert_names_the_file(info.value, path)
        assert "pickled Python objects beyond tensors" in message and "open" in message
        assert "weights_only=True" in message  # what fcnjax does, not what to change
        assert "state_dict" in message and ".safetensors" in message
        assert info.value.__cause__ is None  # torch's own advice is not chained either
    assert not sentinel.exists()


def test_directory_and_missing_file_are_usage_errors(tmp_path):
    folder = tmp_path / "vgg16.h5"
    folder.mkdir()
    with pytest.raises(IsADirectoryError, match=f"{folder} is a directory, not a VGG16"):
        load_vgg16(folder)
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "absent.h5")):
        load_vgg16(tmp_path / "absent.h5")


def test_checksum_mismatch_is_bad_data(tmp_path, monkeypatch):
    _serve(monkeypatch, b"not the published file")
    with pytest.raises(WeightsFileError, match="expected md5 64373286793e3c8b2b4e3219cbf3544b"):
        load_vgg16(None, cache_dir=tmp_path / "cache")
    assert not any((tmp_path / "cache").iterdir())


# --------------------------------------------------------------------------------------
# Through the command line: status 1, one line, no traceback.
# --------------------------------------------------------------------------------------


def train(tmp_path, capsys, spec, *extra) -> tuple[int, str]:
    args = ["train", "--config", "shapes_fcn8s:runlocal", "--workdir", str(tmp_path / "run")]
    code = cli.main([*args, f"--config.init.backbone_weights={spec}", *extra])
    err = capsys.readouterr().err
    line = one_line(err)
    assert err.rstrip("\n").splitlines()[-1] == line, err  # no continuation lines
    return code, line


# input.normalization=backbone reads the file while the run is built, before any
# compilation; the default reads it after the network is initialised.
EARLY = "--config.input.normalization=backbone"


@pytest.mark.parametrize(
    "name, extra",
    [
        ("truncated.h5", ()),
        ("broken_json.safetensors", (EARLY,)),
        ("empty.pth", (EARLY,)),
    ],
)
def test_command_line_damaged_file(tmp_path, capsys, name, extra):
    path = damaged(tmp_path, name)
    code, line = train(tmp_path, capsys, path, *extra)
    assert code == 1 and str(path) in line and CASES[name][1] in line, line


@pytest.mark.requires_torch
def test_command_line_hostile_pickle(tmp_path, capsys):
    sentinel = tmp_path / "the_pickle_ran"
    path = tmp_path / "hostile.pth"
    _torch(path, {"features.0.weight": _Hostile(sentinel)})
    code, line = train(tmp_path, capsys, path, EARLY)
    assert code == 1 and str(path) in line and "pickled Python objects" in line, line
    assert not any(word in line for word in UNSAFE) and not sentinel.exists()


def test_command_line_download_problems(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("FCNJAX_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(requests, "get", _offline)
    code, line = train(tmp_path, capsys, "imagenet", EARLY)
    assert code == 1 and "no network" in line and str(tmp_path / "cache") in line, line
    _serve(monkeypatch, b"not the published file")
    code, line = train(tmp_path, capsys, "imagenet", EARLY)
    assert code == 1 and "Checksum mismatch" in line and "vgg16_weights" in line, line
