"""Inference beyond one forward pass: sliding windows over any image size, and test-time
augmentation (flips and scales).

A network trained on crops predicts a large image (aerial, medical, a 4K street scene) window
by window: windows of a fixed size cover the image with the given stride, the last row and
column aligned to the border, and their class scores are blended where they overlap, each
weighted by a window-sized map (``"constant"``, or ``"gaussian"``: less weight near a
window's edges), then divided by the summed weights. This is mmsegmentation's ``slide`` test
mode and MONAI's ``sliding_window_inference`` (whose window placement, Gaussian map and
centred padding of images smaller than the window this follows exactly).

- :func:`slide` is pure JAX: it runs under ``jit``, with the batch sharded over devices,
  and is differentiable (a ``lax.scan`` over batches of windows: the network is traced
  once, whatever the number of windows).
- :func:`slide_host` cuts the windows on the host and accumulates there: one compiled call
  of a fixed shape (``window_fn``) serves every image size, and device memory is bounded by
  the window batch, not the image (:mod:`fcnjax.predict` uses it).
- :func:`augment` averages probabilities over flips and scales at the input resolution
  (mmsegmentation's ``aug_test``: resize, predict, resize the scores back).
- :func:`probabilities` and :func:`labels_from_scores` read scores: softmax and argmax for
  ``K >= 2`` classes; for a one-output (binary) network the sigmoid, the foreground's
  probability, and ``sigmoid > threshold`` (:mod:`fcnjax.inference_scores`).

>>> import jax.numpy as jnp
>>> window_starts(10, 4, 3)  # the last window ends at the border
(0, 3, 6)
>>> identity = lambda x: x  # a "network" whose scores are its input
>>> images = jnp.arange(2 * 7 * 9 * 2, dtype=jnp.float32).reshape(2, 7, 9, 2)
>>> bool(jnp.allclose(slide(identity, images, 4, 3, blend="gaussian", batch=2), images))
True
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from fcnjax.inference_scores import (
    check_threshold,
    labels_from_scores,
    probabilities,
    scores_from_probabilities,
)
from fcnjax.ops import per_dim

__all__ = [
    "BLENDS",
    "DEFAULTS",
    "augment",
    "blend_weights",
    "check_options",
    "check_threshold",
    "labels_from_scores",
    "probabilities",
    "scores_fn",
    "scores_from_probabilities",
    "slide",
    "slide_host",
    "window_starts",
]

BLENDS = ("constant", "gaussian")
# The options of :func:`scores_fn` (a config's ``inference`` section): none of it by default.
DEFAULTS = {
    "window": None,
    "stride": None,
    "blend": "constant",
    "batch": 4,
    "flip": False,
    "scales": (1.0,),
    "threshold": 0.5,  # one-output networks: label 1 where sigmoid(score) > threshold
}


def window_starts(size: int, window: int, stride: int) -> tuple[int, ...]:
    """The first index of each window along one axis of ``size`` (>= ``window``): every
    ``stride``, then one more ending at the border, as MONAI's ``dense_patch_slices`` (and
    mmsegmentation's ``slide_inference``) place them.

    >>> window_starts(512, 512, 341), window_starts(1000, 512, 341), window_starts(853, 512, 341)
    ((0,), (0, 341, 488), (0, 341))
    """
    if size < window:
        raise ValueError(f"`size` {size} is smaller than the window {window}; pad it first.")
    count = max(-(-(size - window) // stride), 0) + 1
    return tuple(min(i * stride, size - window) for i in range(count))


def blend_weights(window: Sequence[int], blend: str = "constant", sigma_scale: float = 0.125):
    """``float32 (h, w)``: how much each pixel of a window's scores counts where windows
    overlap. ``"gaussian"``: ``exp(-d^2 / (2 sigma^2))`` per axis, ``sigma = sigma_scale *
    size``, centred, at least 1e-3 (MONAI's ``compute_importance_map``).

    >>> blend_weights((3, 3), "gaussian").round(3)[1]
    array([0.029, 1.   , 0.029], dtype=float32)
    """
    if blend not in BLENDS:
        raise ValueError(f"`blend` must be one of {BLENDS}; got {blend!r}.")
    h, w = window
    if blend == "constant":
        return np.ones((h, w), np.float32)
    axes = []
    for n in (h, w):
        x = np.arange(n, dtype=np.float64) - (n - 1) / 2.0
        axes.append(np.exp(x**2 / (-2.0 * (sigma_scale * n) ** 2)).astype(np.float32))
    weights = axes[0][:, None] * axes[1][None, :]
    return np.maximum(weights, max(float(weights.min()), 1e-3)).astype(np.float32)


def _geometry(shape, window, stride, batch: int):
    """``(window, stride, padding)`` checked against an image ``shape`` ``(N, H, W, C)``;
    padding centres an image smaller than the window in it (MONAI's)."""
    if len(shape) != 4:
        raise ValueError(f"`images` must be (N, H, W, C); got shape {tuple(shape)}.")
    window = per_dim("window", window, 2, 1)
    stride = per_dim("stride", stride if stride is not None else window, 2, 1)
    if any(s > w for s, w in zip(stride, window)):
        raise ValueError(
            f"`stride` {stride} must not exceed the window {window}: pixels between windows "
            "would get no score."
        )
    if not isinstance(batch, (int, np.integer)) or batch <= 0:
        raise ValueError(f"`batch` must be a positive int; got {batch!r}.")
    diff = [max(w - s, 0) for w, s in zip(window, shape[1:3])]
    padding = [(d // 2, d - d // 2) for d in diff]
    return window, stride, padding


def _starts(shape, window, stride, padding) -> list[tuple[int, int]]:
    h, w = (n + a + b for n, (a, b) in zip(shape[1:3], padding))
    rows, cols = window_starts(h, window[0], stride[0]), window_starts(w, window[1], stride[1])
    return [(y, x) for y in rows for x in cols]


def _check_scores(shape, window, n: int) -> None:
    if len(shape) != 4 or tuple(shape[:3]) != (n, *window):
        raise ValueError(
            f"the network must give (N, h, w, K) scores at its input's size; windows of "
            f"{(n, *window)} gave {tuple(shape)}."
        )


def slide(
    apply_fn: Callable[[jax.Array], jax.Array],
    images: jax.typing.ArrayLike,
    window: int | Sequence[int],
    stride: int | Sequence[int] | None = None,
    *,
    blend: str = "constant",
    batch: int = 1,
    sigma_scale: float = 0.125,
    pad_value: float = 0.0,
) -> jax.Array:
    """Class scores of whole images from windows: ``(N, H, W, C) -> float32 (N, H, W, K)``.

    Args:
      apply_fn: the network, ``(B, h, w, C) -> (B, h, w, K)`` scores (logits) at its input's
        size, e.g. ``functools.partial(model.apply, variables, train=False)``.
      images: ``(N, H, W, C)``, any size; one smaller than the window is centred in it,
        padded with ``pad_value``, and its scores cropped back.
      window: ``(h, w)`` (or one int) of each window.
      stride: the step between windows (default: the window, no overlap); at most the
        window. The last row and column of windows end at the border.
      blend: ``"constant"`` or ``"gaussian"`` weights (:func:`blend_weights`).
      batch: window positions per network call; the network sees ``batch * N`` windows.
      sigma_scale: the Gaussian's sigma as a fraction of the window.
      pad_value: what an image smaller than the window is padded with.

    Returns:
      ``float32 (N, H, W, K)``: the weighted mean of the windows' scores at every pixel.

    Under ``jit`` the image size is static: each size compiles once. For many sizes with
    one compiled network, see :func:`slide_host`.
    """
    images = jnp.asarray(images)
    window, stride, padding = _geometry(images.shape, window, stride, batch)
    n, c = images.shape[0], images.shape[-1]
    if any(a or b for a, b in padding):
        images = jnp.pad(images, ((0, 0), *padding, (0, 0)), constant_values=pad_value)
    starts = _starts((n, *images.shape[1:3]), window, stride, [(0, 0), (0, 0)])
    groups = -(-len(starts) // batch)
    extra = groups * batch - len(starts)  # the last group is filled with weightless repeats
    positions = jnp.asarray(starts + starts[-1:] * extra, jnp.int32).reshape(groups, batch, 2)
    counted = jnp.asarray([1.0] * len(starts) + [0.0] * extra).reshape(groups, batch)
    scores = jax.eval_shape(apply_fn, jax.ShapeDtypeStruct((batch * n, *window, c), images.dtype))
    _check_scores(scores.shape, window, batch * n)
    k = scores.shape[-1]
    weights = jnp.asarray(blend_weights(window, blend, sigma_scale))

    def crop(y, x):
        return lax.dynamic_slice(images, (0, y, x, 0), (n, *window, c))

    def add(array, at, values):  # array[at : at + values.shape] += values
        part = lax.dynamic_slice(array, at, values.shape)
        return lax.dynamic_update_slice(array, part + values, at)

    def step(carry, group):
        where, ok = group
        windows = jax.vmap(crop)(where[:, 0], where[:, 1]).reshape(batch * n, *window, c)
        logits = apply_fn(windows).astype(jnp.float32).reshape(batch, n, *window, k)

        def one(i, carry):
            acc, norm = carry
            y, x, weight = where[i, 0], where[i, 1], weights * ok[i]
            acc = add(acc, (0, y, x, 0), logits[i] * weight[None, :, :, None])
            return acc, add(norm, (y, x), weight)

        return lax.fori_loop(0, batch, one, carry), None

    h, w = images.shape[1:3]
    init = (jnp.zeros((n, h, w, k), jnp.float32), jnp.zeros((h, w), jnp.float32))
    (acc, norm), _ = lax.scan(step, init, (positions, counted))
    out = acc / norm[None, :, :, None]
    (top, bottom), (left, right) = padding
    return out[:, top : h - bottom, left : w - right]


def slide_host(
    window_fn: Callable[[np.ndarray], Any],
    images: np.ndarray,
    window: int | Sequence[int],
    stride: int | Sequence[int] | None = None,
    *,
    blend: str = "constant",
    batch: int = 1,
    sigma_scale: float = 0.125,
    pad_value: float = 0.0,
    progress: Callable[[int], Any] | None = None,
) -> np.ndarray:
    """:func:`slide` with the windows cut and the scores summed on the host (NumPy).

    ``window_fn`` takes a fixed ``(batch * N, h, w, C)`` array of windows (the last call is
    filled up with repeats, whose scores are dropped) and returns their ``(batch * N, h, w,
    K)`` scores: one compiled function serves every image size, and device memory holds only
    a window batch. ``images`` stay on the host (uint8 is fine: ``window_fn`` can normalise
    them). ``progress(k)`` is called after each ``k`` windows. Same arguments and result as
    :func:`slide` otherwise.
    """
    images = np.asarray(images)
    window, stride, padding = _geometry(images.shape, window, stride, batch)
    n, c = images.shape[0], images.shape[-1]
    if any(a or b for a, b in padding):
        pad_value = np.asarray(pad_value).astype(images.dtype)
        images = np.pad(images, ((0, 0), *padding, (0, 0)), constant_values=pad_value)
    h, w = images.shape[1:3]
    starts = _starts((n, h, w), window, stride, [(0, 0), (0, 0)])
    weights = blend_weights(window, blend, sigma_scale)
    acc, norm = None, np.zeros((h, w), np.float32)
    for i in range(0, len(starts), batch):
        group = starts[i : i + batch]
        full = group + group[-1:] * (batch - len(group))
        windows = np.stack([images[:, y : y + window[0], x : x + window[1]] for y, x in full])
        logits = np.asarray(window_fn(windows.reshape(batch * n, *window, c)), np.float32)
        _check_scores(logits.shape, window, batch * n)
        logits = logits.reshape(batch, n, *window, -1)
        if acc is None:
            acc = np.zeros((n, h, w, logits.shape[-1]), np.float32)
        for (y, x), scores in zip(group, logits):
            acc[:, y : y + window[0], x : x + window[1]] += scores * weights[None, :, :, None]
            norm[y : y + window[0], x : x + window[1]] += weights
        if progress is not None:
            progress(len(group))
    acc /= norm[None, :, :, None]
    (top, bottom), (left, right) = padding
    return acc[:, top : h - bottom, left : w - right]


def num_windows(shape: Sequence[int], window, stride=None) -> int:
    """How many windows :func:`slide` places over images of ``shape`` ``(N, H, W, C)``."""
    window, stride, padding = _geometry(shape, window, stride, 1)
    return len(_starts(shape, window, stride, padding))


def augment(
    scores_fn: Callable[[jax.Array], jax.Array],
    images: jax.typing.ArrayLike,
    *,
    flip: bool = False,
    scales: Sequence[float] = (1.0,),
) -> jax.Array:
    """Test-time augmentation: probabilities averaged over horizontal flips and ``scales``,
    at the input resolution: ``(N, H, W, C) -> float32 (N, H, W, K)``.

    For each scale the images are resized (bilinearly) to ``round(scale * size)``, scored by
    ``scores_fn`` (``(N, h, w, C) -> (N, h, w, K)`` logits: the network, or :func:`slide`
    around it), the scores resized back to ``(H, W)`` and turned into probabilities
    (:func:`probabilities`: the softmax; for ``K = 1`` the sigmoid, the foreground's); with
    ``flip`` also for the mirrored images, mirrored back. mmsegmentation's ``aug_test``.

    >>> import jax.numpy as jnp
    >>> x = jnp.zeros((1, 4, 6, 3))
    >>> augment(lambda v: v[..., :2], x, flip=True, scales=(0.5, 1.0)).shape
    (1, 4, 6, 2)
    """
    images = jnp.asarray(images)
    if not scales or any(
        not (isinstance(s, (int, float)) and math.isfinite(s) and s > 0) for s in scales
    ):
        raise ValueError(f"`scales` must be positive numbers; got {tuple(scales)!r}.")
    n, h, w, c = images.shape
    total = None
    for scale in scales:
        size = (max(round(h * scale), 1), max(round(w * scale), 1))
        scaled = images if size == (h, w) else jax.image.resize(images, (n, *size, c), "bilinear")
        for mirrored in (False, True) if flip else (False,):
            x = scaled[:, :, ::-1] if mirrored else scaled
            logits = jnp.asarray(scores_fn(x), jnp.float32)
            if mirrored:
                logits = logits[:, :, ::-1]
            if logits.shape[1:3] != (h, w):
                logits = jax.image.resize(logits, (n, h, w, logits.shape[-1]), "bilinear")
            probs = probabilities(logits)
            total = probs if total is None else total + probs
    return total / (len(scales) * (2 if flip else 1))


def check_options(options: Mapping[str, Any]) -> dict[str, Any]:
    """The options of :func:`scores_fn` (a config's ``inference`` section), checked and
    completed from :data:`DEFAULTS`: a one-element ``window``/``stride`` is square. Raises
    ValueError naming the option (as ``inference.<name>``).

    >>> check_options({"window": (512,), "flip": True})["window"]
    (512, 512)
    """
    unknown = sorted(set(options) - set(DEFAULTS))
    if unknown:
        raise ValueError(f"unknown `inference` options {unknown}; valid: {sorted(DEFAULTS)}.")
    out = {**DEFAULTS, **options}
    for key in ("window", "stride"):
        if out[key] is not None:
            value = tuple(out[key]) if isinstance(out[key], (tuple, list)) else out[key]
            value = value * 2 if isinstance(value, tuple) and len(value) == 1 else value
            out[key] = per_dim(f"inference.{key}", value, 2, 1)
    if out["stride"] is not None and out["window"] is None:
        raise ValueError("`inference.stride` needs `inference.window`.")
    if out["window"] is not None:
        stride = out["stride"] or out["window"]
        if any(s > w for s, w in zip(stride, out["window"])):
            raise ValueError(
                f"`inference.stride` {stride} must not exceed `inference.window` "
                f"{out['window']}: pixels between windows would get no score."
            )
    if out["blend"] not in BLENDS:
        raise ValueError(f"`inference.blend` must be one of {BLENDS}; got {out['blend']!r}.")
    if isinstance(out["batch"], bool) or not isinstance(out["batch"], int) or out["batch"] <= 0:
        raise ValueError(f"`inference.batch` must be a positive int; got {out['batch']!r}.")
    if not isinstance(out["flip"], bool):
        raise ValueError(f"`inference.flip` must be True or False; got {out['flip']!r}.")
    scales = tuple(out["scales"]) if isinstance(out["scales"], (tuple, list)) else ()
    if not scales or not all(_positive(s) for s in scales):
        raise ValueError(f"`inference.scales` must be positive numbers; got {out['scales']!r}.")
    out["scales"] = tuple(float(s) for s in scales)
    out["threshold"] = check_threshold(out["threshold"], "inference.threshold")
    return out


def _positive(s: Any) -> bool:
    return isinstance(s, (int, float)) and not isinstance(s, bool) and math.isfinite(s) and s > 0


def scores_fn(
    apply_fn: Callable[[jax.Array], jax.Array], options: Mapping[str, Any] | None = None
) -> Callable[[jax.Array], jax.Array]:
    """``apply_fn`` (images -> logits) with the ``options`` of a config's ``inference``
    section: :func:`slide` when ``window`` is set, :func:`augment` when ``flip`` or
    ``scales`` ask for it, returning :func:`scores_from_probabilities` of the averaged
    probabilities (their log; for one output the log-odds), so that
    :func:`labels_from_scores` and :func:`probabilities` read them as logits; ``apply_fn``
    itself when neither. ``threshold`` is not used here: it is the labels' (pass
    ``options["threshold"]`` to :func:`labels_from_scores`). Pure: runs under ``jit``.
    """
    o = check_options(options or {})
    fn = apply_fn
    if o["window"] is not None:
        fn = functools.partial(
            slide,
            apply_fn,
            window=o["window"],
            stride=o["stride"],
            blend=o["blend"],
            batch=o["batch"],
        )
    if o["flip"] or o["scales"] != (1.0,):
        windows = fn

        def fn(images):
            probs = augment(windows, images, flip=o["flip"], scales=o["scales"])
            return scores_from_probabilities(probs)

    return fn
