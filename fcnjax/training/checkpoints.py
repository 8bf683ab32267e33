"""Orbax checkpoints of a training run: the latest K, and the best by a validation metric.

``workdir/checkpoints/<step>/`` holds ``state`` (the :class:`~fcnjax.training.steps.TrainState`
arrays), ``data`` (each process's grain iterator position, so a resumed run sees the same
batches) and ``meta`` (JSON: step, best metric so far). ``workdir/best/<step>/`` holds the
best ``state`` by the chosen metric. Saves are asynchronous where orbax allows: arrays are
copied to host memory before ``save`` returns and written in the background.

Anything that is there but cannot be read raises :class:`CheckpointError` naming the
directory; a run never silently starts afresh over an existing checkpoint.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import shutil
from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp

__all__ = [
    "CheckpointError",
    "CheckpointMismatchError",
    "Checkpointer",
    "latest_step",
    "mismatches",
    "restore_state",
    "saved_shapes",
]

log = logging.getLogger("fcnjax.training.checkpoints")


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, incomplete or unreadable."""


class CheckpointMismatchError(CheckpointError):
    """A readable checkpoint of another network or optimizer than the one it is restored
    into (:func:`mismatches` says how they differ)."""


def _path(keys: tuple[Any, ...]) -> str:
    """``params/upscore/kernel`` for a pytree path of dict keys, attributes and indices:
    orbax's metadata tree and the state it was saved from give the same strings."""
    return "/".join(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in keys)


def _shapes(tree: Any) -> dict[str, tuple[int, ...]]:
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {_path(keys): tuple(getattr(leaf, "shape", ())) for keys, leaf in leaves}


def mismatches(expected: Any, found: Any, limit: int = 4) -> list[str]:
    """How the arrays of ``found`` (a checkpoint) differ from ``expected`` (what they are
    restored into), by path: shapes, and arrays only one of them has; at most ``limit`` of
    each kind, with a count of the rest. ``[]`` when they agree.

    >>> import numpy as np
    >>> mismatches({"w": np.zeros((3, 4)), "b": np.zeros(4)}, {"w": np.zeros((3, 5))})
    ['w: (3, 5) in the checkpoint, (3, 4) here', 'not in the checkpoint: b']
    """
    want, have = _shapes(expected), _shapes(found)

    def listed(items: list[str]) -> str:
        return ", ".join(items[:limit]) + (f" and {len(items) - limit} more" * (len(items) > limit))

    shapes = [
        f"{k}: {have[k]} in the checkpoint, {want[k]} here"
        for k in want
        if k in have and have[k] != want[k]
    ]
    out = shapes[:limit] + [f"and {len(shapes) - limit} more shapes"] * (len(shapes) > limit)
    if missing := [k for k in want if k not in have]:
        out.append(f"not in the checkpoint: {listed(missing)}")
    if extra := [k for k in have if k not in want]:
        out.append(f"only in the checkpoint: {listed(extra)}")
    return out


def _unreadable(where: Path, error: Exception, advice: str = "") -> CheckpointError:
    """One line naming the checkpoint and what is wrong; orbax's full story (often kBs)
    stays in the chained exception (``fcnjax --verbose`` prints it)."""
    first = (str(error).strip().splitlines() or [""])[0]
    first = first if len(first) <= 160 else first[:157] + "..."
    return CheckpointError(
        f"cannot restore the checkpoint {where}: it is incomplete or corrupt "
        f"({type(error).__name__}: {first}).{advice}"
    )


@contextlib.contextmanager
def _disk_full_is_enospc(directory: Path):
    """orbax reports a full disk as ValueError("RESOURCE_EXHAUSTED ... No space left")."""
    try:
        yield
    except (ValueError, RuntimeError) as e:
        if "No space left on device" not in str(e):
            raise
        raise OSError(errno.ENOSPC, "a checkpoint could not be written", str(directory)) from e


def _options(keep: int | None, asynchronous: bool, **kw) -> ocp.CheckpointManagerOptions:
    """The newest ``keep`` checkpoints (all with None), through orbax's preservation policy
    (``max_to_keep`` is deprecated in its favour)."""
    return ocp.CheckpointManagerOptions(
        preservation_policy=ocp.checkpoint_managers.LatestN(keep),
        enable_async_checkpointing=asynchronous,
        create=True,
        **kw,
    )


def _manager(path: Path, options: ocp.CheckpointManagerOptions) -> ocp.CheckpointManager:
    return ocp.CheckpointManager(path.absolute(), options=options)


class Checkpointer:
    """The two orbax managers of a run (``checkpoints/`` and ``best/``)."""

    def __init__(
        self,
        workdir: str | Path,
        *,
        keep: int = 3,
        asynchronous: bool = True,
        best_mode: str = "max",
    ):
        workdir = Path(workdir)
        self.dir, self.best_dir = workdir / "checkpoints", workdir / "best"
        self.latest = _manager(self.dir, _options(keep, asynchronous))
        self.best = _manager(self.best_dir, _options(1, asynchronous))
        self.best_mode = best_mode

    def latest_step(self) -> int | None:
        return self.latest.latest_step()

    def save(self, step: int, state: Any, iterator: Any, meta: dict) -> None:
        from fcnjax.data.pipeline import grain  # imported there without its notice

        items = {"state": ocp.args.StandardSave(state), "meta": ocp.args.JsonSave(meta)}
        if iterator is not None:
            items["data"] = grain.checkpoint.CheckpointSave(iterator)
        self._fits(self.dir, state, step)
        with _disk_full_is_enospc(self.dir):
            self.latest.save(step, args=ocp.args.Composite(**items), force=True)

    def save_best(self, step: int, state: Any, meta: dict) -> None:
        self.best.wait_until_finished()
        if step in self.best.all_steps():  # a finished run evaluated again: already saved
            return
        self._fits(self.best_dir, state, step)  # before the old best is deleted
        for old in self.best.all_steps():
            if old != step:
                self.best.delete(old)
        args = ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta))
        with _disk_full_is_enospc(self.best_dir):
            self.best.save(step, args=args, force=True)

    def restore(self, step: int, target: Any, iterator: Any) -> tuple[Any, dict]:
        """``(state, meta)`` of checkpoint ``step``; ``iterator`` is moved to its position."""
        from fcnjax.data.pipeline import grain  # imported there without its notice

        items = {"state": ocp.args.StandardRestore(target), "meta": ocp.args.JsonRestore()}
        if iterator is not None:
            items["data"] = grain.checkpoint.CheckpointRestore(iterator)
        where = self.dir / str(step)
        try:
            restored = self.latest.restore(step, args=ocp.args.Composite(**items))
        except Exception as e:  # orbax raises many types; all mean "cannot use it"
            advice = (
                " Move it away to resume from an older one (or the whole "
                f"{self.dir} to start afresh)."
            )
            raise _unreadable(where, e, advice) from e
        return restored["state"], dict(restored["meta"] or {})

    def wait(self) -> None:
        with _disk_full_is_enospc(self.dir):
            self.latest.wait_until_finished()
            self.best.wait_until_finished()

    def _fits(self, directory: Path, state: Any, step: int) -> None:
        """Raises ENOSPC before a save that the disk cannot hold.

        A save that runs out of space fails inside orbax's asynchronous writers, which
        then print hundreds of "Event loop is closed" tracebacks; checking first stops
        cleanly at the save, with every earlier checkpoint intact. The bound is the
        uncompressed size (orbax compresses; trained float weights hardly shrink, fresh
        optimizer moments do). The previous save is waited for first, as orbax would.
        """
        self.wait()
        need = sum(getattr(x, "nbytes", 0) for x in jax.tree.leaves(state))
        need = int(need * 1.1) + (1 << 20)  # metadata, the iterator state, headroom
        free = shutil.disk_usage(directory.parent).free
        if free < need:
            raise OSError(
                errno.ENOSPC,
                f"checkpoint {step} needs up to {need / 2**20:.1f} MiB and "
                f"{free / 2**20:.1f} MiB are free; the checkpoints before it are intact",
                str(directory),
            )

    def close(self) -> None:
        self.latest.close()
        self.best.close()


def _reader(directory: Path) -> ocp.CheckpointManager:
    return ocp.CheckpointManager(
        directory.absolute(),
        item_handlers={"state": ocp.StandardCheckpointHandler()},
        options=_options(None, False, read_only=True),
    )


def latest_step(directory: str | Path) -> int | None:
    """The newest complete checkpoint step in ``directory`` (None when there is none)."""
    directory = Path(directory)
    if not directory.is_dir():
        return None
    with _reader(directory) as m:
        return m.latest_step()


def saved_shapes(directory: str | Path, step: int, item: str = "state") -> Any:
    """The tree of array metadata (``.shape``, ``.dtype``) of a checkpoint's ``item``, read
    without its arrays: what :func:`mismatches` compares before a restore.

    Raises:
      CheckpointError: the checkpoint's metadata cannot be read.
    """
    directory = Path(directory)
    with _reader(directory) as m:
        try:
            return m.item_metadata(step)[item]
        except Exception as e:  # orbax raises many types; all mean "cannot use it"
            raise _unreadable(directory / str(step), e) from e


def restore_state(directory: str | Path, target: Any, step: int | None = None) -> tuple[Any, int]:
    """The ``state`` item of a checkpoint in ``directory`` (default: the newest) and its step.

    ``target``: the abstract state (``jax.ShapeDtypeStruct`` leaves, with shardings), or
    ``None`` for NumPy arrays as saved, whatever devices saved them (a pod's checkpoint
    reads on a laptop).

    Raises:
      CheckpointError: ``directory`` has no checkpoint, or it cannot be read.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise CheckpointError(f"no checkpoint directory {directory}.")
    with _reader(directory) as m:
        step = m.latest_step() if step is None else step
        if step is None:
            raise CheckpointError(f"{directory} holds no complete checkpoint.")
        try:
            if target is None:
                device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
                target = jax.tree.map(
                    lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device),
                    m.item_metadata(step)["state"],
                )
                state = m.restore(
                    step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target))
                )
                state = jax.device_get(state["state"])
            else:
                args = ocp.args.Composite(state=ocp.args.StandardRestore(target))
                state = m.restore(step, args=args)["state"]
        except Exception as e:  # orbax raises many types; all mean "cannot use it"
            raise _unreadable(directory / str(step), e) from e
    return state, step
