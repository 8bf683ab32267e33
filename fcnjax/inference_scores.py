"""What a network's scores say: probabilities and labels, for ``K >= 2`` classes (softmax,
argmax) and for one output (binary segmentation: the sigmoid of the score is the
probability of the foreground, label 1; segmentation_models_pytorch's ``mode="binary"``).
Re-exported by :mod:`fcnjax.inference`; every prediction path reads scores through these.

>>> import jax.numpy as jnp
>>> labels_from_scores(jnp.array([[0.2, 1.5, -1.0]]))  # K = 3: the argmax
Array([1], dtype=int32)
>>> labels_from_scores(jnp.array([[-0.5], [0.0], [0.5]]))  # K = 1: sigmoid(score) > 0.5
Array([0, 0, 1], dtype=int32)
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

__all__ = ["check_threshold", "labels_from_scores", "probabilities", "scores_from_probabilities"]

_TINY = float(np.finfo(np.float32).tiny)  # what a probability is clipped to away from 0


def check_threshold(threshold: Any, name: str = "threshold") -> float:
    """``threshold`` as a float, or a ValueError naming ``name``: it must be a number
    strictly between 0 and 1 (at 0 or 1 the scores would not matter: every pixel would be
    foreground, or none), a Python or NumPy number (a constant, also under ``jit``).

    >>> check_threshold(0.3)
    0.3
    """
    if isinstance(threshold, jax.Array):
        raise ValueError(
            f"`{name}` must be a Python number, a constant of the computation (under jit: "
            f"static, or closed over); got a JAX array {threshold!r}."
        )
    number = isinstance(threshold, (int, float, np.integer, np.floating))
    if not number or isinstance(threshold, (bool, np.bool_)) or not 0 < threshold < 1:
        raise ValueError(
            f"`{name}` must be a number between 0 and 1, exclusive (the foreground "
            f"probability above which a pixel of a one-output network is labelled 1); "
            f"got {threshold!r}."
        )
    return float(threshold)


def _classes(scores: jax.Array) -> int:
    if scores.ndim < 1 or scores.shape[-1] < 1:
        raise ValueError(
            "`scores` must be (..., K): the scores of K >= 1 outputs on the last axis "
            f"(K = 1: one output, binary); got shape {scores.shape}."
        )
    return scores.shape[-1]


def probabilities(scores: ArrayLike) -> jax.Array:
    """``f[..., K]`` scores -> ``f[..., K]`` probabilities: the softmax over the last axis
    for ``K >= 2``; for ``K = 1`` the sigmoid, the probability of the foreground (label 1;
    the background's is ``1 - p``, not stored).

    >>> import jax.numpy as jnp
    >>> probabilities(jnp.array([[0.0, 0.0]])), probabilities(jnp.array([[0.0]]))
    (Array([[0.5, 0.5]], dtype=float32), Array([[0.5]], dtype=float32))
    """
    scores = jnp.asarray(scores)
    if _classes(scores) == 1:
        return jax.nn.sigmoid(scores)
    return jax.nn.softmax(scores, axis=-1)


def labels_from_scores(scores: ArrayLike, threshold: float = 0.5) -> jax.Array:
    """``f[..., K]`` scores -> ``int32[...]`` labels: the argmax for ``K >= 2`` (the first
    of equal scores; ``threshold`` is unused); for ``K = 1``, 1 where ``sigmoid(score) >
    threshold``, else 0.

    ``K = 1`` is computed as ``score > logit(threshold)`` (``logit(t) = log(t / (1 - t))``,
    in float64 on the host): the same in exact arithmetic, but exact also where float32's
    sigmoid rounds to 0 or 1 (a score of 20 against a threshold of ``1 - 1e-12``). A
    pixel exactly at the threshold is 0 (``score 0`` at 0.5); a NaN score is 0.

    Args:
      scores: ``(..., K)``, the network's logits (or what :func:`scores_from_probabilities`
        gives after averaging probabilities).
      threshold: in ``(0, 1)``, exclusive: a Python number, a constant under ``jit``.

    Raises:
      ValueError: ``scores`` without a last axis of at least 1, or a ``threshold`` outside
        ``(0, 1)`` (each named).

    >>> import jax.numpy as jnp
    >>> labels_from_scores(jnp.array([[-2.0], [-1.0]]), threshold=0.2)  # logit(0.2) = -1.39
    Array([0, 1], dtype=int32)
    """
    scores = jnp.asarray(scores)
    threshold = check_threshold(threshold)
    if _classes(scores) > 1:
        return jnp.argmax(scores, axis=-1).astype(jnp.int32)
    logit = math.log(threshold) - math.log1p(-threshold)
    score = scores[..., 0].astype(jnp.promote_types(scores.dtype, jnp.float32))  # bf16: exact
    return (score > logit).astype(jnp.int32)


def scores_from_probabilities(probs: ArrayLike) -> jax.Array:
    """``f[..., K]`` probabilities -> scores that :func:`probabilities` and
    :func:`labels_from_scores` read back as them: ``log(p)`` for ``K >= 2`` (softmax
    undoes it); for ``K = 1`` the log-odds ``log(p) - log(1 - p)`` (the sigmoid undoes it).
    ``p`` and ``1 - p`` are clipped at float32's smallest normal number (1.2e-38), so that
    0 and 1 give finite scores, about -87 and 87 (a loss of them stays finite), on the right
    side of every threshold in ``[1.2e-38, 1)``.

    What test-time augmentation returns after averaging probabilities
    (:func:`fcnjax.inference.scores_fn`, :class:`fcnjax.predict.Predictor`).

    >>> import jax.numpy as jnp
    >>> p = jnp.array([[0.1], [0.5], [0.9]])
    >>> bool(jnp.allclose(probabilities(scores_from_probabilities(p)), p))
    True
    """
    probs = jnp.asarray(probs, jnp.float32)
    if _classes(probs) > 1:
        return jnp.log(jnp.maximum(probs, _TINY))
    return jnp.log(jnp.maximum(probs, _TINY)) - jnp.log(jnp.maximum(1.0 - probs, _TINY))
