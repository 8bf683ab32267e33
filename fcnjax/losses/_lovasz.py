r"""The Lovász-Softmax and Lovász hinge losses: convex surrogates of the Jaccard loss (1 - IoU).

**The Lovász extension of the Jaccard loss.** For class ``c`` with ground-truth pixels ``G``,
the Jaccard loss of a set ``M`` of mispredicted pixels is (Berman et al., eq. 4-5)::

    Delta_J(M) = |M| / |G ∪ M|        (= 1 - IoU_c when M is the set of errors for c)

a set function, so not differentiable. Its Lovász extension takes a vector of errors
``m in R^P`` instead of a set: with ``pi`` the order sorting ``m`` decreasingly and
``S_i = {pi_1, ..., pi_i}`` the ``i`` largest errors,::

    Delta_J^(m) = sum_i m[pi_i] * g_i,      g_i = Delta_J(S_i) - Delta_J(S_{i-1}),  Delta_J({}) = 0

It equals ``Delta_J(M)`` at the indicator vector of ``M`` (tight on hard predictions), is
piecewise linear, and is convex because ``Delta_J`` is submodular; then it also equals the
maximum of the same linear form ``sum_i m[pi_i] g_i(pi)`` over *all* orderings ``pi`` of the
pixels, the maximum that the decreasing order attains (Edmonds' greedy algorithm). That is why
the errors are sorted: one sort, ``O(P log P)``, instead of ``P!`` orderings.
:func:`lovasz_grad` computes ``g`` (the gradient of ``Delta_J^`` w.r.t. the sorted errors).

**Pixels that do not count** (an ignored label, a label outside the classes, ``where`` False)
cannot be dropped from fixed shapes under ``jax.jit``; they are sorted after every counted
pixel instead (a key below any counted error) with error 0 and ground truth 0. Then the
counted pixels fill the first positions in the order Berman's code gives them, their ``g_i``
are his (every count in ``g_i`` is over that prefix only), and the padding positions add
``0 * g_i``. Their inputs are replaced by 0 before anything is computed, so that inf/NaN
there reach neither the value nor the gradient.

**Ties.** The value does not depend on how equal errors are ordered (the ``g_i`` of a run of
equal errors sum to the same ``Delta_J`` difference). The gradient does, since any order of
the run is a valid subgradient: here ties keep the pixels' flattened (row-major) order, and
PyTorch's sort may choose differently; with continuous inputs ties have probability 0.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence

import jax
import jax.numpy as jnp

from fcnjax.labels import IGNORE_LABEL
from fcnjax.losses._pixel import _check_reduction, _counted, _float, _validity
from fcnjax.typing import Array, ArrayLike

__all__ = ["lovasz_grad", "lovasz_hinge", "lovasz_softmax"]


def lovasz_grad(gt_sorted: ArrayLike) -> Array:
    r"""The gradient of the Lovász extension of the Jaccard loss w.r.t. the sorted errors.

    For pixels sorted by decreasing error, with ground truth ``gt_sorted`` (1 for the
    class's pixels ``G``, 0 elsewhere) and ``S_i`` the first ``i`` pixels::

        g_i = J_i - J_{i-1},   J_i = 1 - |G \ S_i| / |G ∪ S_i| = |S_i| / |G ∪ S_i|,   J_0 = 0

    with ``|G \ S_i| = |G| - cumsum(gt)_i`` and ``|G ∪ S_i| = |G| + cumsum(1 - gt)_i``
    (Berman et al., Algorithm 1; ``lovasz_grad`` of their ``lovasz_losses.py``). The counts
    are summed in int32 for integer or boolean ``gt_sorted``, so they are exact for any image.
    ``|G ∪ S_i| >= 1`` for every ``i >= 1``, so nothing divides by 0.

    Args:
      gt_sorted: ``{0, 1}[..., P]`` (bool, int or float), sorted along the last axis by
        decreasing error; leading axes are batch axes.

    Returns:
      ``f32[..., P]`` (float64 kept in x64 mode), no gradient through ``gt_sorted``.

    >>> import jax.numpy as jnp
    >>> g = lovasz_grad(jnp.array([1, 0, 1]))  # J = 1 - [1/2, 1/3, 0/3] = [1/2, 2/3, 1]
    >>> [round(float(x), 4) for x in g]  # [1/2, 2/3 - 1/2, 1 - 2/3]
    [0.5, 0.1667, 0.3333]
    >>> lovasz_grad(jnp.array([0, 0, 0]))  # no ground truth: the largest error is the loss
    Array([1., 0., 0.], dtype=float32)
    """
    gt = jax.lax.stop_gradient(jnp.asarray(gt_sorted))
    if jnp.issubdtype(gt.dtype, jnp.floating):
        gt = _float(gt)
        dtype = gt.dtype
    else:
        gt, dtype = gt.astype(jnp.int32), jnp.float32
    if gt.ndim == 0:
        raise ValueError(f"`gt_sorted` must have a pixel axis (..., P), got shape {gt.shape}.")
    fg_seen = jnp.cumsum(gt, axis=-1)
    total = jnp.sum(gt, axis=-1, keepdims=True)
    seen = jnp.arange(1, gt.shape[-1] + 1, dtype=gt.dtype)
    intersection = total - fg_seen  # |G \ S_i|
    union = total + seen - fg_seen  # |G ∪ S_i|
    jaccard = 1 - intersection.astype(dtype) / union.astype(dtype)
    return jnp.diff(jaccard, axis=-1, prepend=jnp.zeros_like(jaccard[..., :1]))


def _lovasz_sorted(errors: Array, fg: Array, counted: Array) -> Array:
    """``Delta_J^(errors)`` along the last axis over the counted pixels only.

    ``errors >= 0`` where ``counted``; ``fg`` and ``counted`` are bool of the same shape.
    """
    # -1 is below every counted error (all >= 0), so that no counted pixel, not even one
    # with error 0, ties with (and could sort after) a pixel that does not count.
    key = jax.lax.stop_gradient(jnp.where(counted, errors, -1))
    perm = jnp.argsort(key, axis=-1, descending=True, stable=True)
    errors_sorted = jnp.take_along_axis(jnp.where(counted, errors, 0), perm, axis=-1)
    fg_sorted = jnp.take_along_axis(fg & counted, perm, axis=-1)
    # A product and a sum, not jnp.dot: no reduced-precision matmul on accelerators.
    return jnp.sum(errors_sorted * lovasz_grad(fg_sorted), axis=-1)


def _check_int(labels: Array) -> None:
    if not jnp.issubdtype(labels.dtype, jnp.integer):
        raise ValueError(f"`labels` must be integer class indices, got dtype {labels.dtype}.")


def _check_per_image(per_image: bool, reduction: str) -> None:
    _check_reduction(reduction)
    if not per_image and reduction != "mean":
        raise ValueError(
            f"With per_image=False the loss is one Lovász loss over all the batch's pixels, "
            f"so `reduction` must be 'mean'; got {reduction!r}. Use per_image=True for a "
            f"'sum' or 'none' over images."
        )


def _classes(classes, num_classes: int) -> tuple[int, ...] | str:
    if isinstance(classes, str):
        if classes not in ("present", "all"):
            raise ValueError(
                f"`classes` must be 'present', 'all' or a sequence of class indices, got "
                f"{classes!r}."
            )
        return classes
    try:
        out = tuple(operator.index(c) for c in classes)
    except TypeError:
        raise ValueError(
            f"`classes` must be 'present', 'all' or a sequence of int class indices, got "
            f"{classes!r}."
        ) from None
    if not out or any(c < 0 or c >= num_classes for c in out):
        raise ValueError(
            f"`classes` must be a non-empty sequence of class indices in [0, {num_classes}), "
            f"got {classes!r}."
        )
    return out


def _reduce_images(loss: Array, per_image: bool, where, shape, reduction: str) -> Array:
    """The groups' losses ``f[G]`` reduced: the one value, or over the images (G = N)."""
    if not per_image:
        return loss[0]
    valid = _validity(where, shape)
    if valid is None:
        image_counts = jnp.ones(shape[:1], bool)
    else:
        image_counts = jnp.any(valid.reshape(shape[0], -1).astype(bool), axis=1)
    loss = jnp.where(image_counts, loss, 0)
    if reduction == "none":
        return loss
    total = jnp.sum(loss)
    if reduction == "sum":
        return total
    n = jnp.sum(image_counts).astype(loss.dtype)
    return jnp.where(n > 0, total / jnp.maximum(n, 1), 0)


def lovasz_softmax(
    logits: ArrayLike,
    labels: ArrayLike,
    *,
    per_image: bool = False,
    classes: str | Sequence[int] = "present",
    from_logits: bool = True,
    ignore_label: int | None = IGNORE_LABEL,
    where: ArrayLike | None = None,
    reduction: str = "mean",
) -> Array:
    r"""The Lovász-Softmax loss: the Lovász extension of the Jaccard loss of each class, averaged.

    With ``p = softmax(logits)`` (or ``logits`` itself when ``from_logits=False``), the
    errors of class ``c`` at the counted pixels are ``m_c = |1[y = c] - p[..., c]|``, and::

        loss = mean over classes c of  Delta_Jc^(m_c) = dot(sort_desc(m_c), lovasz_grad(gt_c))

    (see the module docstring for ``Delta_J^``), computed for all classes at once. A pixel
    *counts* when its label is in ``[0, K)``, is not ``ignore_label`` and ``where`` is True
    there; pixels that do not count change neither the value nor the gradient. Labels
    outside ``[0, K)`` are skipped (Berman's code treats them as background of every class).

    - ``classes="present"``: the mean over the classes that occur among the counted labels
      (of each image with ``per_image=True``), 0 when none does; ``"all"``: over all ``K``
      classes (an absent class's loss is its largest probability); a sequence of indices:
      over those (repeats count repeatedly), exactly Berman's ``classes`` argument.
    - ``per_image=False``: one loss over the counted pixels of the whole batch (Berman's
      flatten), and ``reduction`` must be ``"mean"``. ``per_image=True``: one loss per
      image; ``"mean"`` averages over the images that count (``where`` True for ``bool[N]``,
      any True pixel for ``bool[N, H, W]``, all with ``where=None``), where an image without
      counted pixels counts as 0 (Berman's ``mean``); ``"sum"`` adds the images' losses;
      ``"none"`` returns them, 0 for images that do not count.

    Berman's ``lovasz_softmax(probas, labels, classes='present', per_image=False,
    ignore=None)`` takes probabilities (here ``from_logits=False``) and ignores nothing by
    default (here ``IGNORE_LABEL``).

    Args:
      logits: ``f[N, H, W, K]`` (any ``[N, ..., K]``), ``K >= 2``; computed in at least
        float32. For one output (binary segmentation) use :func:`lovasz_hinge`.
      labels: ``int[N, H, W]``, the shape of ``logits`` without its class axis.
      per_image: one loss per image (True) or over the whole batch (False).
      classes: ``"present"``, ``"all"`` or a sequence of class indices.
      from_logits: whether ``logits`` are scores to softmax (True) or probabilities.
      ignore_label: the label of pixels to skip (``IGNORE_LABEL = 255``), or None.
      where: ``bool[N]`` (whole images) or ``bool[N, H, W]``; False entries do not count.
      reduction: ``"mean"``, or with ``per_image=True`` also ``"sum"`` or ``"none"``.

    Returns:
      ``f32[]``; ``f32[N]`` for ``per_image=True, reduction="none"``.

    >>> import jax.numpy as jnp
    >>> probs = jnp.array([[[[0.8, 0.2], [0.4, 0.6]]]])  # one image of two pixels, K = 2
    >>> labels = jnp.array([[[0, 1]]])
    >>> # class 0: errors [0.2, 0.4], sorted gt [0, 1], lovasz_grad [1/2, 1/2]: 0.4/2 + 0.2/2
    >>> # class 1: errors [0.2, 0.4], sorted gt [1, 0], lovasz_grad [1, 0]: 0.4
    >>> float(lovasz_softmax(probs, labels, from_logits=False))  # (0.3 + 0.4) / 2
    0.3499999940395355
    >>> loss = lovasz_softmax(probs, jnp.array([[[0, 255]]]), from_logits=False)  # class 0
    >>> round(float(loss), 6)  # errors [0.2], gt [1], lovasz_grad [1]
    0.2
    >>> perfect = jnp.array([[[[1.0, 0.0], [0.0, 1.0]]]])
    >>> float(lovasz_softmax(perfect, labels, from_logits=False))
    0.0

    References:
      Berman, Rannen Triki & Blaschko, "The Lovász-Softmax loss: A tractable surrogate for
      the optimization of the intersection-over-union measure in neural networks",
      CVPR 2018 (code: github.com/bermanmaxim/LovaszSoftmax, ``pytorch/lovasz_losses.py``).
    """
    _check_per_image(per_image, reduction)
    logits, labels = jnp.asarray(logits), jnp.asarray(labels)
    if logits.ndim < 2:
        raise ValueError(f"`logits` must be (N, H, W, K), got shape {logits.shape}.")
    num_classes = logits.shape[-1]
    if num_classes < 2:
        raise ValueError(
            f"`logits` must have K >= 2 class scores for lovasz_softmax, got shape "
            f"{logits.shape}; for one score per pixel (binary labels 0/1) use lovasz_hinge."
        )
    if labels.shape != logits.shape[:-1]:
        raise ValueError(
            f"`labels` must have the shape of `logits` without its class axis: `logits` "
            f"{logits.shape} wants `labels` {logits.shape[:-1]}, got {labels.shape}."
        )
    _check_int(labels)
    classes = _classes(classes, num_classes)
    counted = _counted(labels, num_classes, ignore_label, where)
    x = jnp.where(counted[..., None], _float(logits), 0)  # where: inf/NaN stay out
    probs = jax.nn.softmax(x, axis=-1) if from_logits else x
    groups = labels.shape[0] if per_image else 1
    cls = jnp.arange(num_classes) if isinstance(classes, str) else jnp.asarray(classes)
    probs = jnp.swapaxes(probs.reshape(groups, -1, num_classes)[..., cls], 1, 2)  # (G, C, P)
    counted = counted.reshape(groups, 1, -1)
    fg = (labels.astype(jnp.int32).reshape(groups, 1, -1) == cls[:, None]) & counted
    diff = fg.astype(probs.dtype) - probs
    # |diff| with derivative 0 at 0, as torch.abs (jnp.abs has 1 there).
    losses = _lovasz_sorted(jnp.sign(diff) * diff, fg, counted)  # (G, C)
    if classes == "present":
        present = jnp.any(fg, axis=-1)
        n = jnp.sum(present, axis=-1)
        total = jnp.sum(jnp.where(present, losses, 0), axis=-1)
        loss = jnp.where(n > 0, total / jnp.maximum(n, 1), 0)
    else:
        loss = jnp.mean(losses, axis=-1)
    return _reduce_images(loss, per_image, where, labels.shape, reduction)


def lovasz_hinge(
    logits: ArrayLike,
    labels: ArrayLike,
    *,
    per_image: bool = False,
    ignore_label: int | None = IGNORE_LABEL,
    where: ArrayLike | None = None,
    reduction: str = "mean",
) -> Array:
    r"""The Lovász hinge: the Lovász extension of the foreground's Jaccard loss, of hinge errors.

    Binary segmentation with one score ``z`` per pixel and labels 0/1: with signs
    ``s = 2y - 1`` the hinge errors are ``m = relu(1 - z * s)`` and (module docstring)::

        loss = Delta_J^(m) = dot(relu(sort_desc(1 - z * s)), lovasz_grad(y_sorted))

    for the foreground's set ``{y = 1}`` (Berman's ``lovasz_hinge_flat``). Errors are sorted
    after the ``relu``: this orders the positive errors as Berman's sort of ``1 - z * s``
    does, and the others add ``0 * g_i`` with gradient 0, wherever they sort. A pixel
    *counts* when its label is 0 or 1, is not ``ignore_label`` and ``where`` is True there;
    pixels that do not count change neither the value nor the gradient.

    ``per_image``, ``where`` and ``reduction`` are as in :func:`lovasz_softmax`. Berman's
    ``lovasz_hinge(logits, labels, per_image=True, ignore=None)`` defaults to one loss per
    image; ``per_image=False`` here, as for :func:`lovasz_softmax`.

    Args:
      logits: ``f[N, H, W, 1]`` or ``f[N, H, W]``, the foreground's score (before any
        sigmoid); computed in at least float32.
      labels: ``int[N, H, W]``, 0 (background) or 1 (foreground).
      per_image: one loss per image (True) or over the whole batch (False).
      ignore_label: the label of pixels to skip (``IGNORE_LABEL = 255``), or None.
      where: ``bool[N]`` (whole images) or ``bool[N, H, W]``; False entries do not count.
      reduction: ``"mean"``, or with ``per_image=True`` also ``"sum"`` or ``"none"``.

    Returns:
      ``f32[]``; ``f32[N]`` for ``per_image=True, reduction="none"``.

    >>> import jax.numpy as jnp
    >>> logits, labels = jnp.array([[[2.0, -0.5]]]), jnp.array([[[1, 0]]])
    >>> # errors 1 - z * s = [1 - 2, 1 - 0.5] = [-1, 0.5]; sorted gt [0, 1], grad [1/2, 1/2]
    >>> float(lovasz_hinge(logits, labels))  # 0.5 / 2 + relu(-1) / 2
    0.25
    >>> float(lovasz_hinge(jnp.array([[[2.0, -3.0]]]), labels))  # margins >= 1: no loss
    0.0

    References:
      Berman, Rannen Triki & Blaschko, "The Lovász-Softmax loss: A tractable surrogate for
      the optimization of the intersection-over-union measure in neural networks",
      CVPR 2018 (code: github.com/bermanmaxim/LovaszSoftmax, ``pytorch/lovasz_losses.py``).
    """
    _check_per_image(per_image, reduction)
    logits, labels = jnp.asarray(logits), jnp.asarray(labels)
    if logits.shape == labels.shape + (1,):
        logits = logits[..., 0]
    elif logits.shape != labels.shape or labels.ndim < 1:
        raise ValueError(
            f"`labels` must have the shape of `logits` (N, H, W) or (N, H, W, 1) without its "
            f"last axis, one label per score: `logits` {logits.shape}, `labels` "
            f"{labels.shape}. For K >= 2 class scores use lovasz_softmax."
        )
    _check_int(labels)
    counted = _counted(labels, 2, ignore_label, where)
    z = jnp.where(counted, _float(logits), 0)  # where: inf/NaN stay out
    fg = counted & (labels.astype(jnp.int32) == 1)
    signs = 2 * fg.astype(z.dtype) - 1
    errors = jax.nn.relu(1 - z * signs)
    groups = labels.shape[0] if per_image else 1
    loss = _lovasz_sorted(*(a.reshape(groups, -1) for a in (errors, fg, counted)))
    return _reduce_images(loss, per_image, where, labels.shape, reduction)
