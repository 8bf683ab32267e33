"""What the ``colab/`` notebooks call besides the library: configs by name, a smoke switch,
device facts, timing and display.

The notebooks run on Colab (TPU, GPU or CPU runtimes) and in this repository's tests. Set
the environment variable ``FCNJAX_SMOKE=1`` and every notebook runs its configs'
``:runlocal`` variants on generated data (:func:`fcnjax.data.testing.mock_tfds` instead of
TFDS downloads) in a minute or two on a CPU.

>>> config("shapes_fcn8s", "runlocal").num_steps  # an explicit argument wins over the switch
4
"""

from __future__ import annotations

import contextlib
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import numpy as np

__all__ = ["SMOKE_ENV", "config", "data_context", "devices", "show", "smoke", "timeit"]

SMOKE_ENV = "FCNJAX_SMOKE"
CONFIGS = Path(__file__).resolve().parent.parent / "configs"


def smoke() -> bool:
    """True when ``FCNJAX_SMOKE`` is set (to anything but ``0``): tiny data and steps."""
    return os.environ.get(SMOKE_ENV, "0") not in ("", "0")


def config(name: str, arg: str | None = None, overrides: list[str] | tuple[str, ...] = ()):
    """``configs/NAME.py`` (``:runlocal`` in smoke mode), with ``"key=value"`` overrides.

    The configs live in the repository next to the ``fcnjax`` package: install from a clone
    (``pip install -e .``), as the notebooks' first cell does.
    """
    from fcnjax import config as config_lib

    path = CONFIGS / f"{name}.py"
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: no config {name!r}. The configs are in the fcnjax repository's configs/ "
            "folder: clone it and `pip install -e` it (the notebooks' first cell does)."
        )
    arg = "runlocal" if smoke() and arg is None else arg
    c = config_lib.load_config(f"{path}:{arg}" if arg else str(path))
    config_lib.apply_overrides(c, list(overrides))
    return c


def data_context() -> contextlib.AbstractContextManager:
    """Generated TFDS records in smoke mode (no download), else nothing."""
    if smoke():
        from fcnjax.data.testing import mock_tfds

        return mock_tfds()
    return contextlib.nullcontext()


def devices() -> str:
    """One line per fact: backend, devices, processes (what a TPU v2-8 user checks first)."""
    ds = jax.devices()
    kinds = sorted({d.device_kind for d in ds})
    return "\n".join([
        f"backend: {jax.default_backend()}",
        f"devices: {len(ds)} x {', '.join(kinds)} ({jax.local_device_count()} local)",
        f"processes: {jax.process_count()}",
        f"jax {jax.__version__}",
    ])  # fmt: skip


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
    """Displays ``uint8`` arrays or PNG paths side by side (a PIL image; notebooks render it)."""
    from PIL import Image

    from fcnjax import viz

    arrays = []
    for im in images:
        if isinstance(im, (str, Path)):
            with Image.open(im) as f:
                im = np.asarray(f.convert("RGB"))
        arrays.append(np.kron(viz.to_uint8(im), np.ones((scale, scale, 1), np.uint8)))
    return Image.fromarray(viz.grid([arrays], pad=4) if len(arrays) > 1 else arrays[0])
