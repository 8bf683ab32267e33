"""What every backbone's weights go through: a file's tensors checked against the
network's shapes (:class:`ShapeChecker`, used by every loader), and the loaded weights
placed into a model's parameter tree (:func:`into_backbone`)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Mapping
from typing import Any

import jax.numpy as jnp
import numpy as np

__all__ = ["Raw", "ShapeChecker", "into_backbone"]

log = logging.getLogger("fcnjax.weights")

# A file's tensors by fcnjax layer: {layer: {role ("kernel", "bias", "mean", ...): (label,
# array)}}, the arrays in the file's own layout, each labelled by its name in the file.
Raw = dict[str, dict[str, tuple[str, np.ndarray]]]


def _fmt(shape: tuple) -> str:
    return "(" + ", ".join("*" if s is None else str(s) for s in shape) + ")"


class ShapeChecker:
    """Takes a network's tensors from a file, layer by layer, noting every missing and
    misshapen one, so that one error lists them all (:meth:`raise_problems`).

    Args:
      raw: the file's tensors by fcnjax layer (:data:`Raw`); :meth:`take` removes them, so
        what is left once the network is converted was never asked for.
      label: ``label(layer, role)``: the name a tensor has in the file, for messages.
      problems: what reading the file found already.

    >>> check = ShapeChecker({"conv1": {"kernel": ("conv1.weight", np.zeros((8, 3, 7, 7)))}},
    ...                      lambda layer, role: f"{layer}.{role}")
    >>> entry = check.take("conv1", ("kernel", "bias"))
    >>> check.shape_ok(*entry["kernel"], (None, 3, 3, 3))
    False
    >>> check.raise_problems("f.pth does not hold a stem in the torch layout", ["fc.weight"])
    Traceback (most recent call last):
    ValueError: f.pth does not hold a stem in the torch layout:
      - missing: conv1.bias
      - unexpected: fc.weight
      - conv1.weight: expected shape (*, 3, 3, 3), got (8, 3, 7, 7)
    """

    def __init__(self, raw: Raw, label: Callable[[str, str], str], problems: Collection[str] = ()):
        self.raw, self.label = raw, label
        self.missing: list[str] = []
        self.problems = list(problems)

    def take(self, layer: str, roles: Collection[str]) -> dict[str, tuple[str, np.ndarray]]:
        """``layer``'s tensors by role (removed from ``raw``), noting the ``roles`` missing."""
        entry = self.raw.pop(layer, {})
        self.missing += [self.label(layer, r) for r in roles if r not in entry]
        return entry

    def shape_ok(self, label: str, arr: np.ndarray, expected: tuple) -> bool:
        """Whether ``arr`` has the ``expected`` shape (``None``: any size); notes it if not."""
        ok = arr.ndim == len(expected)
        ok = ok and all(e is None or e == s for e, s in zip(expected, arr.shape))
        if not ok:
            self.problems.append(
                f"{label}: expected shape {_fmt(expected)}, got {tuple(arr.shape)}"
            )
        return ok

    def raise_problems(self, what: str, unexpected: list[str]) -> None:
        """A ValueError ``what``, then every missing, unexpected and misshapen tensor and
        every other problem, one per line; nothing if there are none."""
        lines = (
            [f"missing: {m}" for m in self.missing]
            + [f"unexpected: {u}" for u in unexpected]
            + self.problems
        )
        if lines:
            raise ValueError(f"{what}:\n  - " + "\n  - ".join(lines))


def into_backbone(
    params: Mapping[str, Any],
    loaded: Mapping[str, Any],
    *,
    key: str = "backbone",
    collection: str = "params",
    skip_unbuilt: bool = False,
) -> Any:
    """A copy of ``params`` whose ``params[key]`` holds the arrays of ``loaded``.

    Every array of the (arbitrarily nested) tree ``loaded`` replaces the array at the
    same path under ``params[key]``: ``params[key][name][leaf]`` for VGG16's
    ``{name: {leaf: array}}``, ``params[key]["layer1_0"]["conv1"]["kernel"]`` for a
    ResNet's. A model's BatchNorm statistics are placed the same way, in a second call on
    its ``batch_stats``.

    Args:
      params: a model's parameter tree (dict or flax ``FrozenDict``), with the backbone
        (e.g. a VGG16) under ``params[key]``, e.g. ``variables["params"]`` of an FCN, or
        its ``variables["batch_stats"]``.
      loaded: the loaded weights of any backbone: the params of
        :func:`~fcnjax.weights.load_vgg16`, or ``variables["params"]`` or
        ``variables["batch_stats"]`` of :func:`~fcnjax.weights.load_resnet`.
      key: the backbone's submodule name.
      collection: what ``params`` is (``"params"`` or ``"batch_stats"``), for messages.
      skip_unbuilt: leave out (and log) the layers of ``loaded`` that ``params[key]`` does
        not have at all, for an encoder built only up to the level its decoder reads
        (keras-segmentation's U-Net and SegNet: no VGG16 ``block5``, no ResNet
        ``layer4``). Otherwise they are an error, like every other mismatch.

    Returns:
      A new tree of the same type as ``params`` (``params`` itself is not modified), the
      loaded arrays cast to the dtypes of the arrays they replace. Paths of
      ``params[key]`` absent from ``loaded`` (e.g. ``fc6``/``fc7`` after
      ``load_vgg16(fc=False)``) keep their values.

    Raises:
      ValueError: listing every path of ``loaded`` missing in ``params[key]`` and
        every shape mismatch.
    """
    from flax.core import FrozenDict, freeze

    new = _copy_dicts(params)
    if key not in new or not isinstance(new[key], dict):
        raise ValueError(f"{collection} has no backbone {key!r}; its keys are {sorted(new)}.")
    if skip_unbuilt:
        unbuilt = sorted(set(loaded) - set(new[key]))
        if unbuilt:
            log.info(
                "the model does not use these layers of the backbone's %s: %s", collection, unbuilt
            )
            loaded = {k: v for k, v in loaded.items() if k in new[key]}
    problems: list[str] = []
    _place(new[key], loaded, (), f"{collection}[{key!r}]", problems)
    if problems:
        raise ValueError(
            f"Cannot place the weights into {collection}[{key!r}]:\n  - " + "\n  - ".join(problems)
        )
    return freeze(new) if isinstance(params, FrozenDict) else new


def _place(
    target: dict, loaded: Mapping[str, Any], path: tuple[str, ...], root: str, problems: list
) -> None:
    """Every array of ``loaded`` into ``target`` (at ``path`` under ``root``)."""
    where = root + "".join(f"[{p!r}]" for p in path)
    for name, value in loaded.items():
        at = "/".join((*path, name))
        old = target.get(name)
        if isinstance(value, Mapping):
            if isinstance(old, dict):
                _place(old, value, (*path, name), root, problems)
            else:
                problems.append(f"{at}: not in {where}")
        elif old is None:
            problems.append(f"{at}: not in {where}")
        elif isinstance(old, dict):
            problems.append(f"{at}: an array, where the model has the subtree {sorted(old)}")
        elif tuple(np.shape(value)) != tuple(np.shape(old)):
            problems.append(
                f"{at}: shape {tuple(np.shape(value))} does not fit the model's "
                f"{tuple(np.shape(old))}"
            )
        else:
            target[name] = jnp.asarray(value, dtype=jnp.result_type(old))


def _copy_dicts(tree: Any) -> Any:
    """Copy every mapping of ``tree`` into a new dict; leaves are shared."""
    if isinstance(tree, Mapping):
        return {k: _copy_dicts(v) for k, v in tree.items()}
    return tree
