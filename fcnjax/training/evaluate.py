"""Evaluation over a whole split: a model, its variables, a source and a transform ->
the task's metrics, summed over every example (never averaged per batch).

>>> import jax, jax.numpy as jnp, numpy as np
>>> from fcnjax import data, models
>>> from fcnjax.training import tasks
>>> model = models.get("fcn8s", num_classes=3, width=0.0625, dropout=0.0)
>>> variables = jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
>>> images, masks = np.zeros((3, 32, 32, 3), np.uint8), np.ones((3, 32, 32), np.uint8)
>>> source = data.NumpyArrays(images, masks, num_classes=3)
>>> task = tasks.Segmentation(num_classes=3)
>>> transform = data.EvalTransform(mode="none")
>>> results = evaluate(model, variables, source, transform, task, batch_size=2)
>>> results["confusion_matrix"][1]  # 3 images of class 1, predicted 0; the padding uncounted
[3072, 0, 0]
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import tqdm.auto

from fcnjax import data as data_lib
from fcnjax import inference as inference_lib
from fcnjax.training import parallel, steps
from fcnjax.training.tasks import Task

__all__ = ["Evaluator", "check_sizes", "evaluate"]


class Evaluator:
    """A compiled evaluation of one model on one source, to call again as training goes.

    Args:
      model: the network (``model.apply(variables, images, train=False)``).
      source: the examples to evaluate (every one exactly once).
      transform: an :class:`~fcnjax.data.EvalTransform`.
      task: a :mod:`fcnjax.training.tasks` task (its sums and metrics).
      batch_size: the global batch; a multiple of the devices.
      placement: a :mod:`fcnjax.training.parallel` placement (default: ``jit`` over every device).
      loader: options of :func:`fcnjax.data.eval_loader` (``workers``, ``threads``, ...).
      inference: how an image is scored (a config's ``inference`` section: sliding windows,
        flips, scales; :func:`fcnjax.inference.scores_fn`); default: one forward pass.
    """

    def __init__(
        self,
        model: nn.Module,
        source: Any,
        transform: data_lib.EvalTransform,
        task: Task,
        batch_size: int,
        placement: parallel.Placement | None = None,
        loader: Mapping[str, Any] | None = None,
        inference: Mapping[str, Any] | None = None,
    ):
        self.placement = placement if placement is not None else parallel.get("jit")
        self.placement.check_batch(batch_size, "eval_batch_size")
        self.source, self.transform, self.task = source, transform, task
        self.batch_size, self.loader = batch_size, dict(loader or {})
        apply_fn = _scored(model.apply, inference)
        step = functools.partial(steps.eval_step, apply_fn=apply_fn, task=task)
        self._step = self.placement.compile(step)

    def __call__(self, variables: Any, progress: bool = False) -> dict[str, Any]:
        """Metrics of ``variables``, already placed (:meth:`Placement.place`).

        Segmentation: ``mean_iou``, ``pixel_accuracy``, ``mean_accuracy``,
        ``frequency_weighted_iou``, ``per_class_iou``, ``confusion_matrix`` (rows = ground
        truth), ``loss``; the autoencoder: ``loss``. ``progress``: a progress bar of batches
        (on stderr; a widget in notebooks).
        """
        batches = data_lib.eval_loader(self.source, self.batch_size, self.transform, **self.loader)
        names = getattr(self.source, "class_names", None)
        sums = self.task.accumulator(names)
        total = -(-len(self.source) // self.batch_size)
        bar = tqdm.auto.tqdm(total=total, desc="evaluate", unit="batch", disable=not progress)
        for batch in batches:
            sums.update(self.placement.fetch(self._step(variables, self.placement.shard(batch))))
            bar.update()
        bar.close()
        return sums.compute()


def evaluate(
    model: nn.Module,
    variables: Any,
    source: Any,
    transform: data_lib.EvalTransform,
    task: Task,
    batch_size: int,
    placement: parallel.Placement | None = None,
    loader: Mapping[str, Any] | None = None,
    inference: Mapping[str, Any] | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """One evaluation of host ``variables``: :class:`Evaluator` (same arguments) called once."""
    evaluator = Evaluator(model, source, transform, task, batch_size, placement, loader, inference)
    return evaluator(evaluator.placement.place(variables), progress)


def _scored(apply: Any, options: Mapping[str, Any] | None) -> Any:
    """``model.apply`` scoring images as ``options`` say (:func:`fcnjax.inference.scores_fn`)."""
    if not options or inference_lib.check_options(options) == inference_lib.DEFAULTS:
        return apply

    def scored(variables, images, train=False):
        net = functools.partial(apply, variables, train=train)
        return inference_lib.scores_fn(net, options)(images)

    return scored


def check_sizes(
    source: Any,
    transform: data_lib.EvalTransform,
    batch_size: int = 1,
    *,
    count: int | None = None,
    settings: Mapping[str, str] | None = None,
) -> None:
    """Raises :class:`~fcnjax.data.DataError` where ``transform`` cannot take the first
    ``count`` (default: every) example of ``source`` in batches of ``batch_size``, so that
    a run finds out before it trains rather than at its first evaluation.

    Mode ``"pad"``: an image larger than ``transform.size`` (the message names the first,
    its size, how many there are, and the size that fits them all). Mode ``"none"``
    with batches of more than one: images of different sizes (a batch stacks them; one
    at a time, any sizes work). ``"resize"`` takes anything.

    Sizes are read without decoding where the source can (its ``image_size(i)``: a file
    header, the annotations, the array's shape), else by decoding each example.
    ``settings`` names the knobs in the message, e.g. ``{"size": "input.eval_size",
    "mode": "input.eval_mode", "batch_size": "eval_batch_size"}`` (default: ``size``,
    ``mode`` and ``batch_size``).

    >>> import numpy as np
    >>> from fcnjax import data
    >>> source = data.NumpyArrays(np.zeros((2, 40, 48, 3), np.uint8), num_classes=None)
    >>> check_sizes(source, data.EvalTransform((40, 48)))
    >>> check_sizes(source, data.EvalTransform((32, 64)))
    Traceback (most recent call last):
    ...
    fcnjax.data.core.DataError: <ndarray (2, 40, 48, 3)>[0]: 40x48 is larger than the \
evaluation size 32x64 (2 of 2 larger); set `size` to at least (40, 64), or `mode` \
to 'resize'.
    """
    mode = transform.mode
    if mode == "resize" or (mode == "none" and batch_size <= 1):
        return
    names = {k: f"`{k}`" for k in ("size", "mode", "batch_size")}
    names.update({k: f"`{v}`" for k, v in (settings or {}).items()})
    n = len(source) if count is None else min(count, len(source))
    sizes = [_image_size(source, i) for i in range(n)]
    if not sizes:
        return
    fits = tuple(max(s[d] for s in sizes) for d in (0, 1))
    if mode == "pad":
        bound = transform.size
        big = [i for i, s in enumerate(sizes) if s[0] > bound[0] or s[1] > bound[1]]
        if big:
            (h, w), first = sizes[big[0]], source.describe(big[0])
            raise data_lib.DataError(
                f"{first}: {h}x{w} is larger than the evaluation size {bound[0]}x{bound[1]} "
                f"({len(big)} of {n} larger); set {names['size']} to at least "
                f"({max(fits[0], bound[0])}, {max(fits[1], bound[1])}), or {names['mode']} to "
                "'resize'."
            )
        return
    other = next((i for i, s in enumerate(sizes) if s != sizes[0]), None)
    if other is not None:
        (h0, w0), (h, w) = sizes[0], sizes[other]
        raise data_lib.DataError(
            f"{names['mode']}='none' keeps every image's size, but evaluation batches of "
            f"{batch_size} ({names['batch_size']}) stack images of one size, and they differ: "
            f"{source.describe(0)} is {h0}x{w0}, {source.describe(other)} {h}x{w}. Set "
            f"{names['batch_size']} to 1, or {names['mode']} to 'resize', or to 'pad' with "
            f"{names['size']} at least {fits}."
        )


def _image_size(source: Any, index: int) -> tuple[int, int]:
    """``(H, W)`` of example ``index``, without decoding it where the source can tell."""
    read = getattr(source, "image_size", None)
    if read is not None:
        h, w = read(index)
    elif isinstance(source, data_lib.Subset):  # what verify keeps: ask the source it wraps
        return _image_size(source.source, int(source.indices[index]))
    else:
        h, w = source[index]["image"].shape[:2]
    return int(h), int(w)
