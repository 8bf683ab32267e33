"""The segmentation task's loss terms, alone or summed with weights (``loss.terms``).

Each term is computed in two parts, so that devices, hosts and the batches of an
evaluation combine exactly (:class:`~fcnjax.training.tasks.Across`): *sums* over the global
batch (a cross-entropy's total and normaliser; a region loss's intersections and
cardinalities per class) and a *value* of the sums (their ratio). Lovasz over the whole
batch is not a ratio of sums: its sums hold the value over the global batch itself, which
under ``pmap`` means gathering every device's scores (``across.rows``).

The trainer's gradient accumulation (``optimizer.accumulate_steps``, optax's
``MultiSteps``) averages the gradients of its micro-batches: a region or Lovasz term is
then one of each micro-batch, not of the accumulated batch.

Mode ``multiclass``: ``K >= 2`` scores, softmax. Mode ``binary``: one score, sigmoid (the
foreground's probability, labels 0/1), as segmentation_models_pytorch's ``mode="binary"``:
``cross_entropy`` is then the binary cross-entropy, ``focal`` the sigmoid focal loss and
``lovasz`` the Lovasz hinge.

>>> parse("cross_entropy + 0.5*dice")
(('cross_entropy', 1.0), ('dice', 0.5))
>>> parse((("focal", 1.0), ("lovasz", 2)))
(('focal', 1.0), ('lovasz', 2.0))
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from fcnjax import losses
from fcnjax.training.tasks._base import Across

__all__ = ["NAMES", "OPTIONS", "WEIGHTED", "Term", "parse"]


def _per_image(where: jax.Array) -> jax.Array:
    """``bool[N]`` or ``bool[N, H, W]`` -> ``bool[N]``: the images that count."""
    return jnp.any(where.reshape(where.shape[0], -1), axis=1)


# Each term's options and their defaults: the config's `loss.<name>` sections.
_RATIO = {"smooth": 0.0, "eps": 1e-7, "log_loss": False, "classes": "present"}
OPTIONS: dict[str, dict[str, Any]] = {
    "cross_entropy": {},
    "dice": dict(_RATIO),
    "focal": {"gamma": 2.0, "alpha": None},
    "jaccard": dict(_RATIO),
    "lovasz": {"per_image": False, "classes": "present"},
    "tversky": {"alpha": 0.5, "beta": 0.5, "gamma": 1.0, **_RATIO},
}
NAMES = tuple(OPTIONS)
# The terms that `loss.class_weights` weighs (per pixel, or the mean over classes). The
# focal loss has its own per-class `alpha`; Lovasz is unweighted (Berman et al.).
WEIGHTED = ("cross_entropy", "dice", "jaccard", "tversky")
_REGION = ("dice", "jaccard", "tversky")  # losses.<name>_from_sums: ratios of region_sums


def parse(spec: Any) -> tuple[tuple[str, float], ...]:
    """``loss.terms`` as ``((name, weight), ...)``: a string ``"cross_entropy + 0.5*dice"``
    or pairs ``(("cross_entropy", 1.0), ("dice", 0.5))`` (a bare name weighs 1).

    Raises ValueError naming ``loss.terms`` for an unknown name, a repeated one, or a
    weight that is not a finite non-negative number."""
    if isinstance(spec, str):
        items = []
        for part in spec.split("+"):
            weight, _, name = part.strip().rpartition("*")
            items.append((name.strip(), weight.strip() or 1.0))
    elif isinstance(spec, (tuple, list)):
        if len(spec) == 2 and isinstance(spec[0], str) and isinstance(spec[1], (int, float)):
            spec = (spec,)  # one (name, weight) pair
        items = [(s, 1.0) if isinstance(s, str) else _pair(s) for s in spec]
    else:
        raise ValueError(f"`loss.terms` must be a string or (name, weight) pairs; got {spec!r}.")
    out = []
    for item in items:
        if len(item) != 2:
            raise ValueError(f"`loss.terms`: each term is (name, weight); got {item!r}.")
        name, weight = item
        if name not in NAMES:
            raise ValueError(f"`loss.terms`: unknown loss {name!r}; the losses are {NAMES}.")
        try:
            weight = float(weight)
        except (TypeError, ValueError):
            weight = float("nan")
        if not math.isfinite(weight) or weight < 0:
            raise ValueError(
                f"`loss.terms`: the weight of {name!r} must be a finite number >= 0; "
                f"got {item[1]!r}."
            )
        out.append((name, weight))
    names = [n for n, _ in out]
    if not out or len(set(names)) != len(names):
        raise ValueError(f"`loss.terms` must name each loss once, at least one; got {spec!r}.")
    return tuple(out)


def _pair(item: Any) -> tuple:
    if not isinstance(item, (tuple, list)):
        raise ValueError(f"`loss.terms`: each term is a name or (name, weight); got {item!r}.")
    return tuple(item)


def options(name: str, given: Mapping[str, Any] | None) -> tuple[tuple[str, Any], ...]:
    """Term ``name``'s options: its defaults updated with ``given`` (the config's
    ``loss.<name>``); ValueError for an option it does not have."""
    given = dict(given or {})
    unknown = sorted(set(given) - set(OPTIONS[name]))
    if unknown:
        raise ValueError(
            f"`loss.{name}` has no option {unknown[0]!r}; its options are "
            f"{tuple(OPTIONS[name]) or 'none'}."
        )
    merged = {**OPTIONS[name], **given}
    return tuple((k, tuple(v) if isinstance(v, list) else v) for k, v in sorted(merged.items()))


@dataclasses.dataclass(frozen=True)
class Term:
    """One weighted term of the loss, with its options (hashable, for ``jit``)."""

    name: str
    weight: float = 1.0
    options: tuple[tuple[str, Any], ...] = ()

    def sums(
        self,
        logits: jax.Array,
        labels: jax.Array,
        where: jax.Array | None,
        across: Across,
        *,
        binary: bool,
        ignore_label: int,
        class_weights: jax.Array | None,
    ) -> dict[str, jax.Array]:
        """The term's sums over the global batch (``f[N, H, W, K]`` scores, ``int[N, H, W]``
        labels, ``where`` ``bool[N]`` or None)."""
        o, kw = dict(self.options), dict(ignore_label=ignore_label, where=where)
        k = 2 if binary else logits.shape[-1]
        if self.name == "cross_entropy":
            fn = losses.sigmoid_binary_cross_entropy if binary else losses.softmax_cross_entropy
            total = fn(logits, labels, class_weights=class_weights, reduction="sum", **kw)
            norm = losses.pixel_weights(labels, k, class_weights=class_weights, **kw)
            return across.sum({"total": total, "norm": jnp.sum(norm)})
        if self.name == "focal":
            alpha = o["alpha"] if binary or o["alpha"] is None else np.asarray(o["alpha"])
            fn = losses.sigmoid_focal_loss if binary else losses.softmax_focal_loss
            total = fn(logits, labels, gamma=o["gamma"], alpha=alpha, reduction="sum", **kw)
            count = losses.pixel_weights(labels, k, **kw)
            return across.sum({"total": total, "norm": jnp.sum(count)})
        if self.name in _REGION:
            return across.sum(losses.region_sums(logits, labels, **kw))
        fn = losses.lovasz_hinge if binary else losses.lovasz_softmax
        extra = {} if binary else {"classes": o["classes"]}
        if o["per_image"]:  # a mean over images: the sum and the count of images add
            total = fn(logits, labels, per_image=True, reduction="sum", **extra, **kw)
            n = labels.shape[0] if where is None else jnp.sum(_per_image(where))
            return across.sum({"total": total, "norm": jnp.asarray(n, jnp.float32)})
        # One loss over the whole batch's pixels, sorted together: every device's rows. Not
        # a ratio of sums, so an evaluation's loss is the mean of its batches' values,
        # each weighted by its counted pixels.
        logits, labels = across.rows(logits), across.rows(labels)
        where = None if where is None else across.rows(where)
        value = fn(logits, labels, per_image=False, ignore_label=ignore_label, where=where, **extra)
        n = jnp.sum(losses.pixel_weights(labels, k, ignore_label=ignore_label, where=where))
        return {"total": value * n, "norm": n}

    def value(
        self, sums: Mapping[str, jax.Array], *, binary: bool, class_weights, reduction: str
    ) -> jax.Array:
        """The term's value of its (global, or accumulated) sums."""
        if self.name in _REGION:
            o = dict(self.options)
            weights = None if binary or class_weights is None else jnp.asarray(class_weights)
            return getattr(losses, f"{self.name}_from_sums")(sums, class_weights=weights, **o)
        total, norm = jnp.asarray(sums["total"]), jnp.asarray(sums["norm"])
        if self.name == "cross_entropy" and reduction == "sum":
            return total
        return jnp.where(norm > 0, total / jnp.where(norm > 0, norm, 1), 0)
