"""Training configs: the defaults every config starts from, loading by name or path, overrides.

A config file defines ``get_config(arg=None)`` returning an ``ml_collections.ConfigDict``
(``arg`` is the text after a colon: ``shapes_fcn8s:runlocal``). It starts from
:func:`default_config` and overrides fields, so every run has every field and a typo is
an error, not a silently ignored setting. The recipes ship in :mod:`fcnjax.configs` and
are chosen by name; any other config is given by the path of its file.

Every field has a type, also those whose default is None (``placeholder`` fields), and
ConfigDict keeps it: ``config.input.size = "64"`` is a TypeError. Overrides (``key=value``,
from ``--config.key=value`` or :func:`apply_overrides`) parse the value by the field's type
as ``ml_collections.config_flags`` does (:func:`parse_value`), naming key and type.

>>> load_config("shapes_fcn8s:runlocal").num_steps
4
>>> load_config("shapes_fcn9s")
Traceback (most recent call last):
...
fcnjax.config.ConfigError: unknown config 'shapes_fcn9s': not a shipped config (cae_mnist, ...
>>> config = default_config()
>>> apply_overrides(config, ["batch_size=8", "optimizer.name=adamw", "input.size=(64, 64)"])
>>> config.batch_size, config.optimizer.name, config.input.size
(8, 'adamw', (64, 64))
>>> apply_overrides(config, ["optimiser.name=sgd"])
Traceback (most recent call last):
...
fcnjax.config.ConfigError: unknown config key 'optimiser' (in 'optimiser.name'; did you mean ...
"""

from __future__ import annotations

import ast
import copy
import difflib
import importlib
import importlib.util
import json
import os
import pkgutil
from collections.abc import Iterable, Mapping
from typing import Any

import ml_collections
from absl import flags as absl_flags
from ml_collections.config_flags import tuple_parser

from fcnjax import configs, inference, models, optim
from fcnjax.configs.default import default_config

__all__ = [
    "ConfigError",
    "apply_overrides",
    "as_config",
    "config_names",
    "default_config",
    "from_json",
    "load_config",
    "parse_assignments",
    "parse_value",
    "validate",
]

TASKS = ("segmentation", "autoencoder")
PARALLEL = ("jit", "pmap")
DTYPES = ("float32", "bfloat16", "float16")
# Free-form sections: their keys are the model's / the source's own arguments, checked by
# the model registry and `fcnjax.data.get_source` (which name the valid choices).
FREE_FORM = ("model", "data", "eval_data")

ConfigDict = ml_collections.ConfigDict
FieldType = type | tuple[type, ...]
_NoneType = type(None)
# The parsers `ml_collections.config_flags` uses for fields of these types (absl's flag
# parsers: `true`/`1`, `1_000`, `1e-3`; a tuple from `(8, 8)`, `[8, 8]`, or one word).
_FLAG_PARSERS = {
    bool: absl_flags.BooleanParser(),
    int: absl_flags.IntegerParser(),
    float: absl_flags.FloatParser(),
    tuple: tuple_parser.TupleParser(),
}


class ConfigError(ValueError):
    """A config key that does not exist, a value of the wrong type, or an invalid choice."""


def config_names() -> tuple[str, ...]:
    """The recipes shipped in :mod:`fcnjax.configs`, by name (``"shapes_fcn8s"``, ...)."""
    names = (m.name for m in pkgutil.iter_modules(configs.__path__))
    return tuple(sorted(n for n in names if n != "default"))  # every recipe's base


def load_config(spec: str, overrides: Iterable[str] = ()) -> ConfigDict:
    """``"NAME[:arg]"`` or ``"path/to/config.py[:arg]"`` -> ``get_config(arg)``, with the
    ``"key=value"`` ``overrides`` applied (:func:`apply_overrides`), validated.

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
    if not isinstance(config, ConfigDict):
        raise ConfigError(f"{where}: get_config() must return an ml_collections.ConfigDict.")
    apply_overrides(config, overrides)  # (validates, also with no overrides)
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


def as_config(config: ConfigDict | Mapping[str, Any]) -> ConfigDict:
    """A validated copy of ``config``, never ``config`` itself.

    A ConfigDict is copied whole (``copy.deepcopy``: its types and links between its fields
    stay, and changing the copy leaves the caller's alone); a mapping is merged onto
    :func:`default_config`, each value checked against its field's type as an override is.
    Raises TypeError for anything else and ConfigError for a bad key, type or choice.

    >>> as_config({"num_steps": 5, "optimizer": {"name": "adam"}}).optimizer.learning_rate
    0.001
    >>> as_config({"num_steps": "5"})
    Traceback (most recent call last):
    ...
    fcnjax.config.ConfigError: `num_steps` expects int; got '5'.
    """
    if isinstance(config, ConfigDict):
        config = copy.deepcopy(config)
    elif isinstance(config, Mapping):
        merged = default_config()
        _merge(merged, config, "")
        config = merged
    else:
        raise TypeError(
            "`config` must be an ml_collections.ConfigDict or a mapping (a dict); "
            f"got {type(config).__name__}."
        )
    validate(config)
    return config


def from_json(text: str) -> ConfigDict:
    """A config saved by the trainer (``workdir/config.json``), on top of the defaults."""
    return as_config(json.loads(text))


def _merge(config: ConfigDict, values: Mapping, prefix: str) -> None:
    for key, value in values.items():
        path = f"{prefix}{key}"
        if key not in config:
            raise ConfigError(_unknown_key(path, key, config))
        if isinstance(value, ConfigDict):
            value = value.to_dict()
        section = isinstance(config[key], ConfigDict) and path not in FREE_FORM
        if isinstance(value, Mapping) and section:
            _merge(config[key], value, f"{path}.")
            continue
        value = _tuples(value)
        _store(config, key, value, path, _expected_type(config, None, key), repr(value))


def _tuples(value: Any) -> Any:
    """JSON's arrays as the config's tuples, also inside a section given whole."""
    if isinstance(value, Mapping):
        return ConfigDict({k: _tuples(v) for k, v in value.items()})
    return tuple(_tuples(v) for v in value) if isinstance(value, list) else value


def validate(config: ConfigDict) -> None:
    """Checks keys and types against :func:`default_config`, the fixed choices and the model's
    values (:func:`fcnjax.models.check_arguments`); raises ConfigError naming the key."""
    _check_keys(config, default_config(), "")
    for key, choices in (
        ("task", TASKS),
        ("parallel", PARALLEL),
        ("dtype", DTYPES),
        ("checkpoint.best_mode", ("max", "min")),
        ("loss.reduction", ("mean", "sum")),
    ):
        section, _, field = key.rpartition(".")
        value = (config[section] if section else config)[field]
        if value not in choices:
            raise ConfigError(f"`{key}` must be one of {choices}; got {value!r}.")
    initialize = config.distributed.initialize if config.distributed is not None else "auto"
    if not (initialize == "auto" or isinstance(initialize, bool)):
        raise ConfigError(
            f"`distributed.initialize` must be 'auto', True or False; got {initialize!r}."
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
        optim.check_options(config.optimizer.to_dict())
        if isinstance(config.model, ConfigDict):
            models.check_arguments(config.model.to_dict(), prefix="model.")
        inference.check_options(config.inference.to_dict())
    except ValueError as e:
        raise ConfigError(str(e)) from None


def _check_keys(config: ConfigDict, reference: ConfigDict, prefix: str) -> None:
    for key in config.keys():
        path = prefix + key
        if key not in reference:
            raise ConfigError(_unknown_key(path, key, reference))
        value, ref = config[key], reference[key]
        if isinstance(ref, ConfigDict):
            if path in FREE_FORM or value is None:
                continue
            if not isinstance(value, ConfigDict):
                raise ConfigError(f"`{path}` must be a section; got {value!r}.")
            _check_keys(value, ref, f"{path}.")
        elif value is not None and reference.get_type(key) is not _NoneType:
            expected = reference.get_type(key)
            try:
                ml_collections.FieldReference(value, field_type=expected)
            except TypeError:
                raise ConfigError(
                    f"`{path}` expects {_type_name(expected)}; got {value!r}."
                ) from None


# --------------------------------------------------------------------------------------
# Overrides: "key=value" strings.


def parse_value(text: str, field_type: FieldType = object) -> Any:
    """``text`` as a value for a field of ``field_type``, as ``ml_collections.config_flags``
    parses ``--config.key=text``; raises ValueError when it is not one.

    bool, int, float, tuple: config_flags' parsers (absl's ``true``/``t``/``1``,
    ``1_000``, ``1e-3``; a tuple from ``(8, 8)`` or ``[8, 8]``, one word being a 1-tuple).
    str: the text itself (or the string a quoted literal holds: ``'a b'``). A section
    (ConfigDict): a dict literal. Anything else (``object``: a key new to a free-form
    section; a union such as ``(str, tuple)``): a Python literal, else the text. ``None``
    is None for every field, and so are ``none``/``null`` but for a str field, where they
    are words (``input.mode=none`` is the mode "none"). Lists become tuples.

    >>> parse_value("1e-3", float), parse_value("t", bool), parse_value("1_000", int)
    (0.001, True, 1000)
    >>> parse_value("none", str), parse_value("none", tuple), parse_value("'a b'", str)
    ('none', None, 'a b')
    >>> parse_value("backbone", tuple), parse_value("[8, 8]", tuple)
    (('backbone',), (8, 8))
    >>> parse_value("median_frequency", (str, tuple)), parse_value("[1, 2]", (str, tuple))
    ('median_frequency', (1, 2))
    """
    text = str(text).strip()
    if text == "None" or (field_type is not str and text.lower() in ("none", "null")):
        return None
    if field_type is str:
        value = _literal(text)
        return value if isinstance(value, str) else text
    if field_type in _FLAG_PARSERS:
        return _FLAG_PARSERS[field_type].parse(text)
    value = _literal(text)
    if _is_section(field_type):
        if not isinstance(value, dict):
            raise ValueError(f"{text!r} is not a dict")
        return ConfigDict(value)
    if value is text and text.lower() in ("true", "false"):
        return text.lower() == "true"
    return value


def _literal(text: str) -> Any:
    """A Python literal (lists as tuples), else ``text`` itself."""
    try:
        value = ast.literal_eval(text)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):  # not a literal
        return text
    return tuple(value) if isinstance(value, list) else value


def apply_overrides(config: ConfigDict, overrides: Iterable[str]) -> None:
    """Applies ``"a.b=value"`` overrides in place, then validates ``config``.

    The key must exist (except inside the free-form ``model``/``data``/``eval_data``
    sections, which also take a whole dict or None); the value is parsed by
    :func:`parse_value` for the field's type (the default's type where the field holds
    None) and must be of it (an int is accepted for a float). As with
    ``ml_collections.config_flags``, a section given after one of its fields (``data=...``
    after ``data.root=...``) is an error, as it would undo that field.
    """
    items = [_split_item(item) for item in overrides]
    for i, (earlier, _) in enumerate(items):
        for later, _ in items[i + 1 :]:
            if earlier.startswith(f"{later}."):
                raise ConfigError(
                    f"override {later!r} comes after {earlier!r} and would replace it; "
                    f"give {later!r} first."
                )
    defaults = default_config()
    for key, text in items:
        _assign(config, defaults, key, text)
    validate(config)


def parse_assignments(items: Iterable[str]) -> dict[str, Any]:
    """Free-form ``"key=value"`` pairs -> a dict, each value parsed as for a key new to a
    free-form section (:func:`parse_value` with ``object``): the data command line's
    source config. Raises ConfigError for an item that is not ``key=value``.

    >>> parse_assignments(["name=voc", "size=(64, 64)", "root=/data/VOC", "verify=false"])
    {'name': 'voc', 'root': '/data/VOC', 'size': (64, 64), 'verify': False}
    """
    section = ConfigDict()
    for item in items:
        _assign(section, None, *_split_item(item))
    return section.to_dict()


def _split_item(item: str) -> tuple[str, str]:
    key, sep, text = str(item).partition("=")
    key = key.strip().removeprefix("--").removeprefix("config.")
    if not sep or not key or "" in key.split("."):
        raise ConfigError(f"override {item!r} must look like key=value.")
    return key, text


def _assign(config: ConfigDict, defaults: ConfigDict | None, key: str, text: str) -> None:
    """``config[key] = text``, parsed and type-checked; ``defaults`` None: all keys are free."""
    parts = key.split(".")
    free = defaults is None or parts[0] in FREE_FORM
    node, ref = config, defaults
    for i, part in enumerate(parts[:-1]):
        if part not in node:
            raise ConfigError(_unknown_key(".".join(parts[: i + 1]), part, node, key))
        node, ref = node[part], (ref.get(part) if isinstance(ref, ConfigDict) else None)
        if not isinstance(node, ConfigDict):  # (a free-form section may be None)
            section = ".".join(parts[: i + 1])
            hint = f"; give it whole: {section}={{...}}" * (free and node is None)
            raise ConfigError(f"`{section}` is {node!r}, not a section: cannot set {key!r}{hint}.")
    last = parts[-1]
    if last not in node and not free:
        raise ConfigError(_unknown_key(key, last, node))
    expected = _expected_type(node, ref, last)
    if _is_section(expected) and not free:
        raise ConfigError(f"`{key}` is a section: set its fields ({key}.<field>=value).")
    try:
        value = parse_value(text, expected)
    except ValueError as e:
        detail = f" ({e})" if expected is tuple else ""
        raise ConfigError(_expects(key, expected, node.get(last), repr(text)) + detail) from None
    _store(node, last, value, key, expected, repr(text))


def _expected_type(node: ConfigDict, ref: Any, name: str) -> FieldType:
    """The field's type: the config's own, else (it holds None) the default's, else any."""
    for holder in (node, ref):
        if isinstance(holder, ConfigDict) and name in holder:
            field_type = holder.get_type(name)
            if field_type is not _NoneType:
                return field_type
    return object


def _store(node: ConfigDict, name: str, value: Any, key: str, expected: FieldType, shown: str):
    """``node[name] = value`` after ml_collections' own type check (int -> float, list ->
    tuple): a FieldReference of the expected type, then the ConfigDict's type safety."""
    try:
        if value is not None and expected is not object:
            value = ml_collections.FieldReference(value, field_type=expected).get()
        node[name] = value
    except TypeError:
        raise ConfigError(_expects(key, expected, node.get(name), shown)) from None


def _expects(key: str, expected: FieldType, old: Any, shown: str) -> str:
    like = f" (like {old!r})" if old is not None and not isinstance(old, ConfigDict) else ""
    return f"`{key}` expects {_type_name(expected)}{like}; got {shown}."


def _type_name(field_type: FieldType) -> str:
    if isinstance(field_type, tuple):
        return " or ".join(_type_name(t) for t in field_type)
    if _is_section(field_type):
        return "a section (a dict)"
    return getattr(field_type, "__name__", str(field_type))


def _unknown_key(path: str, name: str, node: ConfigDict, full: str | None = None) -> str:
    valid = sorted(str(k) for k in node.keys())
    guess = difflib.get_close_matches(name, valid, 1, 0.75)
    notes = [f"in {full!r}"] * (full not in (None, path))
    notes += [f"did you mean {guess[0]!r}?"] * bool(guess)
    note = f" ({'; '.join(notes)})" if notes else ""
    section = path.rpartition(".")[0]
    where = f"valid keys under {section!r}" if section else "valid top-level keys"
    return f"unknown config key {path!r}{note}; {where}: {valid}."


def _is_section(field_type: FieldType) -> bool:
    return isinstance(field_type, type) and issubclass(field_type, ConfigDict)
