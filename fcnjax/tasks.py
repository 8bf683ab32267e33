"""What a network is trained to do, as types: its loss, its evaluation and its pictures.

A task is a frozen dataclass (hashable, so it can be bound into jitted steps). Its loss
is returned as *sums* ``(total, normaliser)`` over a batch, so that devices and hosts
combine them exactly by summing both; the objective is ``total / normaliser`` over the
global batch.

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
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from fcnjax import losses, metrics, pictures
from fcnjax.labels import IGNORE_LABEL

__all__ = ["AUX_WEIGHT", "Autoencoder", "EvalAccumulator", "Segmentation", "Task"]

Batch = Mapping[str, jax.Array]
# The auxiliary head's share of the loss in torchvision's segmentation recipe.
AUX_WEIGHT = 0.5


class EvalAccumulator:
    """Host-side sums of :meth:`Task.eval_sums` over a split -> the task's metrics.

    Losses add in float64; confusion matrices in int64 (:class:`metrics.ConfusionMatrix`).
    """

    def __init__(self, confusion: metrics.ConfusionMatrix | None = None):
        self.confusion = confusion
        self.loss_total = 0.0
        self.loss_norm = 0.0

    def update(self, sums: Mapping[str, Any]) -> None:
        self.loss_total += float(np.asarray(sums["loss_total"], np.float64))
        self.loss_norm += float(np.asarray(sums["loss_norm"], np.float64))
        if self.confusion is not None:
            self.confusion.update(sums["confusion_matrix"])

    def compute(self) -> dict[str, Any]:
        results: dict[str, Any] = {"loss": self.loss_total / max(self.loss_norm, 1e-12)}
        if self.confusion is not None:
            results.update(self.confusion.compute())
            results["confusion_matrix"] = self.confusion.matrix.tolist()
        return results


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

    def write_pictures(self, *args: Any, **kwargs: Any) -> list[Path]:
        """Validation inputs | ground truth | prediction: :func:`pictures.segmentation`."""
        return pictures.segmentation(*args, **kwargs)


@dataclasses.dataclass(frozen=True)
class Autoencoder:
    """Reconstruction of the input image: mean squared error per pixel and channel."""

    name: ClassVar[str] = "autoencoder"
    metric_names: ClassVar[tuple[str, ...]] = ("loss",)
    num_classes: ClassVar[None] = None

    def loss_sums(self, outputs: jax.Array, batch: Batch) -> tuple[jax.Array, jax.Array]:
        """``f[N, H, W, C]`` reconstructions of ``batch['image']`` -> ``(total, count)``."""
        target, where = batch["image"], batch.get("valid")
        total = losses.mean_squared_error(outputs, target, where=where, reduction="sum")
        n = target.shape[0] if where is None else jnp.sum(where, dtype=jnp.float32)
        return total, jnp.asarray(target[0].size * n, jnp.float32)

    def eval_sums(self, outputs: jax.Array, batch: Batch) -> dict[str, jax.Array]:
        total, norm = self.loss_sums(outputs, batch)
        return {"loss_total": total, "loss_norm": norm}

    def accumulator(self, class_names: Sequence[str] | None = None) -> EvalAccumulator:
        return EvalAccumulator()

    def info(self) -> dict[str, Any]:
        return {"task": self.name, "num_classes": None, "class_weights": None}

    def write_pictures(self, *args: Any, **kwargs: Any) -> list[Path]:
        """Reconstructions, the latent scatter and the decoded plane:
        :func:`pictures.autoencoder`."""
        return pictures.autoencoder(*args, **kwargs)


Task = Segmentation | Autoencoder
"""Every task type; each has ``loss_sums``, ``eval_sums``, ``accumulator``,
``metric_names``, ``info`` and ``write_pictures``."""
