"""``bench/gpu.sh``, the GPU benchmark's one script, in its CPU smoke run: every stage runs
and its results file holds every section, with numbers, so that the GPU run's few minutes
are not lost to a typo."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FAMILIES = ("shapes", "fcn8s", "unet_mini", "autoencoder", "segnet", "fcn_resnet50")
SMOKE_FAMILIES = ("shapes", "unet_mini", "autoencoder")  # gpu.sh --smoke
STAGES = ("install", "env", "train-float32", "conv-float32", "train-bfloat16", "loop")
STAGES += ("conv-bfloat16",)
NUMBER = re.compile(r"^\d+(\.\d+)?x?$")

pytestmark = pytest.mark.skipif(
    shutil.which("bash") is None or shutil.which("timeout") is None,
    reason="needs bash and coreutils' timeout",
)


def gpu_sh(*args, timeout=600):
    env = dict(os.environ, PYTHON=sys.executable)
    return subprocess.run(
        ["bash", "bench/gpu.sh", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def sections(markdown):
    """``## title`` -> the table rows under it, each a list of cells."""
    out, rows = {}, None
    for line in markdown.splitlines():
        if line.startswith("## "):
            rows = out[line[3:]] = []
        elif rows is not None and line.startswith("| ") and "---" not in line:
            rows.append([cell.strip() for cell in line.strip("|").split("|")])
    return out


def only(found, *words):
    """The one section whose title holds every word."""
    titles = [t for t in found if all(w in t for w in words)]
    assert len(titles) == 1, (words, list(found))
    return found[titles[0]]


@pytest.mark.requires_torch
def test_cpu_smoke_run_writes_every_section_with_numbers(tmp_path):
    done = gpu_sh("--cpu", "--smoke", "--out", str(tmp_path))
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    results = tmp_path / "results.md"
    assert f"results: {results}" in done.stdout
    text = results.read_text()
    assert text.startswith("# fcnjax GPU benchmark on cpu")
    found = sections(text)

    versions = dict(row[:2] for row in only(found, "Device and versions"))
    assert versions["JAX device"].startswith("cpu") and versions["PyTorch device"] == "cpu"
    stages = {row[0]: row[1] for row in only(found, "Stages")}
    assert {s: stages.get(s) for s in STAGES} == dict.fromkeys(STAGES, "0")

    for dtype in ("float32", "bfloat16"):
        rows = {row[0]: row for row in only(found, f"PyTorch: {dtype}")}
        assert set(rows) == {"family", *FAMILIES}
        for name in FAMILIES:
            if name not in SMOKE_FAMILIES:
                assert rows[name][1] == "not run (--smoke)"
                continue
            _, batch, mine, theirs, ratio, images, their_images, compile_s = rows[name]
            assert batch.startswith(("1 x 32x32", "2 x 28x28"))
            assert all(NUMBER.match(c) for c in (mine, images, compile_s)), rows[name]
            with_torch = (theirs, ratio, their_images)
            if name == "shapes":  # fcnjax alone
                assert with_torch == ("-", "-", "-")
            else:
                assert all(NUMBER.match(c) for c in with_torch), rows[name]

    images = only(found, "images/s")
    assert [row[0].split(",")[0] for row in images[1:]] == [
        "train_step on a fixed batch",
        "train_step on a fixed batch",
        "whole loop",
    ]
    assert all(NUMBER.match(row[1]) for row in images[1:]), images

    conv = only(found, "conv_transpose, float32")
    header, rows = conv[0], conv[1:]
    assert header[2:8] == ["auto", "subpixel", "dilated", "zero_insert", "flax", "torch"]
    assert [row[1] for row in rows] == ["fwd", "fwd+bwd"]
    assert all(NUMBER.match(c) for row in rows for c in row[2:8]), rows
    assert all(row[8] in ("dilated", "zero_insert", "subpixel") for row in rows)
    fastest = only(found, "Fastest")
    assert {row[1] for row in fastest[1:]} == {"float32", "bfloat16"}
    assert "fastest" in done.stdout.lower() and "images/s" in done.stdout


def test_unknown_option_and_smoke_without_cpu_are_refused():
    assert gpu_sh("--bogus", timeout=60).returncode == 2
    done = gpu_sh("--smoke", timeout=60)
    assert done.returncode == 2 and "--cpu" in done.stderr
