"""The training recipes, shipped in the package so an installed wheel can run them.

Each module is a config: ``get_config(arg=None)`` returns an ``ml_collections.ConfigDict``
built on :func:`fcnjax.config.default_config`. Choose one by name or give your own file::

    fcnjax train --config shapes_fcn8s --workdir runs/shapes
    fcnjax train --config shapes_fcn8s:runlocal --workdir /tmp/smoke  # seconds
    fcnjax train --config path/to/my_config.py[:arg] --workdir runs/mine

A config of your own extends a shipped one by importing it::

    from fcnjax.configs import shapes_fcn8s

    def get_config(arg=None):
        c = shapes_fcn8s.get_config(arg)
        c.num_steps = 10
        return c

The recipes and the config sections are described in this folder's ``README.md``.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import pkgutil

import ml_collections

from fcnjax.training.settings import ConfigError

__all__ = ["load", "names"]


def names() -> tuple[str, ...]:
    """The recipes shipped here, by name (``"shapes_fcn8s"``, ...)."""
    names = (m.name for m in pkgutil.iter_modules(__path__))
    return tuple(sorted(n for n in names if n != "default"))  # every recipe's base


def load(spec: str) -> ml_collections.ConfigDict:
    """``"NAME[:arg]"`` (a recipe of :func:`names`) or ``"path/to/config.py[:arg]"`` (which
    may extend a recipe) -> ``get_config(arg)``, as written (:func:`fcnjax.config.load_config`
    applies overrides and validates). Raises ConfigError naming the shipped configs when
    ``spec`` is neither, and for a file that fails to load."""
    where, _, arg = str(spec).partition(":")
    try:
        if where in names():
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
    return config


def _load_file(path: str):
    shipped = ", ".join(names())
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
