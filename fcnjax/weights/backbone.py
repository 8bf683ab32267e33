"""Placing loaded backbone weights into a model's parameter tree (any backbone)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax.numpy as jnp
import numpy as np

__all__ = ["into_backbone"]


def into_backbone(
    params: Mapping[str, Any], vgg_params: Mapping[str, Any], *, key: str = "backbone"
) -> Any:
    """A copy of ``params`` whose ``params[key][name]`` is ``vgg_params[name]`` for each name.

    Args:
      params: a model's parameter tree (dict or flax ``FrozenDict``), with the backbone
        (e.g. a VGG16) under ``params[key]``, e.g. ``variables["params"]`` of an FCN.
      vgg_params: from :func:`~fcnjax.weights.load_vgg16` (or any ``{name: {leaf: array}}``).
      key: the backbone's submodule name.

    Returns:
      A new tree of the same type as ``params`` (``params`` itself is not modified), the
      loaded arrays cast to the dtypes of the arrays they replace. Names of
      ``params[key]`` absent from ``vgg_params`` (e.g. ``fc6``/``fc7`` after
      ``load_vgg16(fc=False)``) keep their values.

    Raises:
      ValueError: listing every name or leaf of ``vgg_params`` missing in ``params[key]``
        and every shape mismatch.
    """
    from flax.core import FrozenDict, freeze

    new = _copy_dicts(params)
    if key not in new or not isinstance(new[key], dict):
        raise ValueError(f"params has no backbone {key!r}; its keys are {sorted(new)}.")
    backbone = new[key]
    problems = []
    for name, leaves in vgg_params.items():
        if not isinstance(backbone.get(name), dict):
            problems.append(f"{name}: not in params[{key!r}]")
            continue
        for leaf, value in leaves.items():
            old = backbone[name].get(leaf)
            if old is None:
                problems.append(f"{name}/{leaf}: not in params[{key!r}][{name!r}]")
            elif tuple(np.shape(value)) != tuple(np.shape(old)):
                problems.append(
                    f"{name}/{leaf}: shape {tuple(np.shape(value))} does not fit the model's "
                    f"{tuple(np.shape(old))}"
                )
            else:
                backbone[name][leaf] = jnp.asarray(value, dtype=jnp.result_type(old))
    if problems:
        raise ValueError(
            f"Cannot place the weights into params[{key!r}]:\n  - " + "\n  - ".join(problems)
        )
    return freeze(new) if isinstance(params, FrozenDict) else new


def _copy_dicts(tree: Any) -> Any:
    """Copy every mapping of ``tree`` into a new dict; leaves are shared."""
    if isinstance(tree, Mapping):
        return {k: _copy_dicts(v) for k, v in tree.items()}
    return tree
