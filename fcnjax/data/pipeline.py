"""Batches on grain: seeded shuffling, epochs, threads and worker processes, per-host shards.

The global stream of examples (shuffled afresh each epoch, transformed with a random
generator derived from ``(seed, position)``) is cut into global batches of
``batch_size``; process ``p`` of ``P`` takes rows ``[p * b, (p + 1) * b)`` of each, with
``b = batch_size // P``. So the hosts of a pod read disjoint examples, their rows stack
into the global batch in process order (:func:`global_batch` builds the sharded array),
and the global batch is the same for any number of processes.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import threading
import time
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np

from fcnjax.data.core import IGNORE_LABEL, DataError, Example, Source, check_on_error, log
from fcnjax.data.transforms import EvalTransform, TrainTransform


class _NoProfilerNotice(logging.Filter):
    """grain >= 0.2.16 logs at import, through absl, that its worker profiling needs jaxlib
    >= 0.11: a feature fcnjax does not use, on Colab's jaxlib 0.7.2, that no user can act on."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "worker profiling requires jaxlib" not in record.getMessage()


_notice = _NoProfilerNotice()
logging.getLogger("absl").addFilter(_notice)
try:
    import grain  # noqa: E402  (after the filter)
finally:
    logging.getLogger("absl").removeFilter(_notice)


def _check_args(
    source: Source,
    batch_size: int,
    on_error: str,
    process_index: int | None,
    process_count: int | None,
) -> tuple[int, int, int]:
    """Checks the arguments both loaders share; returns (process index, count, local batch)."""
    index = jax.process_index() if process_index is None else int(process_index)
    count = jax.process_count() if process_count is None else int(process_count)
    if not 0 <= index < count:
        raise ValueError(f"`process_index` must be in [0, {count}); got {index}.")
    if batch_size <= 0 or batch_size % count:
        raise ValueError(
            f"`batch_size` (the global batch) must be a positive multiple of the process count "
            f"{count}; got {batch_size}."
        )
    check_on_error(on_error)
    if len(source) == 0:
        raise DataError(f"{type(source).__name__}: the source has no examples.")
    return index, count, batch_size // count


@dataclasses.dataclass(frozen=True)
class _EpochCut:
    """Stream position -> source index, using the first ``per_epoch`` of each epoch's order."""

    order: Any
    epoch_size: int
    per_epoch: int

    def __call__(self, position: int) -> int:
        epoch, offset = divmod(int(position), self.per_epoch)
        return int(self.order[epoch * self.epoch_size + offset])


@dataclasses.dataclass(frozen=True)
class _Load:
    """source[i], or None (logged) for a bad example when skipping."""

    source: Source
    on_error: str

    def __call__(self, index: int) -> tuple[int, Example | None]:
        try:
            return index, self.source[index]
        except DataError as e:
            if self.on_error == "raise":
                raise
            log.warning("Skipping a bad example: %s", e)
            return index, None


@dataclasses.dataclass(frozen=True)
class _Augment:
    transform: TrainTransform

    def __call__(self, item: tuple[int, Example | None], rng: np.random.Generator):
        _, example = item
        return None if example is None else self.transform(example, rng)


@dataclasses.dataclass(frozen=True)
class _Rows:
    """Local element i -> the global stream's element at this process's rows."""

    stream: Any
    global_batch: int
    local_batch: int
    process_index: int

    def __call__(self, i: int):
        step, row = divmod(int(i), self.local_batch)
        return self.stream[step * self.global_batch + self.process_index * self.local_batch + row]


# Seconds between a worker's checks that the process that started it is still there.
PARENT_POLL_SECS = 0.5


class _ExitWithParent:
    """grain's ``worker_init_fn``: the worker exits once the process that started it is gone.

    grain stops its workers from the parent (an event, a finalizer), which a parent killed by
    SIGKILL (the OOM killer, a preemption) never runs: its workers, reparented, would then wait
    on a full queue forever, and with them multiprocessing's resource tracker, which exits (and
    unlinks what they left in shared memory) only when every holder of its pipe has. A daemon
    thread in each worker polls ``os.getppid()`` instead: it changes when the parent dies,
    however it dies, on any POSIX system. (Not ``prctl(PR_SET_PDEATHSIG)``: that fires when the
    *thread* that started the worker exits, and grain starts workers from a thread pool.)
    """

    def __init__(self, parent: int | None = None):
        self.parent = parent

    def __reduce__(self):
        # grain pickles the function in the process that starts the worker (multiprocessing's
        # "spawn"): its pid is the worker's parent, whichever process built the dataset.
        return type(self), (os.getpid(),)

    def __call__(self, worker_index: int, worker_count: int) -> None:
        if self.parent is None:  # never pickled, so not in a worker: nothing to watch
            return
        threading.Thread(target=self._watch, name="fcnjax-exit-with-parent", daemon=True).start()

    def _watch(self) -> None:
        while os.getppid() == self.parent:
            time.sleep(PARENT_POLL_SECS)
        os._exit(1)


def _mp_prefetch(ds: grain.IterDataset, workers: int, prefetch: int) -> grain.IterDataset:
    # grain's worker processes read absl flags, which only absl.app parses; outside an absl
    # program (notebooks, pytest, plain scripts) mark them parsed so the defaults apply.
    from absl import flags

    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()
    return ds.mp_prefetch(
        grain.MultiprocessingOptions(num_workers=workers, per_worker_buffer_size=prefetch),
        worker_init_fn=_ExitWithParent(),
    )


def _not_none(x) -> bool:
    return x is not None


def stack(examples: list[Example]) -> dict[str, np.ndarray]:
    """Stacks examples into a batch, with a clear error when their shapes differ."""
    keys = examples[0].keys()
    batch = {}
    for key in keys:
        shapes = {np.shape(e[key]) for e in examples}
        if len(shapes) > 1:
            raise DataError(
                f"examples of one batch have different {key!r} shapes {sorted(shapes)}; give the "
                "transform a `size` (mode 'crop'/'resize' for training, 'pad'/'resize' for "
                "evaluation)."
            )
        batch[key] = np.stack([e[key] for e in examples])
    return batch


def train_loader(
    source: Source,
    batch_size: int,
    transform: TrainTransform,
    *,
    seed: int = 0,
    num_epochs: int | None = None,
    shuffle: bool = True,
    workers: int = 0,
    threads: int = 2,
    prefetch: int = 4,
    on_error: str = "raise",
    process_index: int | None = None,
    process_count: int | None = None,
) -> grain.IterDataset:
    """Training batches of ``{'image': f32[b, H, W, C], 'mask': i32[b, H, W]}`` (+ ``'label'``).

    Args:
      source: a :class:`~fcnjax.data.core.Source` (ideally passed through ``verify``).
      batch_size: the **global** batch; each process yields ``batch_size // process_count``.
      transform: a :class:`~fcnjax.data.transforms.TrainTransform`.
      seed: seeds the shuffle (a new order each epoch) and the augmentation.
      num_epochs: passes over the data (``None``: forever). Each epoch is cut to whole
        global batches (:func:`steps_per_epoch` of them): the examples left over at the end
        of an epoch's order are dropped for that epoch (a different few each epoch).
      shuffle: shuffle the examples (else source order).
      workers: decoding processes (``grain`` ``mp_prefetch``; 0 decodes in this process).
      threads: reading threads per process.
      prefetch: batches buffered ahead per worker (and elements per thread).
      on_error: ``"raise"`` on a bad example (naming its file), or ``"skip"`` it with a
        logged warning (then a process can yield fewer batches than the others when
        ``num_epochs`` is finite; run ``verify`` up front on multi-host jobs).
      process_index: this process (default ``jax.process_index()``).
      process_count: the processes (default ``jax.process_count()``).

    Returns:
      A ``grain.IterDataset``; ``iter()`` of it supports ``get_state``/``set_state`` for
      checkpointing. Iterating it twice gives the same batches.
    """
    index, count, local = _check_args(source, batch_size, on_error, process_index, process_count)
    if len(source) < batch_size:
        raise ValueError(
            f"the source's {len(source)} examples do not fill one global batch of {batch_size}."
        )
    order = grain.MapDataset.range(len(source))
    if shuffle:
        order = order.shuffle(seed=seed)
    order = order.repeat(num_epochs)
    per_epoch = steps_per_epoch(source, batch_size) * batch_size
    epochs = len(order) // len(source)
    stream = grain.MapDataset.range(epochs * per_epoch).map(
        _EpochCut(order, len(source), per_epoch)
    )
    stream = stream.map(_Load(source, on_error)).random_map(_Augment(transform), seed=seed + 1)
    rows = grain.MapDataset.range(len(stream) // count).map(_Rows(stream, batch_size, local, index))
    read = grain.ReadOptions(num_threads=threads, prefetch_buffer_size=prefetch)
    if on_error == "raise":
        # Whole batches are the elements: worker processes each build whole batches (one
        # shared-memory transfer per array) and grain interleaves them back in order.
        ds = rows.batch(local, drop_remainder=True, batch_fn=stack).to_iter_dataset(read)
        return _mp_prefetch(ds, workers, prefetch) if workers else ds
    # Skipping makes batches from what is left, so examples travel one by one.
    ds = rows.to_iter_dataset(dataclasses.replace(read, prefetch_buffer_size=prefetch * local))
    if workers:
        ds = _mp_prefetch(ds, workers, prefetch * local)
    ds = ds.filter(_not_none).batch(local, drop_remainder=True, batch_fn=stack)
    return ds


@dataclasses.dataclass(frozen=True)
class _EvalItem:
    """Global index -> a transformed example with 'valid'/'index', or a padding placeholder."""

    source: Source
    transform: EvalTransform
    placeholder: Mapping[str, np.ndarray]
    on_error: str

    def __call__(self, i: int) -> Example:
        i = int(i)
        if i < len(self.source):
            try:
                example = self.transform(self.source[i], self.source.describe(i))
                return {**example, "valid": np.bool_(True), "index": np.int32(i)}
            except DataError as e:
                if self.on_error == "raise":
                    raise
                log.warning("Evaluation skips a bad example (counted as padding): %s", e)
        return {**self.placeholder, "valid": np.bool_(False), "index": np.int32(i)}


def eval_loader(
    source: Source,
    batch_size: int,
    transform: EvalTransform,
    *,
    workers: int = 0,
    threads: int = 2,
    prefetch: int = 4,
    on_error: str = "raise",
    process_index: int | None = None,
    process_count: int | None = None,
) -> grain.IterDataset:
    """Evaluation batches: every example exactly once, in order, none dropped.

    The last global batch is padded with placeholder examples (zero image, mask all
    ``IGNORE_LABEL``, label -1); each batch carries ``'valid'`` (``bool[b]``, False for
    padding) and ``'index'`` (``int32[b]``, the source index). Every process yields
    ``ceil(len(source) / batch_size)`` batches. With ``on_error="skip"`` a bad example is
    logged and yielded as padding (``valid`` False), so counts stay exact.

    Args: as :func:`train_loader`, with an :class:`~fcnjax.data.transforms.EvalTransform`.
    """
    index, count, local = _check_args(source, batch_size, on_error, process_index, process_count)
    n = len(source)
    steps = math.ceil(n / batch_size)
    first = None
    for i in range(n):
        try:
            first = transform(source[i], source.describe(i))
            break
        except DataError:
            if on_error == "raise":
                raise
    if first is None:
        raise DataError(f"{type(source).__name__}: none of the {n} examples can be read.")
    placeholder = {k: np.zeros_like(v) for k, v in first.items()}
    if "mask" in placeholder:
        placeholder["mask"] = np.full_like(first["mask"], IGNORE_LABEL)
    if "label" in placeholder:
        placeholder["label"] = np.full_like(first["label"], -1)
    positions = np.arange(steps * batch_size).reshape(steps, count, local)[:, index].ravel()
    ds = grain.MapDataset.source(positions).map(_EvalItem(source, transform, placeholder, on_error))
    ds = ds.batch(local, batch_fn=stack).to_iter_dataset(
        grain.ReadOptions(num_threads=threads, prefetch_buffer_size=prefetch)
    )
    if workers:
        ds = _mp_prefetch(ds, workers, prefetch)
    return ds


def global_batch(batch: Mapping[str, np.ndarray], sharding: jax.sharding.Sharding) -> dict:
    """This process's rows -> global ``jax.Array``s laid out by ``sharding``.

    With ``sharding = NamedSharding(mesh, PartitionSpec('data'))`` over all devices, the
    result has the global batch on its leading axis, split across the mesh's ``'data'``
    axis; each process contributes the rows :func:`train_loader` gave it. The rows land in
    process order when the mesh lists devices process by process, as ``jax.devices()``
    does (``mesh_utils.create_device_mesh`` may reorder them on TPU pods: build the
    ``'data'`` axis in ``jax.devices()`` order).
    """
    return {
        k: jax.make_array_from_process_local_data(sharding, np.asarray(v)) for k, v in batch.items()
    }


def steps_per_epoch(source: Source, batch_size: int) -> int:
    """Global batches per epoch in :func:`train_loader` (each epoch drops its remainder)."""
    return len(source) // batch_size
