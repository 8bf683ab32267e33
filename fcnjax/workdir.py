"""A training run's claim on its workdir: one run at a time, and every earlier config kept.

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
fcnjax.workdir.WorkdirBusyError: ... is in use by another fcnjax run ...
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
from collections.abc import Iterator
from pathlib import Path

import filelock

__all__ = ["LOCK_NAME", "WorkdirBusyError", "WorkdirError", "claim", "keep_config"]

LOCK_NAME = ".lock"


class WorkdirError(OSError):
    """The workdir cannot be used: a file stands there, or it is not writable."""


class WorkdirBusyError(RuntimeError):
    """Another run holds the workdir."""


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
        current.replace(kept)
    current.write_text(text)
    return kept
