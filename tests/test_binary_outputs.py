"""A network with one output (binary segmentation, ``model.num_classes = 1``): its sigmoid
is the foreground's probability, and every place that turns scores into answers reads it
so (fcnjax.inference.labels_from_scores and probabilities): the Predictor's labels, with
test-time augmentation too, the PNGs it writes, and the StableHLO and ONNX graphs.

The predictor is built here without training: the multiclass run of test_export.py's tiny
U-Net with a one-output U-Net of perturbed initial parameters, and the class names of a
binary run (that training writes such a workdir, and evaluation, is the trainer's test).
"""

from __future__ import annotations

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from fcnjax import export as export_lib
from fcnjax import inference, models, predict
from fcnjax.export import export
from fcnjax.training import experiment
from tests.test_export import family_config, images_for, onnx_runtime, perturbed
from tests.test_failures import one_line, run

pytestmark = pytest.mark.usefixtures("cheap_compiles")
NAMES = ("background", "pet")


@pytest.fixture(scope="module")
def binary(tmp_path_factory) -> predict.Predictor:
    config = family_config("unet_mini")
    multiclass = experiment.build(config, with_eval=False).run
    model = models.get("unet_mini", widths=(4, 8), num_classes=1)
    task = dataclasses.replace(multiclass.task, num_classes=1)
    run_ = dataclasses.replace(multiclass, task=task, model=model, class_names=NAMES)
    variables = jax.jit(model.init)(jax.random.key(0), jnp.zeros(run_.example_shape))
    variables = perturbed(run_, jax.tree.map(np.asarray, dict(variables)), np.random.default_rng(0))
    workdir = tmp_path_factory.mktemp("binary")
    options = inference.check_options({})
    made = predict.Predictor(config, run_, variables, 1, workdir, options)
    # The head rescaled so that the scores of random images spread around 0 (a = 2 / std,
    # b' = a (b - median)): probabilities from ~0.1 to ~0.9, both labels at every threshold.
    scores = np.stack([made.logits(im) for im in images_for(made, 4, seed=9)])
    a = 2.0 / scores.std()
    head = variables["params"]["head"]
    head = {"kernel": head["kernel"] * a, "bias": a * (head["bias"] - np.median(scores))}
    params = {**variables["params"], "head": head}
    return dataclasses.replace(made, variables={**variables, "params": params})


@pytest.fixture
def exporting(binary, monkeypatch):
    """export() and the command line loading the binary predictor for any workdir."""

    def load(workdir, checkpoint="latest", *, inference=None):
        return predict._predictor(binary, checkpoint, inference)

    monkeypatch.setattr(export_lib, "load", load)
    return binary


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-np.asarray(x, np.float64)))


def test_the_labels_are_the_sigmoid_above_the_threshold(binary):
    image = images_for(binary, 1)[0]
    logits = binary.logits(image)
    assert logits.shape == (*image.shape[:2], 1)
    probs = sigmoid(logits[..., 0])
    assert 0.2 < (probs > 0.5).mean() < 0.8  # both classes: a wrong rule would show
    for t in (0.5, 0.3, 0.7):
        p = predict._predictor(binary, inference={"threshold": t})
        mask = p(image)
        assert mask.dtype == np.uint8
        np.testing.assert_array_equal(mask, probs > t)
    with pytest.raises(ValueError, match="`inference.threshold` must be a number between 0"):
        predict._predictor(binary, inference={"threshold": 1.0})


def test_flips_average_the_sigmoids(binary):
    image = images_for(binary, 1, seed=3)[0]
    plain = sigmoid(binary.logits(image))
    mirrored = sigmoid(binary.logits(image[:, ::-1]))[:, ::-1]
    want = (plain + mirrored) / 2
    tta = predict._predictor(binary, inference={"flip": True, "threshold": 0.45})
    np.testing.assert_allclose(sigmoid(tta.logits(image)), want, atol=1e-5)
    decided = np.abs(want[..., 0] - 0.45) > 1e-5
    np.testing.assert_array_equal((tta(image) == 1)[decided], (want[..., 0] > 0.45)[decided])


def test_the_pngs_hold_0_and_1(binary, tmp_path):
    image = images_for(binary, 1)[0]
    mask = predict.predict_segmentation(binary, image, tmp_path / "a.png")
    assert set(np.unique(mask)) == {0, 1}
    index = Image.open(tmp_path / "a.png")
    assert index.mode == "P"
    np.testing.assert_array_equal(np.asarray(index), mask)
    colours = np.asarray(Image.open(tmp_path / "a_color.png"))
    assert len(np.unique(colours.reshape(-1, 3), axis=0)) == 2
    assert (tmp_path / "a_overlay.png").is_file()


def test_stablehlo_labels_by_the_runs_or_the_given_threshold(exporting, tmp_path):
    images = images_for(exporting, 3)
    probs = sigmoid(np.stack([exporting.logits(im) for im in images]))
    for threshold in (None, 0.7):
        out = tmp_path / f"{threshold}.stablehlo"
        export("wd", out, probabilities=True, threshold=threshold)
        labels, got = jax.export.deserialize(out.read_bytes()).call(images)
        assert labels.dtype == jnp.int32 and got.shape == (3, *images.shape[1:3], 1)
        np.testing.assert_allclose(got, probs, atol=1e-5)
        decided = np.abs(probs[..., 0] - (threshold or 0.5)) > 1e-5
        want = probs[..., 0] > (threshold or 0.5)
        np.testing.assert_array_equal(np.asarray(labels)[decided], want[decided])
    with pytest.raises(ValueError, match="`inference.threshold` must be a number between"):
        export("wd", tmp_path / "x.stablehlo", threshold=0.0)
    assert not (tmp_path / "x.stablehlo").exists()


def test_onnx_labels_by_the_threshold_and_records_it(exporting, tmp_path):
    ort = onnx_runtime()
    path = export("wd", tmp_path / "m.onnx", format="onnx", probabilities=True, threshold=0.6)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    images = images_for(exporting, 3, seed=5)
    labels, got = session.run(None, {"image": images})
    probs = sigmoid(np.stack([exporting.logits(im) for im in images]))
    assert labels.dtype == np.int32 and got.shape == (3, *images.shape[1:3], 1)
    np.testing.assert_allclose(got, probs, atol=1e-4)
    decided = np.abs(probs[..., 0] - 0.6) > 1e-4
    np.testing.assert_array_equal(labels[decided], (probs[..., 0] > 0.6)[decided])
    meta = session.get_modelmeta().custom_metadata_map
    assert meta["fcnjax.threshold"] == "0.6"
    assert json.loads(meta["fcnjax.class_names"]) == list(NAMES)
    outputs = json.loads(meta["fcnjax.outputs"])
    assert "sigmoid > 0.6" in outputs["labels"] and outputs["probabilities"].endswith("1], sigmoid")


def test_the_command_lines_threshold(exporting, tmp_path, capsys):
    out = tmp_path / "m.stablehlo"
    code, _, err = run(["export", "--workdir", "wd", "--output", out, "--threshold", "0.8"], capsys)
    assert code == 0, err
    images = images_for(exporting, 2)
    probs = sigmoid(np.stack([exporting.logits(im) for im in images]))[..., 0]
    labels = np.asarray(jax.export.deserialize(out.read_bytes()).call(images))
    decided = np.abs(probs - 0.8) > 1e-5
    np.testing.assert_array_equal(labels[decided], (probs > 0.8)[decided])
    for value, words in [("1", "`inference.threshold` must be a number between 0 and 1"),
                         ("nan", "`inference.threshold` must be a number between 0 and 1"),
                         ("x", "--threshold: invalid float value")]:  # fmt: skip
        args = ["export", "--workdir", "wd", "--output", tmp_path / "n", "--threshold", value]
        code, _, err = run(args, capsys)
        assert code == 2 and words in one_line(err), err
    assert not (tmp_path / "n").exists()
