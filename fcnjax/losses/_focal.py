"""Focal losses (softmax and sigmoid) and binary cross-entropy of one sigmoid output."""

from __future__ import annotations

import numbers

import jax
import jax.numpy as jnp
import numpy as np
import optax

from fcnjax.labels import IGNORE_LABEL
from fcnjax.losses._pixel import _check_reduction, _counted, _float, _reduce, _weights
from fcnjax.typing import Array, ArrayLike

__all__ = ["sigmoid_binary_cross_entropy", "sigmoid_focal_loss", "softmax_focal_loss"]


def _check_gamma(gamma) -> None:
    if isinstance(gamma, bool) or not isinstance(gamma, numbers.Real) or not gamma >= 0:
        raise ValueError(f"`gamma` must be a Python number >= 0, got {gamma!r}.")


def _check_labels(logits: Array, labels: Array, *, binary: bool) -> None:
    if binary:
        ok = labels.shape == logits.shape or (
            logits.ndim >= 1 and logits.shape[-1] == 1 and labels.shape == logits.shape[:-1]
        )
        want = f"{logits.shape[:-1] if logits.shape[-1:] == (1,) else logits.shape}"
    else:
        ok = logits.ndim >= 2 and labels.shape == logits.shape[:-1]
        want = f"{logits.shape[:-1]}"
    if not ok:
        raise ValueError(
            f"`labels` must have the shape of `logits` without its class axis: `logits` "
            f"{logits.shape} wants `labels` {want}, got {labels.shape}."
        )
    if not jnp.issubdtype(labels.dtype, jnp.integer):
        raise ValueError(f"`labels` must be integer class indices, got dtype {labels.dtype}.")


def softmax_focal_loss(
    logits: ArrayLike,
    labels: ArrayLike,
    *,
    gamma: float = 2.0,
    alpha: ArrayLike | None = None,
    ignore_label: int | None = IGNORE_LABEL,
    where: ArrayLike | None = None,
    reduction: str = "mean",
) -> Array:
    r"""Softmax focal loss of integer labels per pixel, skipping ignored pixels.

    For pixel ``p`` with label ``y_p`` and ``q_p = softmax(z_p)[y_p]``::

        l_p = alpha[y_p] * (1 - q_p) ** gamma * (-log q_p)

    Lin et al.'s focal loss in its softmax form: the cross-entropy of
    :func:`~fcnjax.losses.softmax_cross_entropy`, down-weighted where the true class is
    already likely. ``gamma = 0`` and ``alpha = None`` is exactly the cross-entropy. Pixels
    count as in :func:`~fcnjax.losses.softmax_cross_entropy` (a label in ``[0, K)``, not
    ``ignore_label``, ``where`` True); the others contribute nothing, inf/NaN logits included.

    Reductions, with ``c_p = 1`` for counted pixels and 0 otherwise:

    - ``"mean"``: ``sum_p c_p l_p / sum_p c_p``, divided by the *number* of counted pixels,
      not by their summed ``alpha`` (``softmax_cross_entropy``'s ``class_weights`` divide
      by the sum of weights). MONAI's ``FocalLoss(use_softmax=True, weight=alpha,
      ignore_index=...)`` is this; without ``ignore_index`` it averages over ``N*K*H*W``
      elements, so it is this divided by ``K``. Keras' ``CategoricalFocalCrossentropy``
      is this with ``reduction="mean_with_sample_weight"`` and the counted mask as
      ``sample_weight``, up to its clipping of the probabilities to ``[1e-7, 1 - 1e-7]``
      (its ``alpha`` defaults to 0.25 for every class, not 1).
    - ``"sum"``: ``sum_p c_p l_p``.
    - ``"none"``: ``c_p l_p`` per pixel, 0 where a pixel does not count.

    Args:
      logits: ``f[N, H, W, K]`` (any ``[..., K]``); computed in at least float32.
      labels: ``int[N, H, W]``, the shape of ``logits`` without its last axis.
      gamma: the focusing exponent, a Python number ``>= 0``.
      alpha: ``f[K]`` weight of each class, or None for all ones.
      ignore_label: the label of pixels to skip (``IGNORE_LABEL = 255``), or None.
      where: ``bool[N]`` or ``bool[N, H, W]``; False entries do not count.
      reduction: ``"mean"``, ``"sum"`` or ``"none"``.

    Returns:
      ``f32[]`` for ``"mean"``/``"sum"``; ``f32[N, H, W]`` for ``"none"``.

    >>> import jax.numpy as jnp
    >>> logits = jnp.zeros((1, 1, 2, 4))  # q = 1/4 at every pixel
    >>> labels = jnp.array([[[3, 255]]])
    >>> float(softmax_focal_loss(logits, labels))  # (3/4)**2 * log 4
    0.7797905802726746
    >>> float(softmax_focal_loss(logits, labels, gamma=0))  # the cross-entropy, log 4
    1.3862943649291992

    References:
      Lin, Goyal, Girshick, He & Dollár, "Focal Loss for Dense Object Detection", ICCV 2017.
    """
    _check_reduction(reduction)
    _check_gamma(gamma)
    logits, labels = jnp.asarray(logits), jnp.asarray(labels)
    _check_labels(logits, labels, binary=False)
    num_classes = logits.shape[-1]
    if alpha is not None and jnp.shape(alpha) != (num_classes,):
        raise ValueError(
            f"`alpha` must have shape (K,) = ({num_classes},), one weight per class of "
            f"`logits`, or be None, got {jnp.shape(alpha)}."
        )
    if alpha is not None and not isinstance(alpha, jax.core.Tracer):
        values = np.asarray(alpha, np.float64)
        if not (np.isfinite(values).all() and (values >= 0).all()):
            raise ValueError(f"`alpha` must hold finite weights >= 0, got {values.tolist()}.")
    counted = _counted(labels, num_classes, ignore_label, where)
    safe = jnp.where(counted, labels, 0)
    # where, not a product: inf/NaN logits at skipped pixels must reach no sum nor gradient.
    x = jnp.where(counted[..., None], _float(logits), 0)
    # softmax_cross_entropy's own expression, so that gamma = 0 gives its values bit for bit.
    nll = jax.nn.logsumexp(x, axis=-1) - jnp.take_along_axis(x, safe[..., None], axis=-1)[..., 0]
    one_minus_q = -jnp.expm1(-nll)  # 1 - q, accurate also when q is near 1
    # The power only of a positive base: at q = 1, (1 - q) ** gamma has a NaN (gamma = 0) or
    # infinite (gamma < 1) derivative, while (1 - q) ** gamma * nll has the limit 0 and the
    # gradient 0 there. Elsewhere a factor of exactly 1 (gamma = 0) leaves nll bit for bit.
    positive = one_minus_q > 0
    factor = jnp.where(positive, jnp.where(positive, one_minus_q, 1) ** gamma, 0)
    loss = factor * nll
    if alpha is not None:
        loss = loss * jnp.asarray(alpha, x.dtype)[safe]
    loss = jnp.where(counted, loss, 0)
    return _reduce(loss, counted.astype(x.dtype), reduction)


def _binary_inputs(logits, labels, ignore_label, where):
    """Logits as ``f[N, H, W]``, with labels, counted mask and safe (0/1) labels."""
    logits, labels = jnp.asarray(logits), jnp.asarray(labels)
    _check_labels(logits, labels, binary=True)
    if logits.shape != labels.shape:
        logits = logits[..., 0]
    counted = _counted(labels, 2, ignore_label, where)
    safe = jnp.where(counted, labels, 0)
    # where, not a product: inf/NaN logits at skipped pixels must reach no sum nor gradient.
    x = jnp.where(counted, _float(logits), 0)
    return x, counted, safe


def sigmoid_focal_loss(
    logits: ArrayLike,
    labels: ArrayLike,
    *,
    gamma: float = 2.0,
    alpha: float | None = None,
    ignore_label: int | None = IGNORE_LABEL,
    where: ArrayLike | None = None,
    reduction: str = "mean",
) -> Array:
    r"""Focal loss of one sigmoid output (binary segmentation) per pixel, skipping ignored pixels.

    With ``s_p = sigmoid(z_p)`` the probability of the foreground (label 1), ``q_p = s_p``
    where ``y_p = 1`` and ``1 - s_p`` where ``y_p = 0``::

        l_p = alpha_t * (1 - q_p) ** gamma * (-log q_p),  alpha_t = alpha if y_p = 1 else 1 - alpha

    (``alpha_t = 1`` when ``alpha`` is None), Lin et al.'s binary focal loss. Per pixel this
    is ``optax.losses.sigmoid_focal_loss``, which it calls: optax computes ``(1 - q) ** gamma``
    in log space and ``-log q`` with ``log_sigmoid``, exact and stable for any logits. Pixels
    count when their label is 0 or 1, not ``ignore_label`` and ``where`` is True.

    ``"mean"`` divides by the number of counted pixels (MONAI's ``FocalLoss(use_softmax=False,
    alpha=alpha, ignore_index=...)`` on one channel; Keras' ``BinaryFocalCrossentropy(
    apply_class_balancing=True, from_logits=True)`` with the counted mask as
    ``sample_weight`` and ``reduction="mean_with_sample_weight"``, up to its clipping at
    ``1e-7``); ``"sum"`` and ``"none"`` as in :func:`softmax_focal_loss`.

    Args:
      logits: ``f[N, H, W, 1]`` or ``f[N, H, W]``; computed in at least float32.
      labels: ``int[N, H, W]`` of 0 (background) and 1 (foreground).
      gamma: the focusing exponent, a Python number ``>= 0``.
      alpha: the foreground's weight in ``[0, 1]`` (the background's is ``1 - alpha``;
        Lin et al. use 0.25), or None for no weighting.
      ignore_label: the label of pixels to skip (``IGNORE_LABEL = 255``), or None.
      where: ``bool[N]`` or ``bool[N, H, W]``; False entries do not count.
      reduction: ``"mean"``, ``"sum"`` or ``"none"``.

    Returns:
      ``f32[]`` for ``"mean"``/``"sum"``; ``f32[N, H, W]`` for ``"none"``.

    >>> import jax.numpy as jnp
    >>> logits = jnp.zeros((1, 1, 2, 1))  # s = 1/2
    >>> labels = jnp.array([[[1, 255]]])
    >>> float(sigmoid_focal_loss(logits, labels))  # (1/2)**2 * log 2
    0.1732867956161499
    >>> float(sigmoid_focal_loss(logits, labels, alpha=0.25))  # 0.25 * (1/2)**2 * log 2
    0.043321698904037476

    References:
      Lin, Goyal, Girshick, He & Dollár, "Focal Loss for Dense Object Detection", ICCV 2017.
    """
    _check_reduction(reduction)
    _check_gamma(gamma)
    if alpha is not None and (
        isinstance(alpha, bool) or not isinstance(alpha, numbers.Real) or not 0 <= alpha <= 1
    ):
        raise ValueError(f"`alpha` must be None or a number in [0, 1], got {alpha!r}.")
    x, counted, safe = _binary_inputs(logits, labels, ignore_label, where)
    loss = optax.losses.sigmoid_focal_loss(x, safe.astype(x.dtype), alpha=alpha, gamma=gamma)
    loss = jnp.where(counted, loss, 0)
    return _reduce(loss, counted.astype(x.dtype), reduction)


def sigmoid_binary_cross_entropy(
    logits: ArrayLike,
    labels: ArrayLike,
    *,
    class_weights: ArrayLike | None = None,
    ignore_label: int | None = IGNORE_LABEL,
    where: ArrayLike | None = None,
    reduction: str = "mean",
) -> Array:
    r"""Binary cross-entropy of one sigmoid output per pixel, skipping ignored pixels.

    With ``s_p = sigmoid(z_p)``, the probability of the foreground (label 1)::

        l_p = w[y_p] * -(y_p log s_p + (1 - y_p) log(1 - s_p))

    per pixel ``optax.sigmoid_binary_cross_entropy`` (``log_sigmoid`` of ``z`` and ``-z``,
    stable for any logits), times the weight ``w = class_weights`` of the pixel's label.
    It is :func:`~fcnjax.losses.softmax_cross_entropy` of the two logits ``[0, z_p]``, and
    reduces the same way: ``"mean"`` divides by the counted pixels' summed weights (torch's
    ``cross_entropy(weight=w, ignore_index=...)`` on ``[0, z]``; unweighted, torch's
    ``binary_cross_entropy_with_logits`` over the counted pixels). torch's ``pos_weight``
    multiplies the loss of foreground pixels but its mean divides by the pixel count: with
    0/1 labels it is ``"sum"`` with ``w = (1, pos_weight)`` over the number of counted pixels.

    Args:
      logits: ``f[N, H, W, 1]`` or ``f[N, H, W]``; computed in at least float32.
      labels: ``int[N, H, W]`` of 0 (background) and 1 (foreground).
      class_weights: ``(w_background, w_foreground)``, or None for ``(1, 1)``.
      ignore_label: the label of pixels to skip (``IGNORE_LABEL = 255``), or None.
      where: ``bool[N]`` or ``bool[N, H, W]``; False entries do not count.
      reduction: ``"mean"``, ``"sum"`` or ``"none"``.

    Returns:
      ``f32[]`` for ``"mean"``/``"sum"``; ``f32[N, H, W]`` for ``"none"``.

    >>> import jax.numpy as jnp
    >>> logits = jnp.zeros((1, 1, 3, 1))  # s = 1/2: log 2 per pixel
    >>> labels = jnp.array([[[0, 1, 255]]])
    >>> float(sigmoid_binary_cross_entropy(logits, labels, reduction="sum"))  # 2 log 2
    1.3862943649291992
    >>> w = jnp.array([1.0, 3.0])
    >>> float(sigmoid_binary_cross_entropy(logits, labels, class_weights=w))  # 4 log 2 / 4
    0.6931471824645996
    """
    _check_reduction(reduction)
    if class_weights is not None and jnp.shape(class_weights) != (2,):
        raise ValueError(
            f"`class_weights` must have shape (2,): (w_background, w_foreground), got "
            f"{jnp.shape(class_weights)}."
        )
    x, counted, safe = _binary_inputs(logits, labels, ignore_label, where)
    weight = _weights(counted, safe, class_weights, x.dtype)
    bce = optax.sigmoid_binary_cross_entropy(x, safe.astype(x.dtype))
    loss = jnp.where(counted, bce * weight, 0)
    return _reduce(loss, weight, reduction)
