"""The segmentation task's loss terms (``loss.terms``): the config's forms, its errors, the
sum of the library's losses it computes, binary mode, and exactness across devices (a
subprocess with 8 simulated CPU devices: ``pmap`` gradients equal one device's)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fcnjax import losses
from fcnjax.config import default_config
from fcnjax.training import tasks
from fcnjax.training.settings import ConfigError
from fcnjax.training.tasks import _terms

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def loss_section(**changes):
    loss = default_config().loss.to_dict()
    for key, value in changes.items():
        section, _, field = key.partition("__")
        if field:
            loss[section][field] = value
        else:
            loss[section] = value
    return loss


def make(data_classes=3, num_classes=None, names=None, **changes):
    context = tasks.Context(num_classes=num_classes, data_classes=data_classes, class_names=names)
    return tasks.make("segmentation", loss_section(**changes), context)


def batch_of(rng, n=2, h=5, w=6, k=3, binary=False):
    logits = jnp.asarray(rng.normal(size=(n, h, w, 1 if binary else k)), jnp.float32)
    labels = rng.integers(0, 2 if binary else k, (n, h, w))
    labels[0, 0, :3] = 255
    return logits, {"mask": jnp.asarray(labels, jnp.int32)}


def test_terms_parse_strings_and_pairs():
    assert _terms.parse("cross_entropy") == (("cross_entropy", 1.0),)
    assert _terms.parse(" focal+ 2*lovasz ") == (("focal", 1.0), ("lovasz", 2.0))
    assert _terms.parse(["dice", ("tversky", 0.5)]) == (("dice", 1.0), ("tversky", 0.5))


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"terms": "cross_entropy + dcie"}, "`loss.terms`: unknown loss 'dcie'; the losses are"),
        ({"terms": "-1*dice"}, "the weight of 'dice' must be a finite number >= 0"),
        ({"terms": "dice + dice"}, "`loss.terms` must name each loss once"),
        ({"terms": "nan*dice"}, "the weight of 'dice'"),
        ({"dice": {"smoth": 1.0}}, "`loss.dice` has no option 'smoth'; its options are"),
        ({"terms": "dice", "dice__smooth": -1.0}, "`loss.dice`: "),
        ({"terms": "lovasz", "lovasz__classes": "some"}, "`loss.lovasz`: "),
        ({"terms": "focal", "focal__alpha": (1.0, 2.0)}, "`loss.focal`: "),
        ({"class_weights": (1.0, -1.0, 1.0)}, "`loss.class_weights` must be finite numbers >= 0"),
        ({"mode": "softmax"}, "`loss.mode` must be one of ('auto', 'multiclass', 'binary')"),
        ({"terms": (("dice", "x"),)}, "`loss.terms`: the weight of 'dice'"),
        ({"terms": (("dice",),)}, "`loss.terms`: each term is (name, weight)"),
        ({"terms": (3,)}, "`loss.terms`: each term is a name or (name, weight)"),
        ({"terms": "focal", "focal__alpha": (1.0, -1.0, 1.0)}, "`alpha` must hold finite"),
        ({"terms": "focal + lovasz", "class_weights": (1.0, 2.0, 1.0)}, "none of the terms"),
        ({"class_weights": (1.0, True, 1.0)}, "`loss.class_weights` must be finite numbers"),
    ],
)
def test_bad_loss_settings_name_the_field(changes, message):
    with pytest.raises(ConfigError) as e:
        make(**changes)
    assert message in str(e.value)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize(
    "override, message",
    [
        ("loss.terms=cross_entropy+dcie", "unknown loss 'dcie'"),
        ("loss.dice.smooth=-1.0", "`loss.dice`: "),
        ("model.num_classes=1", "a binary task (`model.num_classes` 1, one sigmoid output) needs"),
    ],
)
def test_the_command_line_refuses_bad_losses_before_building_anything(tmp_path, override, message):
    workdir = tmp_path / "run"
    terms = ["--config.loss.terms=dice"] if "dice" in override and "terms" not in override else []
    result = subprocess.run(
        [sys.executable, "-m", "fcnjax", "train", "--config", "shapes_fcn8s:runlocal"]
        + ["--workdir", str(workdir), f"--config.{override}", *terms],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "JAX_PLATFORMS": "cpu"},
        timeout=300,
    )
    assert result.returncode == 2, result.stderr
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1
    # Nothing written but the workdir's lock (claimed first, so that two runs cannot race).
    assert [p.name for p in workdir.iterdir()] in ([], [".lock"])


def test_binary_mode_checks_the_outputs_and_the_data():
    with pytest.raises(ConfigError, match="a softmax over one class is 1 everywhere"):
        make(data_classes=2, num_classes=1, mode="multiclass", terms="dice")
    with pytest.raises(ConfigError, match=r"but `model.num_classes` is 2; set it to 1"):
        make(data_classes=2, num_classes=2, mode="binary")
    with pytest.raises(ConfigError, match=r"needs data of 2 classes .* the data has 3 \(a, b, c\)"):
        make(data_classes=3, num_classes=1, names=("a", "b", "c"))
    with pytest.raises(ConfigError, match="`loss.class_weights` is set but none of the terms"):
        make(data_classes=2, num_classes=1, terms="dice", class_weights=(1.0, 3.0))
    with pytest.raises(ConfigError, match="`loss.lovasz.classes` has no meaning for a binary"):
        make(data_classes=2, num_classes=1, terms="lovasz", lovasz__classes="all")
    assert make(terms=("dice", 2.0)).terms[0].weight == 2.0  # one (name, weight) pair
    task = make(data_classes=2, mode="binary")  # num_classes unset: one output
    assert (task.num_classes, task.label_classes, task.binary) == (1, 2, True)
    assert "foreground_dice" in task.metric_names
    assert make(data_classes=2).num_classes == 2  # auto: a 2-class softmax, as before


def test_the_task_loss_is_the_weighted_sum_of_the_library_losses():
    rng = np.random.default_rng(0)
    logits, batch = batch_of(rng)
    weights = (1.0, 2.0, 0.5)
    task = make(
        terms="cross_entropy + 0.5*dice + 2*lovasz + focal + 0.25*tversky",
        class_weights=weights,
        dice__smooth=1.0,
        tversky__alpha=0.7,
        tversky__beta=0.3,
        lovasz__per_image=True,
        focal__gamma=1.5,
    )
    mask, w = batch["mask"], jnp.asarray(weights)
    expected = (
        losses.softmax_cross_entropy(logits, mask, class_weights=w)
        + 0.5 * losses.dice_loss(logits, mask, smooth=1.0, class_weights=w)
        + 2 * losses.lovasz_softmax(logits, mask, per_image=True)
        + losses.softmax_focal_loss(logits, mask, gamma=1.5)
        + 0.25 * losses.tversky_loss(logits, mask, alpha=0.7, beta=0.3, class_weights=w)
    )
    np.testing.assert_allclose(task.loss(task.loss_sums(logits, batch)), expected, rtol=1e-6)


def test_binary_terms_are_the_sigmoid_losses():
    rng = np.random.default_rng(1)
    logits, batch = batch_of(rng, binary=True)
    task = make(data_classes=2, num_classes=1, terms="cross_entropy + dice + focal + lovasz")
    mask = batch["mask"]
    expected = (
        losses.sigmoid_binary_cross_entropy(logits, mask)
        + losses.dice_loss(logits, mask)
        + losses.sigmoid_focal_loss(logits, mask)
        + losses.lovasz_hinge(logits, mask)
    )
    np.testing.assert_allclose(task.loss(task.loss_sums(logits, batch)), expected, rtol=1e-6)
    # Evaluation: a 2x2 confusion matrix of the thresholded probability.
    acc = task.accumulator(["background", "pet"])
    acc.update(jax.tree.map(np.asarray, task.eval_sums(logits, batch)))
    result = acc.compute()
    predicted = np.asarray(jax.nn.sigmoid(logits[..., 0]) > 0.5).astype(int)
    counted = np.asarray(mask) != 255
    truth = np.asarray(mask)[counted]
    pred = predicted[counted]
    tp, fp, fn = (
        ((truth == 1) & (pred == 1)).sum(),
        ((truth == 0) & (pred == 1)).sum(),
        ((truth == 1) & (pred == 0)).sum(),
    )
    assert result["foreground_iou"] == pytest.approx(tp / (tp + fp + fn))
    assert result["foreground_dice"] == pytest.approx(2 * tp / (2 * tp + fp + fn))
    assert result["pixel_accuracy"] == pytest.approx((truth == pred).mean())
    assert result["loss"] == pytest.approx(float(expected), rel=1e-5)


def test_evaluation_loss_is_the_split_ratio_not_a_mean_of_batches():
    """Dice over a split is the ratio of its summed intersections and cardinalities."""
    rng = np.random.default_rng(2)
    logits, batch = batch_of(rng, n=4)
    task = make(terms="dice", dice__classes="all")
    acc = task.accumulator()
    for half in (slice(0, 1), slice(1, 4)):
        part = {"mask": batch["mask"][half]}
        acc.update(jax.tree.map(np.asarray, task.eval_sums(logits[half], part)))
    whole = losses.dice_loss(logits, batch["mask"], classes="all")
    assert acc.compute()["loss"] == pytest.approx(float(whole), rel=1e-5)


def test_lovasz_over_batches_is_evaluated_as_their_pixel_weighted_mean():
    rng = np.random.default_rng(4)
    logits, batch = batch_of(rng, n=3)
    task = make(terms="lovasz")
    acc = task.accumulator()
    values, pixels = [], []
    for part in (slice(0, 1), slice(1, 3)):
        mask = batch["mask"][part]
        acc.update(jax.tree.map(np.asarray, task.eval_sums(logits[part], {"mask": mask})))
        values.append(float(losses.lovasz_softmax(logits[part], mask)))
        pixels.append(int((np.asarray(mask) != 255).sum()))
    assert pixels[0] != pixels[1] / 2  # the first image has ignored pixels
    expected = np.dot(values, pixels) / sum(pixels)
    assert acc.compute()["loss"] == pytest.approx(expected, rel=1e-5)


def test_auxiliary_head_adds_half_of_its_loss():
    rng = np.random.default_rng(3)
    out, batch = batch_of(rng)
    aux = out[..., ::-1]
    task = make(terms="cross_entropy + dice")
    both = task.loss(task.loss_sums({"out": out, "aux": aux}, batch))
    single = task.loss(task.loss_sums(out, batch)) + 0.5 * task.loss(task.loss_sums(aux, batch))
    np.testing.assert_allclose(both, single, rtol=1e-6)


# The global objective's gradient, under pmap over 8 simulated devices (each with 2 of the
# 16 images), against one device holding them all: every term, multiclass and binary.
_PMAP_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import jax, jax.numpy as jnp, numpy as np
    from fcnjax.training import tasks
    from tests.test_loss_terms import loss_section

    cases = json.loads(sys.argv[1])
    out = {}
    for name, (data_classes, num_classes, changes) in cases.items():
        loss = loss_section(**changes)
        context = tasks.Context(num_classes=num_classes, data_classes=data_classes)
        task = tasks.make("segmentation", loss, context)
        rng = np.random.default_rng(0)
        k = task.num_classes
        logits = jnp.asarray(rng.normal(size=(16, 4, 5, k)), jnp.float32)
        labels = rng.integers(0, task.label_classes, (16, 4, 5))
        labels[3, 1:, :] = 255
        labels[9, :, :2] = 255
        batch = {"mask": jnp.asarray(labels, jnp.int32), "valid": jnp.arange(16) != 14}

        def objective(x, b, axis_name=None):
            return task.loss(task.loss_sums(x, b, tasks.Across(axis_name)))

        value, grad = jax.value_and_grad(objective)(logits, batch)
        shard = lambda a: a.reshape(8, 2, *a.shape[1:])
        pmapped = jax.pmap(
            jax.value_and_grad(lambda x, b: objective(x, b, "d")), axis_name="d"
        )
        values, grads = pmapped(shard(logits), jax.tree.map(shard, batch))
        out[name] = {
            "value": float(value),
            "values": np.asarray(values).tolist(),
            "grad_error": float(jnp.max(jnp.abs(grads.reshape(grad.shape) - grad))),
            "grad_scale": float(jnp.max(jnp.abs(grad))),
        }
    print(json.dumps(out))
    """
)

PMAP_CASES = {
    "ce+dice": (3, None, {"terms": "cross_entropy + dice", "class_weights": (1.0, 2.0, 0.5)}),
    "lovasz per batch": (3, None, {"terms": "lovasz"}),
    "lovasz per image": (3, None, {"terms": "lovasz", "lovasz__per_image": True}),
    "focal+jaccard+tversky": (4, None, {"terms": "focal + jaccard + 0.5*tversky"}),
    "binary ce+dice+lovasz": (2, 1, {"terms": "cross_entropy + dice + lovasz"}),
    "binary focal per image": (2, 1, {"terms": "focal + lovasz", "lovasz__per_image": True}),
}


def test_every_term_under_pmap_equals_one_device():
    env = {
        **os.environ,
        "XLA_FLAGS": "--xla_force_host_platform_device_count=8",
        "JAX_PLATFORMS": "cpu",
    }
    result = subprocess.run(
        [sys.executable, "-c", _PMAP_SCRIPT, json.dumps(PMAP_CASES)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout.strip().splitlines()[-1])
    for name, r in out.items():
        # Every device reports the global objective, and its gradient is exactly its share.
        np.testing.assert_allclose(r["values"], r["value"], rtol=1e-5, err_msg=name)
        assert r["grad_scale"] > 0, name
        assert r["grad_error"] <= 1e-6 * max(1.0, r["grad_scale"]), (name, r)
