"""Downloads with checksums and a cache, through pooch: the one fetcher of fcnjax.

Pretrained weights (:mod:`fcnjax.weights`) and the release files of the TFDS datasets
that fcnjax prepares itself (:mod:`fcnjax.data.prepare`) both come through :func:`fetch`:
a file is downloaded once into a cache folder under its own name (to a temporary name,
renamed when complete, so an interrupted download never looks finished), checked against
every expected digest on download and on each later use, and a failure names the URL,
the file and what was expected.

>>> import hashlib, tempfile
>>> d = Path(tempfile.mkdtemp())
>>> (d / "a.txt").write_bytes(b"abc")
3
>>> digest = hashlib.sha256(b"abc").hexdigest()
>>> fetch((d / "a.txt").as_uri(), d / "cache", [Check("sha256", digest, "test")]).read_bytes()
b'abc'
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
import shutil
import urllib.parse
import urllib.request
from collections.abc import Sequence
from pathlib import Path

import pooch

__all__ = ["Check", "DownloadError", "file_digests", "fetch", "verify"]

_CHUNK = 1 << 20


class DownloadError(OSError):
    """A file could not be downloaded (no network, an HTTP error, a download cut off).

    The message names the URL and where to place the file by hand.
    """


@dataclasses.dataclass(frozen=True)
class Check:
    """An expected digest: ``algorithm`` (``"md5"`` or ``"sha256"``), its hex ``digest``
    (or a leading part of it, as torch hub file names carry) and where it comes from."""

    algorithm: str
    digest: str
    source: str

    @property
    def full(self) -> bool:
        return len(self.digest) == hashlib.new(self.algorithm).digest_size * 2

    def __str__(self) -> str:
        return f"{self.algorithm} {self.digest}{'' if self.full else '...'}"


def file_digests(path: str | os.PathLike[str]) -> dict[str, str]:
    """The md5 and sha256 hex digests of a file, read once."""
    hashers = {"md5": hashlib.md5(usedforsecurity=False), "sha256": hashlib.sha256()}
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            for h in hashers.values():
                h.update(chunk)
    return {k: h.hexdigest() for k, h in hashers.items()}


def verify(path: str | os.PathLike[str], checks: Sequence[Check], what: str) -> None:
    """Raises ``ValueError`` naming ``what`` unless ``path`` matches every check."""
    if not checks:
        return
    actual = file_digests(path)
    for check in checks:
        if not actual[check.algorithm].startswith(check.digest.lower()):
            raise ValueError(
                f"Checksum mismatch for {what}: expected {check} ({check.source}), "
                f"got {check.algorithm} {actual[check.algorithm]}."
            )


def _copy_file_url(url: str, output_file, pooch_instance=None, check_only=False):
    """pooch downloader for ``file://`` URLs (pooch speaks http, https, ftp, sftp, doi)."""
    path = urllib.request.url2pathname(urllib.parse.urlparse(url).path)
    if check_only:
        return os.path.isfile(path)
    with open(path, "rb") as src:
        if isinstance(output_file, (str, os.PathLike)):
            with open(output_file, "wb") as dst:
                shutil.copyfileobj(src, dst, _CHUNK)
        else:
            shutil.copyfileobj(src, output_file, _CHUNK)


def fetch(
    url: str,
    cache_dir: str | os.PathLike[str],
    checks: Sequence[Check] = (),
    *,
    fname: str | None = None,
    progressbar: bool = False,
) -> Path:
    """The cached copy of ``url`` in ``cache_dir``, downloaded if absent.

    Args:
      url: an ``http``, ``https``, ``ftp`` or ``file`` URL.
      cache_dir: the folder for the file (created if needed).
      checks: expected digests; a full one is checked by pooch before the download is
        renamed into place, prefixes and further ones right after (a failing file is
        deleted). A cached file is checked on every call.
      fname: the file's name in ``cache_dir``; default the URL's last path component.
      progressbar: show a tqdm progress bar while downloading.

    Returns:
      The path of the verified file.

    Raises:
      DownloadError: the URL could not be read (offline, HTTP error, cut off); the
        message says where to put the file by hand.
      ValueError: a checksum mismatch (the downloaded or cached file named).
    """
    cache_dir = Path(cache_dir).expanduser()
    fname = fname or os.path.basename(urllib.parse.unquote(urllib.parse.urlparse(url).path))
    dest = cache_dir / (fname or "download")
    if dest.exists():
        verify(dest, checks, f"the cached file {dest} (delete it to download it again)")
        return dest
    first = next((c for c in checks if c.full), None)
    expect = f" ({checks[0]})" if checks else ""
    advice = (
        f"Download it on a machine with network access and place it at {dest}{expect}; "
        "it is then used without downloading."
    )
    scheme = urllib.parse.urlparse(url).scheme
    downloader = (
        _copy_file_url if scheme == "file" else pooch.HTTPDownloader(progressbar=progressbar)
    )
    if scheme in ("ftp", "sftp"):
        downloader = None  # pooch picks its own
    try:
        pooch.retrieve(
            url,
            known_hash=f"{first.algorithm}:{first.digest}" if first else None,
            fname=dest.name,
            path=cache_dir,
            downloader=downloader,
        )
    except ValueError as e:
        if first is not None and "hash" in str(e).lower():
            raise ValueError(
                f"Checksum mismatch for the download of {url}: expected {first} "
                f"({first.source}), got {_actual_from_pooch(e, first)}. Nothing was kept."
            ) from e
        raise
    except FileNotFoundError as e:
        raise DownloadError(f"Could not read {url} ({e}).") from e
    except Exception as e:  # noqa: BLE001 (requests' and pooch's many network errors)
        if _is_network_error(e):
            raise DownloadError(f"Could not download {url}: {_reason(e)}. {advice}") from e
        raise
    try:
        verify(dest, checks, f"the download of {url}")
    except ValueError:
        dest.unlink(missing_ok=True)
        raise
    return dest


def _actual_from_pooch(error: ValueError, check: Check) -> str:
    # pooch: "... does not match the known hash: expected X but got Y. Deleted download ..."
    m = re.search(r"but got ([0-9a-fA-F]+)", str(error))
    return f"{check.algorithm} {m.group(1) if m else 'another digest'}"


def _is_network_error(error: BaseException) -> bool:
    import requests

    return isinstance(error, (requests.RequestException, ConnectionError, TimeoutError))


def _reason(error: BaseException) -> str:
    import requests

    if isinstance(error, requests.HTTPError) and error.response is not None:
        r = error.response
        return f"the server answered HTTP {r.status_code} ({r.reason})"
    if isinstance(error, (requests.ConnectionError, ConnectionError)):
        return f"no network connection ({error})"
    return f"the download broke off ({type(error).__name__}: {error})"
