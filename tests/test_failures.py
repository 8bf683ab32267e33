"""Every failure a user can cause ends in one clear message and an honest exit status.

Each test reproduces one fault as a user meets it, through the real command line
(:func:`fcnjax.cli.main` in-process, or ``python -m fcnjax`` in a subprocess where signals,
locks held by other processes or a full disk are involved), and checks the exit status,
that the message is one line naming what was wrong, and that nothing was lost.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fcnjax import cli
from fcnjax.data import Shapes

SHAPES = "shapes_fcn8s:runlocal"
ROOT = Path(__file__).resolve().parent.parent


def run(args, capsys):
    """``(exit status, stdout, stderr)`` of the command line in-process."""
    try:
        code = cli.main([str(a) for a in args])
    except SystemExit as e:  # argparse's own usage errors
        code = e.code
    out = capsys.readouterr()
    return code, out.out, out.err


def one_line(err: str) -> str:
    """The CLI's message: exactly one line starting with ``fcnjax``, no traceback."""
    lines = [ln for ln in err.splitlines() if ln.startswith("fcnjax ")]
    assert len(lines) == 1, err
    assert "Traceback" not in err, err
    return lines[0]


def python_m_fcnjax(*args, **kwargs) -> subprocess.Popen:
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    return subprocess.Popen(
        [sys.executable, "-m", "fcnjax", *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        cwd=kwargs.pop("cwd", ROOT),
        **kwargs,
    )


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    wd = tmp_path_factory.mktemp("failures") / "run"
    assert cli.main(["train", "--config", SHAPES, "--workdir", str(wd)]) == 0
    return wd


# 1. A model with fewer classes than the data: refused before training, naming both.
def test_model_classes_must_be_the_datas(tmp_path, capsys):
    wd = tmp_path / "run"
    code, _, err = run(
        ["train", "--config", SHAPES, "--workdir", wd, "--config.model.num_classes=2"], capsys
    )
    line = one_line(err)
    assert code == 2 and "`model.num_classes` is 2 but the data has 4 classes" in line
    assert "background, circle, square, triangle" in line
    assert not (wd / "checkpoints").exists() and not (wd / "config.json").exists()


# 2. Prediction never overwrites silently, and inputs never share outputs.
def _image(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(Shapes(1, size=(24, 28), split="test")[0]["image"]).save(path)


def test_predict_refuses_colliding_names_and_existing_outputs(trained, tmp_path, capsys):
    inputs, out = tmp_path / "in", tmp_path / "out"
    for name in ("a.png", "a.jpg"):
        _image(inputs / name)
    code, _, err = run(
        ["predict", "--workdir", trained, "--input", inputs, "--output", out], capsys
    )
    line = one_line(err)
    assert code == 2 and "a.jpg and" in line and "a.png ->" in line and not out.exists()
    (inputs / "a.jpg").unlink()
    _image(inputs / "a_color.png")  # its index PNG is a.png's colour picture
    code, _, err = run(
        ["predict", "--workdir", trained, "--input", inputs, "--output", out], capsys
    )
    assert code == 2 and f"{out / 'a_color.png'}" in one_line(err) and not out.exists()
    (inputs / "a_color.png").unlink()
    args = ["predict", "--workdir", trained, "--input", inputs, "--output", out]
    assert run(args, capsys)[0] == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    (out / "a.png").write_bytes(b"the user's own file")
    code, _, err = run(args, capsys)
    assert code == 2 and "--overwrite" in one_line(err) and "a.png" in one_line(err)
    assert (out / "a.png").read_bytes() == b"the user's own file"
    assert run([*args, "--overwrite"], capsys)[0] == 0
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    # Predicting into the input folder would replace the input image itself.
    code, _, err = run(
        ["predict", "--workdir", trained, "--input", inputs, "--output", inputs, "--overwrite"],
        capsys,
    )
    assert code == 2 and "replace input images" in one_line(err)
    # --output that is a file.
    code, _, err = run(
        ["predict", "--workdir", trained, "--input", inputs, "--output", inputs / "a.png"], capsys
    )
    assert code == 2 and "is a file, not a directory" in one_line(err)


# 3. A second run into a busy workdir refuses; a killed run leaves no stuck lock.
def test_a_busy_workdir_is_refused_and_a_killed_holder_frees_it(tmp_path, capsys):
    wd = tmp_path / "run"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from fcnjax.training import workdir\n"
            f"with workdir.claim({str(wd)!r}):\n    print('held', flush=True); time.sleep(120)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        code, _, err = run(["train", "--config", SHAPES, "--workdir", wd], capsys)
        line = one_line(err)
        assert code == 1 and "in use by another fcnjax run" in line and str(wd) in line
        assert not (wd / "config.json").exists() and not (wd / "checkpoints").exists()
    finally:
        holder.kill()  # SIGKILL: no clean-up runs
        holder.wait()
    assert run(["train", "--config", SHAPES, "--workdir", wd], capsys)[0] == 0


# 4. A stopped run exits 143 (SIGTERM) and labels the metrics with their own step.
def test_sigterm_exits_143_and_labels_the_last_validation(tmp_path):
    wd = tmp_path / "run"
    proc = python_m_fcnjax(
        "train",
        "--config",
        SHAPES,
        "--workdir",
        wd,
        "--config.num_steps=100000",
        "--config.checkpoint.every_steps=3",
        "--config.eval_every_steps=3",
    )
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if "eval @ step 3" in line:
            break
    time.sleep(1.0)
    proc.send_signal(signal.SIGTERM)
    out = "".join(lines) + proc.communicate(timeout=120)[0]
    assert proc.returncode == 128 + signal.SIGTERM, out
    assert "stopped by SIGTERM" in out
    final = json.loads((wd / "final_metrics.json").read_text())
    step, at = final["step"], final["eval_step"]
    assert step >= at >= 3 and at % 3 == 0
    if at != step:
        assert f"validation @ step {at} (training stopped at {step})" in out, out
    else:
        assert f"validation @ step {at}\n" in out, out


# 5. A cut-off last line of metrics.jsonl: a resumed run drops it (it is a record of a step
# after the checkpoint, logged again), and plot skips one that a killed run left.
def test_a_cut_off_metrics_line_neither_spreads_nor_blocks_plot(tmp_path, capsys, caplog):
    pytest.importorskip("matplotlib")  # the viz extra
    wd = tmp_path / "run"
    assert cli.main(["train", "--config", SHAPES, "--workdir", str(wd)]) == 0
    metrics = wd / "metrics.jsonl"
    with metrics.open("a") as f:
        f.write('{"step": 5, "time": 17000')  # a writer killed mid-line
    assert (
        run(["train", "--config", SHAPES, "--workdir", wd, "--config.num_steps=6"], capsys)[0] == 0
    )
    records = [json.loads(ln) for ln in metrics.read_text().splitlines()]  # every line whole
    steps = [(r["step"], "eval/loss" in r) for r in records]
    assert sorted(steps) == [(2, False), (2, True), (4, False), (4, True), (6, False), (6, True)]
    with metrics.open("a") as f:
        f.write('{"step": 7, "time": 17000')  # killed again, mid-line
    code, out, _ = run(["plot", "--workdir", wd], capsys)
    assert code == 0 and "loss.png" in out
    assert "metrics.jsonl, line 7: skipped a cut-off last line" in caplog.text  # a warning


# 6. Every earlier config is kept.
def test_every_earlier_config_is_kept(tmp_path, capsys):
    wd = tmp_path / "run"
    args = ["train", "--config", SHAPES, "--workdir", wd]
    assert run(args, capsys)[0] == 0
    original = (wd / "config.json").read_text()
    assert run([*args, "--config.log_every_steps=7"], capsys)[0] == 0
    second = (wd / "config.json").read_text()
    assert run([*args, "--config.log_every_steps=9"], capsys)[0] == 0
    assert (wd / "config.old.1.json").read_text() == original
    assert (wd / "config.old.2.json").read_text() == second
    assert run([*args, "--config.log_every_steps=9"], capsys)[0] == 0  # unchanged: no copy
    assert sorted(p.name for p in wd.glob("config*.json")) == [
        "config.json",
        "config.old.1.json",
        "config.old.2.json",
    ]


# 7. Values that would train nothing, or be ignored, are refused.
@pytest.mark.parametrize(
    "override, words",
    [
        ("num_steps=-5", "`num_steps` must be a positive int or None; got -5"),
        ("num_steps=0", "`num_steps` must be a positive int or None; got 0"),
        ("checkpoint.every_steps=0", "`checkpoint.every_steps` must be a positive int"),
        ("eval_batch_size=-1", "`eval_batch_size` must be a positive int or None"),
    ],
)
def test_values_that_train_nothing_are_refused(override, words, tmp_path, capsys):
    code, _, err = run(
        ["train", "--config", SHAPES, "--workdir", tmp_path / "w", f"--config.{override}"], capsys
    )
    assert code == 2 and words in one_line(err)
    assert not (tmp_path / "w").exists()


def test_evaluate_batch_size_zero_is_refused(trained, capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["evaluate", "--workdir", str(trained), "--batch-size", "0"])
    assert info.value.code == 2
    assert "--batch-size: must be a positive integer; got '0'" in capsys.readouterr().err


# 8. Config files that do not load.
@pytest.mark.parametrize(
    "text, words",
    [
        ("def get_config(:\n", "syntax error at line 1"),
        (
            "def get_config(arg=None):\n    raise RuntimeError('no such recipe')\n",
            "RuntimeError: no such recipe",
        ),
        (
            "import no_such_module_here\n",
            "ModuleNotFoundError: No module named 'no_such_module_here'",
        ),
    ],
)
def test_a_config_file_that_fails_is_named(text, words, tmp_path, capsys):
    path = tmp_path / "mine.py"
    path.write_text(text)
    for command in (["train", "--workdir", tmp_path / "w"], ["verify"]):
        code, _, err = run([command[0], "--config", path, *command[1:]], capsys)
        line = one_line(err)
        assert code == 2 and str(path) in line and words in line


# 9. A workdir that is a file or is read-only.
def test_a_workdir_that_is_a_file(tmp_path, capsys):
    path = tmp_path / "notes.txt"
    path.write_text("mine")
    code, _, err = run(["train", "--config", SHAPES, "--workdir", path], capsys)
    assert code == 2 and f"--workdir {path}: the workdir is a file" in one_line(err)
    assert path.read_text() == "mine"
    code, _, err = run(["train", "--config", SHAPES, "--workdir", path / "run"], capsys)
    assert code == 2 and str(path / "run") in one_line(err)


@contextlib.contextmanager
def mounted_tmpfs(path: Path, size: str, read_only: bool = False):
    """A small tmpfs at ``path`` (needs root, as CI runs; else the test is skipped)."""
    path.mkdir(parents=True, exist_ok=True)
    options = f"size={size}" + (",ro" if read_only else "")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True, text=True
    )
    if done.returncode:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip()})")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=True)


def test_a_read_only_workdir(tmp_path, capsys):
    with mounted_tmpfs(tmp_path / "ro", "1M", read_only=True) as ro:
        code, _, err = run(["train", "--config", SHAPES, "--workdir", ro / "run"], capsys)
        line = one_line(err)
        assert code == 2 and str(ro / "run") in line and "Read-only file system" in line


# 10. A NaN loss: one message with the step and the checkpoint kept, status 1.
def test_a_nan_loss_is_one_message(tmp_path, capsys):
    wd = tmp_path / "run"
    code, _, err = run(
        [
            "train",
            "--config",
            SHAPES,
            "--workdir",
            wd,
            "--config.optimizer.learning_rate=1e30",
            "--config.num_steps=12",
            "--config.checkpoint.every_steps=1",
        ],
        capsys,
    )
    line = one_line(err)
    assert code == 1 and "the training loss became" in line and "Last good checkpoint" in line


# 11. A full disk: one message, status 1, no teardown noise, stopped at the failed save.
def test_a_full_disk_is_one_message(tmp_path):
    # Checkpoints of ~2.3 MB (compressed) whose uncompressed bound is ~7.6 MiB: the first
    # and the best fit, the next one does not.
    with mounted_tmpfs(tmp_path / "small", "12M") as small:
        proc = python_m_fcnjax(
            "train",
            "--config",
            SHAPES,
            "--workdir",
            small / "run",
            "--config.num_steps=50",
            "--config.checkpoint.every_steps=1",
            "--config.checkpoint.keep=100",
        )
        out = proc.communicate(timeout=300)[0]
        assert proc.returncode == 1, out
        assert "Traceback" not in out and "Event loop is closed" not in out, out
        assert len(out.splitlines()) < 60, out
        assert "no space left on the device" in out.splitlines()[-1], out
        saved = sorted(
            int(p.name) for p in (small / "run" / "checkpoints").iterdir() if p.name.isdigit()
        )
        assert saved and saved[-1] < 50


# 12. Ctrl-C during start-up or compilation.
def test_ctrl_c_before_training_is_one_line(tmp_path):
    wd = tmp_path / "run"
    proc = python_m_fcnjax(
        "train",
        "--config",
        SHAPES,
        "--workdir",
        wd,
        "--config.num_steps=100000",
        "--config.checkpoint.every_steps=100000",
    )
    lock = wd / ".lock"  # claimed: past the imports, now building and compiling
    deadline = time.time() + 120
    while not lock.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    out = proc.communicate(timeout=120)[0]
    assert proc.returncode == 130, out
    assert "Traceback" not in out and "KeyboardInterrupt" not in out, out
    # Building or compiling: nothing trained, nothing saved. (On a very fast machine the
    # first steps may have run: then it stops after saving, as a stop while training does.)
    ckpts = sorted(int(p.name) for p in (wd / "checkpoints").glob("*") if p.name.isdigit())
    if "nothing was saved" in out:
        assert not ckpts, out
    else:
        assert "stopped by SIGINT" in out and len(ckpts) == 1, out


# 13. Smaller ones.
def _folder_config(tmp_path: Path, labels: tuple[int, ...]) -> Path:
    """A user's config: the shapes recipe on a folder of images and masks."""
    root = tmp_path / "data"
    for i, label in enumerate(labels):
        _image(root / "images" / f"{i}.png")
        (root / "masks").mkdir(exist_ok=True)
        mask = np.full((24, 28), label, np.uint8)
        Image.fromarray(mask).save(root / "masks" / f"{i}.png")
    path = tmp_path / "folder_config.py"
    path.write_text(
        "from fcnjax.configs import shapes_fcn8s\n\n\n"
        "def get_config(arg=None):\n"
        "    c = shapes_fcn8s.get_config('runlocal')\n"
        f"    c.data = dict(name='folder', root={str(root)!r}, images='images', masks='masks',\n"
        "                  num_classes=2)\n"
        "    c.eval_data = None\n"
        "    return c\n"
    )
    return path


def test_verify_prints_problems_as_file_and_message(tmp_path, capsys):
    config = _folder_config(tmp_path, (0, 7))
    code, out, _ = run(["verify", "--config", config], capsys)
    assert code == 1 and "Problem(" not in out
    bad = [ln for ln in out.splitlines() if ln.startswith("  ")]
    assert (
        len(bad) == 1 and f"{tmp_path / 'data' / 'masks' / '1.png'}" in bad[0] and "[7]" in bad[0]
    )


def test_a_non_integer_data_argument_names_the_key(tmp_path, capsys):
    config = _folder_config(tmp_path, (0, 1))
    code, _, err = run(["verify", "--config", config, "--config.data.num_classes=abc"], capsys)
    line = one_line(err)
    assert code == 2 and "num_classes" in line and "abc" in line
    # A data source given as key=value pairs (fcnjax verify without --config) too.
    root = tmp_path / "data"
    code, _, err = run(["verify", f"root={root}", "name=folder", "num_classes=abc"], capsys)
    line = one_line(err)
    assert code == 2 and "`num_classes` must be an integer; got 'abc'" in line


def test_a_corrupt_checkpoint_is_a_line_and_verbose_has_the_story(trained, tmp_path, capsys):
    import shutil

    wd = tmp_path / "run"
    shutil.copytree(trained, wd)
    latest = max(
        (wd / "checkpoints").iterdir(), key=lambda p: int(p.name) if p.name.isdigit() else -1
    )
    for f in latest.rglob("*"):
        if f.is_file() and f.stat().st_size > 100 and "state" in str(f):
            f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    args = ["train", "--config", SHAPES, "--workdir", wd, "--config.num_steps=8"]
    code, _, err = run(args, capsys)
    line = one_line(err)
    assert code == 1 and f"cannot restore the checkpoint {latest}" in line and len(line) < 400
    code, _, err = run(["--verbose", *args], capsys)
    assert code == 1 and "Traceback" in err


def test_a_run_refused_for_bad_data_leaves_nothing_behind(tmp_path, capsys):
    config = _folder_config(tmp_path, (9,))
    wd = tmp_path / "run"
    code, _, err = run(["train", "--config", config, "--workdir", wd], capsys)
    assert code == 1 and "1 of 1 examples are bad" in one_line(err)  # then the list:
    assert f"{tmp_path / 'data' / 'masks' / '0.png'}" in err and "[9]" in err
    assert not (wd / "config.json").exists() and not (wd / "run_info.json").exists()
