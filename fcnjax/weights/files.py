"""The one weights loader of every backbone: files, downloads, checksums, file formats.

A network module (:mod:`fcnjax.weights.vgg16`) owns its key maps and layout conversion;
everything about getting a file and reading its tensors is here and shared:

* :func:`weights_file`: a local path, or a URL downloaded once into a cache through
  :func:`fcnjax.download.fetch`, checked against :data:`KNOWN_CHECKSUMS` (each network
  module adds its published files), the sha256 prefix of a torch hub file name, and a
  caller's full sha256.
* :func:`file_format` tells Keras HDF5, PyTorch and safetensors files apart;
  :func:`read_keras_h5` and :func:`read_state_dict` read them. No code from a file is ever
  executed: HDF5 and safetensors hold only arrays, and PyTorch's pickles are read with
  ``torch.load(..., weights_only=True)``.

A file that cannot be read as tensors (empty, truncated, damaged, of no known format, or
holding pickled Python objects beyond tensors) raises :class:`WeightsFileError`, whose
message is one line naming the file; no message advises loading a file unsafely.
"""

from __future__ import annotations

import dataclasses
import os
import pickle
import re
import urllib.parse
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from fcnjax import download
from fcnjax.data import DataError

__all__ = [
    "KNOWN_CHECKSUMS",
    "KerasLayers",
    "WeightsFileError",
    "WeightsUnavailableError",
    "default_cache_dir",
    "file_format",
    "read_keras_h5",
    "read_state_dict",
    "weights_file",
]

# URL -> (hash algorithm, expected hex digest or its leading digits): the published files
# of every network module. Keras publishes the md5 of its files; torchvision names its
# files after the first 8 hex digits of the sha256.
KNOWN_CHECKSUMS: dict[str, tuple[str, str]] = {}
# Any other torch hub file: "name-<sha256 prefix>.pth", as torch.hub's check_hash reads it.
_TORCH_HUB_HASH = re.compile(r"-([0-9a-f]{8,64})\.[A-Za-z]+$")


class WeightsUnavailableError(download.DownloadError):
    """The weights file is neither cached nor downloadable (e.g. no network)."""


class WeightsFileError(DataError):
    """A weights file that cannot be read as tensors: empty, truncated or damaged, failing
    its checksum, of no known format, or holding pickled Python objects beyond tensors.

    Bad data (a :class:`~fcnjax.data.DataError`, so a ``ValueError``): the command line
    exits with status 1. The message is one line and names the file.
    """


# --------------------------------------------------------------------------------------
# Download, cache and checksums.
# --------------------------------------------------------------------------------------


def default_cache_dir() -> Path:
    """``$FCNJAX_CACHE`` if set, else ``~/.cache/fcnjax``."""
    env = os.environ.get("FCNJAX_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "fcnjax"


def _is_url(s: Any) -> bool:
    return isinstance(s, str) and urllib.parse.urlparse(s).scheme in ("http", "https", "file")


def _expected_digests(url: str | None, sha256: str | None) -> list[download.Check]:
    checks = []
    if url is not None:
        if url in KNOWN_CHECKSUMS:
            checks.append(download.Check(*KNOWN_CHECKSUMS[url], "published checksum"))
        elif urllib.parse.urlparse(url).netloc == "download.pytorch.org":
            m = _TORCH_HUB_HASH.search(urllib.parse.urlparse(url).path)
            if m:
                prefix = download.Check("sha256", m.group(1), "sha256 prefix in the file name")
                checks.append(prefix)
    if sha256 is not None:
        digest = sha256.strip().lower()
        if not re.fullmatch(r"[0-9a-f]{64}", digest):
            raise ValueError(f"`sha256` must be 64 hex digits; got {sha256!r}.")
        checks.append(download.Check("sha256", digest, "the given sha256"))
    return checks


def weights_file(
    path_or_url: str | os.PathLike[str],
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    sha256: str | None = None,
    what: str = "weights",
) -> Path:
    """The local, verified weights file that ``path_or_url`` names.

    Args:
      path_or_url: a local file, or an ``http``/``https``/``file`` URL to download into
        ``cache_dir`` (reused, checksum verified, when already there).
      cache_dir: where downloads go; default :func:`default_cache_dir`.
      sha256: the file's full sha256 (hex), checked in addition to the known checksums.
      what: the network, for messages (``"VGG16"``).

    Raises:
      WeightsUnavailableError: a URL that is not cached could not be downloaded.
      FileNotFoundError: a local path that does not exist.
      IsADirectoryError: a local path that is a directory.
      WeightsFileError: a checksum mismatch (a download that fails it is not kept).
      ValueError: a malformed ``sha256``.
    """
    if _is_url(path_or_url):
        url = str(path_or_url)
        cache = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
        name = os.path.basename(urllib.parse.unquote(urllib.parse.urlparse(url).path))
        checks = _expected_digests(url, sha256)
        try:
            return download.fetch(url, cache, checks, fname=name or "weights", progressbar=True)
        except download.DownloadError as e:
            raise WeightsUnavailableError(f"{e} Or pass a local file path instead.") from e
        except ValueError as e:  # a checksum mismatch, the file named
            raise WeightsFileError(str(e)) from e
    path = Path(os.fspath(path_or_url)).expanduser()
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a directory, not a {what} weights file.")
    if not path.is_file():
        raise FileNotFoundError(f"No {what} weights file at {path}.")
    try:
        download.verify(path, _expected_digests(None, sha256), str(path))
    except ValueError as e:
        raise WeightsFileError(str(e)) from e
    return path


# --------------------------------------------------------------------------------------
# File formats.
# --------------------------------------------------------------------------------------


def file_format(path: Path) -> str:
    """``"keras"`` (HDF5), ``"torch"`` (``torch.save``) or ``"safetensors"``.

    Raises:
      WeightsFileError: an empty file, a NumPy ``.npz`` or a file of no known format.
    """
    import h5py

    if path.stat().st_size == 0:
        raise WeightsFileError(f"{path}: the file is empty (0 bytes): an interrupted copy?")
    if h5py.is_hdf5(path):
        return "keras"
    suffix = path.suffix.lower()
    if suffix in (".npz", ".npy"):  # a zip like torch.save's, but no weights format
        raise WeightsFileError(
            f"{path}: NumPy {suffix} files are not read as weights: expected a Keras .h5, a "
            f"PyTorch .pth/.pt (a state dict of tensors) or a .safetensors file."
        )
    if suffix == ".safetensors":
        return "safetensors"
    if suffix in (".pth", ".pt", ".bin", ".ckpt"):
        return "torch"
    with open(path, "rb") as f:
        head = f.read(16)
    if head[:4] == b"PK\x03\x04":  # torch.save's zip format
        return "torch"
    if len(head) >= 10 and head[8:10] == b'{"':  # 8-byte header length, then JSON
        return "safetensors"
    raise WeightsFileError(
        f"{path}: unrecognised weights format: expected a Keras .h5, a PyTorch .pth/.pt or "
        f"a .safetensors file."
    )


def read_state_dict(path: Path, kind: str) -> dict[str, np.ndarray]:
    """A PyTorch (``kind="torch"``) or safetensors file as ``{key: NumPy array}``.

    Floating-point torch tensors become float32 (NumPy has no bfloat16); other arrays keep
    their dtype.

    Raises:
      ImportError: a PyTorch file without torch installed (the message says how to
        convert it to safetensors, which needs no torch).
      WeightsFileError: a damaged or truncated file, one holding pickled Python objects
        beyond tensors, or one that is not a state dict of tensors.
    """
    if kind == "safetensors":
        return _read_safetensors(path)
    if kind != "torch":
        raise ValueError(f"`kind` must be 'torch' or 'safetensors'; got {kind!r}.")
    try:
        import torch
    except ImportError as e:
        raise ImportError(
            f"Reading {path} (a PyTorch file) needs torch: `pip install torch`, or convert "
            f"it once to safetensors on a machine with torch: `safetensors.torch.save_file("
            f"torch.load(path, weights_only=True), 'weights.safetensors')`."
        ) from e
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        # torch's message advises weights_only=False (running the file's code): not chained.
        raise WeightsFileError(_refused_pickle(path, e)) from None
    except Exception as e:  # noqa: BLE001 (zip, EOF and storage errors of a damaged file)
        raise WeightsFileError(
            f"{path}: damaged or truncated: torch.load cannot read it ({_brief(e)})."
        ) from e
    if isinstance(state, Mapping) and isinstance(state.get("state_dict"), Mapping):
        state = state["state_dict"]
    if not isinstance(state, Mapping) or not all(
        isinstance(v, torch.Tensor) for v in state.values()
    ):
        keys = f" with keys {list(state)[:6]}" if isinstance(state, Mapping) else ""
        raise WeightsFileError(
            f"{path}: expected a state dict (name -> tensor); got a {type(state).__name__}{keys}."
        )
    return {
        k: (v.detach().float() if v.is_floating_point() else v.detach()).numpy()
        for k, v in state.items()
    }


def _read_safetensors(path: Path) -> dict[str, np.ndarray]:
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    try:
        return dict(load_file(path))
    except SafetensorError as e:  # a broken header, offsets past the end, a short file
        raise WeightsFileError(f"{path}: not a readable safetensors file ({_brief(e)}).") from e


def _brief(error: BaseException) -> str:
    """An error's own words, on one line: its first line up to the first full stop."""
    text = str(error.args[0]) if isinstance(error, KeyError) and error.args else str(error)
    text = re.sub(r"^\[enforce fail at [^\]]*\]\s*\.?\s*", "", text)  # torch's C++ prefix
    text = text.strip().split("\n")[0].split(". ")[0].rstrip(".")
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def _refused_pickle(path: Path, error: BaseException) -> str:
    """Why ``torch.load(weights_only=True)`` refused ``path``, and the safe way out."""
    found = re.search(r"GLOBAL ([\w.]+)", str(error))
    fix = (
        "fcnjax loads only tensors (torch.load with weights_only=True) and runs no code from "
        "a file: save the weights as a state_dict of tensors "
        "(torch.save(model.state_dict(), 'weights.pth')) or as .safetensors "
        "(safetensors.torch.save_file)"
    )
    if found:
        return f"{path}: holds pickled Python objects beyond tensors ({found[1]}); {fix}."
    operand = re.search(r"Unsupported operand \d+", str(error))
    why = f" ({operand[0]})" if operand else ""
    return (
        f"{path}: not a file of tensors that torch.save wrote: damaged, or another pickle{why}; "
        f"{fix}."
    )


@dataclasses.dataclass
class KerasLayers:
    """The tensors of a legacy Keras HDF5 weights file, layer by layer.

    Attributes:
      arrays: ``{layer: [(dataset name, float32 array), ...]}`` for the layers asked for.
      shapes: ``{layer: [(dataset name, shape), ...]}`` for every other layer with tensors
        (read without loading them).
      problems: inconsistencies of the file (listed layers or weights that are absent).
    """

    arrays: dict[str, list[tuple[str, np.ndarray]]]
    shapes: dict[str, list[tuple[str, tuple[int, ...]]]]
    problems: list[str]


def _h5_attr_list(obj, name: str) -> list[str] | None:
    """A string-list attribute, also when Keras split it into ``name0``, ``name1``, ..."""
    import h5py

    if name in obj.attrs:
        value = obj.attrs[name]
        values = [] if isinstance(value, h5py.Empty) else list(np.atleast_1d(value))
    elif f"{name}0" in obj.attrs:
        values, i = [], 0
        while f"{name}{i}" in obj.attrs:
            values.extend(np.atleast_1d(obj.attrs[f"{name}{i}"]))
            i += 1
    else:
        return None
    return [v.decode("utf8") if isinstance(v, bytes) else str(v) for v in values]


def _datasets(group) -> list[tuple[str, Any]]:
    """Every dataset under an HDF5 group, with its path relative to the group."""
    import h5py

    found: list[tuple[str, Any]] = []
    group.visititems(lambda n, o: found.append((n, o)) if isinstance(o, h5py.Dataset) else None)
    return found


def read_keras_h5(path: Path, layers: Collection[str]) -> KerasLayers:
    """The tensors of a legacy Keras weights file (``keras.applications``' ``.h5``).

    The file has a ``layer_names`` attribute and one group per layer, at the root or under
    ``model_weights`` (full-model files); a layer's tensors are the datasets its
    ``weight_names`` lists (or, without that list, every dataset in its group). Only the
    tensors of ``layers`` are loaded.
    """
    import h5py

    out = KerasLayers({}, {}, [])
    try:
        with h5py.File(path, "r") as f:
            root = f["model_weights"] if "model_weights" in f else f
            layer_names = _h5_attr_list(root, "layer_names")
            if layer_names is None:
                raise WeightsFileError(
                    f"{path}: an HDF5 file but not a legacy Keras weights file (no "
                    f"'layer_names' attribute). Keras 3 '.weights.h5' files are not "
                    f"supported: save with keras.src.legacy.saving.legacy_h5_format."
                    f"save_weights_to_hdf5_group."
                )
            for layer in layer_names:
                if layer not in root:
                    out.problems.append(
                        f"layer {layer!r} is listed in layer_names but has no group"
                    )
                    continue
                group = root[layer]
                weight_names = _h5_attr_list(group, "weight_names")
                if weight_names is None:  # no list: take every dataset in the group
                    found = _datasets(group)
                else:
                    absent = [n for n in weight_names if n not in group]
                    if absent:
                        out.problems.append(f"layer {layer!r}: weight_names lists absent {absent}")
                    found = [(n, group[n]) for n in weight_names if n in group]
                if not found:
                    continue  # input, pooling, flatten, dropout
                if layer in layers:
                    out.arrays[layer] = [(n, _h5_array(path, layer, n, d)) for n, d in found]
                else:
                    out.shapes[layer] = [(n, tuple(d.shape)) for n, d in found]
    except (OSError, KeyError, RuntimeError) as e:  # h5py's errors of a damaged file
        raise WeightsFileError(f"{path}: damaged or truncated HDF5 file ({_brief(e)}).") from e
    return out


def _h5_array(path: Path, layer: str, name: str, dataset) -> np.ndarray:
    """A dataset as float32, refusing what no weights file holds (a declared shape with no
    data stored: reading it would only allocate; text)."""
    where = f"{path}: layer {layer!r}, tensor {name!r}"
    if dataset.dtype.kind not in "fiu":
        raise WeightsFileError(f"{where}: not numbers (HDF5 type {dataset.dtype}).")
    if dataset.size and dataset.id.get_storage_size() == 0:
        raise WeightsFileError(f"{where}: declares shape {dataset.shape} but stores no data.")
    try:
        return np.asarray(dataset, np.float32)
    except MemoryError as e:
        raise WeightsFileError(
            f"{where}: shape {dataset.shape} is too large to load ({dataset.nbytes:,} bytes)."
        ) from e
