"""Process settings for a training run: JAX's multi-host start (:func:`initialize_distributed`),
SIGINT/SIGTERM caught so that a run saves before it stops (:class:`Signals`), the
memory allocator on the CPU (:func:`keep_freed_memory`) and JAX's persistent compilation
cache (:func:`use_compilation_cache`).


XLA:CPU, the input pipeline and NumPy allocate and free the same large buffers at every
step. glibc's ``malloc`` hands buffers over its threshold to ``mmap`` and gives freed
memory back to the system, so every step maps fresh pages and faults them in: the main
job spent a fifth of its CPU time in the kernel (31 million minor page faults in three
and a half minutes). :func:`keep_freed_memory`, called by the trainer, makes glibc keep
what it frees for the next step: 16.8 million faults and 12% system time that day, 7.6
and 10.9 million faults and 7% and 9% in two later runs. The same settings in the
environment, where they apply from the process's start, gave 0.8 million faults and 3%
once, but more faults than the default in a later, shorter run: the variation between
runs is larger than between these settings (bench/RESULTS.md). The line::

    export MALLOC_MMAP_THRESHOLD_=33554432 MALLOC_TRIM_THRESHOLD_=17179869184 \
        MALLOC_TOP_PAD_=268435456 MALLOC_ARENA_MAX=4

Memory then stays at the run's peak until it ends.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import signal
import sys
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
import numpy as np

__all__ = [
    "Signals",
    "command_line_cache",
    "initialize_distributed",
    "keep_freed_memory",
    "signal_name",
    "stop_requested",
    "use_compilation_cache",
]

log = logging.getLogger("fcnjax.training.runtime")

# mallopt(3) parameters and the values set: mmap only above 32 MiB (glibc's largest
# threshold), never trim the heap, grow it 256 MiB at a time, at most 4 arenas.
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD, _M_ARENA_MAX = -1, -2, -3, -8
_SETTINGS = (
    (_M_MMAP_THRESHOLD, 32 * 2**20),
    (_M_TRIM_THRESHOLD, 2**31 - 1),
    (_M_TOP_PAD, 256 * 2**20),
    (_M_ARENA_MAX, 4),
)
_ENV = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_", "MALLOC_ARENA_MAX")


def keep_freed_memory() -> bool:
    """Makes glibc's allocator keep freed memory for reuse; True if it did.

    Does nothing (False) off Linux, without glibc, or when any of ``MALLOC_MMAP_THRESHOLD_``,
    ``MALLOC_TRIM_THRESHOLD_``, ``MALLOC_TOP_PAD_``, ``MALLOC_ARENA_MAX`` is set (the
    user's choice wins), or with ``FCNJAX_KEEP_FREED_MEMORY=0``.
    """
    if not sys.platform.startswith("linux") or os.environ.get("FCNJAX_KEEP_FREED_MEMORY") == "0":
        return False
    if any(name in os.environ for name in _ENV):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    done = all(mallopt(param, value) == 1 for param, value in _SETTINGS)
    log.debug("glibc malloc keeps freed memory: %s", done)
    return done


def use_compilation_cache(directory: str | os.PathLike[str] | None) -> Path | None:
    """JAX's persistent compilation cache in ``directory``; returns the folder in use.

    A second run of the same program (the same recipe, devices, JAX version and XLA flags:
    all are in the cache's keys) then loads its compiled steps instead of compiling them.
    ``None`` turns it off. A cache the user gave JAX itself (``JAX_COMPILATION_CACHE_DIR`` or
    ``jax.config``) is kept. Every program is cached, not only those over JAX's default of
    1 s of compiling (unless ``JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS`` says otherwise):
    the evaluation step and the initialisation compile in about a second each on a CPU.
    Must run before the first compilation (JAX sets its cache up then, once).
    """
    if jax.config.jax_compilation_cache_dir:
        return Path(jax.config.jax_compilation_cache_dir)
    if directory is None:
        return None
    path = Path(directory).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", str(path))
    if "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS" not in os.environ:
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    return path


def command_line_cache(choice: str | None) -> Path | None:
    """The command line's ``--compilation-cache``: a folder, ``"off"``, or ``None`` for the
    default ``$FCNJAX_CACHE/xla`` (``~/.cache/fcnjax/xla``), skipped with a warning where it
    cannot be made (a read-only home: the run compiles as always)."""
    from fcnjax.weights import default_cache_dir

    if choice == "off":
        return None
    try:
        return use_compilation_cache(choice or default_cache_dir() / "xla")
    except OSError as e:
        if choice:  # the user's folder: refused by name
            raise ValueError(f"--compilation-cache {choice}: cannot make it ({e})") from e
        log.warning("no compilation cache (%s)", e)
        return None


def initialize_distributed(config: Mapping[str, Any] | None = None) -> None:
    """``jax.distributed.initialize`` for multi-host runs, before any other JAX call.

    ``config`` (``config.distributed``): ``initialize`` = ``"auto"`` (only when a
    coordinator address is given here or in ``JAX_COORDINATOR_ADDRESS``), ``True`` (always;
    on Cloud TPU and SLURM JAX finds the rest itself) or ``False``; and optionally
    ``coordinator_address``, ``num_processes``, ``process_id``. A no-op when already done.
    """
    config = dict(config or {})
    mode = config.get("initialize", "auto")
    if jax.distributed.is_initialized() or mode is False:
        return
    address = config.get("coordinator_address") or os.environ.get("JAX_COORDINATOR_ADDRESS")
    if mode == "auto" and not address:
        return
    jax.distributed.initialize(
        coordinator_address=address,
        num_processes=config.get("num_processes"),
        process_id=config.get("process_id"),
    )


class Signals:
    """SIGTERM / SIGINT set a flag; the loop saves a checkpoint and returns at the next step."""

    def __init__(self):
        self.received: int | None = None
        self._old = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.received is not None:  # a second Ctrl-C: stop now
            signal.signal(signum, self._old.get(signum, signal.SIG_DFL))
            raise KeyboardInterrupt
        self.received = signum
        log.warning(
            "received %s: stopping (training saves a checkpoint first; again: stop at once)",
            signal.Signals(signum).name,
        )

    def __exit__(self, *exc):
        for sig, handler in self._old.items():
            signal.signal(sig, handler)


def signal_name(signals: Signals) -> str:
    """The name of the signal received (SIGTERM if none)."""
    return signal.Signals(signals.received or signal.SIGTERM).name


def stop_requested(signals: Signals, step: int, every: int) -> bool:
    """A signal arrived (on any host: hosts agree at log steps, so they save together)."""
    if jax.process_count() == 1:
        return signals.received is not None
    if step % every:
        return False
    from jax.experimental import multihost_utils

    flags = multihost_utils.process_allgather(np.int32(signals.received is not None))
    return bool(np.any(flags))
