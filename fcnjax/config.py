"""Training configs: the defaults every config starts from, loading by name or path, overrides.

A config file defines ``get_config(arg=None)`` returning an ``ml_collections.ConfigDict``
(``arg``: the text after a colon, ``shapes_fcn8s:runlocal``) that starts from
:func:`default_config`, so every run has every field, each with a type (also those whose
default is None: ``placeholder`` fields), and a typo is an error. Overrides (``key=value``)
are parsed as ``ml_collections.config_flags`` parses ``--config.key=value``.

>>> load_config("shapes_fcn8s:runlocal").num_steps
4
>>> load_config("shapes_fcn9s")
Traceback (most recent call last):
...
fcnjax.training.settings.ConfigError: unknown config 'shapes_fcn9s': not a shipped config (...
>>> config = default_config()
>>> apply_overrides(config, ["batch_size=8", "optimizer.name=adamw", "input.size=(64, 64)"])
>>> config.batch_size, config.optimizer.name, config.input.size
(8, 'adamw', (64, 64))
>>> apply_overrides(config, ["optimiser.name=sgd"])
Traceback (most recent call last):
...
fcnjax.training.settings.ConfigError: unknown config key 'optimiser' (in 'optimiser.name'; ...
"""

from __future__ import annotations

import contextlib
import copy
import difflib
import json
from collections.abc import Iterable, Mapping
from typing import Any

import ml_collections
from ml_collections.config_flags import config_flags, config_path

from fcnjax import configs, inference, models
from fcnjax.configs.default import default_config
from fcnjax.training import optim, settings, tasks
from fcnjax.training.settings import ConfigError

__all__ = ["ConfigError", "apply_overrides", "as_config", "config_names", "default_config"]
__all__ += ["from_json", "load_config", "parse_assignments", "validate"]

# Free-form sections: the model's / the source's own arguments (checked by their owners).
FREE_FORM = ("model", "data", "eval_data")

ConfigDict = ml_collections.ConfigDict
# config_flags' parsers by field type: absl's (`true`/`1`, `1_000`, `1e-3`), TupleParser (`(8, 8)`,
# `[8, 8]`, one word), str (the text), ConfigDict (a dict), object (a literal, else the text).
_PARSERS = config_flags._FIELD_TYPE_TO_PARSER


def config_names() -> tuple[str, ...]:
    """The recipes shipped in :mod:`fcnjax.configs`, by name (``"shapes_fcn8s"``, ...)."""
    return configs.names()


def load_config(spec: str, overrides: Iterable[str] = ()) -> ConfigDict:
    """``"NAME[:arg]"`` (a recipe of :func:`config_names`) or ``"path/to/config.py[:arg]"``
    (which may extend a recipe) -> ``get_config(arg)`` (:func:`fcnjax.configs.load`), with
    ``overrides`` applied, validated. Raises ConfigError naming the shipped configs when
    ``spec`` is neither."""
    config = configs.load(spec)
    apply_overrides(config, overrides)  # (validates, also with no overrides)
    return config


def as_config(config: ConfigDict | Mapping[str, Any]) -> ConfigDict:
    """A validated copy of ``config``: of a ConfigDict, a deep copy (its types and links stay);
    of a mapping, :func:`default_config` with its values, each checked against the field's
    type. Raises TypeError for anything else and ConfigError for a bad key, type or choice.

    >>> as_config({"num_steps": 5, "optimizer": {"name": "adam"}}).optimizer.learning_rate
    0.001
    >>> as_config({"num_steps": "5"})
    Traceback (most recent call last):
    ...
    fcnjax.training.settings.ConfigError: `num_steps` expects int; got '5'.
    """
    if isinstance(config, ConfigDict):
        config = copy.deepcopy(config)
    elif isinstance(config, Mapping):
        config, values = default_config(), config
        _merge(config, values)
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


def _merge(config: ConfigDict, values: Mapping, prefix: str = "", like: bool = True) -> None:
    """Sets ``values`` (a section's: a mapping) in ``config``, each checked against its field's
    type; a free-form section is replaced whole. JSON's arrays become tuples."""
    for key, value in values.items():
        path = f"{prefix}{key}"
        if key not in config:
            raise ConfigError(_unknown_key(path, config))
        value = value.to_dict() if isinstance(value, ConfigDict) else value
        section = isinstance(config[key], ConfigDict) and path not in FREE_FORM
        if isinstance(value, Mapping) and section:
            _merge(config[key], value, f"{path}.", like)
        else:
            old = config[key] if like else None  # (the default, shown as an example)
            _store(config, key, _tuples(value), path, config.get_type(key), repr(value), old)


def _tuples(value: Any) -> Any:
    """Lists as the config's tuples, mappings as sections, also inside a section given whole."""
    if isinstance(value, Mapping):
        return ConfigDict({k: _tuples(v) for k, v in value.items()})
    return tuple(_tuples(v) for v in value) if isinstance(value, list) else value


def validate(config: ConfigDict) -> None:
    """Checks keys and types against :func:`default_config`, then each section by its owner:
    the schedule (:func:`fcnjax.training.settings.check`), the task, the optimizer, the
    model's values (:func:`fcnjax.models.check_arguments`) and the inference options;
    raises ConfigError naming the key."""
    _merge(default_config(), config.to_dict(), like=False)  # every key and type
    try:  # each section by the code that owns it
        settings.check(config.to_dict())
        tasks.get(config.task)
        optim.check_options(config.optimizer.to_dict())
        if isinstance(config.model, ConfigDict):
            models.check_arguments(config.model.to_dict(), prefix="model.")
        inference.check_options(config.inference.to_dict())
    except ValueError as e:
        raise ConfigError(str(e)) from None


def apply_overrides(config: ConfigDict, overrides: Iterable[str]) -> None:
    """Applies ``"a.b=value"`` overrides in place, then validates ``config``.

    The key must exist, but in the free-form ``model``/``data``/``eval_data`` sections (which
    also take a whole dict, or None). The value is parsed by config_flags' parser for the
    field's type (the default's where the field holds None); ``None``, and ``none`` but for
    a str field, is None. As with config_flags, a section after one of its fields is an error.

    >>> c = default_config()
    >>> apply_overrides(c, ["input.mode=none", "input.jitter=none", "optimizer.freeze=fc6"])
    >>> c.input.mode, c.input.jitter, c.optimizer.freeze
    ('none', None, ('fc6',))
    """
    defaults = default_config()
    for key, text in _split(overrides):
        _assign(config, defaults, key, text)
    validate(config)


def parse_assignments(items: Iterable[str]) -> dict[str, Any]:
    """Free-form ``"key=value"`` pairs -> a dict, each value parsed as for a key new to a
    free-form section (config_flags' literals): the data command line's source config.

    >>> parse_assignments(["name=voc", "size=(64, 64)", "root=/data/VOC", "verify=false"])
    {'name': 'voc', 'root': '/data/VOC', 'size': (64, 64), 'verify': False}
    """
    section = ConfigDict()
    for key, text in _split(items):
        _assign(section, None, key, text)
    return section.to_dict()


def _split(items: Iterable[str]) -> list[tuple[str, str]]:
    """``"key=value"`` -> ``(key, text)``; ConfigError for an item that is not that, or (as in
    config_flags) a section after one of its fields: ``data=...`` would undo ``data.root=...``."""
    pairs = []
    for item in items:
        key, sep, text = str(item).partition("=")
        key = key.strip().removeprefix("--").removeprefix("config.")
        if not sep or not key or "" in key.split("."):
            raise ConfigError(f"override {item!r} must look like key=value.")
        for earlier in (k for k, _ in pairs if k.startswith(f"{key}.")):
            raise ConfigError(
                f"override {key!r} comes after {earlier!r} and would replace it; "
                f"give {key!r} first."
            )
        pairs.append((key, text))
    return pairs


def _assign(config: ConfigDict, defaults: ConfigDict | None, key: str, text: str) -> None:
    """``config[key] = text`` parsed and type-checked; ``defaults`` None: every key is free."""
    free = defaults is None or key.split(".")[0] in FREE_FORM
    *sections, name = key.split(".")
    node = config
    for i, part in enumerate(sections, 1):
        path = ".".join(sections[:i])
        if part not in node:
            raise ConfigError(_unknown_key(path, node, key))
        node = node[part]
        if not isinstance(node, ConfigDict):  # (a free-form section may be None)
            hint = f"; give it whole: {path}={{...}}" * (free and node is None)
            raise ConfigError(f"`{path}` is {node!r}, not a section: cannot set {key!r}{hint}.")
    if name not in node and not free:
        raise ConfigError(_unknown_key(key, node))
    # The field's type; where it holds None or is new, the default's (none: config_flags' parser
    # for new keys, Python literals, and no type check).
    expected = node.get_type(name) if name in node else type(None)
    if expected is type(None):
        with contextlib.suppress(AttributeError, KeyError, ValueError):  # (not a default)
            expected = config_path.get_type(key, defaults)
    if expected is ConfigDict and not free:
        raise ConfigError(f"`{key}` is a section: set its fields ({key}.<field>=value).")
    word, detail = text.strip(), ""
    try:
        if word == "None" or (expected is not str and word.lower() in ("none", "null")):
            value = None
        elif expected is str:  # the string a quoted literal holds ('a b'), else the text
            value = _PARSERS[object].parse(word)
            value = value if isinstance(value, str) else word
        else:
            value = _tuples(_PARSERS.get(expected, _PARSERS[object]).parse(word))
    except ValueError as e:  # not of the type: the text, which the type check refuses
        value, detail = word, f" ({e})" * (expected is tuple)
    _store(node, name, value, key, expected, repr(text), node.get(name), detail)


def _store(node, name, value, key, expected, shown, old=None, detail="") -> None:
    """``node[name] = value`` after ml_collections' own type check (int -> float): a
    FieldReference of the expected type, then the ConfigDict's type safety; ConfigError
    naming the key, the type (and the field's value, ``old``) where ``value`` is not of it."""
    try:
        if value is not None and expected is not type(None):
            value = ml_collections.FieldReference(value, field_type=expected).get()
        node[name] = value
    except TypeError:
        types = expected if isinstance(expected, tuple) else (expected,)
        names = " or ".join("a section (a dict)" if t is ConfigDict else t.__name__ for t in types)
        like = f" (like {old!r})" if old is not None and not isinstance(old, ConfigDict) else ""
        raise ConfigError(f"`{key}` expects {names}{like}; got {shown}.{detail}") from None


def _unknown_key(path: str, node: ConfigDict, full: str | None = None) -> str:
    valid = sorted(str(k) for k in node.keys())
    guess = difflib.get_close_matches(path.rpartition(".")[2], valid, 1, 0.75)
    notes = [f"in {full!r}"] * (full not in (None, path))
    note = "; ".join(notes + [f"did you mean {guess[0]!r}?"] * bool(guess))
    section = path.rpartition(".")[0]
    where = f"valid keys under {section!r}" if section else "valid top-level keys"
    return f"unknown config key {path!r}{f' ({note})' * bool(note)}; {where}: {valid}."
