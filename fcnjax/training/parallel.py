"""Data-parallel placement: where the state, the batches and the compiled steps live.

Two placements share one small interface, so that the trainer and the evaluator never
ask which one they have:

- :class:`MeshPlacement` (``parallel="jit"``, the default): ``jax.jit`` with the state
  replicated and the global batch split over a ``Mesh`` of every device (all hosts); XLA
  inserts the collectives.
- :class:`PmapPlacement` (``parallel="pmap"``): ``jax.pmap`` over this host's devices,
  with the steps reducing over :data:`PMAP_AXIS` themselves (``axis_name``).

>>> import functools, jax, numpy as np
>>> from fcnjax.training import steps, tasks
>>> placement = get("jit")
>>> identity = lambda variables, x, train: x
>>> step = functools.partial(steps.eval_step, apply_fn=identity, task=tasks.Autoencoder())
>>> step = placement.compile(step)
>>> batch = placement.shard({"image": np.ones((2, 3, 3, 1), np.float32)})
>>> sums = placement.fetch(step(placement.place({}), batch))
>>> float(sums["loss"]["total"]), float(sums["loss"]["norm"])  # a perfect copy of 18 values
(0.0, 18.0)
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from fcnjax import data as data_lib
from fcnjax.training.settings import ConfigError

__all__ = ["MODES", "PMAP_AXIS", "MeshPlacement", "Placement", "PmapPlacement", "get"]

PMAP_AXIS = "batch"
"""The mapped axis of ``parallel="pmap"`` (BatchNorm layers reduce over it too)."""

BATCH_KEYS = ("image", "mask", "valid")


class Placement(Protocol):
    """What the trainer needs from a data-parallel layout."""

    axis_name: str | None  # what the steps reduce over themselves (None under jit)
    replicated: NamedSharding  # a state's sharding in checkpoints and at initialisation

    def compile(self, step: Callable, donate: bool = False) -> Callable:
        """``step(state_or_variables, batch, *, axis_name)`` -> the compiled step."""

    def shard(self, batch: Mapping[str, np.ndarray]) -> Any:
        """This host's rows of a global batch -> the compiled steps' batch."""

    def place(self, tree: Any) -> Any:
        """A replicated (global or host) tree -> the compiled steps' layout."""

    def unplace(self, tree: Any) -> Any:
        """The steps' layout -> a replicated global tree (what checkpoints hold)."""

    def fetch(self, tree: Any) -> Any:
        """Replicated outputs -> NumPy on every host."""

    def check_batch(self, batch_size: int, what: str) -> None:
        """Raises ConfigError unless ``batch_size`` splits evenly over the devices."""


class _Devices:
    def __init__(self):
        self.mesh = Mesh(np.array(jax.devices()), ("data",))
        self.replicated = NamedSharding(self.mesh, P())
        self.data = NamedSharding(self.mesh, P("data"))

    def check_batch(self, batch_size: int, what: str) -> None:
        n = jax.device_count()
        if batch_size % n:
            raise ConfigError(
                f"`{what}` ({batch_size}) must be a multiple of the {n} devices (global batch)."
            )


class MeshPlacement(_Devices):
    """``jax.jit`` over a 1-D ``Mesh`` of every device: state replicated, batch split."""

    axis_name = None

    def compile(self, step: Callable, donate: bool = False) -> Callable:
        return jax.jit(
            step,
            donate_argnums=(0,) if donate else (),
            in_shardings=(self.replicated, self.data),
            out_shardings=self.replicated,
        )

    def shard(self, batch: Mapping[str, np.ndarray]) -> Any:
        batch = {k: v for k, v in batch.items() if k in BATCH_KEYS}
        return data_lib.global_batch(batch, self.data)

    def place(self, tree: Any) -> Any:
        return jax.device_put(tree, self.replicated)

    def unplace(self, tree: Any) -> Any:
        return tree

    def fetch(self, tree: Any) -> Any:
        return jax.tree.map(lambda x: np.asarray(x.addressable_data(0)), tree)


class PmapPlacement(_Devices):
    """``jax.pmap`` over this host's devices; the steps reduce over :data:`PMAP_AXIS`."""

    axis_name = PMAP_AXIS

    def compile(self, step: Callable, donate: bool = False) -> Callable:
        return jax.pmap(
            functools.partial(step, axis_name=PMAP_AXIS),
            axis_name=PMAP_AXIS,
            donate_argnums=(0,) if donate else (),
        )

    def shard(self, batch: Mapping[str, np.ndarray]) -> Any:
        n = jax.local_device_count()
        return {
            k: np.asarray(v).reshape(n, -1, *np.shape(v)[1:])
            for k, v in batch.items()
            if k in BATCH_KEYS
        }

    def place(self, tree: Any) -> Any:
        n = jax.local_device_count()
        return jax.tree.map(lambda x: np.broadcast_to(x, (n, *np.shape(x))), jax.device_get(tree))

    def unplace(self, tree: Any) -> Any:
        return jax.device_put(jax.tree.map(lambda x: np.asarray(x[0]), tree), self.replicated)

    def fetch(self, tree: Any) -> Any:
        return jax.tree.map(lambda x: np.asarray(x[0].addressable_data(0)), tree)


MODES: dict[str, type[MeshPlacement] | type[PmapPlacement]] = {
    "jit": MeshPlacement,
    "pmap": PmapPlacement,
}


def get(mode: str) -> Placement:
    """The placement of ``config.parallel``: ``"jit"`` or ``"pmap"``."""
    if mode not in MODES:
        raise ConfigError(f"`parallel` must be one of {sorted(MODES)}; got {mode!r}.")
    return MODES[mode]()
