"""Training configs: the defaults every config starts from, loading by name or path, overrides.

A config file defines ``get_config(arg=None)`` returning an ``ml_collections.ConfigDict``
(``arg`` is the text after a colon: ``shapes_fcn8s:runlocal``). It starts from
:func:`default_config` and overrides fields, so every run has every field and a typo is
an error, not a silently ignored setting. The recipes ship in :mod:`fcnjax.configs` and
are chosen by name; any other config is given by the path of its file.

>>> load_config("shapes_fcn8s:runlocal").num_steps
4
>>> load_config("shapes_fcn9s")
Traceback (most recent call last):
...
fcnjax.config.ConfigError: unknown config 'shapes_fcn9s': not a shipped config (cae_mnist, ...
>>> config = default_config()
>>> apply_overrides(config, ["batch_size=8", "optimizer.name=adamw"])
>>> config.batch_size, config.optimizer.name
(8, 'adamw')
>>> apply_overrides(config, ["optimiser.name=sgd"])
Traceback (most recent call last):
...
fcnjax.config.ConfigError: unknown config key 'optimiser' (in 'optimiser.name'); valid keys: ...
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import json
import os
import pkgutil
from collections.abc import Iterable
from typing import Any

import ml_collections

from fcnjax import configs, optim

__all__ = [
    "ConfigError",
    "apply_overrides",
    "config_names",
    "default_config",
    "load_config",
    "validate",
]

TASKS = ("segmentation", "autoencoder")
PARALLEL = ("jit", "pmap")
DTYPES = ("float32", "bfloat16", "float16")
# Free-form sections: their keys are the model's / the source's own arguments, checked by
# the model registry and `fcnjax.data.get_source` (which name the valid choices).
FREE_FORM = ("model", "data", "eval_data")


class ConfigError(ValueError):
    """A config key that does not exist, a value of the wrong type, or an invalid choice."""


def default_config() -> ml_collections.ConfigDict:
    """Every field of a training config, with its default."""
    c = ml_collections.ConfigDict()
    c.task = "segmentation"  # segmentation | autoencoder (reconstruct the image, MSE)
    c.seed = 0  # parameters, shuffling, augmentation and dropout all derive from it

    # Model: `name` from fcnjax.models.NAMES, the rest are its keyword arguments.
    # num_classes defaults to the training source's.
    c.model = ml_collections.ConfigDict({"name": "fcn8s"})
    c.init = ml_collections.ConfigDict()
    c.init.backbone_weights = None  # VGG16 weights: "imagenet" (Keras file), a path or URL
    c.init.from_workdir = None  # staged FCN training: start from that run's last params
    c.dtype = "float32"  # compute dtype; parameters stay float32 (bfloat16 on TPU)

    # Data: `fcnjax.data.get_source` arguments for training; `eval_data` overrides them
    # for the validation source (None: no evaluation).
    c.data = ml_collections.ConfigDict({"name": "shapes"})
    c.eval_data = ml_collections.ConfigDict({"split": "validation"})
    c.input = ml_collections.ConfigDict()
    c.input.size = None  # (H, W) of training crops and of padded evaluation images
    c.input.mode = "crop"  # crop (random scale + crop) | resize | none
    c.input.scale_range = (0.5, 2.0)  # random scale for mode=crop (None: no scaling)
    c.input.flip = True
    c.input.jitter = None  # (brightness, contrast, saturation) or None
    c.input.normalization = "unit"  # unit | imagenet | caffe | none; "backbone": the weights'
    c.input.eval_mode = "pad"  # pad | resize | none
    c.input.workers = 0  # decoding processes (grain); 0: threads in this process
    c.input.threads = 2
    c.input.prefetch = 4

    c.batch_size = 16  # global batch, split over processes and devices
    c.eval_batch_size = None  # default: batch_size
    c.num_steps = None  # training steps; or
    c.num_epochs = None  # passes over the training source (one of the two must be set)

    c.optimizer = ml_collections.ConfigDict(dict(optim.DEFAULTS))  # see fcnjax.optim.DEFAULTS
    c.loss = ml_collections.ConfigDict()
    c.loss.reduction = "mean"  # mean over counted pixels | sum (the FCN reference)
    c.loss.class_weights = None  # None | "median_frequency" | a list of K weights
    c.loss.ignore_label = 255

    c.parallel = "jit"  # jit (NamedSharding over a Mesh) | pmap
    c.distributed = ml_collections.ConfigDict()
    c.distributed.initialize = "auto"  # auto: when a coordinator is set | True | False
    c.distributed.coordinator_address = None  # "host:port" of process 0 (or env vars)
    c.distributed.num_processes = None
    c.distributed.process_id = None

    c.log_every_steps = 50
    c.eval_every_steps = None  # None: at every checkpoint and at the end
    c.checkpoint = ml_collections.ConfigDict()
    c.checkpoint.every_steps = 1000
    c.checkpoint.keep = 3  # latest checkpoints kept (the best one is kept apart)
    c.checkpoint.best_metric = "mean_iou"  # validation metric for checkpoints/best
    c.checkpoint.best_mode = "max"  # max | min
    c.checkpoint.asynchronous = True

    c.outputs = ml_collections.ConfigDict()
    c.outputs.num_examples = 8  # validation examples in predictions.png
    c.outputs.latent_points = 500  # autoencoder: points in latent.png
    c.outputs.decode_point = (2.0, -4.0)  # autoencoder: latent point decoded to decoded.png
    return c


def config_names() -> tuple[str, ...]:
    """The recipes shipped in :mod:`fcnjax.configs`, by name (``"shapes_fcn8s"``, ...)."""
    return tuple(sorted(m.name for m in pkgutil.iter_modules(configs.__path__)))


def load_config(spec: str) -> ml_collections.ConfigDict:
    """``"NAME[:arg]"`` or ``"path/to/config.py[:arg]"`` -> ``get_config(arg)``, validated.

    ``NAME`` is a recipe shipped in :mod:`fcnjax.configs` (:func:`config_names`); anything
    else is the path of a config file, which may import and extend a shipped recipe
    (``from fcnjax.configs import shapes_fcn8s``). Raises ConfigError naming the shipped
    configs when ``spec`` is neither.
    """
    where, _, arg = str(spec).partition(":")
    try:
        if where in config_names():
            module = importlib.import_module(f"fcnjax.configs.{where}")
        else:
            module = _load_file(where)
        if not hasattr(module, "get_config"):
            raise ConfigError(f"config {where!r} has no get_config().")
        config = module.get_config(arg) if arg else module.get_config()
    except ConfigError:
        raise
    except SyntaxError as e:  # the file's own mistake: name it and the line
        raise ConfigError(f"config {where!r}: syntax error at line {e.lineno}: {e.msg}.") from e
    except Exception as e:  # noqa: BLE001 (an import or get_config() failing is the config's)
        raise ConfigError(f"config {spec!r} failed to load: {type(e).__name__}: {e}") from e
    if not isinstance(config, ml_collections.ConfigDict):
        raise ConfigError(f"{where}: get_config() must return an ml_collections.ConfigDict.")
    validate(config)
    return config


def _load_file(path: str):
    shipped = ", ".join(config_names())
    if os.path.isdir(path):
        raise ConfigError(f"config {path!r} is a directory; give a .py file or one of: {shipped}.")
    if not os.path.isfile(path):
        if "/" in path or os.sep in path or path.endswith(".py"):
            raise ConfigError(f"config file {path!r} does not exist; shipped configs: {shipped}.")
        raise ConfigError(f"unknown config {path!r}: not a shipped config ({shipped}) nor a file.")
    module_spec = importlib.util.spec_from_file_location("fcnjax_user_config", path)
    if module_spec is None:
        raise ConfigError(f"config file {path!r} is not a Python file (.py).")
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


def from_json(text: str) -> ml_collections.ConfigDict:
    """A config saved by the trainer (``workdir/config.json``), on top of the defaults."""
    config = default_config()
    _merge(config, json.loads(text), "")
    return config


def _merge(config: ml_collections.ConfigDict, values: dict, prefix: str) -> None:
    for key, value in values.items():
        if isinstance(value, dict) and isinstance(config.get(key), ml_collections.ConfigDict):
            if key in FREE_FORM:
                config[key] = ml_collections.ConfigDict(value)
            else:
                _merge(config[key], value, f"{prefix}{key}.")
        else:
            with config.ignore_type():
                config[key] = tuple(value) if isinstance(value, list) else value


def validate(config: ml_collections.ConfigDict) -> None:
    """Checks keys against :func:`default_config` and the fixed choices; raises ConfigError."""
    _check_keys(config, default_config(), "")
    for key, choices in (("task", TASKS), ("parallel", PARALLEL), ("dtype", DTYPES)):
        if config[key] not in choices:
            raise ConfigError(f"`{key}` must be one of {choices}; got {config[key]!r}.")
    if config.checkpoint.best_mode not in ("max", "min"):
        raise ConfigError(
            f"`checkpoint.best_mode` must be 'max' or 'min'; got {config.checkpoint.best_mode!r}."
        )
    if config.loss.reduction not in ("mean", "sum"):
        raise ConfigError(
            f"`loss.reduction` must be 'mean' or 'sum'; got {config.loss.reduction!r}."
        )
    if config.num_steps is not None and config.num_epochs is not None:
        raise ConfigError(
            f"set one of `num_steps` ({config.num_steps}) and `num_epochs` ({config.num_epochs}); "
            "the other must be None."
        )
    positive = ("batch_size", "log_every_steps", "checkpoint.every_steps", "checkpoint.keep")
    optional = ("num_steps", "num_epochs", "eval_batch_size", "eval_every_steps")
    for key in positive + optional:
        value = config
        for part in key.split("."):
            value = value[part]
        if value is None and key in optional:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ConfigError(
                f"`{key}` must be a positive int{' or None' * (key in optional)}; got {value!r}."
            )
    try:
        optim._options(config.optimizer.to_dict())
    except ValueError as e:
        raise ConfigError(str(e)) from None


def _check_keys(config, reference, prefix: str) -> None:
    for key in config.keys():
        if key not in reference:
            raise ConfigError(
                f"unknown config key {prefix + key!r}; valid keys: {sorted(reference.keys())}."
            )
        value, ref = config[key], reference[key]
        if isinstance(ref, ml_collections.ConfigDict) and key not in FREE_FORM:
            if value is not None and not isinstance(value, ml_collections.ConfigDict):
                raise ConfigError(f"`{prefix + key}` must be a section; got {value!r}.")
            if value is not None:
                _check_keys(value, ref, f"{prefix}{key}.")


def _parse(text: str, old: Any = None) -> Any:
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        if isinstance(old, str):  # a bare word for a string field stays that word
            return text.strip()  # (`input.mode=none` is the mode "none", not None)
        lowered = text.strip().lower()
        if lowered in ("true", "false"):
            return lowered == "true"
        if lowered in ("none", "null"):
            return None
        return text


def apply_overrides(config: ml_collections.ConfigDict, overrides: Iterable[str]) -> None:
    """Applies ``"a.b=value"`` overrides in place (values parsed as Python literals).

    The key must exist (except inside the free-form ``model``/``data``/``eval_data``
    sections), and the value must have the field's type (an int is accepted for a float).
    """
    for item in overrides:
        key, sep, text = str(item).partition("=")
        key = key.strip().removeprefix("--").removeprefix("config.")
        if not sep or not key:
            raise ConfigError(f"override {item!r} must look like key=value.")
        parts = key.split(".")
        node, where = config, ""
        for part in parts[:-1]:
            if part not in node:
                raise ConfigError(
                    f"unknown config key {where + part!r} (in {key!r}); "
                    f"valid keys: {sorted(node.keys())}."
                )
            node, where = node[part], f"{where}{part}."
            if not isinstance(node, ml_collections.ConfigDict):
                raise ConfigError(f"`{where[:-1]}` is not a section; cannot set {key!r}.")
        last = parts[-1]
        free = any(p in FREE_FORM for p in parts[:1])
        if last not in node and not free:
            raise ConfigError(
                f"unknown config key {key!r}; valid keys under "
                f"{where[:-1] or 'the top level'!r}: {sorted(node.keys())}."
            )
        old = node.get(last) if last in node else None
        value = _parse(text, old)
        if isinstance(value, list):
            value = tuple(value)
        if old is not None and value is not None and not _same_kind(old, value):
            raise ConfigError(
                f"`{key}` expects {type(old).__name__} (like {old!r}); got {text!r} "
                f"({type(value).__name__})."
            )
        if isinstance(old, float) and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        with node.ignore_type():
            node[last] = value
    validate(config)


def _same_kind(old: Any, new: Any) -> bool:
    if isinstance(old, bool) or isinstance(new, bool):
        return isinstance(old, bool) and isinstance(new, bool)
    if isinstance(old, (int, float)) and isinstance(new, (int, float)):
        return isinstance(old, float) or isinstance(new, int)
    if isinstance(old, (tuple, list)):
        return isinstance(new, (tuple, list))
    if isinstance(old, ml_collections.ConfigDict):
        return False
    return isinstance(new, type(old))
