"""Softmax cross-entropy with an ignore label, and mean squared error."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from fcnjax.labels import IGNORE_LABEL
from fcnjax.typing import Array, ArrayLike

__all__ = ["mean_squared_error", "pixel_weights", "softmax_cross_entropy"]

_REDUCTIONS = ("mean", "sum", "none")


def _check_reduction(reduction: str) -> None:
    if reduction not in _REDUCTIONS:
        raise ValueError(f"`reduction` must be 'mean', 'sum' or 'none', got {reduction!r}.")


def _validity(where: ArrayLike | None, shape: tuple[int, ...]) -> Array | None:
    """``where`` (``bool[N]`` or ``bool[shape]``) broadcast to ``shape``; None stays None."""
    if where is None:
        return None
    where = jnp.asarray(where)
    if where.shape == shape[:1]:
        return jnp.broadcast_to(where.reshape(where.shape + (1,) * (len(shape) - 1)), shape)
    if where.shape != shape:
        raise ValueError(
            f"`where` must have shape {shape[:1]} (one flag per example) or {shape} (one per "
            f"pixel), got {where.shape}."
        )
    return where


def _float(x: Array) -> Array:
    """``x`` in at least float32: bfloat16/float16 are upcast, float64 (x64 mode) is kept."""
    return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def softmax_cross_entropy(
    logits: ArrayLike,
    labels: ArrayLike,
    *,
    ignore_label: int | None = IGNORE_LABEL,
    class_weights: ArrayLike | None = None,
    where: ArrayLike | None = None,
    reduction: str = "mean",
) -> Array:
    r"""Softmax cross-entropy of integer labels per pixel, skipping ignored pixels.

    For pixel ``p`` with label ``y_p`` and logits ``z_p``, the loss is
    ``l_p = w[y_p] * (logsumexp(z_p) - z_p[y_p])`` (``w = class_weights``, or 1). A pixel
    *counts* when ``0 <= y_p < K``, ``y_p != ignore_label`` and ``where`` is True there; a
    pixel that does not count contributes nothing, not to the sum nor to the normaliser.
    Labels outside ``[0, K)`` are thus skipped like ``ignore_label`` (PyTorch raises on
    them instead); run :func:`fcnjax.data.check_example` on the data to catch them.

    Reductions, with ``c_p = 1`` for counted pixels and 0 otherwise:

    - ``"mean"``: ``sum_p c_p l_p / sum_p c_p w[y_p]``, the weighted mean, as
      ``torch.nn.functional.cross_entropy(weight=w, ignore_index=ignore_label)`` computes it
      (unweighted: Caffe's ``SoftmaxWithLoss`` with ``normalization: VALID``). 0, where
      PyTorch gives NaN, when nothing counts.
    - ``"sum"``: ``sum_p c_p l_p``.
    - ``"none"``: ``c_p l_p`` per pixel, 0 where a pixel does not count.

    **Why FCN's learning rates are tiny.** The FCN reference (Long et al.) trains with
    ``SoftmaxWithLoss`` and ``normalize: false``, which in Caffe divides by the batch size
    only; with FCN's batch of one image this is ``reduction="sum"``. For an image of ``P``
    counted pixels, ``L_sum = P * L_mean``, so ``grad L_sum = P * grad L_mean``, and an SGD
    step ``lr_sum * grad L_sum`` equals ``lr_mean * grad L_mean`` when::

        lr_sum = lr_mean / P,   P ~ 500 * 500 = 2.5e5 for VOC at 500x500.

    A mean-normalised ``lr_mean = 1e-4`` is ``lr_sum ~ 4e-10``; FCN-32s's ``base_lr: 1e-10``
    is ``lr_mean ~ 2.5e-5``, and with momentum 0.99 its steady-state step
    ``lr / (1 - momentum) ~ 2.5e-3`` is that of ``lr_mean = 2.5e-4`` with momentum 0.9. Caffe
    adds ``weight_decay * theta`` to the *summed* gradient, so relative to the data term the
    decay is ``P`` times weaker than the same coefficient with a mean loss. Use
    ``reduction="sum"`` with batch size 1 to reuse FCN's solver numbers as they are, or
    ``"mean"`` with ``lr_sum * P`` (and ``weight_decay / P``) to keep the learning rate
    independent of the image size and batch size.

    Args:
      logits: ``f[N, H, W, K]`` (any ``[..., K]``); bfloat16/float16 are upcast to float32.
      labels: ``int[N, H, W]``, the shape of ``logits`` without its last axis.
      ignore_label: the label of pixels to skip (``IGNORE_LABEL = 255``), or None.
      class_weights: ``f[K]`` weight of each class, or None for all ones.
      where: ``bool[N]`` (whole examples, e.g. evaluation padding) or ``bool[N, H, W]``;
        False entries do not count. None counts everything.
      reduction: ``"mean"``, ``"sum"`` or ``"none"``.

    Returns:
      ``f32[]`` for ``"mean"``/``"sum"``; ``f32[N, H, W]`` for ``"none"``.

    >>> import jax.numpy as jnp
    >>> logits = jnp.zeros((1, 1, 2, 4))  # uniform over K = 4 classes: loss log 4 per pixel
    >>> labels = jnp.array([[[3, 255]]])  # the second pixel is ignored
    >>> float(softmax_cross_entropy(logits, labels))  # log 4
    1.3862943649291992
    >>> softmax_cross_entropy(logits, labels, reduction="none")
    Array([[[1.3862944, 0.       ]]], dtype=float32)
    >>> float(softmax_cross_entropy(logits, labels, where=jnp.array([False])))  # nothing counts
    0.0

    References:
      Long, Shelhamer & Darrell, "Fully Convolutional Networks for Semantic Segmentation",
      CVPR 2015 (``voc-fcn32s/solver.prototxt``: "lr for unnormalized softmax").
    """
    _check_reduction(reduction)
    logits, labels = jnp.asarray(logits), jnp.asarray(labels)
    _check_labels(logits, labels)
    num_classes = logits.shape[-1]
    if class_weights is not None and jnp.shape(class_weights) != (num_classes,):
        raise ValueError(
            f"`class_weights` must have shape (K,) = ({num_classes},), one weight per class of "
            f"`logits`, got {jnp.shape(class_weights)}."
        )
    counted = _counted(labels, num_classes, ignore_label, where)
    # Zeros at skipped pixels before any arithmetic: inf/NaN logits there must reach neither
    # the sum nor, through logsumexp's backward pass, the gradient.
    x = jnp.where(counted[..., None], _float(logits), 0)
    safe = jnp.where(counted, labels, 0)
    nll = jax.nn.logsumexp(x, axis=-1) - jnp.take_along_axis(x, safe[..., None], axis=-1)[..., 0]
    weight = _weights(counted, safe, class_weights, x.dtype)
    return _reduce(jnp.where(counted, nll * weight, 0), weight, reduction)


def _check_labels(logits: Array, labels: Array) -> None:
    """``labels`` ``int[N, H, W]`` for ``logits`` ``f[N, H, W, K]``, or a ValueError."""
    if logits.ndim < 2 or labels.shape != logits.shape[:-1]:
        raise ValueError(
            f"`labels` must have the shape of `logits` without its class axis: `logits` "
            f"{logits.shape} wants `labels` {logits.shape[:-1]}, got {labels.shape}."
        )
    if not jnp.issubdtype(labels.dtype, jnp.integer):
        raise ValueError(f"`labels` must be integer class indices, got dtype {labels.dtype}.")


def _ratio(total: Array, denom: Array) -> Array:
    """``total / denom``, 0 where ``denom`` is 0 (nothing counted), with a finite gradient."""
    return jnp.where(denom > 0, total / jnp.where(denom > 0, denom, 1), 0)


def _reduce(loss: Array, weight: Array, reduction: str) -> Array:
    """Per-pixel ``loss`` (0 where not counted) reduced: ``"none"``, ``"sum"``, or
    ``"mean"``, the sum over the sum of the pixels' ``weight``."""
    if reduction == "none":
        return loss
    total = jnp.sum(loss)
    return total if reduction == "sum" else _ratio(total, jnp.sum(weight))


def _counted(labels: Array, num_classes: int, ignore_label: int | None, where) -> Array:
    """Pixels that count: a label in ``[0, K)``, not ``ignore_label``, ``where`` True."""
    labels = labels.astype(jnp.int32)  # so that comparing uint8 labels with -1 cannot overflow
    counted = (labels >= 0) & (labels < num_classes)
    if ignore_label is not None:
        counted &= labels != ignore_label
    where = _validity(where, labels.shape)
    return counted if where is None else counted & where.astype(bool)


def _weights(counted: Array, safe_labels: Array, class_weights, dtype) -> Array:
    if class_weights is None:
        return counted.astype(dtype)
    return jnp.where(counted, jnp.asarray(class_weights, dtype)[safe_labels], 0)


def pixel_weights(
    labels: ArrayLike,
    num_classes: int,
    *,
    ignore_label: int | None = IGNORE_LABEL,
    class_weights: ArrayLike | None = None,
    where: ArrayLike | None = None,
) -> Array:
    """Each pixel's weight in :func:`softmax_cross_entropy`: ``f32[N, H, W]``.

    ``class_weights[label]`` (or 1) where the pixel counts, 0 elsewhere; its sum is the
    normaliser of ``reduction="mean"`` (what a data-parallel step sums across devices).

    >>> import jax.numpy as jnp
    >>> pixel_weights(jnp.array([[0, 2, 255, 7]]), 3, class_weights=jnp.array([1.0, 2.0, 4.0]))
    Array([[1., 4., 0., 0.]], dtype=float32)
    """
    labels = jnp.asarray(labels)
    counted = _counted(labels, num_classes, ignore_label, where)
    return _weights(counted, jnp.where(counted, labels, 0), class_weights, jnp.float32)


def mean_squared_error(
    predictions: ArrayLike,
    targets: ArrayLike,
    *,
    where: ArrayLike | None = None,
    reduction: str = "mean",
) -> Array:
    """Squared error of ``predictions`` against ``targets``, e.g. an autoencoder's reconstruction.

    ``"mean"`` averages ``(predictions - targets) ** 2`` over every element of the counted
    examples (Keras' ``'mean_squared_error'`` for equal-shaped examples); 0 when none counts.
    ``"sum"`` adds them; ``"none"`` gives each example's mean, 0 for examples not counted.

    Args:
      predictions: ``f[N, ...]``; computed in at least float32.
      targets: ``f[N, ...]``, the shape of ``predictions``.
      where: ``bool[N]``: examples to count (False for evaluation padding); None counts all.
      reduction: ``"mean"``, ``"sum"`` or ``"none"``.

    Returns:
      ``f32[]`` for ``"mean"``/``"sum"``; ``f32[N]`` for ``"none"``.

    >>> import jax.numpy as jnp
    >>> p, t = jnp.array([[1.0, 3.0], [0.0, 0.0]]), jnp.array([[0.0, 0.0], [5.0, 5.0]])
    >>> mean_squared_error(p, t, where=jnp.array([True, False]))  # (1 + 9) / 2
    Array(5., dtype=float32)
    >>> mean_squared_error(p, t, reduction="none")
    Array([ 5., 25.], dtype=float32)
    """
    _check_reduction(reduction)
    predictions, targets = jnp.asarray(predictions), jnp.asarray(targets)
    if predictions.shape != targets.shape or predictions.ndim < 1:
        raise ValueError(
            f"`targets` must have the shape of `predictions` (N, ...): `predictions` "
            f"{predictions.shape}, `targets` {targets.shape}."
        )
    if where is not None and jnp.shape(where) != predictions.shape[:1]:
        raise ValueError(
            f"`where` must have shape {predictions.shape[:1]} (one flag per example), got "
            f"{jnp.shape(where)}."
        )
    dtype = jnp.promote_types(jnp.result_type(predictions, targets), jnp.float32)
    err = jnp.square(predictions.astype(dtype) - targets.astype(dtype))
    err = err.reshape(err.shape[0], -1)  # (N, elements per example)
    counted = jnp.ones(err.shape[:1], bool) if where is None else jnp.asarray(where, bool)
    err = jnp.where(counted[:, None], err, 0)
    if reduction == "none":
        return jnp.mean(err, axis=1)
    total = jnp.sum(err)
    if reduction == "sum":
        return total
    n = jnp.sum(counted).astype(dtype) * err.shape[1]
    return jnp.where(n > 0, total / jnp.maximum(n, 1), 0)
