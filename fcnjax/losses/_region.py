"""Region losses: soft Dice, Jaccard and (focal) Tversky, as ratios of sums over the batch.

A region loss is a ratio of sums over *every* counted pixel of the global batch, not a mean of
per-pixel terms, so it is computed in two steps: :func:`region_sums` (additive: sums over
shards, devices or accumulated micro-batches add up) and ``*_from_sums`` (the final ratio, once
per step). ``dice_loss(...)`` is ``dice_from_sums(region_sums(...))``, and likewise for the others.
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from fcnjax.labels import IGNORE_LABEL
from fcnjax.losses._pixel import _check_labels, _counted, _float, _ratio
from fcnjax.typing import Array, ArrayLike

__all__ = ["dice_from_sums", "jaccard_from_sums", "region_sums", "tversky_from_sums"]

_SUM_KEYS = ("intersection", "prediction", "target")
Classes = str | Sequence[int]


def _check_number(name: str, value, *, positive: bool = False) -> None:
    """``value`` >= 0 (or > 0); a traced or array value is left to the caller."""
    if isinstance(value, bool):
        raise ValueError(f"`{name}` must be a number, got {value!r}.")
    if isinstance(value, numbers.Real) and not (value > 0 if positive else value >= 0):
        raise ValueError(f"`{name}` must be {'> 0' if positive else '>= 0'}, got {value!r}.")


def region_sums(
    logits: ArrayLike,
    labels: ArrayLike,
    *,
    ignore_label: int | None = IGNORE_LABEL,
    where: ArrayLike | None = None,
    from_logits: bool = True,
) -> dict[str, Array]:
    r"""The additive part of the region losses: per-class sums over the counted pixels.

    With ``p_{i,c}`` the predicted probability of class ``c`` at pixel ``i`` and ``g_{i,c}``
    the one-hot label, over the counted pixels ``i`` of the whole batch::

        intersection_c = sum_i p_{i,c} g_{i,c},  prediction_c = sum_i p_{i,c},
        target_c = sum_i g_{i,c}.

    ``K >= 2`` (multiclass): ``p = softmax(logits)``, ``C = K``. ``K == 1`` (binary): one
    sigmoid output, the probability of the foreground (label 1); labels are 0 or 1, and the
    sums are of the foreground only (``C = 1``, ``p = sigmoid(logits)``, ``g = label``). A
    pixel counts when its label is in ``[0, K)`` (binary: 0 or 1), is not ``ignore_label``
    and ``where`` is True there; other pixels add nothing, whatever their logits (inf and NaN
    included, also in the gradient).

    The sums of disjoint parts of a batch add up to the sums of the whole batch, so a
    data-parallel step sums them across devices (``jax.lax.psum``) before taking the ratio
    with :func:`dice_from_sums`, :func:`jaccard_from_sums` or :func:`tversky_from_sums`:
    the loss is then exactly that of the global batch.

    Args:
      logits: ``f[N, H, W, K]`` (any ``[..., K]``); computed in at least float32.
      labels: ``int[N, H, W]``, the shape of ``logits`` without its last axis.
      ignore_label: the label of pixels to skip (``IGNORE_LABEL = 255``), or None.
      where: ``bool[N]`` (whole examples) or ``bool[N, H, W]``; False entries do not count.
      from_logits: False when ``logits`` already holds probabilities (softmax outputs, or
        the sigmoid output when ``K == 1``), as in segmentation_models_pytorch.

    Returns:
      ``{"intersection": f32[C], "prediction": f32[C], "target": f32[C]}``.

    >>> import jax.numpy as jnp
    >>> probs = jnp.array([[[[0.75, 0.25], [0.5, 0.5], [0.1, 0.9]]]])  # (1, 1, 3, 2)
    >>> sums = region_sums(probs, jnp.array([[[0, 1, 255]]]), from_logits=False)
    >>> {k: v.tolist() for k, v in sums.items()}  # the third pixel is ignored
    {'intersection': [0.75, 0.5], 'prediction': [1.25, 0.75], 'target': [1.0, 1.0]}
    """
    logits, labels = jnp.asarray(logits), jnp.asarray(labels)
    _check_labels(logits, labels)
    x = _float(logits)
    num_classes = x.shape[-1]
    binary = num_classes == 1
    counted = _counted(labels, 2 if binary else num_classes, ignore_label, where)
    safe = jnp.where(counted, labels, 0)
    # where, not a product: inf/NaN logits at skipped pixels must reach no sum nor gradient.
    x = jnp.where(counted[..., None], x, 0)
    if binary:
        p = jax.nn.sigmoid(x) if from_logits else x
        g = safe[..., None].astype(x.dtype)
    else:
        p = jax.nn.softmax(x, axis=-1) if from_logits else x
        g = jax.nn.one_hot(safe, num_classes, dtype=x.dtype)
    p = jnp.where(counted[..., None], p, 0)
    g = jnp.where(counted[..., None], g, 0)
    axes = tuple(range(x.ndim - 1))
    return {
        "intersection": jnp.sum(p * g, axis=axes),
        "prediction": jnp.sum(p, axis=axes),
        "target": jnp.sum(g, axis=axes),
    }


def _unpack(sums: Mapping[str, ArrayLike]) -> tuple[Array, Array, Array]:
    if not isinstance(sums, Mapping) or set(sums) != set(_SUM_KEYS):
        keys = sorted(sums) if isinstance(sums, Mapping) else type(sums).__name__
        raise ValueError(
            f"`sums` must be the dict of `region_sums` with keys {list(_SUM_KEYS)}, got {keys}."
        )
    arrays = [_float(jnp.asarray(sums[k])) for k in _SUM_KEYS]
    shapes = {a.shape for a in arrays}
    if len(shapes) != 1 or arrays[0].ndim != 1:
        raise ValueError(
            f"`sums` must hold three arrays of one shape (C,), got shapes "
            f"{[a.shape for a in arrays]}."
        )
    return tuple(arrays)


def _check_common(smooth, eps, classes, class_weights, num_classes: int) -> None:
    _check_number("smooth", smooth)
    _check_number("eps", eps, positive=True)
    if isinstance(classes, str):
        if classes not in ("present", "all"):
            raise ValueError(
                f"`classes` must be 'present', 'all' or a tuple of class indices, got {classes!r}."
            )
    else:
        try:
            chosen = tuple(classes)
        except TypeError:
            chosen = None
        if (
            not chosen
            or any(isinstance(c, bool) or not isinstance(c, numbers.Integral) for c in chosen)
            or len(set(chosen)) != len(chosen)
            or not all(0 <= c < num_classes for c in chosen)
        ):
            raise ValueError(
                f"`classes` must be 'present', 'all' or a non-empty tuple of distinct class "
                f"indices in [0, C) = [0, {num_classes}), got {classes!r}."
            )
    if class_weights is not None and jnp.shape(class_weights) != (num_classes,):
        raise ValueError(
            f"`class_weights` must have shape (C,) = ({num_classes},), one weight per class of "
            f"the sums, got {jnp.shape(class_weights)}."
        )


def _class_mean(loss: Array, target: Array, classes: Classes, class_weights) -> Array:
    """The (weighted) mean of the per-class ``loss`` over the chosen classes; 0 if none."""
    if classes == "present":
        chosen = target > 0
    elif classes == "all":
        chosen = jnp.ones(loss.shape, bool)
    else:
        chosen = jnp.asarray(np.isin(np.arange(loss.shape[0]), list(classes)))
    weight = 1 if class_weights is None else jnp.asarray(class_weights, loss.dtype)
    weight = jnp.where(chosen, weight, 0).astype(loss.dtype)
    return _ratio(jnp.sum(jnp.where(chosen, weight * loss, 0)), jnp.sum(weight))


def _loss_from_score(score: Array, eps: float, log_loss: bool) -> Array:
    return -jnp.log(jnp.maximum(score, eps)) if log_loss else 1 - score


def dice_from_sums(
    sums: Mapping[str, ArrayLike],
    *,
    smooth: float = 0.0,
    eps: float = 1e-7,
    log_loss: bool = False,
    classes: Classes = "present",
    class_weights: ArrayLike | None = None,
) -> Array:
    r"""Soft Dice loss from the sums of :func:`region_sums`.

    With ``I_c, P_c, G_c`` the intersection, prediction and target sums of class ``c``::

        score_c = (2 I_c + smooth) / max(P_c + G_c + smooth, eps)
        l_c = 1 - score_c,  or  -log(max(score_c, eps)) with log_loss=True

    (segmentation_models_pytorch's ``soft_dice_score`` with ``dims=(0, 2)``: one ratio for
    the whole batch.) The loss is the mean of ``l_c`` over the classes chosen by ``classes``:

    - ``"present"``: the classes present in the batch's ground truth (``G_c > 0``); 0 when
      none is. smp's ``DiceLoss`` zeroes the loss of absent classes and then averages over
      all ``C``, so smp's loss is this one times ``n_present / C``.
    - ``"all"``: every class. MONAI's ``DiceLoss(batch=True, smooth_nr=smooth,
      smooth_dr=smooth)`` with ``to_onehot_y=True, softmax=True`` is this (MONAI has no
      ``eps``; the two agree where ``P_c + G_c + smooth >= eps``).
    - a tuple of class indices: those classes (as smp's ``classes=[...]``, which however
      still zeroes the absent ones among them).

    With ``class_weights`` ``w`` the mean is ``sum_c w_c l_c / sum_c w_c`` over the chosen
    classes (0 where that is 0). MONAI's and optax's ``weight``/``class_weights`` instead
    average ``w_c l_c`` over all ``C``: theirs is this one times ``sum_c w_c / C``.

    Args:
      sums: the dict of :func:`region_sums` (``f32[C]`` each), possibly summed over devices.
      smooth: added to numerator and denominator, ``>= 0``.
      eps: lower bound of the denominator (and of the score under ``log_loss``), ``> 0``.
      log_loss: ``-log(score)`` instead of ``1 - score``.
      classes: ``"present"``, ``"all"`` or a tuple of class indices in ``[0, C)``.
      class_weights: ``f[C]`` non-negative weights of the classes, or None for all ones.

    Returns:
      ``f32[]``.

    >>> import jax.numpy as jnp
    >>> sums = {"intersection": jnp.array([3.0, 0.0]), "prediction": jnp.array([5.0, 1.0]),
    ...         "target": jnp.array([4.0, 0.0])}  # class 1 is absent
    >>> round(float(dice_from_sums(sums)), 6)  # 1 - 2*3 / (5 + 4)
    0.333333
    >>> round(float(dice_from_sums(sums, classes="all")), 6)  # (1/3 + (1 - 0/1)) / 2
    0.666667

    References:
      Milletari, Navab & Ahmadi, "V-Net: Fully Convolutional Neural Networks for Volumetric
      Medical Image Segmentation", 3DV 2016.
    """
    intersection, prediction, target = _unpack(sums)
    _check_common(smooth, eps, classes, class_weights, target.shape[0])
    score = (2 * intersection + smooth) / jnp.maximum(prediction + target + smooth, eps)
    loss = _loss_from_score(score, eps, log_loss)
    return _class_mean(loss, target, classes, class_weights)


def jaccard_from_sums(
    sums: Mapping[str, ArrayLike],
    *,
    smooth: float = 0.0,
    eps: float = 1e-7,
    log_loss: bool = False,
    classes: Classes = "present",
    class_weights: ArrayLike | None = None,
) -> Array:
    r"""Soft Jaccard (IoU) loss from the sums of :func:`region_sums`.

    ``score_c = (I_c + smooth) / max(P_c + G_c - I_c + smooth, eps)`` (smp's
    ``soft_jaccard_score`` with ``dims=(0, 2)``), ``l_c = 1 - score_c`` or
    ``-log(max(score_c, eps))``, and the mean over ``classes`` as in :func:`dice_from_sums`:
    smp's ``JaccardLoss`` is the ``"present"`` mean times ``n_present / C``. MONAI's
    ``DiceLoss(jaccard=True, batch=True)`` computes ``(2 I + s_nr) / (2 (P + G - I) + s_dr)``,
    this score with ``smooth`` when ``s_nr = s_dr = 2 * smooth``, averaged over ``"all"``.

    Args:
      sums: the dict of :func:`region_sums`.
      smooth, eps, log_loss, classes, class_weights: as in :func:`dice_from_sums`.

    Returns:
      ``f32[]``.

    >>> import jax.numpy as jnp
    >>> sums = {"intersection": jnp.array([3.0, 0.0]), "prediction": jnp.array([5.0, 1.0]),
    ...         "target": jnp.array([4.0, 0.0])}
    >>> round(float(jaccard_from_sums(sums)), 6)  # 1 - 3 / (5 + 4 - 3)
    0.5
    >>> round(float(jaccard_from_sums(sums, log_loss=True)), 6)  # -log(1/2)
    0.693147

    References:
      Rahman & Wang, "Optimizing Intersection-Over-Union in Deep Neural Networks for Image
      Segmentation", ISVC 2016.
    """
    intersection, prediction, target = _unpack(sums)
    _check_common(smooth, eps, classes, class_weights, target.shape[0])
    union = prediction + target - intersection
    score = (intersection + smooth) / jnp.maximum(union + smooth, eps)
    loss = _loss_from_score(score, eps, log_loss)
    return _class_mean(loss, target, classes, class_weights)


def tversky_from_sums(
    sums: Mapping[str, ArrayLike],
    *,
    alpha: float = 0.5,
    beta: float = 0.5,
    gamma: float = 1.0,
    smooth: float = 0.0,
    eps: float = 1e-7,
    log_loss: bool = False,
    classes: Classes = "present",
    class_weights: ArrayLike | None = None,
) -> Array:
    r"""(Focal) Tversky loss from the sums of :func:`region_sums`.

    With the false positives ``P_c - I_c`` weighted by ``alpha`` and the false negatives
    ``G_c - I_c`` by ``beta`` (smp's ``soft_tversky_score`` with ``dims=(0, 2)``)::

        score_c = (I_c + smooth) / max(I_c + alpha (P_c - I_c) + beta (G_c - I_c) + smooth, eps)
        loss = (mean over classes of l_c) ** gamma,  l_c = 1 - score_c (or -log(score_c))

    with the class mean of :func:`dice_from_sums` (smp's ``TverskyLoss`` is the
    ``"present"`` mean times ``n_present / C``, then raised to ``gamma``). ``gamma`` is smp's
    focal Tversky exponent (Abraham & Khan use ``1 / gamma`` on each class instead); 1 is
    the plain Tversky loss. ``alpha = beta = 0.5`` is Dice: ``score_c`` is the Dice score of
    ``smooth' = 2 * smooth`` (the same with ``smooth = 0``). MONAI's ``TverskyLoss(alpha,
    beta, batch=True, smooth_nr=smooth, smooth_dr=smooth)`` is ``classes="all"``, ``gamma =
    1``. Keras 3's ``keras.losses.Tversky(alpha, beta)`` multiplies ``alpha`` with
    ``sum(y_true * (1 - y_pred))``, the false negatives, despite its docstring: it is this
    loss with ``alpha`` and ``beta`` swapped.

    Args:
      sums: the dict of :func:`region_sums`.
      alpha: weight of the false positives, ``>= 0``.
      beta: weight of the false negatives, ``>= 0``.
      gamma: exponent of the class mean, ``> 0``.
      smooth, eps, log_loss, classes, class_weights: as in :func:`dice_from_sums`.

    Returns:
      ``f32[]``.

    >>> import jax.numpy as jnp
    >>> sums = {"intersection": jnp.array([3.0, 0.0]), "prediction": jnp.array([5.0, 1.0]),
    ...         "target": jnp.array([4.0, 0.0])}
    >>> loss = tversky_from_sums(sums, alpha=0.5, beta=1.0)
    >>> round(float(loss), 6)  # 1 - 3 / (3 + 0.5 * (5 - 3) + 1.0 * (4 - 3))
    0.4
    >>> round(float(tversky_from_sums(sums, alpha=0.5, beta=1.0, gamma=2.0)), 6)  # 0.4 ** 2
    0.16

    References:
      Salehi, Erdogmus & Gholipour, "Tversky loss function for image segmentation using 3D
      fully convolutional deep networks", MLMI 2017. Abraham & Khan, "A Novel Focal Tversky
      Loss Function with Improved Attention U-Net for Lesion Segmentation", ISBI 2019.
    """
    intersection, prediction, target = _unpack(sums)
    _check_number("alpha", alpha)
    _check_number("beta", beta)
    _check_number("gamma", gamma, positive=True)
    _check_common(smooth, eps, classes, class_weights, target.shape[0])
    denom = intersection + alpha * (prediction - intersection) + beta * (target - intersection)
    score = (intersection + smooth) / jnp.maximum(denom + smooth, eps)
    loss = _class_mean(_loss_from_score(score, eps, log_loss), target, classes, class_weights)
    if isinstance(gamma, numbers.Real) and gamma == 1:
        return loss
    # The power only of a positive base: x ** gamma has an infinite (gamma < 1) or NaN
    # gradient at 0, and rounding can leave 1 - score a hair below 0.
    positive = loss > 0
    return jnp.where(positive, jnp.where(positive, loss, 1) ** gamma, 0)
