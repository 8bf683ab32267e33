"""What the ``colab/`` notebooks call besides the library: configs by name, a smoke switch,
device facts, timing and display.

The notebooks run on Colab (TPU, GPU or CPU runtimes) and in this repository's tests. Set
the environment variable ``FCNJAX_SMOKE=1`` and every notebook runs its configs'
``:runlocal`` variants in a minute or two on a CPU, with TFDS datasets prepared, as for
a user, from generated look-alike release files (:func:`fcnjax.data.lookalike.tfds_release`)
instead of downloads.

>>> config("shapes_fcn8s", "runlocal").num_steps  # an explicit argument wins over the switch
4
"""

from __future__ import annotations

import contextlib
import functools
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import numpy as np

__all__ = ["SMOKE_ENV", "config", "data_context", "devices", "show", "smoke", "timeit"]

SMOKE_ENV = "FCNJAX_SMOKE"


def smoke() -> bool:
    """True when ``FCNJAX_SMOKE`` is set (to anything but ``0``): tiny data and steps."""
    return os.environ.get(SMOKE_ENV, "0") not in ("", "0")


def config(name: str, arg: str | None = None, overrides: list[str] | tuple[str, ...] = ()):
    """The config ``name`` (``:runlocal`` in smoke mode), with ``"key=value"`` overrides.

    ``name`` is a recipe shipped in :mod:`fcnjax.configs` or a config file's path, as
    :func:`fcnjax.config.load_config` takes it (which raises ConfigError for neither).
    """
    from fcnjax import config as config_lib

    arg = "runlocal" if smoke() and arg is None else arg
    c = config_lib.load_config(f"{name}:{arg}" if arg else name, list(overrides))
    return c


def data_context() -> contextlib.AbstractContextManager:
    """In smoke mode, TFDS's MNIST and Oxford-IIIT Pet from generated release files (no
    download; prepared once per process, in a temporary folder); else nothing."""
    if smoke():
        from fcnjax.data.lookalike import tfds_release

        return tfds_release(_smoke_dir(), num_examples=64)
    return contextlib.nullcontext()


@functools.cache
def _smoke_dir() -> str:
    return tempfile.mkdtemp(prefix="fcnjax-smoke-")


def devices() -> str:
    """One line per fact: backend, devices (count x kind), processes, jax's version: what a
    TPU user checks first (1 x TPU v5 lite on Colab's v5e-1, 8 on Kaggle's v5e-8)."""
    ds = jax.devices()
    kinds = sorted({d.device_kind for d in ds})
    return "\n".join(
        [
            f"backend: {jax.default_backend()}",
            f"devices: {len(ds)} x {', '.join(kinds)} ({jax.local_device_count()} local)",
            f"processes: {jax.process_count()}",
            f"jax {jax.__version__}",
        ]
    )


def timeit(fn: Callable[..., Any], *args: Any, min_seconds: float = 0.2) -> float:
    """Median milliseconds of ``fn(*args)`` after one warm-up (compile) call.

    Repeats until ``min_seconds`` have passed (at least 3 calls): noisy machines need it.
    """
    jax.block_until_ready(fn(*args))
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < 3 or time.perf_counter() - start < min_seconds:
        t = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t)
    return 1e3 * statistics.median(times)


def show(*images: Any, scale: int = 1) -> Any:
    """Displays ``uint8`` arrays or image paths side by side (a PIL image; notebooks render
    it); files are read as viewers show them (:func:`fcnjax.data.read_image`)."""
    from PIL import Image

    from fcnjax import viz
    from fcnjax.data import read_image

    arrays = []
    for im in images:
        if isinstance(im, (str, Path)):
            im = read_image(im)
        arrays.append(np.kron(viz.to_uint8(im), np.ones((scale, scale, 1), np.uint8)))
    return Image.fromarray(viz.grid([arrays], pad=4) if len(arrays) > 1 else arrays[0])
