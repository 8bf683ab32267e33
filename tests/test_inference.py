"""Sliding windows and test-time augmentation (fcnjax.inference) against their oracles.

- MONAI's ``sliding_window_inference`` (PyTorch, CPU) on the same convolution, constant and
  Gaussian blending, images smaller than, equal to and larger than the window, odd strides;
- a network whose receptive field fits inside the windows gives the whole-image result;
- test-time augmentation against a NumPy computation of flips, resizes and averages;
- sharded over 8 devices under jit, the same numbers as on one.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from fcnjax import inference
from tests.test_failures import SHAPES, one_line, run

RNG = np.random.default_rng(0)
KERNEL = RNG.normal(size=(3, 3, 3, 4)).astype(np.float32)  # HWIO: 3 -> 4 channels
BIAS = RNG.normal(size=4).astype(np.float32)


def conv(images, kernel=KERNEL, bias=BIAS):
    """One SAME convolution, then tanh: a deterministic network in JAX."""
    out = lax.conv_general_dilated(
        images, kernel, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
    )
    return jnp.tanh(out + bias)


def monai_slide(images, window, stride, blend):
    torch = pytest.importorskip("torch")
    monai = pytest.importorskip("monai.inferers")
    weight = torch.from_numpy(KERNEL.transpose(3, 2, 0, 1).copy())  # OIHW
    bias = torch.from_numpy(BIAS)

    def net(x):
        return torch.tanh(torch.nn.functional.conv2d(x, weight, bias, padding=1))

    overlap = [1 - s / w for s, w in zip(stride, window)]
    x = torch.from_numpy(np.asarray(images).transpose(0, 3, 1, 2).copy())
    with torch.no_grad():
        out = monai.sliding_window_inference(
            x, window, 2, net, overlap=overlap, mode=blend, padding_mode="constant", cval=0.0
        )
    return out.numpy().transpose(0, 2, 3, 1)


CASES = [  # (image (H, W), window, stride): strides MONAI's overlap gives exactly
    ((5, 7), (8, 8), (8, 8)),  # smaller than the window: centred, padded, cropped back
    ((8, 8), (8, 8), (8, 8)),  # equal
    ((21, 30), (8, 8), (5, 5)),  # larger, odd stride, last windows at the border
    ((17, 13), (8, 6), (3, 3)),  # larger, odd strides per axis
    ((6, 19), (8, 6), (5, 3)),  # smaller in one axis, larger in the other
]


@pytest.mark.requires_torch
@pytest.mark.parametrize("blend", ["constant", "gaussian"])
@pytest.mark.parametrize("size, window, stride", CASES)
def test_slide_is_monais_sliding_window_inference(size, window, stride, blend):
    images = RNG.normal(size=(2, *size, 3)).astype(np.float32)
    expected = monai_slide(images, window, stride, blend)
    got = jax.jit(
        functools.partial(inference.slide, conv, window=window, stride=stride, blend=blend, batch=3)
    )(images)
    np.testing.assert_allclose(got, expected, atol=1e-5)
    host = inference.slide_host(jax.jit(conv), images, window, stride, blend=blend, batch=2)
    np.testing.assert_allclose(host, expected, atol=1e-5)


def test_a_receptive_field_inside_the_windows_gives_the_whole_image_result():
    images = RNG.normal(size=(1, 23, 29, 3)).astype(np.float32)
    one_by_one = functools.partial(conv, kernel=KERNEL[1:2, 1:2])  # sees one pixel
    for blend in inference.BLENDS:
        out = inference.slide(one_by_one, images, (8, 10), (5, 7), blend=blend, batch=4)
        np.testing.assert_allclose(out, one_by_one(images), atol=1e-6)
    # A 3x3 field: exact wherever every window holding a pixel holds its neighbours too.
    window, stride = (8, 10), (5, 7)
    out = inference.slide(conv, images, window, stride)
    inside = np.ones((23, 29), bool)
    for axis, (size, w, s) in enumerate(zip((23, 29), window, stride)):
        edge = np.zeros(size, bool)
        for start in inference.window_starts(size, w, s):
            edge[[start, start + w - 1]] = True
        edge[[0, size - 1]] = False  # the image's own border: SAME padding either way
        inside &= ~edge[:, None] if axis == 0 else ~edge[None, :]
    whole = np.asarray(conv(images))
    np.testing.assert_allclose(np.asarray(out)[0][inside], whole[0][inside], atol=1e-6)
    assert not np.allclose(np.asarray(out)[0][~inside], whole[0][~inside], atol=1e-3)


def test_window_placement_and_weights():
    assert inference.window_starts(8, 8, 3) == (0,)
    assert inference.window_starts(9, 8, 3) == (0, 1)
    assert inference.window_starts(20, 8, 5) == (0, 5, 10, 12)
    assert inference.num_windows((1, 6000, 6000, 3), 512, 341) == 18 * 18
    g = inference.blend_weights((5, 4), "gaussian")
    assert g.shape == (5, 4) and g.max() < 1 and np.allclose(g, g[::-1, ::-1])
    assert (inference.blend_weights((9, 9), "gaussian", 0.05) >= 1e-3).all()  # MONAI's floor


@pytest.mark.parametrize(
    "kwargs, words",
    [
        (dict(window=0), "`window` must be >= 1"),
        (dict(window=4, stride=0), "`stride` must be >= 1"),
        (dict(window=4, stride=5), "must not exceed the window"),
        (dict(window=(4, 4, 4)), "`window` must be an int or a sequence of 2"),
        (dict(window=4, batch=0), "`batch` must be a positive int"),
        (dict(window=4, blend="cosine"), "`blend` must be one of"),
    ],
)
def test_bad_arguments_are_named(kwargs, words):
    images = np.zeros((1, 6, 6, 3), np.float32)
    for fn in (inference.slide, inference.slide_host):
        with pytest.raises(ValueError, match=words):
            fn(conv, images, **kwargs)
    with pytest.raises(ValueError, match=r"must be \(N, H, W, C\)"):
        inference.slide(conv, images[0], 4)
    with pytest.raises(ValueError, match="scores at its input's size"):
        inference.slide(lambda x: x[:, ::2, ::2], images, 4)


def _softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _resize(x, size):
    return np.asarray(jax.image.resize(x, (x.shape[0], *size, x.shape[-1]), "bilinear"))


def test_augment_is_flips_and_scales_averaged_as_probabilities():
    images = RNG.normal(size=(2, 12, 16, 3)).astype(np.float32)
    scales = (0.75, 1.0, 1.5)
    got = inference.augment(conv, images, flip=True, scales=scales)
    total = 0
    for s in scales:
        size = (round(12 * s), round(16 * s))
        x = images if size == (12, 16) else _resize(images, size)
        for flip in (False, True):
            logits = np.asarray(conv(x[:, :, ::-1] if flip else x))
            logits = logits[:, :, ::-1] if flip else logits
            total = total + _softmax(logits if size == (12, 16) else _resize(logits, (12, 16)))
    np.testing.assert_allclose(got, total / 6, atol=1e-5)
    np.testing.assert_allclose(np.asarray(got).sum(-1), 1.0, atol=1e-5)
    # Composed with windows: the scores of each scale come from slide.
    windowed = inference.augment(
        functools.partial(inference.slide, conv, window=8, stride=5), images, scales=(1.0, 1.5)
    )
    assert windowed.shape == (2, 12, 16, 4)
    with pytest.raises(ValueError, match="`scales` must be positive numbers"):
        inference.augment(conv, images, scales=(1.0, 0.0))


def test_flipping_a_mirror_symmetric_network_changes_nothing():
    kernel = KERNEL.copy()
    kernel[:, 2] = kernel[:, 0]  # the same weights left and right of the centre
    symmetric = functools.partial(conv, kernel=kernel)
    images = RNG.normal(size=(1, 9, 14, 3)).astype(np.float32)
    plain = _softmax(np.asarray(symmetric(images)))
    np.testing.assert_allclose(inference.augment(symmetric, images, flip=True), plain, atol=1e-6)


def test_slide_sharded_over_devices_gives_one_devices_numbers(tmp_path):
    script = textwrap.dedent(
        """
        import functools, numpy as np, jax, jax.numpy as jnp
        from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
        from fcnjax import inference
        assert jax.device_count() == 8
        rng = np.random.default_rng(1)
        kernel = rng.normal(size=(3, 3, 3, 2)).astype(np.float32)
        def net(x):
            return jax.lax.conv_general_dilated(x, kernel, (1, 1), "SAME",
                dimension_numbers=("NHWC", "HWIO", "NHWC"))
        images = rng.normal(size=(8, 19, 23, 3)).astype(np.float32)
        fn = jax.jit(functools.partial(inference.slide, net, window=8, stride=5,
                                       blend="gaussian", batch=2))
        mesh = Mesh(np.array(jax.devices()), ("data",))
        sharded = jax.device_put(images, NamedSharding(mesh, P("data")))
        out = fn(sharded)
        assert len(out.sharding.device_set) == 8, out.sharding
        one = fn(jax.device_put(images, jax.devices()[0]))
        np.testing.assert_allclose(out, one, atol=1e-5)
        print("ok")
        """
    )
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8"}
    env["JAX_PLATFORMS"] = "cpu"
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300
    )
    assert result.returncode == 0 and "ok" in result.stdout, result.stderr[-3000:]


# ---------------------------------------------------------------------------------------
# Everywhere a prediction is made: predict, evaluate, the trainer's evaluation, the CLI.


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from fcnjax import cli

    wd = tmp_path_factory.mktemp("inference") / "run"
    assert cli.main(["train", "--config", SHAPES, "--workdir", str(wd)]) == 0
    return wd


@pytest.fixture(scope="module")
def photo(tmp_path_factory):
    from PIL import Image

    from fcnjax.data import Shapes

    path = tmp_path_factory.mktemp("photo") / "big.png"
    Image.fromarray(Shapes(1, size=(50, 70), split="test", seed=5)[0]["image"]).save(path)
    return path


def test_predict_with_windows_and_flips_is_the_pure_functions(trained, photo, tmp_path, capsys):
    from PIL import Image

    from fcnjax import data, predict

    args = ["predict", "--workdir", trained, "--input", photo, "--output", tmp_path / "out"]
    args += ["--slide", "16x24", "--stride", "11", "--blend", "gaussian", "--tta", "flip"]
    code, _, err = run(args, capsys)
    assert code == 0, err
    mask = np.asarray(Image.open(tmp_path / "out" / "big.png"))
    # The same through jit: inference.slide (lax.scan) inside inference.augment.
    p = predict.load(trained)
    image = np.asarray(Image.open(photo))
    x = data.normalize(image, p.run.eval_transform.normalization)[None]
    net = functools.partial(p.run.model.apply, p.variables, train=False)
    windows = functools.partial(
        inference.slide, net, window=(16, 24), stride=(11, 11), blend="gaussian", batch=4
    )
    probs = jax.jit(lambda v: inference.augment(windows, v, flip=True))(x)
    np.testing.assert_array_equal(mask, np.asarray(probs[0]).argmax(-1))
    options = dict(window=(16, 24), stride=(11, 11), blend="gaussian", flip=True)
    np.testing.assert_array_equal(predict.predict_segmentation(p, image, inference=options), mask)
    # Windows change the answer of a network that has not learnt much: they are used.
    plain = predict.load(trained)(image)
    assert mask.shape == plain.shape == (50, 70)


def test_one_window_over_the_whole_image_is_the_plain_evaluation(trained, capsys):
    # runlocal validates on whole 40x40 images: one 40x40 window is one forward pass.
    code, _, err = run(["evaluate", "--workdir", trained], capsys)
    assert code == 0, err
    plain = json.loads((trained / "eval_validation.json").read_text())
    code, _, err = run(["evaluate", "--workdir", trained, "--slide", "40"], capsys)
    assert code == 0, err
    one = json.loads((trained / "eval_validation.json").read_text())
    np.testing.assert_allclose(one["confusion_matrix"], plain["confusion_matrix"])
    np.testing.assert_allclose(one["loss"], plain["loss"], rtol=1e-5)
    args = [
        "evaluate",
        "--workdir",
        trained,
        "--slide",
        "24",
        "--stride",
        "16",
        "--scales",
        "1,1.5",
    ]
    code, _, err = run(args, capsys)
    assert code == 0, err
    several = json.loads((trained / "eval_validation.json").read_text())
    assert np.sum(several["confusion_matrix"]) == np.sum(plain["confusion_matrix"])


def test_the_trainers_evaluation_uses_the_config_and_evaluate_agrees(tmp_path, capsys):
    wd = tmp_path / "run"
    settings = ["--config.inference.window=(24, 24)", "--config.inference.stride=(16, 16)"]
    settings += ["--config.inference.blend=gaussian", "--config.inference.flip=True"]
    code, _, err = run(["train", "--config", SHAPES, "--workdir", wd, *settings], capsys)
    assert code == 0, err
    trained_eval = json.loads((wd / "final_metrics.json").read_text())["eval"]
    code, _, err = run(["evaluate", "--workdir", wd], capsys)  # reads config.json's section
    assert code == 0, err
    again = json.loads((wd / "eval_validation.json").read_text())
    np.testing.assert_allclose(again["confusion_matrix"], trained_eval["confusion_matrix"])


@pytest.mark.parametrize(
    "extra, words",
    [
        (["--slide", "0"], "--slide: must be H or HxW"),
        (["--slide", "8", "--stride", "9"], "must not exceed `inference.window`"),
        (["--stride", "8"], "`inference.stride` needs `inference.window`"),
        (["--scales", "1,-2"], "--scales: must be positive numbers"),
        (["--threshold", "1"], "`inference.threshold` must be a number between 0 and 1"),
        (["--threshold", "half"], "--threshold: invalid float value"),
    ],
)
def test_bad_inference_flags_areone_line(trained, photo, tmp_path, extra, words, capsys):
    for command in (
        ["predict", "--input", photo, "--output", tmp_path / "o"],
        ["evaluate"],
    ):
        code, _, err = run([*command, "--workdir", trained, *extra], capsys)
        assert code == 2 and words in one_line(err), err
        assert not (tmp_path / "o").exists()


def test_a_bad_inference_section_is_a_config_error(tmp_path, capsys):
    code, _, err = run(
        ["train", "--config", SHAPES, "--workdir", tmp_path, "--config.inference.blend=cosine"],
        capsys,
    )
    assert code == 2 and "`inference.blend` must be one of" in one_line(err)


# ---------------------------------------------------------------------------------------
# Reading scores: softmax and argmax for K >= 2, the sigmoid and a threshold for one output.


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-np.asarray(x, np.float64)))


def test_probabilities_are_the_softmax_or_for_one_output_the_sigmoid():
    one = np.array([[-2.0], [0.0], [3.0]], np.float32)
    np.testing.assert_allclose(inference.probabilities(one), _sigmoid(one), rtol=1e-6)
    assert inference.probabilities(one).shape == (3, 1)
    many = RNG.normal(size=(2, 5, 7, 3)).astype(np.float32)
    got = jax.jit(inference.probabilities)(many)
    np.testing.assert_allclose(got, _softmax(many), rtol=1e-5)
    # Two classes are not one: the softmax of (0, s) is the sigmoid of s, in the second place.
    pair = np.stack([np.zeros(3, np.float32), one[:, 0]], -1)
    np.testing.assert_allclose(inference.probabilities(pair)[:, 1], _sigmoid(one[:, 0]), 1e-6)


def test_labels_are_the_argmax_or_for_one_output_the_sigmoid_above_the_threshold():
    many = np.array([[0.2, 1.5, -1.0], [2.0, 2.0, 0.0]], np.float32)  # a tie: the first
    for threshold in (0.5, 0.9):  # unused for K >= 2
        got = inference.labels_from_scores(many, threshold)
        assert got.dtype == jnp.int32 and got.tolist() == [1, 0]
    s = np.array([-1.0, 0.0, 1e-6, 1.0, np.inf, -np.inf, np.nan], np.float32)[:, None]
    assert inference.labels_from_scores(s).tolist() == [0, 0, 1, 1, 1, 0, 0]  # 0.5 itself: 0
    s = np.array([[-2.0], [-1.3]], np.float32)  # logit(0.2) = -1.386
    assert inference.labels_from_scores(s, 0.2).tolist() == [0, 1]
    # Near 0 and 1 the scores decide, where float32's sigmoid has rounded to 0 or 1.
    s = np.array([[20.0], [30.0]], np.float32)
    assert float(jax.nn.sigmoid(20.0)) == 1.0
    assert inference.labels_from_scores(s, 1 - 1e-12).tolist() == [0, 1]  # logit: 27.6
    assert inference.labels_from_scores(-s, 1e-12).tolist() == [1, 0]
    # Against float64 NumPy, for many scores and thresholds; under jit, threshold static.
    scores = RNG.normal(scale=4, size=(4, 6, 5, 1)).astype(np.float32)
    for t in (0.01, 0.3, 0.5, 0.77, 0.999):
        want = (_sigmoid(scores[..., 0]) > t).astype(np.int32)
        fn = jax.jit(inference.labels_from_scores, static_argnames="threshold")
        np.testing.assert_array_equal(fn(scores, threshold=t), want)
        closed = jax.jit(functools.partial(inference.labels_from_scores, threshold=t))
        np.testing.assert_array_equal(closed(scores), want)


@pytest.mark.parametrize(
    "threshold", [0, 1, 0.0, 1.0, -0.1, 1.5, np.nan, np.inf, True, "0.5", None]
)
def test_a_threshold_outside_0_1_is_named(threshold):
    with pytest.raises(ValueError, match=r"`threshold` must be a number between 0 and 1, excl"):
        inference.labels_from_scores(np.zeros((2, 1)), threshold)
    with pytest.raises(ValueError, match=r"`inference.threshold` must be a number between 0"):
        inference.check_options({"threshold": threshold})


def test_bad_scores_and_traced_thresholds_are_named():
    for shape in [(), (3, 0)]:
        with pytest.raises(ValueError, match=r"`scores` must be \(\.\.\., K\)"):
            inference.labels_from_scores(np.zeros(shape))
        with pytest.raises(ValueError, match=r"`scores` must be \(\.\.\., K\)"):
            inference.probabilities(np.zeros(shape))
    with pytest.raises(ValueError, match="`threshold` must be a Python number, a constant"):
        jax.jit(inference.labels_from_scores)(np.zeros((2, 1)), 0.5)
    assert inference.check_options({})["threshold"] == 0.5
    assert inference.check_options({"threshold": np.float32(0.25)})["threshold"] == 0.25


def test_scores_from_probabilities_are_read_back_as_the_probabilities():
    p = np.array([[0.0], [1e-6], [0.3], [0.5], [0.9], [1.0]], np.float32)
    scores = inference.scores_from_probabilities(p)
    assert bool(jnp.isfinite(scores).all())
    np.testing.assert_allclose(inference.probabilities(scores), p, atol=1e-6)
    # 0 and 1 stay on their side of any threshold a float64 can hold below 1.
    for t in (1e-30, 0.5, 1 - 1e-15):
        assert inference.labels_from_scores(scores[jnp.array([0, -1])], t).tolist() == [0, 1]
    many = _softmax(RNG.normal(size=(3, 4, 5)).astype(np.float32))
    back = inference.scores_from_probabilities(many)
    np.testing.assert_allclose(inference.probabilities(back), many, atol=1e-6)
    np.testing.assert_array_equal(inference.labels_from_scores(back), many.argmax(-1))


def test_tta_of_a_one_output_network_averages_its_sigmoids():
    binary = functools.partial(conv, kernel=KERNEL[..., :1], bias=BIAS[:1] * 0.1)
    images = RNG.normal(size=(2, 12, 16, 3)).astype(np.float32)
    plain, mirrored = np.asarray(binary(images)), np.asarray(binary(images[:, :, ::-1]))
    want = (_sigmoid(plain) + _sigmoid(mirrored[:, :, ::-1])) / 2
    got = inference.augment(binary, images, flip=True)
    assert got.shape == (2, 12, 16, 1)
    np.testing.assert_allclose(got, want, atol=1e-6)
    # scores_fn gives the log-odds of that average: read back as it, labelled by it.
    scores = jax.jit(inference.scores_fn(binary, {"flip": True, "threshold": 0.6}))(images)
    np.testing.assert_allclose(inference.probabilities(scores), want, atol=1e-6)
    for t in (0.4, 0.5, 0.6):
        np.testing.assert_array_equal(inference.labels_from_scores(scores, t), want[..., 0] > t)


def test_a_threshold_in_a_config_is_checked_and_kept(tmp_path):
    from fcnjax import config as config_lib

    c = config_lib.load_config(SHAPES, ["inference.threshold=0.3"])
    assert c.inference.threshold == 0.3
    with pytest.raises(config_lib.ConfigError, match="`inference.threshold` must be a number"):
        config_lib.load_config(SHAPES, ["inference.threshold=1.0"])
