"""fcnjax.training.runtime: glibc keeps freed memory, so a training loop stops faulting pages in."""

from __future__ import annotations

import subprocess
import sys

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
