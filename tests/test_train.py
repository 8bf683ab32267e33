"""The trainer: exact resume, SIGTERM, NaN, devices (jit and pmap), two hosts, predict/evaluate.

Runs that need several (simulated) devices or processes run ``python -m fcnjax train`` in
subprocesses; parameters are compared from the orbax checkpoints they leave.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import jax
import ml_collections
import numpy as np
import pytest

from fcnjax import config as config_lib
from fcnjax import predict, train
from fcnjax.training import checkpoints, experiment

ROOT = Path(__file__).resolve().parent.parent
SHAPES = "shapes_fcn8s:runlocal"
# A tiny FCN-8s on 32x32 crops of 40x40 shapes; global batch 16 (2 per device on 8
# devices), eval of 20 examples in batches of 16 (so the last one is padded); no dropout.
BASE = [
    "model.backbone=vgg16",
    "batch_size=16",
    "eval_batch_size=16",
    "data.num_examples=64",
    "eval_data.num_examples=20",
    "optimizer.warmup_steps=0",
    "optimizer.learning_rate=0.01",
    "input.flip=True",
]


def config(*overrides: str):
    c = config_lib.load_config(SHAPES)
    config_lib.apply_overrides(c, [*BASE, *overrides])
    return c


def params_of(workdir: Path, step: int | None = None):
    state, found = checkpoints.restore_state(workdir / "checkpoints", None, step)
    return state["params"], found


def assert_trees_close(a, b, rtol=0.0, atol=0.0):
    leaves_a, tree_a = jax.tree.flatten(a)
    leaves_b, tree_b = jax.tree.flatten(b)
    assert tree_a == tree_b
    for x, y in zip(leaves_a, leaves_b):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=rtol, atol=atol)


# Subprocesses use the test process's PRNG (conftest: classic threefry), so that their
# initial parameters equal those of in-process runs.
ENV = {
    **os.environ,
    "PYTHONPATH": str(ROOT),
    "JAX_THREEFRY_PARTITIONABLE": str(jax.config.jax_threefry_partitionable),
}


def cli(args, env=None, **kw):
    full_env = {**ENV, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "fcnjax", *args],
        capture_output=True,
        text=True,
        env=full_env,
        cwd=ROOT,
        timeout=600,
        **kw,
    )


def overrides(*items: str) -> list[str]:
    return [f"--config.{item}" for item in (*BASE, *items)]


# The cosine schedule depends on num_steps, and the resumed run's first leg is shorter.
TRAINED = ("num_steps=6", "checkpoint.every_steps=3", "optimizer.schedule=constant")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """6 steps in one go (checkpoints at 3 and 6), the reference for several tests."""
    workdir = tmp_path_factory.mktemp("trained")
    result = train.train_and_evaluate(config(*TRAINED), workdir)
    return workdir, result


def test_run_leaves_checkpoints_metrics_and_pictures(trained):
    workdir, result = trained
    assert result["step"] == 6 and result["interrupted"] is None
    assert (workdir / "checkpoints" / "6").is_dir() and (workdir / "checkpoints" / "3").is_dir()
    assert any((workdir / "best").iterdir())
    assert (workdir / "predictions.png").stat().st_size > 0
    assert list((workdir / "tensorboard").glob("events.out.tfevents.*"))
    lines = [ln for ln in (workdir / "metrics.jsonl").read_text().splitlines() if ln]
    assert any('"eval/mean_iou"' in ln for ln in lines)
    ev = result["eval"]
    # The confusion matrix covers exactly the 20 whole 40x40 validation images (the last
    # batch's padding excluded).
    assert np.sum(ev["confusion_matrix"]) == 20 * 40 * 40
    assert 0 <= ev["mean_iou"] <= 1 and 0 <= ev["pixel_accuracy"] <= 1


def test_resume_is_exact(trained, tmp_path):
    """3 steps, stop, resume for 3 more == 6 in one go (same data order, same parameters)."""
    reference, _ = trained
    train.train_and_evaluate(config(*TRAINED, "num_steps=3"), tmp_path / "resumed")
    result = train.train_and_evaluate(config(*TRAINED), tmp_path / "resumed")
    assert result["step"] == 6
    assert_trees_close(params_of(tmp_path / "resumed")[0], params_of(reference)[0])


def test_sigterm_saves_and_resume_matches(tmp_path):
    workdir = tmp_path / "wd"
    args = [
        "train",
        "--config",
        SHAPES,
        "--workdir",
        str(workdir),
        *overrides(
            "num_steps=400",
            "checkpoint.every_steps=1000",
            "log_every_steps=1",
            "optimizer.schedule=constant",
        ),
    ]
    proc = subprocess.Popen(
        [sys.executable, "-m", "fcnjax", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=ENV,
        cwd=ROOT,
    )
    metrics = workdir / "metrics.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if metrics.exists() and metrics.read_text().count("\n") >= 3:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 128 + signal.SIGTERM, out  # stopped, not finished
    assert "stopped by SIGTERM" in out
    steps = [int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit()]
    assert len(steps) == 1 and 3 <= steps[0] < 400, (steps, out)
    stopped = steps[0]
    # Resume to a later step and compare with a run that never stopped.
    c = config(f"num_steps={stopped + 2}", "checkpoint.every_steps=1000")
    c.optimizer.schedule = "constant"  # the schedule depends on num_steps
    train.train_and_evaluate(c, workdir)
    train.train_and_evaluate(c, tmp_path / "straight")
    assert_trees_close(params_of(workdir)[0], params_of(tmp_path / "straight")[0])


def test_nan_loss_stops_with_the_step_and_keeps_good_checkpoints(tmp_path):
    c = config(
        "num_steps=20",
        "checkpoint.every_steps=1",
        "optimizer.name=sgd",
        "optimizer.learning_rate=1e12",
        "optimizer.momentum=0.0",
        "optimizer.schedule=constant",
    )
    with pytest.raises(train.NonFiniteLossError, match=r"became (nan|inf|-inf) at step (\d+)") as e:
        train.train_and_evaluate(c, tmp_path)
    bad = int(e.value.args[0].split(" at step ")[1].split()[0])
    steps = sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit())
    assert steps and max(steps) == bad - 1
    params, step = params_of(tmp_path)
    assert step == bad - 1
    assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(params))


def _run_devices(tmp_path: Path, name: str, devices: int, *extra: str) -> Path:
    workdir = tmp_path / name
    env = {
        "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}",
        "PYTHONWARNINGS": "default::DeprecationWarning",  # shown, as libraries' FutureWarnings
    }
    result = cli(
        [
            "train",
            "--config",
            SHAPES,
            "--workdir",
            str(workdir),
            *overrides("num_steps=3", "checkpoint.every_steps=3", *extra),
        ],
        env,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    # Nothing a user cannot act on: no library's warning (pmap's on the newest jax included).
    assert "Warning" not in result.stderr, result.stderr
    return workdir


def _final_eval(workdir: Path):
    import json

    return json.loads((workdir / "final_metrics.json").read_text())["eval"]


# The runs on several devices or processes have BatchNorm (vgg16_bn), so they equal the one
# on one device only if the batch statistics are global. SGD, not Adam: a convolution's bias
# before BatchNorm has a zero gradient, and Adam would blow its rounding noise up to +-lr.
# Their loss adds Dice (a ratio of sums over the global batch) and Lovasz-softmax over the
# whole batch (sorted over every device's pixels) to the cross-entropy.
DEVICES = (
    "model.backbone=vgg16_bn",
    "optimizer.name=sgd",
    "optimizer.learning_rate=0.1",
    "loss.terms=cross_entropy+dice+lovasz",
)


@pytest.fixture(scope="module")
def one_device(tmp_path_factory):
    return _run_devices(tmp_path_factory.mktemp("devices"), "one", 1, *DEVICES)


def assert_same_run(workdir: Path, one: Path):
    """Parameters and batch statistics to float32 summation order; the same counts."""
    ref = checkpoints.restore_state(one / "checkpoints", None)[0]
    got = checkpoints.restore_state(workdir / "checkpoints", None)[0]
    assert jax.tree.leaves(ref["batch_stats"])
    assert_trees_close(got["batch_stats"], ref["batch_stats"], rtol=2e-4, atol=2e-5)
    assert_trees_close(got["params"], ref["params"], rtol=2e-4, atol=2e-5)
    # The confusion matrix is summed over devices: same counts as on one device.
    assert _final_eval(workdir)["confusion_matrix"] == _final_eval(one)["confusion_matrix"]


@pytest.mark.parametrize("parallel", ["jit", "pmap"])
def test_eight_devices_match_one_device(tmp_path, one_device, parallel):
    eight = _run_devices(tmp_path, parallel, 8, *DEVICES, f"parallel={parallel}")
    assert_same_run(eight, one_device)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def test_two_processes_match_one(tmp_path, one_device):
    """Two jax.distributed processes (2 CPU devices each) train like one process."""
    workdir, port = tmp_path / "two", _free_port()
    procs = []
    for pid in range(2):
        args = [
            "train",
            "--config",
            SHAPES,
            "--workdir",
            str(workdir),
            *overrides(
                "num_steps=3",
                "checkpoint.every_steps=3",
                *DEVICES,
                f"distributed.coordinator_address=localhost:{port}",
                "distributed.num_processes=2",
                f"distributed.process_id={pid}",
            ),
        ]
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "fcnjax", *args],
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                cwd=ROOT,
                env={**ENV, "XLA_FLAGS": "--xla_force_host_platform_device_count=2"},
            )
        )
    outs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], "\n\n".join(outs)
    assert_same_run(workdir, one_device)


def test_predict_and_evaluate_from_a_workdir(trained, tmp_path):
    workdir, result = trained
    metrics = predict.evaluate_segmentation(workdir)
    # Same checkpoint, same split: the numbers training printed.
    assert metrics["confusion_matrix"] == result["eval"]["confusion_matrix"]
    assert metrics["mean_iou"] == pytest.approx(result["eval"]["mean_iou"])
    from PIL import Image

    from fcnjax.data import Shapes

    images = tmp_path / "images"
    images.mkdir()
    for i in range(2):
        Image.fromarray(Shapes(2, size=(40, 56), split="test")[i]["image"]).save(
            images / f"{i}.png"
        )
    mask = predict.predict_segmentation(
        workdir, images / "0.png", out_fname=tmp_path / "o" / "0.png"
    )
    assert mask.shape == (40, 56) and mask.dtype == np.uint8 and mask.max() < 4
    written = Image.open(tmp_path / "o" / "0.png")
    assert written.mode == "P" and (np.asarray(written) == mask).all()
    assert (tmp_path / "o" / "0_overlay.png").exists() and (tmp_path / "o" / "0_color.png").exists()
    masks = predict.predict_multiple(workdir, images, tmp_path / "many")
    assert sorted(masks) == ["0.png", "1.png"] and (masks["0.png"] == mask).all()


def test_saving_the_best_checkpoint_of_a_step_again_keeps_the_first(tmp_path):
    # a finished run trained again evaluates its last step again; when its restored
    # checkpoint predates that evaluation, the best step is saved a second time
    from fcnjax.training import checkpoints

    saver = checkpoints.Checkpointer(tmp_path, asynchronous=False)
    state = {"w": np.arange(3.0)}
    saver.save_best(4, state, {"step": 4})
    saver.save_best(4, {"w": np.zeros(3)}, {"step": 4})
    saver.wait()
    restored, step = checkpoints.restore_state(tmp_path / "best", None)
    assert step == 4
    np.testing.assert_array_equal(restored["w"], state["w"])
    saver.close()


def test_build_from_run_info_needs_neither_data_nor_weights():
    # normalization="backbone" with ImageNet weights would download them; the run info
    # carries their preprocessing (through JSON, as run_info.json does)
    from fcnjax import weights

    c = config("input.normalization=backbone", "init.backbone_weights=imagenet")
    info = {
        "task": "segmentation",
        "num_classes": 4,
        "class_names": ["bg", "a", "b", "c"],
        "class_weights": None,
        "loss_terms": [["cross_entropy", 1.0]],
        "example_shape": [1, 40, 40, 3],
        "preprocessing": dataclasses.asdict(weights.KERAS_CAFFE),
    }
    info = json.loads(json.dumps(info))
    run = experiment.build(c, with_train=False, with_eval=False, info=info).run
    assert run.preprocessing == weights.KERAS_CAFFE
    assert run.task.num_classes == 4 and run.example_shape == (1, 40, 40, 3)
    assert run.class_names == ("bg", "a", "b", "c")
    pixel = np.array([[[10, 20, 30]]], np.uint8)
    out = run.eval_transform({"image": pixel})["image"]
    np.testing.assert_allclose(out, weights.KERAS_CAFFE(pixel), rtol=1e-6)
    assert json.loads(json.dumps(run.info())) == info  # what training writes, read back
    with pytest.raises(ValueError, match=r"run info lacks \['preprocessing'\]"):
        no_pre = {k: v for k, v in info.items() if k != "preprocessing"}
        experiment.build(c, with_train=False, with_eval=False, info=no_pre)


def test_evaluation_takes_class_weights_from_the_run_info(monkeypatch):
    # median-frequency weights come from the training masks once, in training; evaluation
    # (an evaluation source, no training source) reads them from run_info.json instead
    from fcnjax import data

    c = config("loss.class_weights=median_frequency")
    trained = experiment.build(c, with_eval=False).run
    assert trained.task.class_weights is not None and len(trained.task.class_weights) == 4
    info = json.loads(json.dumps(trained.info()))
    assert info["class_weights"] == list(trained.task.class_weights)

    def no_masks(*args, **kwargs):
        raise AssertionError("the training masks were read again")

    monkeypatch.setattr(data, "class_counts", no_masks)
    predicted = experiment.build(c, with_train=False, with_eval=False, info=info).run
    assert predicted.task == trained.task  # nothing read
    with c.ignore_type():
        c.eval_data = ml_collections.ConfigDict(c.data.to_dict())
    evaluated = experiment.build(c, with_train=False, info=info).run
    assert evaluated.task.class_weights == trained.task.class_weights
    assert evaluated.task == trained.task
