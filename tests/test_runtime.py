"""fcnjax.training.runtime: glibc keeps freed memory, so a training loop stops faulting pages in;
the command line's persistent compilation cache."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = """
import resource, sys
from concurrent.futures import ThreadPoolExecutor
import numpy as np
from fcnjax.training import runtime
kept = runtime.keep_freed_memory() if sys.argv[1] == "keep" else False

def step(i):  # buffers of varying sizes (0.4-20 MB), allocated and freed on many threads
    a, b = np.ones(50_000 * (1 + i % 40)), np.ones(2_500_000 - 40_000 * (i % 50))
    return float(a[0] + b[0])

pool = ThreadPoolExecutor(8)
list(pool.map(step, range(10)))
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
list(pool.map(step, range(200)))
print(kept, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def faults(mode: str, **env: str) -> tuple[str, int]:
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT, mode],
        capture_output=True,
        text=True,
        check=True,
        env={"PATH": "/usr/bin:/bin", **env},
    ).stdout.split()
    return out[0], int(out[1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_freed_memory_is_reused_instead_of_faulted_in_again():
    kept, with_it = faults("keep")
    _, without = faults("plain")
    assert kept == "True"
    # Measured here: about 23,000-28,000 faults without, 10,000-15,000 with (the main
    # job: 18.6 million against 0.8 million, bench/RESULTS.md).
    assert with_it < 0.75 * without


def test_the_users_malloc_settings_win():
    assert faults("keep", MALLOC_ARENA_MAX="2")[0] == "False"
    assert faults("keep", FCNJAX_KEEP_FREED_MEMORY="0")[0] == "False"


def _train(workdir: Path, cache_root: Path, *flags: str) -> subprocess.CompletedProcess:
    """The command line in a fresh process, without the test session's JAX cache settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_")}
    env["FCNJAX_CACHE"] = str(cache_root)
    args = ["train", "--config", "shapes_fcn8s:runlocal", "--workdir", str(workdir), *flags]
    result = subprocess.run(
        [sys.executable, "-m", "fcnjax", *args], env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    # Nothing a user cannot act on (grain's notice about jaxlib on Colab's versions, say).
    assert "warning" not in result.stderr.lower(), result.stderr
    return result


def test_a_second_run_of_a_recipe_loads_every_program_from_the_cache(tmp_path):
    _train(tmp_path / "first", tmp_path / "cache")
    cache = tmp_path / "cache" / "xla"  # the default: $FCNJAX_CACHE/xla
    entries = sorted(p.name for p in cache.iterdir())
    # Initialisation, the training step and the evaluation step at least.
    assert len([e for e in entries if e.endswith("-cache")]) >= 3, entries
    _train(tmp_path / "second", tmp_path / "cache")
    # Every program of the second run was found: nothing new was compiled and written.
    assert sorted(p.name for p in cache.iterdir()) == entries


def test_a_cache_folder_that_cannot_be_made_is_named(tmp_path):
    (tmp_path / "file").touch()
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_")}
    bad = str(tmp_path / "file" / "xla")
    args = ["train", "--config", "shapes_fcn8s:runlocal", "--workdir", str(tmp_path / "w")]
    result = subprocess.run(
        [sys.executable, "-m", "fcnjax", *args, "--compilation-cache", bad],
        env=env,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2, result.stderr
    assert f"--compilation-cache {bad}: cannot make it" in result.stderr
    assert not (tmp_path / "w").exists()  # refused before anything was written


def test_the_users_own_jax_cache_is_kept(tmp_path):
    import jax

    from fcnjax.training import runtime

    mine = jax.config.jax_compilation_cache_dir  # the test session's (tests/conftest.py)
    assert mine
    assert runtime.use_compilation_cache(tmp_path / "other") == Path(mine)
    assert runtime.command_line_cache(str(tmp_path / "other")) == Path(mine)
    assert runtime.command_line_cache("off") is None  # --compilation-cache off: none at all
    assert jax.config.jax_compilation_cache_dir == mine
    assert not (tmp_path / "other").exists()
