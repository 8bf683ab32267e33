"""Optimizers from a config, all in optax: schedules, parameter groups, clipping, accumulation.

Parameter groups are labels on the parameter tree and one ``optax.multi_transform``:

* ``"frozen"``: ``optax.set_to_zero()`` (no update and no optimizer state). The POSTECH
  segmentation lab (Seungchul Lee) freezes the VGG16 convolutions
  (``freeze_backbone=True``); the FCN reference keeps its bilinear deconvolutions fixed
  (``freeze=("upscore",)``, a regular expression on the parameter path such as
  ``"upscore2/kernel"``).
* ``"bias"``: FCN's biases, at ``bias_lr_mult`` times the learning rate and without
  weight decay (Caffe's ``lr_mult: 2, decay_mult: 0``).
* ``"weight"``: everything else.

>>> import jax.numpy as jnp
>>> params = {"conv": {"kernel": jnp.ones((3, 3)), "bias": jnp.ones(3)},
...           "upscore2": {"kernel": jnp.ones((4, 4))}}
>>> labels = param_labels(params, freeze=("upscore",), bias_lr_mult=2.0)
>>> labels["conv"]["kernel"], labels["conv"]["bias"], labels["upscore2"]["kernel"]
('weight', 'bias', 'frozen')
>>> tx = make_optimizer(dict(name="sgd", learning_rate=0.1, freeze=("upscore",)), params, 10)
>>> state = tx.init(params)
>>> updates, _ = tx.update({"conv": {"kernel": jnp.ones((3, 3)), "bias": jnp.ones(3)},
...                         "upscore2": {"kernel": jnp.ones((4, 4))}}, state, params)
>>> round(float(updates["conv"]["kernel"][0, 0]), 6), float(updates["upscore2"]["kernel"][0, 0])
(-0.1, 0.0)
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import optax

from fcnjax.models.fcn import backbone_mask

__all__ = [
    "DEFAULTS",
    "OPTIMIZERS",
    "SCHEDULES",
    "Settings",
    "check_options",
    "make_optimizer",
    "make_schedule",
    "param_labels",
    "step_schedule",
]

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("constant", "poly", "cosine")


@dataclasses.dataclass(frozen=True)
class Settings:
    """The optimizer's settings (the config's ``optimizer`` section), typed and checked."""

    name: str = "sgd"  # sgd | adam | adamw
    learning_rate: float = 1e-3  # peak learning rate
    momentum: float = 0.9  # sgd momentum (0: plain SGD)
    nesterov: bool = False
    b1: float = 0.9  # adam(w) moments
    b2: float = 0.999
    eps: float = 1e-8
    weight_decay: float = 0.0  # sgd/adam: L2 added to the gradient (Caffe); adamw: decoupled
    schedule: str = "constant"  # constant | poly (power `poly_power`) | cosine
    poly_power: float = 0.9
    warmup_steps: int = 0  # linear warm-up from 0 (any schedule)
    end_learning_rate: float = 0.0  # poly / cosine final value
    grad_clip_norm: float | None = None  # clip by global norm before the update (None: off)
    accumulate_steps: int = 1  # gradient accumulation (optax.MultiSteps): update every k
    bias_lr_mult: float = 1.0  # FCN: 2.0 (biases also skip weight decay when != 1 or no_bias_decay)
    no_bias_decay: bool = False
    freeze: tuple[str, ...] = ()  # regexes on '/'-joined parameter paths that never change
    freeze_backbone: bool = False  # freeze the encoder (models.backbone_mask; the POSTECH lab)

    @classmethod
    def of(cls, config: Settings | Mapping[str, Any] | None) -> Settings:
        """``config`` on top of the defaults (None values take the default), checked.
        Raises ValueError naming the key (``optimizer.name``, ...) and the valid choices."""
        if isinstance(config, Settings):
            return config
        config = {k: v for k, v in dict(config or {}).items() if v is not None}
        unknown = sorted(set(config) - set(DEFAULTS))
        if unknown:
            raise ValueError(
                f"`optimizer` has unknown keys {unknown}; valid keys: {sorted(DEFAULTS)}."
            )
        if isinstance(config.get("freeze"), str):
            config["freeze"] = (config["freeze"],)
        opts = cls(**{**config, "freeze": tuple(config.get("freeze", ()))})
        if opts.name not in OPTIMIZERS:
            raise ValueError(f"`optimizer.name` must be one of {OPTIMIZERS}; got {opts.name!r}.")
        if opts.schedule not in SCHEDULES:
            raise ValueError(
                f"`optimizer.schedule` must be one of {SCHEDULES}; got {opts.schedule!r}."
            )
        if int(opts.accumulate_steps) < 1:
            raise ValueError(
                f"`optimizer.accumulate_steps` must be >= 1; got {opts.accumulate_steps}."
            )
        for pattern in opts.freeze:
            try:
                re.compile(pattern)
            except re.error as e:
                raise ValueError(
                    f"`optimizer.freeze`: {pattern!r} is not a regular expression: {e}"
                ) from None
        return opts


DEFAULTS: dict[str, Any] = {f.name: f.default for f in dataclasses.fields(Settings)}


def check_options(config: Mapping[str, Any] | None) -> dict[str, Any]:
    """The optimizer options: ``config`` on top of :data:`DEFAULTS` (None values take the
    default), checked (:meth:`Settings.of`), as a dict.

    >>> check_options({"name": "adamw", "learning_rate": 0.01})["b2"]
    0.999
    >>> check_options({"name": "lion"})
    Traceback (most recent call last):
    ...
    ValueError: `optimizer.name` must be one of ('sgd', 'adam', 'adamw'); got 'lion'.
    """
    return dataclasses.asdict(Settings.of(config))


def make_schedule(config: Settings | Mapping[str, Any] | None, total_steps: int) -> optax.Schedule:
    """The learning rate at each *update* (optimizer step), warm-up included.

    ``poly``: ``lr * (1 - t / T) ** poly_power`` (DeepLab / FCN follow-ups, 0.9);
    ``cosine``: cosine decay to ``end_learning_rate``; ``constant``: FCN's fixed rate.

    >>> s = make_schedule(dict(learning_rate=1.0, schedule="poly", warmup_steps=2), 12)
    >>> [round(float(s(t)), 3) for t in (0, 1, 2, 7, 12)]
    [0.0, 0.5, 1.0, 0.536, 0.0]
    """
    opts = Settings.of(config)
    lr, warmup = float(opts.learning_rate), int(opts.warmup_steps)
    decay_steps = max(1, int(total_steps) - warmup)
    end = float(opts.end_learning_rate)
    if opts.schedule == "constant":
        main = optax.constant_schedule(lr)
    elif opts.schedule == "poly":
        main = optax.polynomial_schedule(lr, end, opts.poly_power, decay_steps)
    else:
        main = optax.cosine_decay_schedule(lr, decay_steps, alpha=end / lr if lr else 0.0)
    if not warmup:
        return main
    return optax.join_schedules([optax.linear_schedule(0.0, lr, warmup), main], [warmup])


def step_schedule(
    config: Settings | Mapping[str, Any] | None, total_steps: int
) -> Callable[[int], Any]:
    """The learning rate that :func:`make_optimizer` applies, by training step.

    With ``accumulate_steps=k`` the schedule runs over the ``ceil(total_steps / k)``
    updates, one every k steps (micro-batches); step ``s`` is update ``s // k``. This is
    what a log of the learning rate must show (with k > 1, evaluating :func:`make_schedule`
    at micro-steps would end the warm-up k times too early).

    >>> s = step_schedule(dict(learning_rate=1.0, warmup_steps=2, accumulate_steps=4), 40)
    >>> [round(float(s(t)), 2) for t in (0, 4, 7, 8)]
    [0.0, 0.5, 0.5, 1.0]
    """
    opts = Settings.of(config)
    k = int(opts.accumulate_steps)
    schedule = _update_schedule(opts, total_steps)
    return schedule if k == 1 else (lambda step: schedule(step // k))


def _update_schedule(opts: Settings, total_steps: int) -> optax.Schedule:
    """:func:`make_schedule` over the optimizer's updates, one every ``accumulate_steps``."""
    return make_schedule(opts, -(-int(total_steps) // int(opts.accumulate_steps)))


def param_labels(
    params: Any,
    *,
    freeze: Sequence[str] = (),
    freeze_backbone: bool = False,
    bias_lr_mult: float = 1.0,
    no_bias_decay: bool = False,
) -> Any:
    """A tree like ``params`` of ``"frozen"``, ``"bias"`` or ``"weight"`` (see the module)."""
    patterns = [re.compile(p) for p in ([freeze] if isinstance(freeze, str) else freeze)]
    frozen_backbone = backbone_mask(params) if freeze_backbone else None
    separate_bias = bias_lr_mult != 1.0 or no_bias_decay

    def label(path, _):
        keys = [str(getattr(p, "key", getattr(p, "name", p))) for p in path]
        name = "/".join(keys)
        if any(p.search(name) for p in patterns):
            return "frozen"
        if separate_bias and keys and keys[-1] == "bias":
            return "bias"
        return "weight"

    labels = jax.tree_util.tree_map_with_path(label, params)
    if frozen_backbone is not None:
        labels = jax.tree.map(lambda lab, f: "frozen" if f else lab, labels, frozen_backbone)
    return labels


def _base(opts: Settings, schedule: Callable, lr_mult: float, decay: bool):
    lr = schedule if lr_mult == 1.0 else (lambda t: lr_mult * schedule(t))
    wd = float(opts.weight_decay) if decay else 0.0
    if opts.name == "adamw":
        return optax.adamw(lr, opts.b1, opts.b2, opts.eps, weight_decay=wd)
    if opts.name == "adam":
        tx = optax.adam(lr, opts.b1, opts.b2, opts.eps)
    else:
        tx = optax.sgd(lr, opts.momentum or None, opts.nesterov)
    # Caffe/Keras-style L2: the decay joins the gradient, so momentum (and Adam) see it.
    return optax.chain(optax.add_decayed_weights(wd), tx) if wd else tx


def make_optimizer(
    config: Settings | Mapping[str, Any] | None, params: Any, total_steps: int
) -> optax.GradientTransformation:
    """An optax transformation from ``config`` (keys and defaults: :data:`DEFAULTS`).

    Order: clip the (accumulated) gradient's global norm, then the per-group optimizers of
    :func:`param_labels`; with ``accumulate_steps=k`` everything is wrapped in
    ``optax.MultiSteps`` (the mean of k micro-batch gradients, one update every k steps, so
    ``total_steps`` counts micro-batches and the schedule counts updates).

    Args:
      config: optimizer settings (:class:`Settings`, a dict or a ``ConfigDict``); unknown
        keys raise.
      params: the parameters (or their shapes), to label the groups.
      total_steps: training steps (micro-batches), for decaying schedules.
    """
    opts = Settings.of(config)
    k = int(opts.accumulate_steps)
    schedule = _update_schedule(opts, total_steps)
    decay_bias = not (opts.no_bias_decay or opts.bias_lr_mult != 1.0)
    labels = param_labels(
        params,
        freeze=opts.freeze,
        freeze_backbone=opts.freeze_backbone,
        bias_lr_mult=opts.bias_lr_mult,
        no_bias_decay=opts.no_bias_decay,
    )
    groups = {
        "weight": _base(opts, schedule, 1.0, True),
        "bias": _base(opts, schedule, float(opts.bias_lr_mult), decay_bias),
        "frozen": optax.set_to_zero(),
    }
    tx = optax.multi_transform(groups, labels)
    if opts.grad_clip_norm:
        tx = optax.chain(optax.clip_by_global_norm(float(opts.grad_clip_norm)), tx)
    return optax.MultiSteps(tx, k) if k > 1 else tx
