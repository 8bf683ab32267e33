"""Losses against PyTorch and NumPy, the confusion matrix against NumPy, metrics by hand."""

import functools
import math
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from fcnjax.losses import mean_squared_error, softmax_cross_entropy
from fcnjax.metrics import ConfusionMatrix, confusion_matrix, segmentation_metrics

K = 5

# Eager JAX compiles every primitive for every new shape (~2 s per cross-entropy call on 2 cores);
# one jit compiles the whole function in ~0.2 s, so the tests call these.
ce = jax.jit(softmax_cross_entropy, static_argnames=("ignore_label", "reduction"))
mse = jax.jit(mean_squared_error, static_argnames=("reduction",))
cmat = jax.jit(confusion_matrix, static_argnames=("num_classes", "ignore_label"))


def seg_batch(rng, n=3, h=6, w=7, k=K, ignore_frac=0.2):
    logits = rng.normal(size=(n, h, w, k)).astype(np.float32) * 3
    labels = rng.integers(0, k, size=(n, h, w))
    labels[rng.random((n, h, w)) < ignore_frac] = 255
    return logits, labels


def ce_ref(logits, labels, weight=None, reduction="mean"):
    """PyTorch's ``F.cross_entropy(..., ignore_index=255)`` from its definition, in float64.

    Pixel loss -w[y] log softmax(z)[y], 0 where y = 255; "mean" divides the sum by the kept
    pixels' summed weights (0/0 = NaN when all are ignored, as in PyTorch).
    """
    z, labels = np.asarray(logits, np.float64), np.asarray(labels)
    keep = labels != 255
    y = np.where(keep, labels, 0)[..., None]
    log_p = z - z.max(-1, keepdims=True)
    log_p -= np.log(np.exp(log_p).sum(-1, keepdims=True))
    weight = np.ones(z.shape[-1]) if weight is None else np.asarray(weight, np.float64)
    w = np.where(keep, weight[y[..., 0]], 0)
    loss = -w * np.take_along_axis(log_p, y, -1)[..., 0]
    if reduction == "none":
        return loss
    with np.errstate(invalid="ignore"):
        return loss.sum() if reduction == "sum" else loss.sum() / w.sum()


def torch_ce(logits, labels, weight=None, reduction="mean"):
    import torch
    import torch.nn.functional as F

    return F.cross_entropy(
        torch.from_numpy(np.asarray(logits, np.float32)).permute(0, 3, 1, 2),
        torch.from_numpy(np.asarray(labels, np.int64)),
        weight=None if weight is None else torch.from_numpy(np.asarray(weight, np.float32)),
        ignore_index=255,
        reduction=reduction,
    ).numpy()


# ----------------------------------------------------------------------------- cross-entropy


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("weighted", [False, True])
def test_cross_entropy_matches_numpy(rng, reduction, weighted):
    logits, labels = seg_batch(rng)
    weight = rng.uniform(0.1, 3.0, size=K).astype(np.float32) if weighted else None
    got = ce(logits, labels, class_weights=weight, reduction=reduction)
    want = ce_ref(logits, labels, weight, reduction)
    assert got.dtype == jnp.float32 and got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    if reduction == "none":
        assert (np.asarray(got)[labels == 255] == 0).all() and (labels == 255).any()


@pytest.mark.requires_torch
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_numpy_reference_matches_torch(rng, reduction):
    logits, labels = seg_batch(rng)
    weight = rng.uniform(0.1, 3.0, size=K).astype(np.float32)
    for w in (None, weight):
        want = torch_ce(logits, labels, w, reduction)
        np.testing.assert_allclose(ce_ref(logits, labels, w, reduction), want, 1e-5, 1e-6)
    labels[:] = 255
    assert np.isnan(torch_ce(logits, labels)) and np.isnan(ce_ref(logits, labels))  # 0/0


@pytest.mark.requires_torch
def test_cross_entropy_gradient_matches_torch(rng):
    import torch
    import torch.nn.functional as F

    logits, labels = seg_batch(rng)
    weight = rng.uniform(0.1, 3.0, size=K).astype(np.float32)
    got = jax.jit(jax.grad(lambda z: ce(z, labels, class_weights=weight)))(logits)
    z = torch.from_numpy(logits).permute(0, 3, 1, 2).requires_grad_()
    F.cross_entropy(
        z, torch.from_numpy(labels), weight=torch.from_numpy(weight), ignore_index=255
    ).backward()
    np.testing.assert_allclose(got, z.grad.permute(0, 2, 3, 1).numpy(), rtol=1e-5, atol=1e-7)
    assert (np.asarray(got)[labels == 255] == 0).all()


def test_cross_entropy_all_ignored_is_zero_not_nan(rng):
    logits, labels = seg_batch(rng)
    labels[:] = 255
    assert float(ce(logits, labels)) == 0.0
    assert float(ce(logits, labels, reduction="sum")) == 0.0
    assert np.isnan(ce_ref(logits, labels))  # PyTorch's 0/0, which we avoid
    g = jax.jit(jax.grad(lambda z: ce(z, labels)))(logits)
    assert np.isfinite(g).all() and not np.asarray(g).any()


def test_cross_entropy_uniform_logits_is_log_k():
    labels = np.array([[[0, 1], [2, 255]]])
    got = ce(np.zeros((1, 2, 2, 3), np.float32), labels)
    assert math.isclose(float(got), math.log(3), rel_tol=1e-6)
    # Weights change the sum but not the weighted mean of equal per-pixel losses.
    w = np.array([1.0, 2.0, 5.0])
    s = ce(np.zeros((1, 2, 2, 3)), labels, class_weights=w, reduction="sum")
    assert math.isclose(float(s), (1 + 2 + 5) * math.log(3), rel_tol=1e-6)
    m = ce(np.zeros((1, 2, 2, 3)), labels, class_weights=w)
    assert math.isclose(float(m), math.log(3), rel_tol=1e-6)


def test_cross_entropy_out_of_range_labels_count_as_ignored(rng):
    logits, labels = seg_batch(rng)
    bad = labels.copy()
    bad[0, 0, :3] = [-1, K, 17]
    ignored = np.where((bad < 0) | (bad >= K), 255, bad)
    for reduction in ("mean", "sum", "none"):
        np.testing.assert_allclose(
            ce(logits, bad, reduction=reduction),
            ce_ref(logits, ignored, reduction=reduction),
            rtol=1e-5,
            atol=1e-6,
        )


def test_cross_entropy_ignore_label_argument(rng):
    logits, labels = seg_batch(rng)
    moved = np.where(labels == 255, -1, labels)
    want = ce_ref(logits, labels)
    np.testing.assert_allclose(ce(logits, moved, ignore_label=-1), want, 1e-5)
    # With no ignore label, only labels in [0, K) count; 255 is out of range, so skipped too.
    np.testing.assert_allclose(ce(logits, labels, ignore_label=None), want, 1e-5)
    # uint8 masks, as the data pipeline yields them.
    np.testing.assert_allclose(ce(logits, labels.astype(np.uint8)), want, 1e-5)


def test_cross_entropy_bfloat16_is_upcast(rng):
    logits, labels = seg_batch(rng, h=16, w=16, k=21)
    labels = np.where(labels == 255, 255, rng.integers(0, 21, labels.shape))
    low = jnp.asarray(logits, jnp.bfloat16)
    for reduction in ("mean", "sum"):
        got = ce(low, labels, reduction=reduction)
        assert got.dtype == jnp.float32
        # The float32 loss of the bf16-rounded logits, to float32 rounding (bfloat16 arithmetic
        # would miss by ~1e-3 relative, and fails this).
        want = ce_ref(np.array(low.astype(jnp.float32)), labels, reduction=reduction)
        np.testing.assert_allclose(got, want, rtol=2e-6)


def test_cross_entropy_where_drops_examples_and_pixels(rng):
    logits, labels = seg_batch(rng, n=4)
    keep = np.array([True, False, True, False])
    w = rng.uniform(0.5, 2, K).astype(np.float32)
    for reduction in ("mean", "sum"):
        got = ce(logits, labels, class_weights=w, where=keep, reduction=reduction)
        want = ce_ref(logits[keep], labels[keep], w, reduction)
        np.testing.assert_allclose(got, want, rtol=1e-5)
    none = ce(logits, labels, where=keep, reduction="none")
    assert not np.asarray(none)[~keep].any()
    pixels = rng.random(labels.shape) < 0.5
    np.testing.assert_allclose(
        ce(logits, labels, where=pixels),
        ce_ref(logits, np.where(pixels, labels, 255)),
        rtol=1e-5,
    )


@pytest.mark.parametrize(
    "kwargs, logits_shape, labels_shape, match",
    [
        ({"reduction": "avg"}, (1, 2, 2, 3), (1, 2, 2), "`reduction`"),
        ({}, (1, 2, 2, 3), (1, 2, 3), "`labels`"),
        ({}, (1, 2, 2, 3), (1, 2, 2, 1), "`labels`"),
        ({"class_weights": np.ones(4)}, (1, 2, 2, 3), (1, 2, 2), r"`class_weights`.*\(3,\)"),
        ({"where": np.ones(2, bool)}, (1, 2, 2, 3), (1, 2, 2), "`where`"),
    ],
)
def test_cross_entropy_errors(kwargs, logits_shape, labels_shape, match):
    logits, labels = np.zeros(logits_shape, np.float32), np.zeros(labels_shape, np.int32)
    with pytest.raises(ValueError, match=match):
        softmax_cross_entropy(logits, labels, **kwargs)
    with pytest.raises(ValueError, match=match):  # static checks hold under jit too
        ce(logits, labels, **kwargs)


def test_cross_entropy_float_labels_are_refused():
    with pytest.raises(ValueError, match="`labels`.*integer"):
        ce(np.zeros((1, 2, 3)), np.zeros((1, 2)))


# ----------------------------------------------------------------------------- MSE


def test_mean_squared_error_matches_numpy(rng):
    p = rng.normal(size=(4, 5, 6, 3)).astype(np.float32)
    t = rng.normal(size=(4, 5, 6, 3)).astype(np.float32)
    keep = np.array([True, False, True, True])
    sq = (p.astype(np.float64) - t) ** 2
    np.testing.assert_allclose(mse(p, t), sq.mean(), rtol=1e-6)
    np.testing.assert_allclose(mse(p, t, where=keep), sq[keep].mean(), rtol=1e-6)
    np.testing.assert_allclose(mse(p, t, where=keep, reduction="sum"), sq[keep].sum(), rtol=1e-6)
    per_example = mse(p, t, where=keep, reduction="none")
    assert per_example.shape == (4,)
    np.testing.assert_allclose(per_example, np.where(keep, sq.mean((1, 2, 3)), 0), rtol=1e-6)
    assert float(mse(p, t, where=np.zeros(4, bool))) == 0.0
    assert mse(jnp.asarray(p, jnp.bfloat16), t).dtype == jnp.float32


def test_mean_squared_error_errors():
    with pytest.raises(ValueError, match="`targets`"):
        mse(np.zeros((2, 3)), np.zeros((2, 4)))
    with pytest.raises(ValueError, match="`where`"):
        mse(np.zeros((2, 3)), np.zeros((2, 3)), where=np.ones((2, 3), bool))
    with pytest.raises(ValueError, match="`reduction`"):
        mse(np.zeros((2, 3)), np.zeros((2, 3)), reduction="mean_over_batch")


# ----------------------------------------------------------------------------- confusion matrix


def cm_ref(labels, predictions, k, ignore_label=255, where=None):
    """n[i, j] += 1 for every pixel of label i predicted j, by np.add.at over the kept pixels."""
    labels, predictions = np.asarray(labels), np.asarray(predictions)
    keep = (labels >= 0) & (labels < k) & (labels != ignore_label)
    if where is not None:  # bool[N]: whole examples
        keep &= np.asarray(where).reshape(-1, *[1] * (labels.ndim - 1))
    labels, predictions, keep = labels.ravel(), predictions.ravel(), keep.ravel()
    cm = np.zeros((k, k), np.int64)
    np.add.at(cm, (labels[keep], predictions[keep]), 1)
    return cm


def random_cm_batch(rng, n=4, k=K):
    labels = rng.integers(-1, k + 2, size=(n, 6, 7))  # -1, k, k+1: out of range
    labels[rng.random(labels.shape) < 0.2] = 255
    predictions = rng.integers(0, k, size=(n, 6, 7))
    return labels, predictions


def test_confusion_matrix_matches_numpy(rng):
    labels, predictions = random_cm_batch(rng)
    keep = np.array([True, False, True, True])
    got = cmat(labels, predictions, K)
    assert got.dtype == jnp.int32 and got.shape == (K, K)
    np.testing.assert_array_equal(got, cm_ref(labels, predictions, K))
    np.testing.assert_array_equal(
        cmat(labels, predictions, K, where=keep),
        cm_ref(labels, predictions, K, where=keep),
    )
    pixels = rng.random(labels.shape) < 0.5
    np.testing.assert_array_equal(
        cmat(labels, predictions, K, where=pixels),
        cm_ref(np.where(pixels, labels, 255), predictions, K),
    )
    np.testing.assert_array_equal(
        cmat(labels.astype(np.uint8), predictions.astype(np.uint8), K),
        cm_ref(labels.astype(np.uint8), predictions, K),
    )
    # Any label can be the ignore label: 0 drops row 0 (and 255, out of range, still drops).
    np.testing.assert_array_equal(
        cmat(labels, predictions, K, ignore_label=0),
        cm_ref(labels, predictions, K, ignore_label=0),
    )
    assert np.asarray(cmat(labels, predictions, K, ignore_label=0))[0].sum() == 0


def test_confusion_matrix_drops_out_of_range_predictions():
    cm = cmat(np.array([[0, 1, 1]]), np.array([[0, 2, -1]]), 2)
    np.testing.assert_array_equal(cm, [[1, 0], [0, 0]])


def test_confusion_matrix_errors():
    z = np.zeros((1, 2, 2), np.int32)
    with pytest.raises(ValueError, match="`predictions`"):
        cmat(z, np.zeros((1, 2, 3), np.int32), 3)
    with pytest.raises(ValueError, match="`num_classes`"):
        cmat(z, z, 0)
    with pytest.raises(ValueError, match="`where`"):
        cmat(z, z, 3, where=np.ones(2, bool))
    with pytest.raises(ValueError, match="`predictions`.*integer"):
        cmat(z, z.astype(np.float32), 3)


def test_confusion_matrix_on_a_mesh_of_local_devices(rng):
    devices = jax.devices()
    labels, predictions = random_cm_batch(rng, n=2 * len(devices))
    keep = np.arange(len(labels)) % 3 != 1
    mesh = Mesh(np.array(devices), ("data",))
    shard = functools.partial(jax.device_put, device=NamedSharding(mesh, P("data")))
    f = jax.jit(
        functools.partial(confusion_matrix, num_classes=K),
        out_shardings=NamedSharding(mesh, P()),
    )
    got = f(shard(labels), shard(predictions), where=shard(keep))
    np.testing.assert_array_equal(got, cm_ref(labels, predictions, K, where=keep))


SHARDED = textwrap.dedent(
    """
    import os, sys
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"
    os.environ["JAX_PLATFORMS"] = "cpu"
    import jax
    import numpy as np
    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
    from fcnjax.metrics import confusion_matrix

    assert jax.device_count() == 4, jax.devices()
    d = np.load(sys.argv[1])
    sharding = NamedSharding(Mesh(np.array(jax.devices()), ("data",)), P("data"))
    labels, predictions, keep = (jax.device_put(d[k], sharding) for k in ("l", "p", "w"))
    assert len(labels.sharding.device_set) == 4
    assert {s.data.shape[0] for s in labels.addressable_shards} == {2}
    cm = jax.jit(confusion_matrix, static_argnums=2)(labels, predictions, 5, where=keep)
    np.save(sys.argv[2], np.asarray(cm))
    """
)


def test_confusion_matrix_sharded_over_four_devices(rng, tmp_path):
    labels, predictions = random_cm_batch(rng, n=8)
    keep = np.array([True, True, False, True, True, True, True, False])
    np.savez(tmp_path / "batch.npz", l=labels, p=predictions, w=keep)
    (tmp_path / "worker.py").write_text(SHARDED)
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    proc = subprocess.run(
        [sys.executable, str(tmp_path / "worker.py"), tmp_path / "batch.npz", tmp_path / "cm.npy"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    np.testing.assert_array_equal(
        np.load(tmp_path / "cm.npy"), cm_ref(labels, predictions, K, where=keep)
    )


# ----------------------------------------------------------------------------- metrics


def test_metrics_by_hand():
    # Ground truth (rows) x prediction (columns), counted from 10 pixels:
    #   class 0: 4 pixels, 3 right, 1 called class 1;  class 1: 6 pixels, 4 right, 2 called 0.
    labels = np.array([[0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 255]])
    predictions = np.array([[0, 0, 0, 1, 1, 1, 1, 1, 0, 0, 1]])
    cm = cmat(labels, predictions, 2)
    np.testing.assert_array_equal(cm, [[3, 1], [2, 4]])
    m = segmentation_metrics(cm, ["bg", "fg"])
    # t = (4, 6); predicted totals (5, 5); union = (4 + 5 - 3, 6 + 5 - 4) = (6, 7).
    assert m["pixel_accuracy"] == pytest.approx(7 / 10)  # (3 + 4) / 10
    assert m["per_class_accuracy"] == pytest.approx({"bg": 3 / 4, "fg": 4 / 6})
    assert m["mean_accuracy"] == pytest.approx(17 / 24)  # (0.75 + 0.6667) / 2 = 0.7083
    assert m["per_class_iou"] == pytest.approx({"bg": 3 / 6, "fg": 4 / 7})
    assert m["mean_iou"] == pytest.approx(15 / 28)  # (0.5 + 0.5714) / 2 = 0.5357
    assert m["frequency_weighted_iou"] == pytest.approx(38 / 70)  # (4 * 1/2 + 6 * 4/7) / 10
    assert all(type(m[k]) is float for k in m if not k.startswith("per_class"))
    assert segmentation_metrics(cm)["per_class_iou"] == pytest.approx([0.5, 4 / 7])


def test_accumulated_iou_is_not_the_mean_of_batch_ious():
    # Batch A: three class-0 pixels right, one class-1 pixel called 0 -> IoU (3/4, 0), mean 0.375.
    # Batch B: four class-1 pixels right; class 0 absent -> IoU (NaN, 1), mean 1.
    batch_a = (np.array([[0, 0, 0, 1]]), np.array([[0, 0, 0, 0]]))
    batch_b = (np.array([[1, 1, 1, 1]]), np.array([[1, 1, 1, 1]]))
    acc = ConfusionMatrix(2)
    per_batch = []
    for labels, predictions in (batch_a, batch_b):
        cm = cmat(labels, predictions, 2)
        acc.update(cm)
        per_batch.append(segmentation_metrics(cm)["mean_iou"])
    assert per_batch == pytest.approx([0.375, 1.0])
    np.testing.assert_array_equal(acc.matrix, [[3, 0], [1, 4]])
    assert acc.matrix.dtype == np.int64
    # Whole split: class 0 IoU 3 / (3 + 4 - 3) = 3/4, class 1 IoU 4 / (5 + 4 - 4) = 4/5.
    assert acc.compute()["mean_iou"] == pytest.approx(0.775)
    assert np.mean(per_batch) == pytest.approx(0.6875)  # not what the split scores
    acc.reset()
    assert not acc.matrix.any()


def test_absent_classes_follow_score_py():
    # Class 0 in ground truth; class 1 only predicted; class 2 neither.
    cm = np.array([[3, 1, 0], [0, 0, 0], [0, 0, 0]])
    m = segmentation_metrics(cm)
    iou, acc = m["per_class_iou"], m["per_class_accuracy"]
    assert iou[0] == 0.75 and iou[1] == 0.0 and math.isnan(iou[2])
    assert acc[0] == 0.75 and math.isnan(acc[1]) and math.isnan(acc[2])
    assert m["mean_iou"] == pytest.approx((0.75 + 0.0) / 2)  # class 2 left out, class 1 counts
    assert m["mean_accuracy"] == pytest.approx(0.75)  # only classes in the ground truth
    assert m["frequency_weighted_iou"] == pytest.approx(0.75)
    with np.errstate(invalid="ignore"):  # score.py's own formulas
        np.testing.assert_allclose(
            m["mean_iou"], np.nanmean(np.diag(cm) / (cm.sum(1) + cm.sum(0) - np.diag(cm)))
        )
        np.testing.assert_allclose(m["mean_accuracy"], np.nanmean(np.diag(cm) / cm.sum(1)))
    empty = segmentation_metrics(np.zeros((2, 2), np.int64))
    assert all(math.isnan(empty[k]) for k in ("pixel_accuracy", "mean_iou", "mean_accuracy"))


def test_metrics_errors():
    with pytest.raises(ValueError, match="square"):
        segmentation_metrics(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="non-negative"):
        segmentation_metrics(np.array([[1, -1], [0, 1]]))
    with pytest.raises(ValueError, match="`class_names`"):
        segmentation_metrics(np.eye(2), ["a"])
    with pytest.raises(ValueError, match=r"\(3, 3\)"):
        ConfusionMatrix(3).update(np.zeros((2, 2)))
