"""Shared test set-up: Keras runs on its JAX backend; the PyTorch oracle where it installs."""

import importlib.util
import os
import shutil
import sys
import tempfile

os.environ["KERAS_BACKEND"] = "jax"  # must precede any keras import

import jax
import numpy as np
import pytest

# XLA:CPU compiles the partitionable threefry PRNG slowly: jit(UNetMini(widths=(4, 8, 16)).init)
# took 11.9 s with it and 1.9 s without (jax 0.10.2, 2 cores). Tests only need some random
# initial values, so they use the classic (non-partitionable) threefry stream.
jax.config.update("jax_threefry_partitionable", False)

# One persistent XLA compilation cache for the session and the subprocesses it starts (they
# inherit the environment): the suite compiles the same programs again and again (each
# training run of a config compiles its steps anew: an in-process tiny FCN-8s run took 8.8 s
# the first time and 2.6 s the next, 2 cores). The cache keys hold the program, the devices
# and the XLA flags, so nothing is shared that would not be compiled the same.
_XLA_CACHE = None
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    _XLA_CACHE = tempfile.mkdtemp(prefix="fcnjax-tests-xla-cache-")
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _XLA_CACHE
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "-1")
jax.config.update("jax_compilation_cache_dir", os.environ["JAX_COMPILATION_CACHE_DIR"])
jax.config.update(
    "jax_persistent_cache_min_compile_time_secs",
    float(os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"]),
)
jax.config.update(
    "jax_persistent_cache_min_entry_size_bytes",
    int(os.environ["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"]),
)


def pytest_sessionfinish(session, exitstatus):
    if _XLA_CACHE is not None:
        shutil.rmtree(_XLA_CACHE, ignore_errors=True)


def pytest_collection_modifyitems(config, items):
    """Skips the tests marked ``requires_torch`` where the test extra installs no PyTorch.

    Its pinned CPU wheel exists for Python < 3.12 only (pyproject.toml); there a missing torch
    fails those tests instead, so that a broken install cannot pass by skipping them.
    """
    if sys.version_info < (3, 12) or importlib.util.find_spec("torch") is not None:
        return
    skip = pytest.mark.skip(reason="needs PyTorch, installed by the test extra on Python < 3.12")
    for item in items:
        if item.get_closest_marker("requires_torch"):
            item.add_marker(skip)


@pytest.fixture(scope="module")
def cheap_compiles():
    """XLA without most optimisations for a module whose few steps are dominated by
    compiling (use with ``pytestmark = pytest.mark.usefixtures("cheap_compiles")``);
    restored after the module, and the executables compiled under it are dropped."""
    old = jax.config.read("jax_disable_most_optimizations")
    jax.config.update("jax_disable_most_optimizations", True)
    yield
    jax.config.update("jax_disable_most_optimizations", old)
    jax.clear_caches()


@pytest.fixture
def rng():
    return np.random.default_rng(0)
