"""Region losses (Dice, Jaccard, Tversky), focal losses and the sigmoid cross-entropy.

Values and gradients (w.r.t. the logits, to 1e-5) against independent oracles: MONAI's losses,
Keras 3's on its JAX backend, optax's, and segmentation_models_pytorch's arithmetic written out
in PyTorch (smp itself does not install here); then invariants and bad inputs. Each oracle
test says which convention fcnjax follows and how the oracle's number converts to it.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fcnjax.losses import (
    dice_from_sums,
    dice_loss,
    jaccard_from_sums,
    jaccard_loss,
    region_sums,
    sigmoid_binary_cross_entropy,
    sigmoid_focal_loss,
    softmax_cross_entropy,
    softmax_focal_loss,
    tversky_from_sums,
    tversky_loss,
)

# Compiling dominates these tiny losses (each kwargs set is a new program): XLA without most
# optimisations.
pytestmark = pytest.mark.usefixtures("cheap_compiles")

K = 4
REGION = {"dice": dice_loss, "jaccard": jaccard_loss, "tversky": tversky_loss}


def seg_batch(rng, k=K, *, n=2, h=5, w=6, absent=None, ignore_frac=0.2, scale=2.0):
    """Logits ``f32[n, h, w, k]`` and labels with ~20% ignored (255); ``k == 1`` is binary.

    Every class but ``absent`` occurs at least once among the counted pixels.
    """
    logits = (rng.normal(size=(n, h, w, k)) * scale).astype(np.float32)
    classes = [c for c in range(max(k, 2)) if c != absent]
    labels = rng.choice(classes, size=(n, h, w))
    labels[rng.random((n, h, w)) < ignore_frac] = 255
    assert set(np.unique(labels[labels != 255])) == set(classes)
    return logits, labels


def value_and_grad(fn, logits, labels, **kwargs):
    """fcnjax's loss and its gradient w.r.t. the logits, jitted."""
    f = jax.jit(jax.value_and_grad(lambda z, y: fn(z, y, **kwargs)))
    v, g = f(jnp.asarray(logits), jnp.asarray(labels))
    return float(v), np.asarray(g)


def jax_oracle(fn, logits):
    """An oracle written with JAX ops (Keras on its JAX backend, optax): value and gradient."""
    v, g = jax.jit(jax.value_and_grad(fn))(jnp.asarray(logits))
    return float(v), np.asarray(g)


def torch_oracle(fn, logits):
    """A PyTorch oracle ``fn(z)`` of the ``NHWK`` logits: value and autograd gradient."""
    import torch

    z = torch.tensor(logits, requires_grad=True)
    loss = fn(z)
    loss.backward()
    return loss.item(), z.grad.numpy()


def assert_close(got, want, scale=1.0):
    """Values to 1e-5 relative; gradients to 1e-5 relative to their largest entry."""
    (v, g), (wv, wg) = got, want
    wv, wg = wv * scale, np.asarray(wg) * scale
    np.testing.assert_allclose(v, wv, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(g, wg, rtol=1e-5, atol=1e-5 * np.abs(wg).max() + 1e-10)


def nchw(z):
    return z.permute(0, 3, 1, 2)


def torch_labels(labels):
    import torch

    return torch.from_numpy(np.asarray(labels, np.int64)[:, None])  # (N, 1, H, W)


# segmentation_models_pytorch ------------------------------------------------------------------


def smp_loss(
    kind,
    z,
    labels,
    *,
    smooth=0.0,
    eps=1e-7,
    log_loss=False,
    classes=None,
    alpha=0.5,
    beta=0.5,
    gamma=1.0,
):
    """smp's DiceLoss / JaccardLoss / TverskyLoss (``mode="multiclass"`` for K > 1,
    ``"binary"`` for K == 1; ``from_logits=True``, ``ignore_index=255``), their forward
    written out line by line from smp 0.3's ``losses/dice.py``, ``jaccard.py``,
    ``tversky.py`` and ``_functional.py``."""
    import torch
    import torch.nn.functional as F

    y_pred, y_true = nchw(z), torch.from_numpy(np.asarray(labels, np.int64))
    bs, num_classes = y_pred.shape[:2]
    dims = (0, 2)
    if num_classes == 1:  # BINARY_MODE
        y_pred = F.logsigmoid(y_pred).exp()
        y_true, y_pred = y_true.view(bs, 1, -1), y_pred.view(bs, 1, -1)
        mask = y_true != 255
        y_pred, y_true = y_pred * mask, y_true * mask
    else:  # MULTICLASS_MODE
        y_pred = y_pred.log_softmax(dim=1).exp()
        y_true, y_pred = y_true.view(bs, -1), y_pred.view(bs, num_classes, -1)
        mask = y_true != 255
        y_pred = y_pred * mask.unsqueeze(1)
        y_true = F.one_hot((y_true * mask).to(torch.long), num_classes)
        y_true = y_true.permute(0, 2, 1) * mask.unsqueeze(1)
    y_true = y_true.type_as(y_pred)
    intersection = torch.sum(y_pred * y_true, dim=dims)
    cardinality = torch.sum(y_pred + y_true, dim=dims)
    if kind == "dice":  # soft_dice_score
        scores = (2.0 * intersection + smooth) / (cardinality + smooth).clamp_min(eps)
    elif kind == "jaccard":  # soft_jaccard_score
        union = cardinality - intersection
        scores = (intersection + smooth) / (union + smooth).clamp_min(eps)
    else:  # soft_tversky_score
        fp = torch.sum(y_pred * (1.0 - y_true), dim=dims)
        fn = torch.sum((1 - y_pred) * y_true, dim=dims)
        denom = intersection + alpha * fp + beta * fn + smooth
        scores = (intersection + smooth) / denom.clamp_min(eps)
    loss = -torch.log(scores.clamp_min(eps)) if log_loss else 1.0 - scores
    loss = loss * (y_true.sum(dims) > 0).to(loss.dtype)  # absent classes count 0
    if classes is not None:
        loss = loss[classes]
    return loss.mean() ** gamma if kind == "tversky" else loss.mean()  # aggregate_loss


@pytest.mark.requires_torch
@pytest.mark.parametrize("kind", ["dice", "jaccard", "tversky"])
@pytest.mark.parametrize("k", [K, 1])
@pytest.mark.parametrize("smooth", [0.0, 1.0])
def test_region_losses_match_smp(rng, kind, k, smooth):
    # All classes present: fcnjax's "present" mean is smp's mean over all C.
    logits, labels = seg_batch(rng, k)
    kw = dict(alpha=0.3, beta=0.7, gamma=1.5) if kind == "tversky" else {}
    want = torch_oracle(lambda z: smp_loss(kind, z, labels, smooth=smooth, **kw), logits)
    assert_close(value_and_grad(REGION[kind], logits, labels, smooth=smooth, **kw), want)


@pytest.mark.requires_torch
@pytest.mark.parametrize("kind", ["dice", "jaccard", "tversky"])
@pytest.mark.parametrize("log_loss", [False, True])
def test_region_losses_match_smp_with_an_absent_class(rng, kind, log_loss):
    # smp zeroes absent classes and averages over all C: smp = fcnjax's "present" x n/C.
    logits, labels = seg_batch(rng, K, absent=2)
    kw = dict(alpha=0.7, beta=0.3) if kind == "tversky" else {}
    want = torch_oracle(lambda z: smp_loss(kind, z, labels, log_loss=log_loss, **kw), logits)
    got = value_and_grad(REGION[kind], logits, labels, log_loss=log_loss, **kw)
    assert_close(got, want, scale=K / (K - 1))


@pytest.mark.requires_torch
def test_region_losses_match_smp_classes_and_binary_without_foreground(rng):
    logits, labels = seg_batch(rng, K)
    want = torch_oracle(lambda z: smp_loss("dice", z, labels, classes=[1, 3]), logits)
    assert_close(value_and_grad(dice_loss, logits, labels, classes=(1, 3)), want)
    # Binary, no foreground in the batch: the one class is absent, the loss 0 in both.
    logits, labels = seg_batch(rng, 1, absent=1)
    want = torch_oracle(lambda z: smp_loss("dice", z, labels), logits)
    assert want[0] == 0
    assert_close(value_and_grad(dice_loss, logits, labels), want)


# MONAI ----------------------------------------------------------------------------------------


@pytest.mark.requires_torch
@pytest.mark.parametrize("smooth", [0.0, 0.5])
@pytest.mark.parametrize("absent", [None, 1])
def test_dice_matches_monai(rng, smooth, absent):
    # MONAI's DiceLoss(batch=True) averages over every class, absent ones too: classes="all".
    # Its ignore_index masks the softmax probabilities and the one-hot target (exact).
    losses = pytest.importorskip("monai.losses")
    logits, labels = seg_batch(rng, K, absent=absent)
    monai = losses.DiceLoss(
        to_onehot_y=True,
        softmax=True,
        batch=True,
        smooth_nr=smooth,
        smooth_dr=smooth,
        ignore_index=255,
    )
    want = torch_oracle(lambda z: monai(nchw(z), torch_labels(labels)), logits)
    assert_close(value_and_grad(dice_loss, logits, labels, smooth=smooth, classes="all"), want)


@pytest.mark.requires_torch
def test_dice_class_weights_and_jaccard_match_monai(rng):
    losses = pytest.importorskip("monai.losses")
    logits, labels = seg_batch(rng, K)
    w = np.array([0.5, 1.0, 2.0, 0.25], np.float32)
    # MONAI averages w_c l_c over the C classes; fcnjax divides by sum w: x C / sum w.
    monai = losses.DiceLoss(to_onehot_y=True, softmax=True, batch=True, weight=w, ignore_index=255)
    want = torch_oracle(lambda z: monai(nchw(z), torch_labels(labels)), logits)
    got = value_and_grad(dice_loss, logits, labels, smooth=1e-5, classes="all", class_weights=w)
    assert_close(got, want, scale=K / w.sum())
    # MONAI's jaccard=True is (2I + s) / (2(P + G - I) + s): fcnjax's Jaccard with s / 2.
    monai = losses.DiceLoss(
        to_onehot_y=True,
        softmax=True,
        batch=True,
        jaccard=True,
        smooth_nr=1.0,
        smooth_dr=1.0,
        ignore_index=255,
    )
    want = torch_oracle(lambda z: monai(nchw(z), torch_labels(labels)), logits)
    assert_close(value_and_grad(jaccard_loss, logits, labels, smooth=0.5, classes="all"), want)


@pytest.mark.requires_torch
@pytest.mark.parametrize("smooth", [0.0, 1.0])
def test_binary_dice_matches_monai_masked_and_generalized_dice(rng, smooth):
    # Binary (one sigmoid channel); MONAI's MaskedLoss multiplies probabilities and target by
    # the mask, which is exact for ratios of sums. GeneralizedDiceLoss is the same maths only
    # with one channel: its class weight multiplies numerator and denominator and cancels
    # (exactly with smooth = 0; w_type="uniform" with smoothing). With K > 1 it is one ratio
    # of class-weighted sums, not a mean of per-class Dice, so no multiclass comparison.
    import torch

    losses = pytest.importorskip("monai.losses")
    logits, labels = seg_batch(rng, 1)
    mask = torch_labels(labels != 255).float()
    target = torch_labels(np.where(labels == 255, 0, labels)).float()
    got = value_and_grad(dice_loss, logits, labels, smooth=smooth)
    masked = losses.MaskedDiceLoss(sigmoid=True, batch=True, smooth_nr=smooth, smooth_dr=smooth)
    assert_close(got, torch_oracle(lambda z: masked(nchw(z), target, mask=mask), logits))
    w_type = "square" if smooth == 0 else "uniform"
    gdl = losses.GeneralizedDiceLoss(batch=True, smooth_nr=smooth, smooth_dr=smooth, w_type=w_type)
    monai = losses.MaskedLoss(gdl)
    want = torch_oracle(lambda z: monai(torch.sigmoid(nchw(z)), target, mask=mask), logits)
    assert_close(got, want)


@pytest.mark.requires_torch
@pytest.mark.parametrize(("alpha", "beta", "smooth"), [(0.3, 0.7, 0.0), (0.8, 0.2, 1.0)])
def test_tversky_matches_monai(rng, alpha, beta, smooth):
    # MONAI's TverskyLoss(batch=True): alpha on the false positives, mean over all classes.
    losses = pytest.importorskip("monai.losses")
    logits, labels = seg_batch(rng, K, absent=3)
    monai = losses.TverskyLoss(
        to_onehot_y=True,
        softmax=True,
        alpha=alpha,
        beta=beta,
        batch=True,
        smooth_nr=smooth,
        smooth_dr=smooth,
        ignore_index=255,
    )
    want = torch_oracle(lambda z: monai(nchw(z), torch_labels(labels)), logits)
    got = value_and_grad(
        tversky_loss, logits, labels, alpha=alpha, beta=beta, smooth=smooth, classes="all"
    )
    assert_close(got, want)


@pytest.mark.requires_torch
def test_dice_plus_cross_entropy_matches_monai_dice_ce(rng):
    # DiceCELoss has no ignore_index (its CE would read 255 as a class): no ignored pixels.
    losses = pytest.importorskip("monai.losses")
    logits, labels = seg_batch(rng, K, ignore_frac=0.0)
    monai = losses.DiceCELoss(
        to_onehot_y=True,
        softmax=True,
        batch=True,
        smooth_nr=1e-3,
        smooth_dr=1e-3,
        lambda_dice=0.7,
        lambda_ce=0.3,
    )
    want = torch_oracle(lambda z: monai(nchw(z), torch_labels(labels)), logits)

    def dice_ce(z, y):
        return 0.7 * dice_loss(z, y, smooth=1e-3, classes="all") + 0.3 * softmax_cross_entropy(z, y)

    assert_close(value_and_grad(dice_ce, logits, labels), want)


@pytest.mark.requires_torch
@pytest.mark.parametrize("gamma", [2.0, 0.5])
def test_softmax_focal_matches_monai(rng, gamma):
    # With ignore_index, MONAI's FocalLoss "mean" divides by the number of counted pixels,
    # as fcnjax does; its per-class `weight` is fcnjax's alpha[y].
    losses = pytest.importorskip("monai.losses")
    logits, labels = seg_batch(rng, K)
    alpha = np.array([0.25, 1.0, 2.0, 0.5], np.float32)
    monai = losses.FocalLoss(
        to_onehot_y=True, use_softmax=True, gamma=gamma, weight=alpha, ignore_index=255
    )
    want = torch_oracle(lambda z: monai(nchw(z), torch_labels(labels)), logits)
    assert_close(value_and_grad(softmax_focal_loss, logits, labels, gamma=gamma, alpha=alpha), want)
    # Without ignore_index (and no ignored pixels) MONAI averages over N*K*H*W: fcnjax = x K.
    logits, labels = seg_batch(rng, K, ignore_frac=0.0)
    monai = losses.FocalLoss(to_onehot_y=True, use_softmax=True, gamma=gamma)
    want = torch_oracle(lambda z: monai(nchw(z), torch_labels(labels)), logits)
    assert_close(value_and_grad(softmax_focal_loss, logits, labels, gamma=gamma), want, scale=K)


@pytest.mark.requires_torch
@pytest.mark.parametrize("alpha", [None, 0.25])
def test_sigmoid_focal_matches_monai(rng, alpha):
    # One sigmoid channel; MONAI's alpha is Lin et al.'s (foreground alpha, background 1 - alpha).
    losses = pytest.importorskip("monai.losses")
    logits, labels = seg_batch(rng, 1)
    monai = losses.FocalLoss(use_softmax=False, gamma=2.0, alpha=alpha, ignore_index=255)
    want = torch_oracle(lambda z: monai(nchw(z), torch_labels(labels)), logits)
    assert_close(value_and_grad(sigmoid_focal_loss, logits, labels, alpha=alpha), want)


# PyTorch --------------------------------------------------------------------------------------


@pytest.mark.requires_torch
def test_sigmoid_bce_matches_torch(rng):
    import torch
    import torch.nn.functional as F

    logits, labels = seg_batch(rng, 1, scale=4.0)
    keep = torch.from_numpy(labels != 255)
    y = torch.from_numpy(np.where(labels == 255, 0, labels)).float()

    def bce(z):  # the mean over the counted pixels
        return F.binary_cross_entropy_with_logits(z[..., 0][keep], y[keep])

    assert_close(
        value_and_grad(sigmoid_binary_cross_entropy, logits, labels), torch_oracle(bce, logits)
    )
    w = np.array([0.4, 1.5], np.float32)

    def weighted(z):  # two logits [0, z]: the weighted mean of torch's cross-entropy
        two = torch.cat([torch.zeros_like(z), z], dim=-1)
        return F.cross_entropy(
            nchw(two), torch.from_numpy(labels), weight=torch.from_numpy(w), ignore_index=255
        )

    got = value_and_grad(sigmoid_binary_cross_entropy, logits, labels, class_weights=w)
    assert_close(got, torch_oracle(weighted, logits))


# Keras 3 (JAX backend) ------------------------------------------------------------------------


def masked_onehot_and_probs(z, labels):
    """Keras' region losses take one-hot targets and probabilities; ignored pixels zeroed."""
    counted = (labels != 255)[..., None]
    safe = np.where(labels == 255, 0, labels)
    if z.shape[-1] == 1:
        return (safe[..., None] * counted).astype(np.float32), jax.nn.sigmoid(z) * counted
    return jax.nn.one_hot(safe, z.shape[-1]) * counted, jax.nn.softmax(z) * counted


@pytest.mark.parametrize("k", [K, 1])
def test_dice_and_tversky_match_keras(rng, k):
    # Keras adds 1e-7 to the denominator (fcnjax: max(., eps), equal here to ~1e-9); with
    # axis=(0, 1, 2) it gives one loss per class and averages them: classes="all".
    # Keras' Tversky multiplies alpha with sum(y_true * (1 - y_pred)), the false negatives:
    # keras Tversky(alpha=a, beta=b) is fcnjax's tversky_loss(alpha=b, beta=a).
    import keras

    logits, labels = seg_batch(rng, k, absent=None)
    keras_dice = keras.losses.Dice(axis=(0, 1, 2))
    want = jax_oracle(lambda z: keras_dice(*masked_onehot_and_probs(z, labels)), logits)
    assert_close(value_and_grad(dice_loss, logits, labels, classes="all"), want)
    keras_tversky = keras.losses.Tversky(alpha=0.2, beta=0.8, axis=(0, 1, 2))
    want = jax_oracle(lambda z: keras_tversky(*masked_onehot_and_probs(z, labels)), logits)
    got = value_and_grad(tversky_loss, logits, labels, alpha=0.8, beta=0.2, classes="all")
    assert_close(got, want)


def test_focal_losses_match_keras(rng):
    # Keras' "mean_with_sample_weight" with the counted mask as sample_weight divides by the
    # number of counted pixels, as fcnjax does. Keras clips probabilities to [1e-7, 1 - 1e-7],
    # which these logits (|z| < 8) never reach. Its alpha (a list: per class) is alpha[y].
    import keras

    logits, labels = seg_batch(rng, K)
    counted = (labels != 255).astype(np.float32)
    onehot = jax.nn.one_hot(np.where(labels == 255, 0, labels), K)
    alpha = [0.25, 1.0, 2.0, 0.5]
    cfce = keras.losses.CategoricalFocalCrossentropy(
        alpha=alpha, gamma=2.0, from_logits=True, reduction="mean_with_sample_weight"
    )
    want = jax_oracle(lambda z: cfce(onehot, z, sample_weight=counted), logits)
    got = value_and_grad(softmax_focal_loss, logits, labels, alpha=np.array(alpha))
    assert_close(got, want)

    logits, labels = seg_batch(rng, 1)
    counted = (labels != 255).astype(np.float32)
    target = np.where(labels == 255, 0, labels)[..., None].astype(np.float32)
    bfce = keras.losses.BinaryFocalCrossentropy(
        apply_class_balancing=True,
        alpha=0.25,
        gamma=2.0,
        from_logits=True,
        reduction="mean_with_sample_weight",
    )
    want = jax_oracle(lambda z: bfce(target, z, sample_weight=counted), logits)
    assert_close(value_and_grad(sigmoid_focal_loss, logits, labels, alpha=0.25), want)


# optax ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("k", [K, 1])
def test_region_losses_match_optax_dice_loss(rng, k):
    # optax 0.2.8's losses.dice_loss is smp's Tversky score (alpha on false positives) with
    # no eps; given only the counted pixels as one [M, K] "image" and axis=0, it is one ratio
    # per class over the batch; reduction="none" and a mean over classes is classes="all".
    # Its smooth enters as in Tversky's score, (I + s) / ((P + G) / 2 + s): fcnjax's Dice with
    # smooth 2 s. Its class_weights multiply before a plain mean: optax = fcnjax x sum(w) / C.
    import optax

    logits, labels = seg_batch(rng, k)
    keep = labels != 255
    target = jax.nn.one_hot(labels[keep], k) if k > 1 else labels[keep][:, None].astype(np.float32)

    def optax_dice(z, **kw):
        per_class = optax.losses.dice_loss(z[keep], target, axis=0, reduction="none", **kw)
        return jnp.mean(per_class)

    want = jax_oracle(functools.partial(optax_dice, smooth=1.0), logits)
    assert_close(value_and_grad(dice_loss, logits, labels, smooth=2.0, classes="all"), want)
    want = jax_oracle(functools.partial(optax_dice, smooth=0.0, alpha=0.3, beta=0.7), logits)
    got = value_and_grad(tversky_loss, logits, labels, alpha=0.3, beta=0.7, classes="all")
    assert_close(got, want)
    w = np.linspace(0.5, 2.0, k).astype(np.float32)
    want = jax_oracle(functools.partial(optax_dice, smooth=0.0, class_weights=w), logits)
    got = value_and_grad(dice_loss, logits, labels, classes="all", class_weights=w)
    assert_close(got, want, scale=k / w.sum())


def test_sigmoid_focal_matches_optax(rng):
    import optax

    logits, labels = seg_batch(rng, 1)
    keep = labels != 255

    def want_fn(z):
        return jnp.mean(
            optax.sigmoid_focal_loss(z[..., 0][keep], labels[keep], alpha=0.3, gamma=1.5)
        )

    got = value_and_grad(sigmoid_focal_loss, logits, labels, alpha=0.3, gamma=1.5)
    assert_close(got, jax_oracle(want_fn, logits))


# Invariants -----------------------------------------------------------------------------------


@pytest.mark.parametrize("k", [K, 1])
def test_a_perfect_prediction_has_zero_region_loss(rng, k):
    _, labels = seg_batch(rng, k)
    safe = np.where(labels == 255, 0, labels)
    if k == 1:
        logits = (40.0 * (2 * safe - 1))[..., None].astype(np.float32)
    else:
        logits = 40.0 * np.eye(k, dtype=np.float32)[safe]
    for fn in REGION.values():
        assert abs(float(jax.jit(fn)(logits, labels))) < 1e-6
        assert 0 < float(jax.jit(fn)(-logits, labels))


def test_tversky_at_one_half_is_dice(rng):
    logits, labels = seg_batch(rng, K, absent=0)
    tversky = value_and_grad(tversky_loss, logits, labels)
    assert_close(tversky, value_and_grad(dice_loss, logits, labels))
    # With smoothing s, Tversky's score (I + s) / ((P + G) / 2 + s) is Dice's with 2 s.
    tversky = value_and_grad(tversky_loss, logits, labels, smooth=0.5)
    assert_close(tversky, value_and_grad(dice_loss, logits, labels, smooth=1.0))


def test_focal_gamma_zero_is_cross_entropy(rng):
    logits, labels = seg_batch(rng, K)
    for reduction in ("mean", "sum", "none"):
        focal = jax.jit(functools.partial(softmax_focal_loss, gamma=0, reduction=reduction))
        ce = jax.jit(functools.partial(softmax_cross_entropy, reduction=reduction))
        np.testing.assert_array_equal(focal(logits, labels), ce(logits, labels))
    assert_close(
        value_and_grad(softmax_focal_loss, logits, labels, gamma=0.0),
        value_and_grad(softmax_cross_entropy, logits, labels),
    )
    # The focal factor of a certain pixel is 0 with a zero (not NaN) gradient, any gamma.
    sure = np.zeros((1, 1, 2, K), np.float32)
    sure[..., 1] = 200.0
    for gamma in (0.0, 0.5, 1.0, 2.0):
        v, g = value_and_grad(softmax_focal_loss, sure, np.array([[[1, 1]]]), gamma=gamma)
        assert v == 0 and np.all(g == 0)


def test_binary_mode_is_two_class_softmax_with_zero_background_logit(rng):
    # sigmoid(x) = softmax([0, x])[1]: binary Dice (C = 1, the foreground) is the two-class
    # Dice of class 1 alone; sigmoid BCE is the two-class cross-entropy, with class weights.
    logits, labels = seg_batch(rng, 1)
    two = np.concatenate([np.zeros_like(logits), logits], axis=-1)
    for fn in REGION.values():
        binary = value_and_grad(fn, logits, labels)
        multi = value_and_grad(fn, two, labels, classes=(1,))
        assert_close(binary, (multi[0], multi[1][..., 1:]))  # d/d(background logit) = constant
    w = np.array([0.3, 2.0], np.float32)
    bce = value_and_grad(sigmoid_binary_cross_entropy, logits, labels, class_weights=w)
    ce = value_and_grad(softmax_cross_entropy, two, labels, class_weights=w)
    assert_close(bce, (ce[0], ce[1][..., 1:]))
    # Logits f[N, H, W] (no channel axis) are accepted too.
    np.testing.assert_allclose(
        float(jax.jit(sigmoid_focal_loss)(logits[..., 0], labels)),
        float(jax.jit(sigmoid_focal_loss)(logits, labels)),
        rtol=1e-6,
    )


def test_jit_gives_the_eager_values(rng):
    # One eager call (each primitive compiled on its own: ~1 s); the doctests run eagerly too.
    logits, labels = seg_batch(rng, K, absent=1)
    np.testing.assert_allclose(
        dice_loss(logits, labels, smooth=0.1),
        jax.jit(dice_loss)(logits, labels, smooth=0.1),
        rtol=1e-6,
    )


def _poison(logits, skipped):
    bad = logits.copy()
    values = np.array([np.nan, np.inf, -np.inf], np.float32)
    bad[skipped] = values[np.arange(bad[skipped].size) % 3].reshape(bad[skipped].shape)
    return bad


CASES = [
    (dice_loss, K, {}),
    (jaccard_loss, K, {"smooth": 1.0, "log_loss": True}),
    (tversky_loss, K, {"alpha": 0.3, "beta": 0.7, "gamma": 0.75}),
    (dice_loss, 1, {}),
    (tversky_loss, 1, {"gamma": 2.0}),
    (softmax_focal_loss, K, {"alpha": np.arange(1.0, K + 1)}),
    (softmax_focal_loss, K, {"gamma": 0.0}),
    (sigmoid_focal_loss, 1, {"alpha": 0.25}),
    (sigmoid_binary_cross_entropy, 1, {"class_weights": np.array([1.0, 3.0])}),
]


@pytest.mark.parametrize(("fn", "k", "kwargs"), CASES)
def test_skipped_pixels_with_nan_or_inf_logits_change_nothing(rng, fn, k, kwargs):
    # Skipped: label 255, a label out of range (K, or 2 in binary mode), where=False.
    logits, labels = seg_batch(rng, k)
    labels[0, 0, :2] = max(k, 2)
    where = np.ones(labels.shape, bool)
    where[1, -1] = False
    skipped = (labels == 255) | (labels >= max(k, 2)) | ~where
    clean = value_and_grad(fn, logits, labels, where=where, **kwargs)
    poisoned = value_and_grad(fn, _poison(logits, skipped), labels, where=where, **kwargs)
    assert np.isfinite(poisoned[0]) and np.all(np.isfinite(poisoned[1]))
    assert poisoned[0] == clean[0]
    np.testing.assert_array_equal(poisoned[1], clean[1])
    assert np.all(clean[1][skipped] == 0)


@pytest.mark.parametrize("k", [K, 1])
def test_region_sums_add_up_over_parts_of_the_batch(rng, k):
    # What a data-parallel step relies on: psum of the parts' sums is the whole batch's.
    logits, labels = seg_batch(rng, k, n=4)
    sums = jax.jit(region_sums)
    whole = sums(logits, labels)
    halves = [sums(logits[s], labels[s]) for s in (slice(0, 1), slice(1, 4))]
    for key in whole:
        np.testing.assert_allclose(halves[0][key] + halves[1][key], whole[key], rtol=1e-6)
    for from_sums in (dice_from_sums, jaccard_from_sums, tversky_from_sums):
        added = {key: halves[0][key] + halves[1][key] for key in whole}
        np.testing.assert_allclose(from_sums(added), from_sums(whole), rtol=1e-6)
    # where=False examples are those dropped from the batch.
    where = np.array([True, False, True, True])
    dropped = sums(logits[where], labels[where])
    for key, value in sums(logits, labels, where=where).items():
        np.testing.assert_allclose(value, dropped[key], rtol=1e-6)


def test_focal_reductions(rng):
    logits, labels = seg_batch(rng, K)
    per_pixel = jax.jit(functools.partial(softmax_focal_loss, reduction="none"))(logits, labels)
    assert per_pixel.shape == labels.shape and np.all(per_pixel[labels == 255] == 0)
    total = jax.jit(functools.partial(softmax_focal_loss, reduction="sum"))(logits, labels)
    mean = jax.jit(softmax_focal_loss)(logits, labels)
    np.testing.assert_allclose(total, per_pixel.sum(), rtol=1e-6)
    np.testing.assert_allclose(mean, total / np.sum(labels != 255), rtol=1e-6)
    nothing = np.full_like(labels, 255)
    for fn in (softmax_focal_loss, dice_loss):
        assert float(jax.jit(fn)(logits, nothing)) == 0.0


def test_class_means_by_hand():
    sums = {
        "intersection": jnp.array([3.0, 0.0, 1.0]),
        "prediction": jnp.array([5.0, 1.0, 1.0]),
        "target": jnp.array([4.0, 0.0, 1.0]),
    }  # Dice losses 1/3, 1, 0; class 1 absent
    np.testing.assert_allclose(dice_from_sums(sums), (1 / 3 + 0) / 2, rtol=1e-6)
    np.testing.assert_allclose(dice_from_sums(sums, classes="all"), (1 / 3 + 1) / 3, rtol=1e-6)
    np.testing.assert_allclose(dice_from_sums(sums, classes=(0, 1)), (1 / 3 + 1) / 2, rtol=1e-6)
    w = jnp.array([2.0, 5.0, 1.0])
    np.testing.assert_allclose(dice_from_sums(sums, class_weights=w), (2 / 3) / 3, rtol=1e-6)
    zero = jnp.array([0.0, 5.0, 0.0])
    assert float(dice_from_sums(sums, class_weights=zero)) == 0.0  # no weight on present ones


# Bad inputs -----------------------------------------------------------------------------------

_Z, _Y = np.zeros((1, 2, 3, 3), np.float32), np.zeros((1, 2, 3), np.int32)
_Z1 = np.zeros((1, 2, 3, 1), np.float32)


@pytest.mark.parametrize(
    ("call", "name"),
    [
        (lambda: dice_loss(_Z, _Y[0]), "labels"),
        (lambda: jaccard_loss(_Z, _Y.astype(np.float32)), "labels"),
        (lambda: region_sums(_Z[..., 0], _Y), "labels"),
        (lambda: dice_loss(_Z, _Y, classes="some"), "classes"),
        (lambda: dice_loss(_Z, _Y, classes=(3,)), "classes"),
        (lambda: dice_loss(_Z, _Y, classes=()), "classes"),
        (lambda: dice_loss(_Z, _Y, classes=(1, 1)), "classes"),
        (lambda: jaccard_loss(_Z, _Y, smooth=-1.0), "smooth"),
        (lambda: dice_loss(_Z, _Y, eps=0.0), "eps"),
        (lambda: dice_loss(_Z, _Y, class_weights=np.ones(2)), "class_weights"),
        (lambda: dice_loss(_Z1, _Y, class_weights=np.ones(2)), "class_weights"),
        (lambda: tversky_loss(_Z, _Y, alpha=-0.1), "alpha"),
        (lambda: tversky_loss(_Z, _Y, gamma=0.0), "gamma"),
        (lambda: dice_from_sums({"intersection": np.ones(3)}), "sums"),
        (lambda: softmax_focal_loss(_Z, _Y[..., None]), "labels"),
        (lambda: softmax_focal_loss(_Z, _Y, alpha=np.ones(2)), "alpha"),
        (lambda: softmax_focal_loss(_Z, _Y, gamma=-1.0), "gamma"),
        (lambda: softmax_focal_loss(_Z, _Y, reduction="avg"), "reduction"),
        (lambda: sigmoid_focal_loss(_Z, _Y), "labels"),
        (lambda: sigmoid_focal_loss(_Z1, _Y, alpha=1.5), "alpha"),
        (lambda: sigmoid_binary_cross_entropy(_Z1, _Y.astype(bool)), "labels"),
        (lambda: sigmoid_binary_cross_entropy(_Z1, _Y, class_weights=np.ones(3)), "class_weights"),
        (lambda: dice_loss(_Z, _Y, where=np.ones(2, bool)), "where"),
    ],
)
def test_bad_inputs_name_the_argument(call, name):
    with pytest.raises(ValueError, match=f"`{name}`"):
        call()
