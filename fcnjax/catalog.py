"""What fcnjax ships and what a dataset holds: the commands that only look, ``fcnjax list``
and ``fcnjax verify`` (:mod:`fcnjax.cli` parses their arguments, this module does the work).

:func:`recipes` gives each recipe of :mod:`fcnjax.configs` (:func:`fcnjax.config.config_names`)
with the first line of its docstring. :func:`networks` gives each network of
:data:`fcnjax.models.NAMES` with the paper or library it follows
(:data:`fcnjax.models.REFERENCES`) and its trainable parameters (the ``params`` collection;
BatchNorm statistics are not parameters) for :data:`NUM_CLASSES` classes, counted from
``jax.eval_shape(model.init, ...)``: shapes only, nothing allocated or compiled, so all of
them take a few seconds on a CPU. :func:`verify` reads every example of a config's data, or
of a data source given as ``key=value`` pairs, and with ``stats`` counts its classes.

>>> network("fcn8s").parameters > network("fcn32s").parameters  # two more score layers
True
>>> network("autoencoder").input_shape, network("autoencoder").parameters
((28, 28, 1), 51459)
"""

from __future__ import annotations

import dataclasses
import importlib
import math
import re
from collections.abc import Iterator, Sequence

__all__ = [
    "INPUT_SHAPE",
    "NUM_CLASSES",
    "Network",
    "class_statistics_lines",
    "network",
    "network_lines",
    "networks",
    "plain",
    "print_listing",
    "recipe_lines",
    "recipes",
    "verify",
]

NUM_CLASSES = 21  # PASCAL VOC's 20 classes and background
INPUT_SHAPE = (64, 64, 3)  # any size the networks take; the autoencoder's is its own


@dataclasses.dataclass(frozen=True)
class Network:
    """One registered network: ``parameters`` for ``NUM_CLASSES`` on ``input_shape`` (HWC)."""

    name: str
    reference: str
    input_shape: tuple[int, int, int]
    parameters: int


def plain(text: str) -> str:
    """reStructuredText's roles and literals as plain words.

    >>> plain("keras-segmentation's ``vgg_unet``, see :func:`fcnjax.models.get`")
    "keras-segmentation's vgg_unet, see fcnjax.models.get"
    """
    return re.sub(r":[a-z:]+:`~?([^`]*)`", r"\1", text).replace("``", "")


def recipes() -> list[tuple[str, str]]:
    """``(name, first line of its docstring)`` for each shipped recipe."""
    from fcnjax import config as config_lib

    out = []
    for name in config_lib.config_names():
        doc = importlib.import_module(f"fcnjax.configs.{name}").__doc__ or ""
        out.append((name, plain(doc.strip().split("\n")[0])))
    return out


def network(name: str) -> Network:
    """The registered network ``name``, its parameters counted from shapes alone."""
    import jax
    import jax.numpy as jnp

    from fcnjax import models

    takes = models.fields(name)
    model = models.get(name, **({"num_classes": NUM_CLASSES} if "num_classes" in takes else {}))
    shape = (28, 28, model.channels) if isinstance(model, models.ConvAutoencoder) else INPUT_SHAPE
    x = jax.ShapeDtypeStruct((1, *shape), jnp.float32)
    variables = jax.eval_shape(model.init, jax.random.key(0), x)
    count = sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(variables.get("params", {})))
    return Network(name, models.REFERENCES.get(name, ""), shape, count)


def networks() -> Iterator[Network]:
    """Every registered network, in the registry's order, one at a time."""
    from fcnjax import models

    return (network(name) for name in models.NAMES)


def recipe_lines() -> Iterator[str]:
    """The recipes as ``fcnjax list recipes`` prints them."""
    rows = recipes()
    width = max(len(name) for name, _ in rows)
    yield "Recipes (fcnjax train --config NAME):"
    for name, summary in rows:
        yield f"  {name:<{width}}  {summary}"


def network_lines() -> Iterator[str]:
    """The networks as ``fcnjax list networks`` prints them, each as soon as it is counted."""
    from fcnjax import models

    width = max(len(name) for name in models.NAMES)
    yield (
        f"Networks (model.name=NAME); PARAMETERS: trainable, with {NUM_CLASSES} classes "
        "(encoders have none):"
    )
    yield f"  {'NAME':<{width}}  {'PARAMETERS':>11}  {'INPUT':<8}  REFERENCE"
    for n in networks():
        size = "x".join(str(s) for s in n.input_shape)
        yield f"  {n.name:<{width}}  {n.parameters:>11,}  {size:<8}  {n.reference}"


def print_listing(what: str | None = None) -> int:
    """``fcnjax list [recipes | networks]`` (both when ``what`` is None); each network's line
    is printed as soon as it is counted."""
    lines = {"recipes": recipe_lines, "networks": network_lines}
    for i, kind in enumerate([what] if what else list(lines)):
        if i:
            print()
        for line in lines[kind]():
            print(line, flush=True)
    return 0


def verify(config: str | None = None, overrides: Sequence[str] = (), *, stats: bool = False) -> int:
    """``fcnjax verify``: reads every example of the training and evaluation data of the
    config ``config`` (a recipe's name or a file, :func:`fcnjax.config.load_config`, with
    ``overrides``) or, when ``config`` is None, of the data source that the ``key=value``
    pairs ``overrides`` describe (``name=camvid root=...``: the keys of a config's ``data``
    section, :func:`fcnjax.config.parse_assignments`).

    Prints each source's type and size and each bad example, naming its file; with
    ``stats``, also each source's class statistics (:func:`class_statistics_lines`).
    Returns 1 at the first source with a bad example, else 0.
    """
    from fcnjax import config as config_lib
    from fcnjax import data

    if config is None:
        sections = {"data": config_lib.parse_assignments(overrides)}
    else:
        from fcnjax.training import experiment

        loaded = config_lib.load_config(config, overrides)
        sections = {"data": loaded.data.to_dict(), "eval_data": experiment.eval_data_config(loaded)}
    for name, section in sections.items():
        if section is None:
            continue
        source = data.get_source({**section, "verify": False})
        checked = data.verify(source, on_error="skip")
        skipped = getattr(checked, "skipped", [])
        print(f"{name}: {type(source).__name__}, {len(source)} examples, {len(skipped)} bad")
        for problem in skipped:
            print(f"  {problem.message}")  # names the file (or record) itself
        if skipped:
            return 1
        for line in class_statistics_lines(name, source) if stats else ():
            print(line)
    return 0


def class_statistics_lines(name: str, source) -> Iterator[str]:
    """Pixels per class of ``source``'s masks and SegNet's median-frequency-balancing weights
    (:func:`fcnjax.data.median_frequency_weights`), as a Markdown table."""
    import numpy as np

    from fcnjax import data

    if not source.has_masks or source.num_classes is None:
        yield f"{name}: no masks, no class statistics"
        return
    counts = data.class_counts(source)
    weights = data.median_frequency_weights(counts)
    names = source.class_names or tuple(str(c) for c in range(source.num_classes))
    total = max(counts.pixels.sum() + counts.ignored, 1)
    yield f"{source.num_classes} classes: {', '.join(names)}"
    yield "| class | pixels | share | median-frequency weight |"
    yield "| --- | --- | --- | --- |"
    for c, label in enumerate(names):
        share = counts.pixels[c] / total
        yield f"| {label} | {counts.pixels[c]} | {share:.2%} | {weights[c]:.4f} |"
    ignored = counts.ignored / total
    yield f"| (ignored, {data.IGNORE_LABEL}) | {counts.ignored} | {ignored:.2%} | - |"
    yield "weights = " + np.array2string(weights, precision=4, separator=", ")
