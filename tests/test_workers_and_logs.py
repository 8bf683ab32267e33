"""Nothing lost, nothing silently wrong, after a kill: worker processes, logged metrics, log lines.

A run killed by SIGKILL (the OOM killer, a preemption) runs no clean-up: its data workers must
still exit, and the run that resumes it must log every step once. These tests kill real
processes (``python -m fcnjax`` in its own process group, always killed whole at the end) and
read the CLI's own stderr in a subprocess, where pytest's log capture cannot hide what a user
sees.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fcnjax import config as config_lib
from fcnjax import train
from fcnjax.training import summary

SHAPES = "shapes_fcn8s:runlocal"
ROOT = Path(__file__).resolve().parent.parent


def python_m_fcnjax(*args, **kwargs):
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    return [sys.executable, "-m", "fcnjax", *map(str, args)], dict(env=env, cwd=ROOT, **kwargs)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A finished 4-step run: checkpoints at steps 2 and 4, train and eval records at both."""
    workdir = tmp_path_factory.mktemp("trained") / "run"
    train.train_and_evaluate(config_lib.load_config(SHAPES), workdir)
    return workdir


# ---------------------------------------------------------------------------------------------
# 1. Data workers exit with a trainer killed by SIGKILL, and so does the resource tracker.


def _processes() -> dict[int, tuple[int, str]]:
    """pid -> (parent pid, start time) of every live process, from /proc (zombies left out)."""
    out = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as f:
                stat = f.read()
        except OSError:  # gone meanwhile
            continue
        fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) "
        if fields[0] != "Z":  # a zombie holds no memory; its reaper may be slow in a container
            out[int(entry.name)] = (int(fields[1]), fields[19])
    return out


def _descendants(pid: int) -> dict[int, str]:
    """pid -> start time of every live descendant of ``pid``."""
    procs = _processes()
    found, todo = {}, [pid]
    while todo:
        parent = todo.pop()
        for child, (ppid, started) in procs.items():
            if ppid == parent and child not in found:
                found[child] = started
                todo.append(child)
    return found


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return "(gone)"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_data_workers_exit_when_the_trainer_is_killed(tmp_path):
    workdir = tmp_path / "run"
    cmd, kwargs = python_m_fcnjax(
        "train",
        "--config",
        SHAPES,
        "--workdir",
        workdir,
        "--config.input.workers=2",
        "--config.num_steps=100000",
        "--config.log_every_steps=1",
        "--config.checkpoint.every_steps=100000",  # no evaluation (its own workers) either
    )
    with open(tmp_path / "output.txt", "w") as log:
        proc = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, **kwargs
        )
    try:
        # A logged step: the workers have sent batches, so they run (and were set up).
        deadline = time.monotonic() + 180
        metrics = workdir / "metrics.jsonl"
        while not (metrics.exists() and metrics.read_text().strip()):
            assert proc.poll() is None, (tmp_path / "output.txt").read_text()
            assert time.monotonic() < deadline, "no step was logged in 180 s"
            time.sleep(0.2)
        children = _descendants(proc.pid)
        workers = [p for p in children if "spawn_main" in _cmdline(p)]
        assert len(workers) == 2, {p: _cmdline(p) for p in children}

        proc.kill()  # SIGKILL, the trainer only
        proc.wait()
        killed = time.monotonic()
        while True:
            procs = _processes()
            alive = {p: _cmdline(p) for p, t in children.items() if p in procs and procs[p][1] == t}
            if not alive or time.monotonic() - killed > 20:
                break
            time.sleep(0.1)
        assert not alive, f"alive 20 s after the trainer was killed: {alive}"
        print(f"every descendant gone {time.monotonic() - killed:.1f} s after the SIGKILL")
    finally:
        # SIGTERM first: orphaned workers die, and the resource tracker (which ignores it)
        # then sees its pipe close and unlinks their shared memory; then whatever is left.
        for sig in (signal.SIGTERM, signal.SIGKILL):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)
            time.sleep(1.0)
        proc.wait()


# ---------------------------------------------------------------------------------------------
# 2. A resumed run replaces what the killed run logged after its last checkpoint.


def test_resume_logs_every_step_once(trained, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    workdir = tmp_path / "run"
    shutil.copytree(trained, workdir)
    # What a run with num_steps=8 killed after step 6, its checkpoint 6 not yet written,
    # left behind: records of steps 5 and 6 in both logs, and a line cut off by the kill.
    with summary.MetricWriter(workdir) as killed:
        killed.write(5, {"loss": 100.0})
        killed.write(6, {"loss": 100.0})
        killed.write(6, {"mean_iou": 100.0}, "eval")
    with open(workdir / "metrics.jsonl", "a") as f:
        f.write('{"step": 7, "time": 17')
    time.sleep(1.0)  # tensorboardX names event files by the second: the resumed run's is later

    config = config_lib.load_config(SHAPES, ["num_steps=8"])  # logs at 6 and 8 (and evaluates)
    assert train.train_and_evaluate(config, workdir)["step"] == 8

    records = summary.read_jsonl(workdir / "metrics.jsonl")
    steps = {
        tag: [r["step"] for r in records if tag in r] for tag in ("train/loss", "eval/mean_iou")
    }
    assert steps == {"train/loss": [2, 4, 6, 8], "eval/mean_iou": [2, 4, 6, 8]}
    assert all(r[tag] != 100.0 for r in records for tag in r if tag != "step")
    acc = EventAccumulator(str(workdir / "tensorboard"))
    acc.Reload()
    for tag in ("train/loss", "eval/mean_iou"):
        events = acc.Scalars(tag)
        assert [e.step for e in events] == [2, 4, 6, 8], tag
        assert all(e.value != 100.0 for e in events), tag


def test_resume_drops_only_later_records_and_a_cut_line(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1}\n{"step": 2}\n{"step": 3}\n{"step": 2, "eval/x": 1}\n{"st')
    os.chmod(path, 0o644)
    assert summary.drop_after(path, 5) == 1  # only the cut-off line
    assert summary.drop_after(path, 2) == 1
    assert summary.read_jsonl(path) == [{"step": 1}, {"step": 2}, {"step": 2, "eval/x": 1}]
    assert path.stat().st_mode & 0o777 == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.jsonl"]  # no temporary file left
    assert summary.drop_after(tmp_path / "none.jsonl", 0) == 0
    assert not (tmp_path / "none.jsonl").exists()


# ---------------------------------------------------------------------------------------------
# 3. The command line's own INFO lines appear, in its format.


def test_cli_log_lines_are_info_in_fcnjax_format(trained, tmp_path):
    workdir = tmp_path / "run"
    shutil.copytree(trained, workdir)
    cmd, kwargs = python_m_fcnjax("train", "--config", SHAPES, "--workdir", workdir)
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, **kwargs)
    assert done.returncode == 0, done.stderr
    lines = done.stderr.splitlines()
    expected = f"INFO fcnjax.train: resumed from {workdir / 'checkpoints' / '4'} at step 4"
    assert expected in lines, done.stderr
    # Python's default format ("WARNING:fcnjax.train:...") means the set-up did nothing.
    assert not [ln for ln in lines if re.match(r"[A-Z]+:\S+:", ln)], done.stderr
