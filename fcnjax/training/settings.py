"""The typed parts a config is read into, once, by :func:`fcnjax.training.experiment.build`.

Nothing below the experiment reads an ``ml_collections.ConfigDict``: the loop, the
evaluator, the checkpointer and the loaders take these frozen dataclasses (and the
optimizer its :class:`fcnjax.training.optim.Settings`), so that what a piece depends on
is in its signature.

>>> s = Schedule.from_config({"seed": 0, "batch_size": 8, "eval_batch_size": None,
...     "log_every_steps": 10, "eval_every_steps": None, "parallel": "jit",
...     "input": {"workers": 0, "threads": 2, "prefetch": 4},
...     "checkpoint": {"every_steps": 100, "keep": 3, "best_metric": "mean_iou",
...                    "best_mode": "max", "asynchronous": True}}, total_steps=300)
>>> s.eval_batch_size, s.eval_every_steps, s.loader.threads, s.checkpoint.keep
(8, 100, 2, 3)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

__all__ = ["CheckpointPolicy", "ConfigError", "Init", "Loader", "Schedule", "check"]

PARALLEL = ("jit", "pmap")
DTYPES = ("float32", "bfloat16", "float16")


class ConfigError(ValueError):
    """A config key that does not exist, a value of the wrong type, or an invalid choice."""


@dataclasses.dataclass(frozen=True)
class Loader:
    """The grain loaders' settings (``config.input``): decoding processes (0: threads in
    this process), threads and batches prefetched."""

    workers: int
    threads: int
    prefetch: int

    @classmethod
    def from_config(cls, inp: Mapping[str, Any]) -> Loader:
        """The loader settings of a config's ``input`` section."""
        return cls(inp["workers"], inp["threads"], inp["prefetch"])

    def kwargs(self) -> dict[str, int]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class CheckpointPolicy:
    """``config.checkpoint``: save every ``every_steps``, keep the latest ``keep``, and the
    best by a validation metric (``best_metric``, ``best_mode`` max or min) apart."""

    every_steps: int
    keep: int
    best_metric: str
    best_mode: str
    asynchronous: bool


@dataclasses.dataclass(frozen=True)
class Schedule:
    """When things happen in a training run, and how much of the data each step takes.
    Its values come from a config (:meth:`from_config`), whose defaults are
    :func:`fcnjax.configs.default.default_config`'s: none are repeated here."""

    total_steps: int
    seed: int
    batch_size: int  # global: split over processes and devices
    eval_batch_size: int
    log_every_steps: int
    eval_every_steps: int  # (config: None -> the checkpoint cadence)
    parallel: str  # jit | pmap
    loader: Loader
    checkpoint: CheckpointPolicy

    @classmethod
    def from_config(cls, config: Mapping[str, Any], total_steps: int) -> Schedule:
        """The schedule of a validated config (a ConfigDict or its ``to_dict()``)."""
        checkpoint = CheckpointPolicy(**dict(config["checkpoint"]))
        return cls(
            total_steps=int(total_steps),
            seed=config["seed"],
            batch_size=config["batch_size"],
            eval_batch_size=config["eval_batch_size"] or config["batch_size"],
            log_every_steps=config["log_every_steps"],
            eval_every_steps=config["eval_every_steps"] or checkpoint.every_steps,
            parallel=config["parallel"],
            loader=Loader.from_config(config["input"]),
            checkpoint=checkpoint,
        )


@dataclasses.dataclass(frozen=True)
class Init:
    """Where a run's first parameters come from besides the model's initialisers
    (``config.init``): the backbone's pretrained weights (``backbone_weights``: "imagenet",
    a path or a URL, for the model's encoder ``backbone`` in ``style``; ``fc``: with VGG16's
    classifier as FCN's fc6/fc7) and a previous stage's run (``from_workdir``)."""

    backbone_weights: str | None = None
    from_workdir: str | None = None
    backbone: str | None = None
    style: str | None = None
    fc: bool = False


def check(config: Mapping[str, Any]) -> None:
    """Checks the settings this module owns in a config (``config.to_dict()``): the
    choices (``parallel``, ``dtype``, ``checkpoint.best_mode``, ``loss.reduction``,
    ``distributed.initialize``), one of ``num_steps`` and ``num_epochs``, and the counts
    that must be positive. Raises ConfigError naming the key.

    >>> check({"num_steps": 5, "num_epochs": 2})
    Traceback (most recent call last):
    ...
    fcnjax.training.settings.ConfigError: set one of `num_steps` (5) and `num_epochs` (2); ...
    """
    steps, epochs = config.get("num_steps"), config.get("num_epochs")
    if steps is not None and epochs is not None:
        raise ConfigError(
            f"set one of `num_steps` ({steps}) and `num_epochs` ({epochs}); the other must be None."
        )
    for key, choices in (
        ("parallel", PARALLEL),
        ("dtype", DTYPES),
        ("checkpoint.best_mode", ("max", "min")),
        ("loss.reduction", ("mean", "sum")),
    ):
        value = _get(config, key)
        if value not in choices:
            raise ConfigError(f"`{key}` must be one of {choices}; got {value!r}.")
    initialize = (config.get("distributed") or {}).get("initialize", "auto")
    if not (initialize == "auto" or isinstance(initialize, bool)):
        raise ConfigError(
            f"`distributed.initialize` must be 'auto', True or False; got {initialize!r}."
        )
    positive = ("batch_size", "log_every_steps", "checkpoint.every_steps", "checkpoint.keep")
    optional = ("num_steps", "num_epochs", "eval_batch_size", "eval_every_steps")
    for key in positive + optional:
        value = _get(config, key)
        if value is None and key in optional:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ConfigError(
                f"`{key}` must be a positive int{' or None' * (key in optional)}; got {value!r}."
            )


def _get(config: Mapping[str, Any], key: str) -> Any:
    for part in key.split("."):
        config = config[part]
    return config
