"""Lovász losses against their definition (a maximum over all orderings), Berman's PyTorch
code, and invariants of pixels that do not count."""

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fcnjax.losses._lovasz import lovasz_grad, lovasz_hinge, lovasz_softmax

K = 3
_STATIC = ("per_image", "classes", "from_logits", "ignore_label", "reduction")
# Eager JAX compiles every primitive for every new shape; one jit per configuration is faster.
softmax = jax.jit(lovasz_softmax, static_argnames=_STATIC)
hinge = jax.jit(lovasz_hinge, static_argnames=("per_image", "ignore_label", "reduction"))


# ---------------------------------------------------------------- the definition, in NumPy


@functools.cache
def _orderings(n):
    """Every ordering of n pixels ``(n!, n)``, and for each its prefix sets ``S_0..S_n``:
    ``(n!, n + 1, n)``, True where pixel j is among the first i."""
    perms = np.array(list(itertools.permutations(range(n))), dtype=np.int64).reshape(-1, n)
    position = np.argsort(perms, axis=1)  # position[o, j]: where pixel j comes in ordering o
    prefix = position[:, None, :] < np.arange(n + 1)[None, :, None]
    return perms, prefix


def lovasz_extension(m, gt):
    """The Lovász extension of the Jaccard loss ``Delta(S) = |S| / |G ∪ S|`` at ``m``, as the
    maximum over all orderings ``pi`` of ``sum_i m[pi_i] (Delta(S_i) - Delta(S_{i-1}))``
    (``Delta`` is submodular); ``Delta({}) = 0``. Float64, up to 7 pixels."""
    m, gt = np.asarray(m, np.float64), np.asarray(gt, bool)
    n = m.size
    assert n <= 7, n
    if n == 0:
        return 0.0
    perms, prefix = _orderings(n)
    size = prefix.sum(-1)
    union = (prefix | gt).sum(-1)
    delta = np.where(union > 0, size / np.maximum(union, 1), 0.0)
    return float(np.max(np.sum(m[perms] * np.diff(delta, axis=1), axis=1)))


def softmax64(z):
    z = np.asarray(z, np.float64)
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def softmax_oracle(logits, labels, counted, *, per_image, classes):
    """Berman's class mean of ``lovasz_extension``, over images or the batch; pixels that do
    not count are dropped."""
    p, k = softmax64(logits), logits.shape[-1]
    units = [(p[i], labels[i], counted[i]) for i in range(len(labels))]
    if not per_image:
        units = [(p, labels, counted)]
    losses = []
    for pu, yu, cu in units:
        pu, yu = pu[cu], yu[cu]
        per_class = []
        for c in range(k) if isinstance(classes, str) else classes:
            fg = yu == c
            if classes == "present" and not fg.any():
                continue
            per_class.append(lovasz_extension(np.abs(fg - pu[:, c]), fg))
        losses.append(np.mean(per_class) if per_class else 0.0)
    return float(np.mean(losses))


def hinge_oracle(logits, labels, counted, *, per_image):
    units = [(logits[i], labels[i], counted[i]) for i in range(len(labels))]
    if not per_image:
        units = [(logits, labels, counted)]
    losses = []
    for zu, yu, cu in units:
        z, fg = np.asarray(zu[cu], np.float64), yu[cu] == 1
        losses.append(lovasz_extension(np.maximum(1 - z * (2.0 * fg - 1), 0), fg))
    return float(np.mean(losses))


def small_batch(rng, *, counted_per_unit, per_image, k=K, n=2, h=2, w=4):
    """Random logits and labels; of each unit (image, or batch) ``counted_per_unit`` pixels
    count, the others are 255, a label out of range, or masked by a per-pixel ``where``."""
    logits = rng.normal(size=(n, h, w, k)).astype(np.float32) * 2
    labels = rng.integers(0, k, size=(n, h, w))
    where = np.ones((n, h, w), bool)
    units = [np.s_[i] for i in range(n)] if per_image else [np.s_[:]]
    for u in units:
        flat_labels, flat_where = labels[u].reshape(-1), where[u].reshape(-1)
        drop = rng.permutation(flat_labels.size)[counted_per_unit:]
        kind = rng.integers(0, 3, size=drop.size)
        flat_labels[drop[kind == 0]] = 255
        flat_labels[drop[kind == 1]] = k + 4  # outside [0, K): skipped like 255
        flat_where[drop[kind == 2]] = False
        labels[u], where[u] = (
            flat_labels.reshape(labels[u].shape),
            flat_where.reshape(where[u].shape),
        )
    counted = (labels < k) & where
    return logits, labels, where, counted


def test_oracle_is_the_jaccard_loss_at_sets():
    """The extension at the indicator of M is Delta(M) = |M| / |G ∪ M| (checks the oracle)."""
    gt = np.array([1, 1, 0, 0, 1], bool)
    m = np.array([1, 0, 1, 1, 0], float)  # M = {0, 2, 3}: |G ∪ M| = 5
    assert lovasz_extension(m, gt) == pytest.approx(3 / 5)
    assert lovasz_extension(0.5 * m, gt) == pytest.approx(0.3)  # positively homogeneous


def test_lovasz_grad_by_hand():
    # gt [1, 0, 1]: |G \ S_i| = 1, 1, 0; |G ∪ S_i| = 2, 3, 3; J = 1/2, 2/3, 1.
    np.testing.assert_allclose(lovasz_grad(jnp.array([1, 0, 1])), [1 / 2, 1 / 6, 1 / 3], 1e-6)
    np.testing.assert_allclose(lovasz_grad(jnp.array([0.0, 0.0])), [1, 0])
    rows = np.array([[1, 0, 1, 1], [0, 0, 1, 0]], bool)
    np.testing.assert_array_equal(lovasz_grad(rows), np.stack([lovasz_grad(r) for r in rows]))
    # The g_i sum to Delta(all pixels) = |P| / |G ∪ P| = 1.
    np.testing.assert_allclose(jnp.sum(lovasz_grad(rows), -1), [1, 1], 1e-6)


@pytest.mark.parametrize("per_image", [False, True])
@pytest.mark.parametrize("classes", ["present", "all", (2, 0)])
def test_softmax_equals_definition(per_image, classes):
    rng = np.random.default_rng(0)
    for trial in range(3):
        logits, labels, where, counted = small_batch(
            rng, counted_per_unit=7 - trial, per_image=per_image
        )
        got = softmax(logits, labels, where=where, per_image=per_image, classes=classes)
        want = softmax_oracle(logits, labels, counted, per_image=per_image, classes=classes)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_softmax_present_skips_absent_classes():
    """With labels of class 0 only, "present" is class 0's loss and "all" averages 3 classes,
    where an absent class's loss is its largest probability (its g = [1, 0, ...])."""
    probs = np.array([[[[0.7, 0.2, 0.1], [0.5, 0.1, 0.4]]]], np.float32)
    labels = np.array([[[0, 0]]])
    # class 0: errors [0.3, 0.5], gt [1, 1]: J = [1/2, 1], loss 0.5/2 + 0.3/2 = 0.4.
    got = softmax(probs, labels, from_logits=False)
    np.testing.assert_allclose(got, 0.4, rtol=1e-6)
    got = softmax(probs, labels, from_logits=False, classes="all")
    np.testing.assert_allclose(got, (0.4 + 0.2 + 0.4) / 3, rtol=1e-6)
    got = softmax(probs, labels, from_logits=False, classes=(2,))
    np.testing.assert_allclose(got, 0.4, rtol=1e-6)


def test_softmax_hard_predictions_give_one_minus_iou():
    """At one-hot probabilities the extension is the Jaccard loss itself: mean of 1 - IoU_c."""
    labels = np.array([[[0, 0, 1, 2], [1, 1, 2, 255]]])
    pred = np.array([[[0, 1, 1, 2], [1, 0, 0, 2]]])
    probs = np.eye(K, dtype=np.float32)[pred]
    # Flat pixels; IoU = |G ∩ P| / |G ∪ P|: class 0 {0,1} vs {0,5,6}: 1/4; class 1 {2,4,5}
    # vs {1,2,4}: 2/4; class 2 {3,6} vs {3} (pixel 7, predicted 2, is ignored): 1/2.
    want = np.mean([1 - 1 / 4, 1 - 2 / 4, 1 - 1 / 2])
    np.testing.assert_allclose(softmax(probs, labels, from_logits=False), want, rtol=1e-6)


@pytest.mark.parametrize("per_image", [False, True])
def test_hinge_equals_definition(per_image):
    rng = np.random.default_rng(1)
    for trial in range(3):
        _, labels, where, counted = small_batch(
            rng, counted_per_unit=7 - 2 * trial, per_image=per_image, k=2
        )
        logits = rng.normal(size=labels.shape).astype(np.float32) * 1.5
        got = hinge(logits[..., None], labels, where=where, per_image=per_image)
        want = hinge_oracle(logits, labels, counted, per_image=per_image)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


# ------------------------------------------------------ Berman's lovasz_losses.py, in torch


def berman():
    """``lovasz_losses.py`` (github.com/bermanmaxim/LovaszSoftmax, pytorch/), its functions
    as written there, less ``Variable`` (gone from PyTorch) and ``is 'present'`` (``==``)."""
    import torch
    import torch.nn.functional as F

    def mean(values, empty=0):
        values = iter(values)
        try:
            n, acc = 1, next(values)
        except StopIteration:
            return empty
        for n, v in enumerate(values, 2):  # noqa: B007
            acc += v
        return acc if n == 1 else acc / n

    def grad(gt_sorted):
        p = len(gt_sorted)
        gts = gt_sorted.sum()
        intersection = gts - gt_sorted.float().cumsum(0)
        union = gts + (1 - gt_sorted).float().cumsum(0)
        jaccard = 1.0 - intersection / union
        if p > 1:
            jaccard[1:p] = jaccard[1:p] - jaccard[0:-1]
        return jaccard

    def hinge_flat(logits, labels):
        if len(labels) == 0:
            return logits.sum() * 0.0
        signs = 2.0 * labels.float() - 1.0
        errors = 1.0 - logits * signs
        errors_sorted, perm = torch.sort(errors, dim=0, descending=True)
        gt_sorted = labels[perm.data]
        return torch.dot(F.relu(errors_sorted), grad(gt_sorted).to(errors_sorted.dtype))

    def flatten_binary_scores(scores, labels, ignore=None):
        scores, labels = scores.view(-1), labels.view(-1)
        valid = labels != ignore
        return scores[valid], labels[valid]

    def hinge(logits, labels, per_image=True, ignore=None):
        if per_image:
            return mean(
                hinge_flat(*flatten_binary_scores(lg.unsqueeze(0), lb.unsqueeze(0), ignore))
                for lg, lb in zip(logits, labels)
            )
        return hinge_flat(*flatten_binary_scores(logits, labels, ignore))

    def softmax_flat(probas, labels, classes="present"):
        if probas.numel() == 0:
            return probas * 0.0
        c_total = probas.size(1)
        losses = []
        class_to_sum = list(range(c_total)) if classes in ["all", "present"] else classes
        for c in class_to_sum:
            fg = (labels == c).float()
            if classes == "present" and fg.sum() == 0:
                continue
            class_pred = probas[:, c]
            errors = (fg - class_pred).abs()
            errors_sorted, perm = torch.sort(errors, 0, descending=True)
            fg_sorted = fg[perm.data]
            losses.append(torch.dot(errors_sorted, grad(fg_sorted).to(errors_sorted.dtype)))
        return mean(losses)

    def flatten_probas(probas, labels, ignore=None):
        b, c, h, w = probas.size()
        probas = probas.permute(0, 2, 3, 1).contiguous().view(-1, c)
        labels = labels.view(-1)
        valid = labels != ignore
        return probas[valid.nonzero().squeeze()], labels[valid]

    def softmax(probas, labels, classes="present", per_image=False, ignore=None):
        if per_image:
            return mean(
                softmax_flat(
                    *flatten_probas(p.unsqueeze(0), lb.unsqueeze(0), ignore), classes=classes
                )
                for p, lb in zip(probas, labels)
            )
        return softmax_flat(*flatten_probas(probas, labels, ignore), classes=classes)

    return softmax, hinge


def batch(rng, n=2, h=5, w=6, k=4):
    logits = (rng.normal(size=(n, h, w, k)) * 2).astype(np.float32)
    labels = rng.integers(0, k, size=(n, h, w))
    labels[rng.random((n, h, w)) < 0.25] = 255
    return logits, labels


@pytest.mark.requires_torch
@pytest.mark.parametrize(
    "per_image,classes",
    [(False, "present"), (True, "present"), (True, "all"), (False, (3, 1))],
)
def test_softmax_matches_berman_torch(per_image, classes):
    import torch

    logits, labels = batch(np.random.default_rng(2))
    labels[0, 0] = 1  # class 0 absent from image 0's first row: "present" differs from "all"
    ref_softmax, _ = berman()
    z = torch.tensor(logits, dtype=torch.float64, requires_grad=True)
    probas = torch.softmax(z, dim=-1).permute(0, 3, 1, 2)
    ref = ref_softmax(
        probas, torch.tensor(labels), classes=classes, per_image=per_image, ignore=255
    )
    ref.backward()
    fn = functools.partial(lovasz_softmax, per_image=per_image, classes=classes)
    got, grad = jax.jit(jax.value_and_grad(fn))(logits, labels)
    np.testing.assert_allclose(got, ref.item(), rtol=1e-5)
    np.testing.assert_allclose(grad, z.grad.numpy(), rtol=1e-5, atol=1e-6)
    assert np.all(grad[labels == 255] == 0)
    assert np.abs(grad).max() > 1e-3


@pytest.mark.requires_torch
def test_softmax_matches_berman_torch_on_probabilities_with_zero_errors():
    """Probabilities in (``from_logits=False``), some exactly one-hot at their label: errors
    0, where ``torch.abs`` has derivative 0 (``jnp.abs`` has 1). Those tie with each other,
    but contribute ``g_i * 0`` whatever their order, so the gradients still compare."""
    import torch

    rng = np.random.default_rng(7)
    _, labels = batch(rng, k=K)
    probs = rng.dirichlet(np.ones(K), size=labels.shape).astype(np.float32)
    hit = (rng.random(labels.shape) < 0.3) & (labels != 255)
    probs[hit] = np.eye(K, dtype=np.float32)[labels[hit]]
    ref_softmax, _ = berman()
    p = torch.tensor(probs, dtype=torch.float64, requires_grad=True)
    ref = ref_softmax(p.permute(0, 3, 1, 2), torch.tensor(labels), ignore=255)
    ref.backward()
    got, grad = softmax_grad(probs, labels, from_logits=False)
    np.testing.assert_allclose(got, ref.item(), rtol=1e-5)
    np.testing.assert_allclose(grad, p.grad.numpy(), rtol=1e-5, atol=1e-6)
    assert np.all(grad[hit] == 0)


@pytest.mark.requires_torch
@pytest.mark.parametrize("per_image", [False, True])
def test_hinge_matches_berman_torch(per_image):
    import torch

    rng = np.random.default_rng(3)
    _, labels = batch(rng, k=2)
    logits = (rng.normal(size=labels.shape + (1,)) * 1.5).astype(np.float32)
    _, ref_hinge = berman()
    z = torch.tensor(logits[..., 0], dtype=torch.float64, requires_grad=True)
    ref = ref_hinge(z, torch.tensor(labels), per_image=per_image, ignore=255)
    ref.backward()
    fn = functools.partial(lovasz_hinge, per_image=per_image)
    got, grad = jax.jit(jax.value_and_grad(fn))(logits, labels)
    np.testing.assert_allclose(got, ref.item(), rtol=1e-5)
    np.testing.assert_allclose(grad[..., 0], z.grad.numpy(), rtol=1e-5, atol=1e-6)
    assert np.abs(grad).max() > 1e-3


# ------------------------------------------------------------------------------ invariants


def test_perfect_prediction_gives_zero():
    labels = np.array([[[0, 2], [1, 255]], [[2, 2], [0, 1]]])
    probs = np.eye(K, dtype=np.float32)[np.where(labels == 255, 0, labels)]
    for per_image in (False, True):
        assert float(softmax(probs, labels, from_logits=False, per_image=per_image)) == 0
    binary = np.array([[[0, 1], [1, 255]]])
    margins = np.where(binary == 1, 1.0, -1.0).astype(np.float32)  # z * s = 1: no hinge
    assert float(hinge(margins, binary)) == 0
    assert float(hinge(-margins, binary)) > 0


def test_jit_equals_eager():
    logits, labels = batch(np.random.default_rng(4), n=1, h=2, w=3, k=3)
    np.testing.assert_allclose(lovasz_softmax(logits, labels), softmax(logits, labels), 1e-6)
    z = logits[..., :1]
    np.testing.assert_allclose(
        lovasz_hinge(z, labels % 2, per_image=True), hinge(z, labels % 2, per_image=True), 1e-6
    )


def _softmax_loss(logits, labels, where=None, **kw):
    return lovasz_softmax(logits, labels, where=where, **kw)


def _hinge_loss(logits, labels, where=None, **kw):
    return lovasz_hinge(logits, labels, where=where, **kw)


softmax_grad = jax.jit(jax.value_and_grad(_softmax_loss), static_argnames=_STATIC)
hinge_grad = jax.jit(jax.value_and_grad(_hinge_loss), static_argnames=("per_image",))


@pytest.mark.parametrize("per_image", [False, True])
def test_uncounted_pixels_change_nothing(per_image):
    """Appending pixels that do not count (any score: large, inf, NaN) leaves the value and
    the counted pixels' gradient as they are, and their own gradient 0. Some counted pixels
    have error 0 exactly (probabilities given), which must still sort before them."""
    rng = np.random.default_rng(5)
    probs = rng.dirichlet(np.ones(K), size=(2, 1, 6)).astype(np.float32)
    labels = rng.integers(0, K, size=(2, 1, 6))
    probs[:, 0, :2] = np.eye(K, dtype=np.float32)[labels[:, 0, :2]]  # errors 0
    extra = np.array([np.nan, np.inf, -np.inf, 0.0, 1.0, 1e30], np.float32)
    padded = np.concatenate([probs, np.broadcast_to(extra[:, None], (2, 1, 6, K))], axis=2)
    padded_labels = np.concatenate([labels, [[[255, 7, 255, 0, 1, 2]]] * 2], axis=2)
    where = np.ones(padded_labels.shape, bool)
    where[..., 9:] = False  # the last three count by label but not by `where`
    kw = dict(per_image=per_image, from_logits=False)
    v, g = softmax_grad(probs, labels, **kw)
    pv, pg = softmax_grad(padded, padded_labels, where, **kw)
    np.testing.assert_allclose(pv, v, rtol=1e-6)
    np.testing.assert_allclose(pg[:, :, :6], g, rtol=1e-6, atol=1e-7)
    assert np.all(pg[:, :, 6:] == 0)

    z = rng.normal(size=(2, 1, 6)).astype(np.float32)
    z[:, 0, 0] = np.where(labels[:, 0, 0] % 2 == 1, 1.0, -1.0)  # hinge error 0 exactly
    padded_z = np.concatenate([z, np.broadcast_to(extra, (2, 1, 6))], axis=2)
    v, g = hinge_grad(z, labels % 2, per_image=per_image)
    padded_binary = np.concatenate([labels % 2, padded_labels[..., 6:]], axis=2)  # 7, 2: out
    pv, pg = hinge_grad(padded_z, padded_binary, where, per_image=per_image)
    np.testing.assert_allclose(pv, v, rtol=1e-6)
    np.testing.assert_allclose(pg[:, :, :6], g, rtol=1e-6, atol=1e-7)
    assert np.all(pg[:, :, 6:] == 0)


@pytest.mark.parametrize("per_image", [False, True])
def test_nothing_counts_gives_zero_and_no_gradient(per_image):
    logits = np.full((2, 2, 3, K), np.nan, np.float32)
    labels = np.full((2, 2, 3), 255)
    for fn, z in ((softmax_grad, logits), (hinge_grad, logits[..., :1])):
        value, grad = fn(z, labels, per_image=per_image)
        assert float(value) == 0 and np.all(np.asarray(grad) == 0)
        value, grad = fn(
            np.zeros_like(z), labels * 0, np.array([False, False]), per_image=per_image
        )
        assert float(value) == 0 and np.all(np.asarray(grad) == 0)


def test_per_image_reductions():
    logits, labels = batch(np.random.default_rng(6), n=4, h=3, w=4, k=K)
    whole = softmax(logits, labels, per_image=True, reduction="sum")
    halves = softmax(logits[:2], labels[:2], per_image=True, reduction="sum") + softmax(
        logits[2:], labels[2:], per_image=True, reduction="sum"
    )
    np.testing.assert_allclose(halves, whole, rtol=1e-6)
    each = softmax(logits, labels, per_image=True, reduction="none")
    assert each.shape == (4,)
    np.testing.assert_allclose(jnp.sum(each), whole, rtol=1e-6)
    single = [float(softmax(logits[i : i + 1], labels[i : i + 1])) for i in range(4)]
    np.testing.assert_allclose(each, single, rtol=1e-6)
    np.testing.assert_allclose(softmax(logits, labels, per_image=True), np.mean(single), 1e-6)

    where = np.array([True, False, True, True])
    each = softmax(logits, labels, per_image=True, reduction="none", where=where)
    np.testing.assert_allclose(each, np.where(where, single, 0), rtol=1e-6)
    mean = softmax(logits, labels, per_image=True, where=where)
    np.testing.assert_allclose(mean, np.mean(np.array(single)[where]), rtol=1e-6)
    # An image that counts but has no counted pixel is a 0 in the mean (Berman's `mean`).
    labels[1] = 255
    mean = softmax(logits, labels, per_image=True)
    np.testing.assert_allclose(mean, (single[0] + single[2] + single[3]) / 4, rtol=1e-6)

    z, y = logits[..., :1], np.where(labels == 255, 255, labels % 2)
    whole = hinge(z, y, per_image=True, reduction="sum")
    halves = hinge(z[:2], y[:2], per_image=True, reduction="sum") + hinge(
        z[2:], y[2:], per_image=True, reduction="sum"
    )
    np.testing.assert_allclose(halves, whole, rtol=1e-6)
    np.testing.assert_allclose(hinge(z[..., 0], y, per_image=True), whole / 4, rtol=1e-6)


def test_bad_inputs_raise():
    logits, labels = np.zeros((1, 2, 2, K), np.float32), np.zeros((1, 2, 2), np.int32)
    with pytest.raises(ValueError, match="`labels`"):
        lovasz_softmax(logits, labels[:, :1])
    with pytest.raises(ValueError, match="`labels`.*integer"):
        lovasz_softmax(logits, labels.astype(np.float32))
    with pytest.raises(ValueError, match="lovasz_hinge"):
        lovasz_softmax(logits[..., :1], labels)
    for bad in ("some", (), (K,), (-1,), ("a",), (0.5,)):
        with pytest.raises(ValueError, match="`classes`"):
            lovasz_softmax(logits, labels, classes=bad)
    with pytest.raises(ValueError, match="`reduction` must be 'mean'"):
        lovasz_softmax(logits, labels, reduction="sum")
    with pytest.raises(ValueError, match="`reduction`"):
        lovasz_softmax(logits, labels, per_image=True, reduction="max")
    with pytest.raises(ValueError, match="`where`"):
        lovasz_softmax(logits, labels, where=np.ones(3, bool))
    with pytest.raises(ValueError, match="`labels`.*lovasz_softmax"):
        lovasz_hinge(logits, labels)  # K = 3 scores
    with pytest.raises(ValueError, match="`labels`"):
        lovasz_hinge(logits[..., 0], labels[0])
    with pytest.raises(ValueError, match="`labels`.*integer"):
        lovasz_hinge(logits[..., 0], labels.astype(bool).astype(np.float16))
    with pytest.raises(ValueError, match="`reduction` must be 'mean'"):
        lovasz_hinge(logits[..., 0], labels, reduction="none")
