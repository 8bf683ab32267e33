"""fcnjax.export: StableHLO files that run where neither fcnjax nor flax is imported, and ONNX
files that ONNX Runtime runs, each giving the Predictor's answers on the same images.

The workdirs are written here as training writes them (``config.json``, ``run_info.json``,
an orbax checkpoint) with the networks' own random initialisation, perturbed so that no
layer is zero (FCN's score layers start at zero: every label would be class 0), instead of
training each family: the exports are what is under test, and compiling a training step per
family would cost more than everything else here. One FCN-8s workdir is trained for real
(``train_and_evaluate``), so that the layout these files imitate stays the trainer's.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fcnjax import checkpoints as ckpt
from fcnjax import config as config_lib
from fcnjax import experiment, predict, train
from fcnjax import export as export_lib
from fcnjax.export import export

pytestmark = pytest.mark.usefixtures("cheap_compiles")

SIZE = 32  # the shapes data's images: every family's example size (the autoencoder's: 28)
# Tiny networks of every family; normalisations vary so that each form is inside a graph.
FAMILIES = {
    "fcn8s": (dict(name="fcn8s", backbone="vgg16_bn", width=1 / 16, dropout=0.0), "unit"),
    "segnet": (dict(name="segnet", widths=(4, 8), kernel_size=3), "caffe"),
    "unet": (dict(name="unet", widths=(4, 8)), "unit"),
    "fcn_resnet50": (dict(name="fcn_resnet50", width=1 / 16), "imagenet"),
    "resnet50_unet": (dict(name="resnet50_unet", width=1 / 16), "imagenet"),
    "autoencoder": (dict(name="conv_autoencoder", channels=3, features=(4, 8)), "unit"),
}


def family_config(family: str):
    c = config_lib.load_config("shapes_fcn8s:runlocal")
    model, normalization = FAMILIES[family]
    c.model = model
    c.data.size = 28 if family == "autoencoder" else SIZE
    c.data.num_examples = 8
    c.eval_data = None
    c.input.size = (c.data.size,) * 2
    c.input.normalization = normalization
    if family == "autoencoder":
        c.task = "autoencoder"
        c.input.mode = "none"
    return c


def write_workdir(config, workdir: Path) -> Path:
    """A workdir as training leaves it, with perturbed initial parameters at step 1."""
    run = experiment.build(config, with_eval=False)
    workdir.mkdir(parents=True)
    (workdir / "config.json").write_text(experiment.config_json(config))
    (workdir / "run_info.json").write_text(json.dumps(run.info()))
    variables = jax.jit(run.model.init)(jax.random.key(0), jnp.zeros(run.example_shape))
    rng = np.random.default_rng(0)
    state = jax.tree.map(np.asarray, dict(variables))
    state["params"] = jax.tree.map(
        lambda p: p + rng.normal(0, 0.1, p.shape).astype(p.dtype), state["params"]
    )
    saver = ckpt.Checkpointer(workdir, asynchronous=False)
    saver.save(1, state, None, {"step": 1})
    saver.close()
    return workdir


@pytest.fixture(scope="module")
def workdirs(tmp_path_factory):
    """``{family: workdir}``, written on first use."""
    root = tmp_path_factory.mktemp("workdirs")
    made: dict[str, Path] = {}

    def get(family: str) -> Path:
        if family not in made:
            made[family] = write_workdir(family_config(family), root / family)
        return made[family]

    return get


@pytest.fixture(scope="module")
def predictors(workdirs):
    made: dict[str, predict.Predictor] = {}

    def get(family: str) -> predict.Predictor:
        if family not in made:
            made[family] = predict.load(workdirs(family))
        return made[family]

    return get


def images_for(predictor, n: int = 3, seed: int = 1) -> np.ndarray:
    h, w = predictor.run.example_shape[1:3]
    return np.random.default_rng(seed).integers(0, 256, (n, h, w, predictor.channels), np.uint8)


def reference(predictor, images: np.ndarray):
    """The Predictor's answers image by image: ``(labels, probabilities)``, or the
    autoencoder's reconstruction."""
    if predictor.num_classes is None:
        apply = jax.jit(lambda x: predictor.run.model.apply(predictor.variables, x, train=False))
        norm = predictor.run.eval_transform.normalization
        from fcnjax.data import normalize

        return np.stack([np.asarray(apply(normalize(im, norm)[None]))[0] for im in images])
    logits = np.stack([predictor.logits(im) for im in images])
    probs = np.asarray(jax.nn.softmax(logits, axis=-1))
    labels = np.stack([predictor(im) for im in images]).astype(np.int32)
    return labels, probs


def assert_labels(got: np.ndarray, labels: np.ndarray, probs: np.ndarray) -> None:
    """The same labels, except where the two best classes are within 1e-5 (float order)."""
    top2 = np.sort(probs, axis=-1)[..., -2:]
    tied = top2[..., 1] - top2[..., 0] < 1e-5
    assert got.dtype == np.int32 and got.shape == labels.shape
    assert tied.mean() < 0.01
    np.testing.assert_array_equal(np.where(tied, 0, got), np.where(tied, 0, labels))
    assert len(np.unique(labels)) > 1  # perturbed parameters: not one class everywhere


# The StableHLO file in a fresh interpreter: jax and numpy only.
RUNNER = textwrap.dedent(
    """
    import sys
    import jax
    import numpy as np

    exported = jax.export.deserialize(open(sys.argv[1], "rb").read())
    images = np.load(sys.argv[2])
    one, three = exported.call(images[:1]), exported.call(images)
    one, three = [x if isinstance(x, (tuple, list)) else (x,) for x in (one, three)]
    assert "fcnjax" not in sys.modules and "flax" not in sys.modules, "imported"
    np.savez(
        sys.argv[3],
        **{f"one{i}": np.asarray(x) for i, x in enumerate(one)},
        **{f"three{i}": np.asarray(x) for i, x in enumerate(three)},
        platforms=np.array(exported.platforms),
        shape=np.array([str(d) for d in exported.in_avals[0].shape]),
    )
    """
)


def run_stablehlo(path: Path, images: np.ndarray, tmp_path: Path) -> dict[str, np.ndarray]:
    np.save(tmp_path / "images.npy", images)
    script = tmp_path / "runner.py"
    script.write_text(RUNNER)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run(
        [sys.executable, str(script), str(path), str(tmp_path / "images.npy"), str(tmp_path / "out.npz")],
        capture_output=True,
        text=True,
        cwd=tmp_path,  # not the repository: fcnjax is not importable by accident
        env=env,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return dict(np.load(tmp_path / "out.npz"))


@pytest.mark.parametrize("family", list(FAMILIES))
def test_stablehlo_runs_without_fcnjax(family, workdirs, predictors, tmp_path):
    predictor = predictors(family)
    autoencoder = family == "autoencoder"
    path = export(workdirs(family), tmp_path / "model.stablehlo", probabilities=not autoencoder)
    images = images_for(predictor)
    out = run_stablehlo(path, images, tmp_path)
    assert list(out["shape"]) == ["b", *map(str, images.shape[1:])]  # one file, any batch
    assert list(out["platforms"]) == ["cpu"]
    if autoencoder:
        want = reference(predictor, images)
        np.testing.assert_allclose(out["three0"], want, atol=1e-4)
        np.testing.assert_allclose(out["one0"], want[:1], atol=1e-4)
        return
    labels, probs = reference(predictor, images)
    assert_labels(out["three0"], labels, probs)
    assert_labels(out["one0"], labels[:1], probs[:1])
    np.testing.assert_allclose(out["three1"], probs, atol=1e-4)
    np.testing.assert_allclose(out["one1"], probs[:1], atol=1e-4)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_onnx_runs_in_onnxruntime(family, workdirs, predictors, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("jax2onnx")
    predictor = predictors(family)
    autoencoder = family == "autoencoder"
    path = export(
        workdirs(family), tmp_path / "model.onnx", format="onnx", probabilities=not autoencoder
    )
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (image,) = session.get_inputs()
    assert image.name == "image" and image.type == "tensor(uint8)"
    assert image.shape == ["B", *predictor.run.example_shape[1:]]
    names = [o.name for o in session.get_outputs()]
    assert names == (["reconstruction"] if autoencoder else ["labels", "probabilities"])
    images = images_for(predictor)
    one, three = (session.run(None, {"image": x}) for x in (images[:1], images))
    if autoencoder:
        want = reference(predictor, images)
        np.testing.assert_allclose(three[0], want, atol=1e-4)
        np.testing.assert_allclose(one[0], want[:1], atol=1e-4)
        return
    labels, probs = reference(predictor, images)
    assert_labels(three[0], labels, probs)
    assert_labels(one[0], labels[:1], probs[:1])
    np.testing.assert_allclose(three[1], probs, atol=1e-4)
    meta = session.get_modelmeta().custom_metadata_map
    assert json.loads(meta["fcnjax.class_names"]) == list(predictor.run.class_names)
    assert meta["fcnjax.task"] == "segmentation" and meta["fcnjax.step"] == "1"
