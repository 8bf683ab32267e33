"""A training run's claim on its workdir: one run at a time, every earlier config kept, and
nothing replaced that fcnjax did not write there.

fcnjax records what it writes in a workdir in ``.fcnjax_written.json`` (each file's
SHA-256, each directory or log it appends to). A file with one of the names a run writes
(``run_info.json``, ``predictions.png``, ...) that is not recorded there with its current
content, say a user's own picture or a ``run_info.json`` copied from another run, is
*foreign*: :func:`foreign_files` names it, and training refuses to replace it unless told to
(``fcnjax train --overwrite``).

>>> import tempfile
>>> wd = Path(tempfile.mkdtemp()) / "run"
>>> with claim(wd):
...     keep_config(wd, '{"lr": 1}')              # the first: nothing to keep
...     keep_config(wd, '{"lr": 2}').name         # a changed config: the first is kept
...     sorted(p.name for p in wd.glob("config*.json"))
'config.old.1.json'
['config.json', 'config.old.1.json']
>>> with claim(wd), claim(wd):
...     pass
Traceback (most recent call last):
...
fcnjax.training.workdir.WorkdirBusyError: ... is in use by another fcnjax run ...
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import secrets
import signal
import stat
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path

import filelock

__all__ = [
    "LOCK_NAME",
    "MANIFEST_NAME",
    "RUN_OUTPUTS",
    "ForeignFilesError",
    "WorkdirBusyError",
    "WorkdirError",
    "claim",
    "check_no_foreign_files",
    "foreign_files",
    "keep_config",
    "record",
    "write_atomic",
    "write_new",
    "write_text",
]

LOCK_NAME = ".lock"
MANIFEST_NAME = ".fcnjax_written.json"
# What a training run may write at the top of its workdir (every task's pictures included);
# directories and appended logs are recorded by name only, files by their content.
# (``config.json`` is not among them: a different one is kept as config.old.N.json.)
RUN_OUTPUTS = (
    "run_info.json",
    "final_metrics.json",
    "metrics.jsonl",
    "checkpoints",
    "best",
    "tensorboard",
    "predictions.png",
    "reconstructions.png",
    "latent.npz",
    "latent.png",
    "latent_grid.png",
    "decoded.png",
)
_APPENDED = ("metrics.jsonl",)  # grows while fcnjax writes it: recorded by name


class WorkdirError(OSError):
    """The workdir cannot be used: a file stands there, or it is not writable."""


class WorkdirBusyError(RuntimeError):
    """Another run holds the workdir."""


class ForeignFilesError(FileExistsError):
    """The workdir holds files with the names of a run's outputs that fcnjax did not write
    there (:func:`foreign_files`)."""


def _usable(workdir: Path) -> None:
    if workdir.exists() and not workdir.is_dir():
        raise WorkdirError(errno.ENOTDIR, "the workdir is a file, not a directory", str(workdir))
    try:
        workdir.mkdir(parents=True, exist_ok=True)
    except FileExistsError as e:  # a file in the path above it
        raise WorkdirError(errno.ENOTDIR, "a file stands in its path", str(workdir)) from e
    except OSError as e:
        raise WorkdirError(e.errno, f"cannot create it ({e.strerror})", str(workdir)) from e
    if not os.access(workdir, os.W_OK):
        raise WorkdirError(errno.EACCES, "the workdir is not writable", str(workdir))


@contextlib.contextmanager
def claim(workdir: str | os.PathLike[str]) -> Iterator[Path]:
    """Creates ``workdir`` if needed and holds its lock (``workdir/.lock``) in the block.

    The lock is an OS file lock (``flock``, through ``filelock``): it dies with the
    process, so a killed run never leaves a workdir locked. Only one process of a
    multi-host run should claim a shared workdir.

    Raises:
      WorkdirError: a file stands where the workdir should be, or it is not writable.
      WorkdirBusyError: another run holds the workdir.
    """
    workdir = Path(workdir)
    _usable(workdir)
    lock = filelock.FileLock(workdir / LOCK_NAME)
    try:
        lock.acquire(timeout=0)
    except filelock.Timeout:
        raise WorkdirBusyError(
            f"{workdir} is in use by another fcnjax run (it holds {workdir / LOCK_NAME}); wait "
            "for it to finish or stop it, or choose another --workdir."
        ) from None
    except OSError as e:  # read-only file systems refuse even the lock file
        raise WorkdirError(e.errno, f"cannot lock the workdir ({e.strerror})", str(workdir)) from e
    try:
        yield workdir
    finally:
        lock.release()


def keep_config(workdir: str | os.PathLike[str], text: str) -> Path | None:
    """Writes ``text`` as ``workdir/config.json``; a different earlier one is kept as
    ``config.old.N.json`` (N = 1, 2, ...: every earlier config stays). Returns the path
    of the kept old config, if any."""
    workdir = Path(workdir)
    current = workdir / "config.json"
    kept = None
    if current.exists() and current.read_text() != text:
        numbers = [
            int(m.group(1))
            for p in workdir.glob("config.old.*.json")
            if (m := re.fullmatch(r"config\.old\.(\d+)\.json", p.name))
        ]
        kept = workdir / f"config.old.{max(numbers, default=0) + 1}.json"
        current.replace(kept)  # a fresh number: under the claim, nothing else writes it
        record(workdir, [kept.name])
    write_text(workdir, "config.json", text)
    return kept


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _manifest(workdir: Path) -> dict[str, str]:
    try:
        entries = json.loads((workdir / MANIFEST_NAME).read_text())
    except (OSError, ValueError):  # none yet, or cut off by a kill: nothing is vouched for
        return {}
    return entries if isinstance(entries, dict) else {}


def _synced_temporary(path: Path, data: bytes) -> Path:
    """``data`` in a new temporary file beside ``path``, synced to the disk."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    # os.open applies the umask, as a plain open() would (mkstemp's files are 0600).
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return tmp


def write_atomic(path: str | os.PathLike[str], data: bytes) -> Path:
    """``data`` as ``path``, complete or not at all: written to a temporary file beside it
    (synced) and renamed over it, so a kill leaves the old file or the new. A symbolic link
    standing there is replaced, never written through; a file's permissions are kept."""
    path = Path(path)
    tmp = _synced_temporary(path, data)
    try:
        if path.is_file() and not path.is_symlink():
            os.chmod(tmp, stat.S_IMODE(path.stat().st_mode))
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    return path


def write_new(path: str | os.PathLike[str], data: bytes, *, replace: bool = False) -> Path:
    """Writes ``data`` as a new file ``path``, complete or not at all: a synced temporary
    file beside it, hard-linked to its name, which fails if anything stands there (a file,
    a symbolic link, dangling or not, or a file another process created a moment ago):
    FileExistsError, and nothing is replaced or written through. With ``replace``, the file
    is renamed over whatever stands there (:func:`write_atomic`). Where the file system
    has no hard links, the file is created with ``O_EXCL | O_NOFOLLOW`` and written.
    """
    path = Path(path)
    if replace:
        return write_atomic(path, data)
    tmp = _synced_temporary(path, data)
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise
    except OSError as e:
        if e.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EMLINK):
            raise
        _create_exclusively(path, data)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    return path


@contextlib.contextmanager
def interrupts_deferred() -> Iterator[None]:
    """Holds Ctrl-C (SIGINT) back while the block runs, and delivers it, to whatever
    handler was there before, when the block ends: the files a block writes, and the count
    of what was written, are then all done, or (the block's own clean-up on an error) none.
    Blocks nest; outside the main thread (where Python runs signal handlers) it does nothing.

    >>> seen = []
    >>> before = signal.signal(signal.SIGINT, lambda *_: seen.append("Ctrl-C"))
    >>> with interrupts_deferred():
    ...     signal.raise_signal(signal.SIGINT)
    ...     seen.append("the block's work")
    >>> seen
    ["the block's work", 'Ctrl-C']
    >>> _ = signal.signal(signal.SIGINT, before)
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: received.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if received:  # not after an error: that one propagates, and stops as well
        signal.raise_signal(signal.SIGINT)


def _create_exclusively(path: Path, data: bytes) -> None:
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(path, flags, 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(path)
        raise


def record(workdir: str | os.PathLike[str], names: Iterable[str | os.PathLike[str]]) -> None:
    """Records ``names`` (paths in ``workdir``, or relative to it) as written by fcnjax:
    a file by its content, a directory or appended log by its name."""
    workdir = Path(workdir)
    with filelock.FileLock(workdir / f"{MANIFEST_NAME}.lock"):
        entries = _manifest(workdir)
        for name in names:
            path = workdir / Path(name).name
            if path.is_dir() or path.name in _APPENDED:
                entries[path.name] = "written"
            elif path.is_file():
                entries[path.name] = _digest(path)
        text = json.dumps(dict(sorted(entries.items())), indent=1)
        write_atomic(workdir / MANIFEST_NAME, text.encode())


def write_text(workdir: str | os.PathLike[str], name: str, text: str) -> Path:
    """Writes ``workdir/name`` atomically and records it (:func:`record`)."""
    path = Path(workdir) / name
    write_atomic(path, text.encode())
    record(workdir, [name])
    return path


def foreign_files(workdir: str | os.PathLike[str], names: Iterable[str] = RUN_OUTPUTS) -> list[str]:
    """Which of ``names`` stand in ``workdir`` without fcnjax having written them there:
    not in its record, or (files) with other content than it wrote.

    >>> import tempfile
    >>> wd = Path(tempfile.mkdtemp())
    >>> _ = write_text(wd, "run_info.json", "{}")
    >>> _ = (wd / "predictions.png").write_bytes(b"a user's own picture")
    >>> foreign_files(wd)
    ['predictions.png']
    >>> _ = (wd / "run_info.json").write_text('{"edited": 1}')
    >>> foreign_files(wd)
    ['run_info.json', 'predictions.png']
    """
    workdir = Path(workdir)
    entries = _manifest(workdir)
    foreign = []
    for name in names:
        path = workdir / name
        if not os.path.lexists(path):
            continue
        if path.is_symlink() or name not in entries:
            foreign.append(name)
        elif not (path.is_dir() or name in _APPENDED) and (
            not path.is_file() or entries[name] != _digest(path)
        ):
            foreign.append(name)
    return foreign


def check_no_foreign_files(workdir: str | os.PathLike[str], overwrite: bool = False) -> None:
    """Raises :class:`ForeignFilesError` naming what a run would replace that fcnjax did not
    write there, unless ``overwrite``."""
    foreign = foreign_files(workdir)
    if foreign and not overwrite:
        raise ForeignFilesError(
            f"--workdir {workdir} holds {', '.join(foreign)}, which fcnjax did not write there "
            "and a training run would replace; move them away, choose another --workdir, or "
            "pass --overwrite (overwrite=True) to replace them."
        )
