"""Semantic segmentation: every pixel classified into one of ``num_classes`` (FCN, SegNet,
U-Net), with FCN's four metrics; the class weights resolved from the config (given, or
SegNet's median frequency balancing over the training masks); ``predictions.png``.

>>> import jax.numpy as jnp
>>> task = Segmentation(num_classes=3)
>>> batch = {"image": jnp.zeros((2, 4, 4, 3)), "mask": jnp.ones((2, 4, 4), jnp.int32)}
>>> total, count = task.loss_sums(jnp.zeros((2, 4, 4, 3)), batch)  # uniform scores: log 3
>>> round(float(total / count), 4), int(count)
(1.0986, 32)
>>> acc = task.accumulator()
>>> acc.update(task.eval_sums(jnp.zeros((2, 4, 4, 3)), batch))
>>> acc.compute()["pixel_accuracy"]  # argmax of equal scores is class 0; the truth is 1
0.0
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from fcnjax import data as data_lib
from fcnjax import losses, metrics, ops, viz
from fcnjax.labels import IGNORE_LABEL
from fcnjax.training.settings import ConfigError
from fcnjax.training.tasks._base import Batch, Context, EvalAccumulator

__all__ = ["AUX_WEIGHT", "Segmentation", "make"]

log = logging.getLogger("fcnjax.training.tasks.segmentation")
# The auxiliary head's share of the loss in torchvision's segmentation recipe.
AUX_WEIGHT = 0.5


@dataclasses.dataclass(frozen=True)
class Segmentation:
    """Per-pixel classification into ``num_classes`` (FCN, SegNet, U-Net).

    Loss: softmax cross-entropy, skipping ``ignore_label``, optionally class-weighted
    (SegNet's median-frequency balancing), averaged over the counted (weighted) pixels or,
    with ``reduction="sum"``, summed (the FCN paper's un-normalised loss). Metrics: FCN's
    four (pixel accuracy, mean accuracy, mean IoU, frequency-weighted IoU), per-class IoU
    and the loss, from one confusion matrix summed over the split.
    """

    num_classes: int
    reduction: str = "mean"
    class_weights: tuple[float, ...] | None = None
    ignore_label: int = IGNORE_LABEL

    name: ClassVar[str] = "segmentation"
    metric_names: ClassVar[tuple[str, ...]] = (
        "mean_iou",
        "pixel_accuracy",
        "mean_accuracy",
        "frequency_weighted_iou",
        "loss",
    )

    def __post_init__(self):
        if self.reduction not in ("mean", "sum"):
            raise ValueError(f"`reduction` must be 'mean' or 'sum'; got {self.reduction!r}.")
        if self.class_weights is not None and len(self.class_weights) != self.num_classes:
            raise ValueError(
                f"`class_weights` needs {self.num_classes} weights (one per class); "
                f"got {len(self.class_weights)}."
            )

    def loss_sums(
        self, outputs: jax.Array | Mapping[str, jax.Array], batch: Batch
    ) -> tuple[jax.Array, jax.Array]:
        """``f[N, H, W, K]`` scores and ``batch['mask']`` -> ``(total, normaliser)``.

        ``outputs`` may be ``{"out": scores, "aux": scores}`` (a model's auxiliary head in
        training, :class:`fcnjax.models.FCNResNet`): the loss is then torchvision's
        segmentation recipe, ``loss(out) + AUX_WEIGHT * loss(aux)``.
        """
        if isinstance(outputs, Mapping):
            total, norm = self.loss_sums(outputs["out"], batch)
            aux, _ = self.loss_sums(outputs["aux"], batch)  # the same pixels: one normaliser
            return total + AUX_WEIGHT * aux, norm
        where = batch.get("valid")
        weights = None if self.class_weights is None else jnp.asarray(self.class_weights)
        kw = dict(ignore_label=self.ignore_label, class_weights=weights, where=where)
        total = losses.softmax_cross_entropy(outputs, batch["mask"], reduction="sum", **kw)
        if self.reduction == "sum":
            return total, jnp.ones((), jnp.float32)
        counted = losses.pixel_weights(batch["mask"], self.num_classes, **kw)
        return total, jnp.sum(counted)

    def eval_sums(self, outputs: jax.Array, batch: Batch) -> dict[str, jax.Array]:
        """The loss sums and ``confusion_matrix`` (``int32[K, K]``, rows = ground truth)."""
        total, norm = self.loss_sums(outputs, batch)
        confusion = metrics.confusion_matrix(
            batch["mask"],
            jnp.argmax(outputs, -1),
            self.num_classes,
            ignore_label=self.ignore_label,
            where=batch.get("valid"),
        )
        return {"loss_total": total, "loss_norm": norm, "confusion_matrix": confusion}

    def accumulator(self, class_names: Sequence[str] | None = None) -> EvalAccumulator:
        names = list(class_names) if class_names is not None else None
        if names is not None and len(names) != self.num_classes:
            names = None  # e.g. a source naming more classes than are trained
        return EvalAccumulator(metrics.ConfusionMatrix(self.num_classes, names))

    def info(self) -> dict[str, Any]:
        weights = list(self.class_weights) if self.class_weights is not None else None
        return {"task": self.name, "num_classes": self.num_classes, "class_weights": weights}

    def write_pictures(
        self,
        model: nn.Module,
        variables: Any,
        source: Any,
        transform: Any,
        workdir: Path,
        outputs: Mapping[str, Any],
    ) -> list[Path]:
        """``predictions.png``: the first ``outputs['num_examples']`` examples as image |
        ground truth | prediction, predictions at each image's own size.

        The examples may differ in size (``transform.mode="none"``): those of one size go
        through the model together."""
        n = min(outputs["num_examples"], len(source))
        raws = [source[i] for i in range(n)]
        images = [transform(raw, source.describe(i))["image"] for i, raw in enumerate(raws)]
        apply = jax.jit(functools.partial(model.apply, train=False))
        scores = [None] * n
        for shape in dict.fromkeys(image.shape for image in images):
            same = [i for i, image in enumerate(images) if image.shape == shape]
            batch = np.asarray(apply(variables, np.stack([images[i] for i in same])))
            for i, out in zip(same, batch):
                scores[i] = out
        predictions = []
        for raw, out in zip(raws, scores):
            h, w = raw["image"].shape[:2]
            if transform.mode == "resize":
                out = ops.resize_logits(out, (h, w))
            predictions.append(out.argmax(-1)[:h, :w])
        truths = [raw["mask"] for raw in raws] if all("mask" in r for r in raws) else None
        small = max(r["image"].shape[0] for r in raws) <= 128
        figure = viz.segmentation_figure(
            [raw["image"] for raw in raws],
            predictions,
            truths,
            class_names=source.class_names,
            scale=2 if small else 1,
        )
        return [viz.save_png(workdir / "predictions.png", figure)]


def make(loss: Mapping[str, Any], context: Context) -> Segmentation:
    """The task from the config's ``loss`` section: its classes checked against the data's
    (``context``), its class weights resolved."""
    k = context.num_classes if context.num_classes is not None else context.data_classes
    if k is None:
        raise ConfigError("set `model.num_classes`: the data source does not give it.")
    if context.data_classes is not None and k != context.data_classes:
        # Pixels of the classes beyond the model's would silently drop out of the loss.
        names = context.class_names
        named = f" ({', '.join(names)})" if names else ""
        raise ConfigError(
            f"`model.num_classes` is {k} but the data has {context.data_classes} "
            f"classes{named}; leave it unset to take the data's, or make them agree."
        )
    weights = class_weights(loss["class_weights"], int(k), context)
    try:
        return Segmentation(int(k), loss["reduction"], weights, loss["ignore_label"])
    except ValueError as e:
        raise ConfigError(f"`loss`: {e}") from None


def class_weights(spec: Any, k: int, context: Context) -> tuple[float, ...] | None:
    """``loss.class_weights`` (None, ``k`` numbers or ``"median_frequency"``) as ``k``
    weights: median frequency balancing (SegNet) is computed over the training masks once,
    and afterwards read from the run's ``run_info.json`` (``context.info``)."""
    if spec is None:
        return None
    if not isinstance(spec, str):
        if len(spec) != k:
            raise ConfigError(
                f"`loss.class_weights` needs {k} weights (one per class); got {len(spec)}."
            )
        return tuple(float(w) for w in spec)
    if spec != "median_frequency":
        raise ConfigError(
            f"`loss.class_weights` must be None, 'median_frequency' or {k} numbers; got {spec!r}."
        )
    info = context.info
    if info is not None and info.get("class_weights") is not None:
        return tuple(float(w) for w in info["class_weights"])  # what training computed
    if not context.needs_loss:
        return None  # prediction
    if info is not None:
        log.info("the run info predates recorded class weights: computing them again")
    counts = data_lib.class_counts(context.train_source(), k)
    weights = tuple(float(w) for w in data_lib.median_frequency_weights(counts))
    log.info("median frequency class weights: %s", np.round(weights, 4).tolist())
    return weights
