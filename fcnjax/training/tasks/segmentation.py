"""Semantic segmentation: every pixel classified into one of ``num_classes`` (FCN, SegNet,
U-Net), or, with one output, foreground against background (binary); the loss terms of the
config (cross-entropy, focal, Dice, Jaccard, Tversky, Lovasz, summed with weights), their
class weights (given, or SegNet's median frequency over the training masks); FCN's metrics
with Dice; ``predictions.png``.

>>> import jax.numpy as jnp
>>> task = Segmentation(num_classes=3)
>>> batch = {"image": jnp.zeros((2, 4, 4, 3)), "mask": jnp.ones((2, 4, 4), jnp.int32)}
>>> sums = task.loss_sums(jnp.zeros((2, 4, 4, 3)), batch)  # uniform scores: log 3
>>> round(float(task.loss(sums)), 4), int(sums["cross_entropy"]["norm"])
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
from fcnjax import inference, metrics, ops, viz
from fcnjax.labels import IGNORE_LABEL
from fcnjax.training.settings import ConfigError
from fcnjax.training.tasks import _terms
from fcnjax.training.tasks._base import LOCAL, Across, Batch, Context, EvalAccumulator

__all__ = ["AUX_WEIGHT", "MODES", "Segmentation", "Term", "make"]

log = logging.getLogger("fcnjax.training.tasks.segmentation")
# The auxiliary head's share of the loss in torchvision's segmentation recipe.
AUX_WEIGHT = 0.5
MODES = ("auto", "multiclass", "binary")
Term = _terms.Term


@dataclasses.dataclass(frozen=True)
class Segmentation:
    """Per-pixel classification (FCN, SegNet, U-Net).

    ``num_classes`` is the network's outputs: ``K >= 2`` scores read through a softmax,
    or 1, the foreground's score read through a sigmoid (binary: labels 0 and 1, a pixel
    is foreground where the probability exceeds ``threshold``).

    Loss: the weighted sum of ``terms`` (:mod:`fcnjax.losses`), each skipping
    ``ignore_label``; cross-entropy by default, optionally class-weighted (SegNet's
    median-frequency balancing), averaged over the counted (weighted) pixels or, with
    ``reduction="sum"``, summed (the FCN paper's un-normalised loss). Region terms (Dice,
    Jaccard, Tversky) are ratios of sums over the whole global batch. Metrics: FCN's four
    (pixel accuracy, mean accuracy, mean IoU, frequency-weighted IoU), mean Dice, per-class
    IoU and Dice and the loss, from one confusion matrix summed over the split; binary
    tasks add the foreground's IoU and Dice.
    """

    num_classes: int
    reduction: str = "mean"
    class_weights: tuple[float, ...] | None = None
    ignore_label: int = IGNORE_LABEL
    terms: tuple[Term, ...] = (Term("cross_entropy"),)
    threshold: float = 0.5

    name: ClassVar[str] = "segmentation"

    def __post_init__(self):
        if self.reduction not in ("mean", "sum"):
            raise ValueError(f"`reduction` must be 'mean' or 'sum'; got {self.reduction!r}.")
        if self.class_weights is not None and len(self.class_weights) != self.label_classes:
            raise ValueError(
                f"`class_weights` needs {self.label_classes} weights (one per class); "
                f"got {len(self.class_weights)}."
            )

    @property
    def binary(self) -> bool:
        """One output, read through a sigmoid."""
        return self.num_classes == 1

    @property
    def label_classes(self) -> int:
        """The classes of the labels: 2 for a binary task (background, foreground)."""
        return 2 if self.binary else self.num_classes

    @property
    def metric_names(self) -> tuple[str, ...]:
        names = ("mean_iou", "pixel_accuracy", "mean_accuracy", "frequency_weighted_iou")
        extra = ("foreground_iou", "foreground_dice") if self.binary else ()
        return (*names, "mean_dice", *extra, "loss")

    def loss_sums(self, outputs: Any, batch: Batch, across: Across = LOCAL) -> dict[str, Any]:
        """``f[N, H, W, K]`` scores and ``batch['mask']`` -> each term's sums over the global
        batch, ``{term name: sums}``.

        ``outputs`` may be ``{"out": scores, "aux": scores}`` (a model's auxiliary head in
        training, :class:`fcnjax.models.FCNResNet`): the loss is then torchvision's
        segmentation recipe, ``loss(out) + AUX_WEIGHT * loss(aux)``.
        """
        if isinstance(outputs, Mapping):
            return {k: self.loss_sums(outputs[k], batch, across) for k in ("out", "aux")}
        weights = None if self.class_weights is None else jnp.asarray(self.class_weights)
        kw = dict(binary=self.binary, ignore_label=self.ignore_label, class_weights=weights)
        where = batch.get("valid")
        return {t.name: t.sums(outputs, batch["mask"], where, across, **kw) for t in self.terms}

    def loss(self, sums: Mapping[str, Any]) -> jax.Array:
        """The objective of :meth:`loss_sums`'s sums: ``sum_t weight_t * value_t``."""
        if "aux" in sums:
            return self.loss(sums["out"]) + AUX_WEIGHT * self.loss(sums["aux"])
        kw = dict(binary=self.binary, class_weights=self.class_weights, reduction=self.reduction)
        return sum(t.weight * t.value(sums[t.name], **kw) for t in self.terms)

    def eval_sums(self, outputs: jax.Array, batch: Batch, across: Across = LOCAL) -> dict:
        """The loss sums and ``confusion_matrix`` (``int32[K, K]``, rows = ground truth; a
        binary task's is 2x2) over the global batch."""
        confusion = metrics.confusion_matrix(
            batch["mask"],
            inference.labels_from_scores(outputs, self.threshold),
            self.label_classes,
            ignore_label=self.ignore_label,
            where=batch.get("valid"),
        )
        loss = self.loss_sums(outputs, batch, across)
        return {"loss": loss, "confusion_matrix": across.sum(confusion)}

    def accumulator(self, class_names: Sequence[str] | None = None) -> EvalAccumulator:
        names = list(class_names) if class_names is not None else None
        if names is not None and len(names) != self.label_classes:
            names = None  # e.g. a source naming more classes than are trained
        confusion = metrics.ConfusionMatrix(self.label_classes, names)
        return EvalAccumulator(self.loss, confusion, binary=self.binary)

    def info(self) -> dict[str, Any]:
        weights = list(self.class_weights) if self.class_weights is not None else None
        return {
            "task": self.name,
            "num_classes": self.num_classes,
            "class_weights": weights,
            "loss_terms": [[t.name, t.weight] for t in self.terms],
        }

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
            labels = inference.labels_from_scores(out, self.threshold)
            predictions.append(np.asarray(labels)[:h, :w])
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
    """The task from the config's ``loss`` section: its mode and classes checked against
    the data's (``context``), its terms and their options checked, its class weights
    resolved. Raises ConfigError naming the field."""
    k, label_k = _classes(loss.get("mode", "auto"), context)
    try:
        # Every term's section, used or not: a typo in one is not silently ignored.
        given = {name: _terms.options(name, loss.get(name)) for name in _terms.NAMES}
        spec = _terms.parse(loss.get("terms", "cross_entropy"))
        terms = tuple(Term(name, weight, given[name]) for name, weight in spec)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    _check_used(loss, terms, binary=k == 1)
    weights = class_weights(loss["class_weights"], label_k, context)
    try:
        task = Segmentation(
            k, loss["reduction"], weights, loss["ignore_label"], terms, context.threshold
        )
    except ValueError as e:
        raise ConfigError(f"`loss`: {e}") from None
    if context.needs_loss:
        _probe(task)
    return task


def _check_used(loss: Mapping[str, Any], terms: tuple[Term, ...], binary: bool) -> None:
    """Refuses settings that no term would use: nothing a user sets is silently ignored."""
    weighted = ("cross_entropy",) if binary else _terms.WEIGHTED
    if loss["class_weights"] is not None and not any(t.name in weighted for t in terms):
        raise ConfigError(
            f"`loss.class_weights` is set but none of the terms {[t.name for t in terms]} "
            f"uses it (it weighs {', '.join(weighted)}"
            f"{'; a binary network has one region class' if binary else ''}); unset it, or "
            "use `loss.focal.alpha` for the focal loss."
        )
    classes = (loss.get("lovasz") or {}).get("classes", "present")
    if binary and any(t.name == "lovasz" for t in terms) and classes != "present":
        raise ConfigError(
            "`loss.lovasz.classes` has no meaning for a binary network (the Lovasz hinge of "
            "its one class); leave it 'present'."
        )


def _classes(mode: str, context: Context) -> tuple[int, int]:
    """``(network outputs, label classes)`` of ``loss.mode`` and the data."""
    if mode not in MODES:
        raise ConfigError(f"`loss.mode` must be one of {MODES}; got {mode!r}.")
    k, data_k = context.num_classes, context.data_classes
    names = f" ({', '.join(context.class_names)})" if context.class_names else ""
    if mode == "binary" or (mode == "auto" and k == 1):
        if k not in (None, 1):
            raise ConfigError(
                f"`loss.mode` is 'binary' (one sigmoid output) but `model.num_classes` is {k}; "
                "set it to 1 or leave it unset."
            )
        if data_k not in (None, 2):
            raise ConfigError(
                f"a binary task (`model.num_classes` 1, one sigmoid output) needs data of 2 "
                f"classes (0 background, 1 foreground); the data has {data_k}{names}."
            )
        return 1, 2
    if k == 1:
        raise ConfigError(
            "`loss.mode` is 'multiclass' (a softmax) but `model.num_classes` is 1: a softmax "
            "over one class is 1 everywhere. Use `loss.mode='binary'` (one sigmoid output) "
            "or `model.num_classes=2`."
        )
    k = k if k is not None else data_k
    if k is None:
        raise ConfigError("set `model.num_classes`: the data source does not give it.")
    if data_k is not None and k != data_k:
        # Pixels of the classes beyond the model's would silently drop out of the loss.
        raise ConfigError(
            f"`model.num_classes` is {k} but the data has {data_k} classes{names}; leave it "
            "unset to take the data's, or make them agree."
        )
    return int(k), int(k)


def _probe(task: Segmentation) -> None:
    """Every term once on a tiny batch, so that a bad option (``loss.dice.smooth=-1``)
    stops the run before anything is built, naming its field."""
    logits = jnp.zeros((1, 2, 2, task.num_classes))
    batch = {"mask": jnp.zeros((1, 2, 2), jnp.int32)}
    for term in task.terms:
        try:
            dataclasses.replace(task, terms=(term,)).loss(task.loss_sums(logits, batch))
        except (ValueError, TypeError) as e:
            raise ConfigError(f"`loss.{term.name}`: {e}") from None


def _weight(w: Any) -> bool:
    return isinstance(w, (int, float)) and not isinstance(w, bool) and 0 <= w < float("inf")


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
        if not all(_weight(w) for w in spec):
            raise ConfigError(
                f"`loss.class_weights` must be finite numbers >= 0; got {tuple(spec)!r}."
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
