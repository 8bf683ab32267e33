"""Dice, Jaccard and Tversky losses of one batch: the ratio of :func:`region_sums` in one call.

To split a batch across devices or micro-batches, add the :func:`region_sums` of the parts
and take ``*_from_sums`` once (:mod:`fcnjax.losses._region`).
"""

from __future__ import annotations

from fcnjax.labels import IGNORE_LABEL
from fcnjax.losses._region import (
    Classes,
    dice_from_sums,
    jaccard_from_sums,
    region_sums,
    tversky_from_sums,
)
from fcnjax.typing import Array, ArrayLike

__all__ = ["dice_loss", "jaccard_loss", "tversky_loss"]


def dice_loss(
    logits: ArrayLike,
    labels: ArrayLike,
    *,
    smooth: float = 0.0,
    eps: float = 1e-7,
    log_loss: bool = False,
    classes: Classes = "present",
    class_weights: ArrayLike | None = None,
    ignore_label: int | None = IGNORE_LABEL,
    where: ArrayLike | None = None,
    from_logits: bool = True,
) -> Array:
    r"""Soft Dice loss of a batch: ``dice_from_sums(region_sums(logits, labels, ...), ...)``.

    One ratio of sums over all counted pixels of the batch per class, then a mean over the
    classes; see :func:`region_sums` for the pixels that count and the binary (``K == 1``,
    sigmoid) mode, and :func:`dice_from_sums` for the maths, ``classes`` and how smp's and
    MONAI's conventions relate. To split a batch across devices, psum the
    :func:`region_sums` and call :func:`dice_from_sums` once.

    Args:
      logits: ``f[N, H, W, K]``; ``K == 1`` is binary (one sigmoid output).
      labels: ``int[N, H, W]``.
      smooth, eps, log_loss, classes, class_weights: as in :func:`dice_from_sums`.
      ignore_label, where, from_logits: as in :func:`region_sums`.

    Returns:
      ``f32[]``.

    >>> import jax.numpy as jnp
    >>> probs = jnp.array([[[[0.75, 0.25], [0.5, 0.5], [0.1, 0.9]]]])
    >>> labels = jnp.array([[[0, 1, 255]]])  # I = (0.75, 0.5), P = (1.25, 0.75), G = (1, 1)
    >>> loss = dice_loss(probs, labels, from_logits=False)
    >>> round(float(loss), 6)  # 1 - (1.5 / 2.25 + 1 / 1.75) / 2 = 8/21
    0.380952
    """
    sums = region_sums(
        logits, labels, ignore_label=ignore_label, where=where, from_logits=from_logits
    )
    return dice_from_sums(
        sums,
        smooth=smooth,
        eps=eps,
        log_loss=log_loss,
        classes=classes,
        class_weights=class_weights,
    )


def jaccard_loss(
    logits: ArrayLike,
    labels: ArrayLike,
    *,
    smooth: float = 0.0,
    eps: float = 1e-7,
    log_loss: bool = False,
    classes: Classes = "present",
    class_weights: ArrayLike | None = None,
    ignore_label: int | None = IGNORE_LABEL,
    where: ArrayLike | None = None,
    from_logits: bool = True,
) -> Array:
    r"""Soft Jaccard loss of a batch: ``jaccard_from_sums(region_sums(...), ...)``.

    See :func:`jaccard_from_sums` for the maths and :func:`region_sums` for the pixels that
    count and the binary mode.

    Args:
      logits: ``f[N, H, W, K]``; ``K == 1`` is binary (one sigmoid output).
      labels: ``int[N, H, W]``.
      smooth, eps, log_loss, classes, class_weights: as in :func:`dice_from_sums`.
      ignore_label, where, from_logits: as in :func:`region_sums`.

    Returns:
      ``f32[]``.

    >>> import jax.numpy as jnp
    >>> probs = jnp.array([[[[0.75, 0.25], [0.5, 0.5], [0.1, 0.9]]]])
    >>> labels = jnp.array([[[0, 1, 255]]])  # I = (0.75, 0.5), P = (1.25, 0.75), G = (1, 1)
    >>> loss = jaccard_loss(probs, labels, from_logits=False)
    >>> round(float(loss), 6)  # 1 - (0.75 / 1.5 + 0.5 / 1.25) / 2
    0.55
    """
    sums = region_sums(
        logits, labels, ignore_label=ignore_label, where=where, from_logits=from_logits
    )
    return jaccard_from_sums(
        sums,
        smooth=smooth,
        eps=eps,
        log_loss=log_loss,
        classes=classes,
        class_weights=class_weights,
    )


def tversky_loss(
    logits: ArrayLike,
    labels: ArrayLike,
    *,
    alpha: float = 0.5,
    beta: float = 0.5,
    gamma: float = 1.0,
    smooth: float = 0.0,
    eps: float = 1e-7,
    log_loss: bool = False,
    classes: Classes = "present",
    class_weights: ArrayLike | None = None,
    ignore_label: int | None = IGNORE_LABEL,
    where: ArrayLike | None = None,
    from_logits: bool = True,
) -> Array:
    r"""(Focal) Tversky loss of a batch: ``tversky_from_sums(region_sums(...), ...)``.

    See :func:`tversky_from_sums` for the maths (``alpha`` weighs false positives, ``beta``
    false negatives, ``gamma`` is the focal exponent) and :func:`region_sums` for the pixels
    that count and the binary mode.

    Args:
      logits: ``f[N, H, W, K]``; ``K == 1`` is binary (one sigmoid output).
      labels: ``int[N, H, W]``.
      alpha, beta, gamma: as in :func:`tversky_from_sums`.
      smooth, eps, log_loss, classes, class_weights: as in :func:`dice_from_sums`.
      ignore_label, where, from_logits: as in :func:`region_sums`.

    Returns:
      ``f32[]``.

    >>> import jax.numpy as jnp
    >>> probs = jnp.array([[[[0.25], [0.5], [1.0]]]])  # binary: the foreground's probability
    >>> labels = jnp.array([[[1, 0, 255]]])  # I = 0.25, P = 0.75, G = 1
    >>> loss = tversky_loss(probs, labels, alpha=1.0, beta=0.0, from_logits=False)
    >>> round(float(loss), 6)  # 1 - I / P = 1 - 0.25 / 0.75
    0.666667
    """
    sums = region_sums(
        logits, labels, ignore_label=ignore_label, where=where, from_logits=from_logits
    )
    return tversky_from_sums(
        sums,
        alpha=alpha,
        beta=beta,
        gamma=gamma,
        smooth=smooth,
        eps=eps,
        log_loss=log_loss,
        classes=classes,
        class_weights=class_weights,
    )
