"""Training logs: TensorBoard scalars, JSON lines, a table of final metrics.

:class:`MetricWriter` is what the trainer uses: every ``write`` goes to ``workdir/metrics.jsonl``
(:class:`JsonlWriter`, for scripts and notebooks; read back by
:func:`fcnjax.metrics_log.read_jsonl`, re-exported here) and, through tensorboardX (no
TensorFlow needed), to TensorBoard event files under ``workdir/tensorboard/`` (for
``tensorboard --logdir``). :func:`format_table` prints final metrics. The progress bar is
:class:`fcnjax.training.progress.Progress`.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from fcnjax.metrics_log import parse_jsonl, read_jsonl
from fcnjax.training.progress import format_number
from fcnjax.training.workdir import write_atomic

if TYPE_CHECKING:
    import tensorboardX

__all__ = [
    "FLUSH_SECS",
    "JsonlWriter",
    "MetricWriter",
    "drop_after",
    "flatten_metrics",
    "format_table",
    "read_jsonl",
]

# ---------------------------------------------------------------------------------------------
# JSON lines


def _scalar(value: Any) -> float | None:
    """``float(value)`` for a Python, NumPy or JAX real scalar (0-d array); None otherwise."""
    if isinstance(value, (str, bytes)) or np.ndim(value) != 0:
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


class JsonlWriter:
    """Appends ``{"step": s, "time": wall_time, **values}`` as one JSON line per write.

    Values are converted with ``float`` (NumPy and JAX scalars included). NaN and infinities
    are written as ``null``, so that every line is strict JSON (Python's default would write
    the non-standard ``NaN`` literal, which other JSON readers reject). Each line is flushed.

    A last line cut short by a killed writer is removed before the first write, so that a
    cut-off line is only ever the file's last (which :func:`read_jsonl` skips). With
    ``resume_step`` (a resumed run's checkpoint step), the records of later steps, which a
    killed run wrote past its last checkpoint and the resumed run writes again, are removed
    too (:func:`drop_after`), so that every step appears once.
    """

    def __init__(self, path: str | os.PathLike[str], resume_step: int | None = None):
        self.path = os.fspath(path)
        drop_after(self.path, resume_step)
        self._file = open(self.path, "ab")

    def write(self, step: int, values: Mapping[str, float]) -> None:
        record: dict[str, Any] = {"step": int(step), "time": time.time()}
        for key, value in values.items():
            x = float(value)
            record[key] = x if math.isfinite(x) else None
        self._file.write((json.dumps(record, allow_nan=False) + "\n").encode())
        self._file.flush()

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> JsonlWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def drop_after(path: str | os.PathLike[str], step: int | None) -> int:
    """Removes the records of steps after ``step`` (with ``None``: none) and a last line cut
    short by a killed run from a JSON-lines file; returns how many lines went.

    The file is read by :func:`read_jsonl`'s rules (any other bad line is a ``ValueError``
    naming the file and the line) and replaced atomically
    (:func:`fcnjax.training.workdir.write_atomic`), each kept record written again as one
    line of JSON: a kill leaves either the old file or the new. Nothing is written when
    nothing is removed, or when the file does not exist.
    """
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return 0
    records, cut_off = parse_jsonl(data, path)
    kept = [r for r in records if step is None or r["step"] <= step]
    dropped = len(records) - len(kept) + cut_off
    if dropped:
        write_atomic(path, "".join(json.dumps(r) + "\n" for r in kept).encode())
    return dropped


# ---------------------------------------------------------------------------------------------
# Both, for the trainer


def _per_class(key: str, value: Any) -> Mapping[Any, Any] | None:
    """``value`` if a dict; a list or 1-D array under a ``per_class_`` key by class index."""
    if isinstance(value, Mapping):
        return value
    if key.startswith("per_class_") and not isinstance(value, (str, bytes)) and np.ndim(value) == 1:
        return dict(enumerate(value))
    return None


def flatten_metrics(values: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """Scalar metrics by tag ``prefix/name``; a dict of per-class values by ``prefix/name/class``.

    A key ``per_class_<m>`` holding a dict (or a list, whose classes are then numbered) becomes
    ``prefix/<m>/<class>``; anything else that is not a scalar (a confusion matrix) is skipped.

    >>> flatten_metrics({"loss": 0.5, "per_class_iou": {"cat": 0.25}, "cm": [[1, 0]]}, "val")
    {'val/loss': 0.5, 'val/iou/cat': 0.25}
    >>> flatten_metrics({"per_class_iou": [0.5, 0.25]}, "val")
    {'val/iou/0': 0.5, 'val/iou/1': 0.25}
    """
    out = {}
    head = f"{prefix}/" if prefix else ""
    for key, value in values.items():
        if (classes := _per_class(key, value)) is not None:
            name = key.removeprefix("per_class_")
            for cls, v in classes.items():
                if (x := _scalar(v)) is not None:
                    out[f"{head}{name}/{cls}"] = x
        elif (x := _scalar(value)) is not None:
            out[f"{head}{key}"] = x
    return out


# Seconds between flushes of the event file by tensorboardX's writer thread: TensorBoard (which
# reloads every 5 s) shows a run while it trains, and a killed run loses at most this much.
FLUSH_SECS = 5.0

_event_files = itertools.count()  # numbers the event files this process opens


class MetricWriter:
    """Writes metrics to ``workdir/metrics.jsonl`` and to TensorBoard in ``workdir/tensorboard``.

    Both get the same tags (see :func:`flatten_metrics`), verbatim: each ``write`` is one
    TensorBoard event holding every tag as a ``simple_value`` (float32). The event file is
    written by ``tensorboardX.SummaryWriter`` in a thread of its own and flushed every
    :data:`FLUSH_SECS`; ``close`` writes the rest. With ``enabled=False`` nothing is created or
    written: pass ``enabled=jax.process_index() == 0`` so that only one host logs.

    ``resume_step`` is the step a run starts from (its checkpoint's; 0 for a fresh start): what
    an earlier run logged after it (a killed run logs past its last checkpoint, and the resumed
    run logs those steps again) is removed from ``metrics.jsonl`` and hidden from TensorBoard
    (``purge_step``: TensorBoard drops the events of steps after ``resume_step`` that it read
    from older files).
    """

    def __init__(
        self,
        workdir: str | os.PathLike[str],
        enabled: bool = True,
        *,
        resume_step: int | None = None,
    ):
        self.enabled = enabled
        self.jsonl: JsonlWriter | None = None
        self.events: tensorboardX.SummaryWriter | None = None
        self._closed = False
        if enabled:
            # Imported here: tensorboardX imports PyTorch when it is installed (1.5 s), which
            # `fcnjax evaluate` (format_table) and hosts that do not log need not pay.
            import tensorboardX

            os.makedirs(workdir, exist_ok=True)
            self.jsonl = JsonlWriter(os.path.join(workdir, "metrics.jsonl"), resume_step)
            # tensorboardX names the file by the second and the host only, and would truncate
            # another writer's file started in the same second (a quick restart, a test).
            suffix = f".{os.getpid()}.{next(_event_files)}.fcnjax"
            self.events = tensorboardX.SummaryWriter(
                os.path.join(workdir, "tensorboard"),
                purge_step=None if resume_step is None else resume_step + 1,
                flush_secs=FLUSH_SECS,
                filename_suffix=suffix,
            )

    def write(self, step: int, values: Mapping[str, Any], prefix: str = "train") -> None:
        """Writes the scalars of ``values`` (see :func:`flatten_metrics`) at ``step``."""
        if self._closed:
            raise ValueError("MetricWriter.write: the writer was closed")
        if not self.enabled:
            return
        from tensorboardX.proto.summary_pb2 import Summary

        scalars = flatten_metrics(values, prefix)
        self.jsonl.write(step, scalars)
        # Not add_scalar: it writes one event per tag and replaces characters outside
        # [-/\w.] (a class "traffic light"), so TensorBoard's tags would differ from the JSON's.
        summary = Summary(value=[Summary.Value(tag=t, simple_value=v) for t, v in scalars.items()])
        self.events.file_writer.add_summary(summary, int(step))

    def close(self) -> None:
        if self.enabled and not self._closed:
            self.jsonl.close()
            self.events.close()
        self._closed = True

    def __enter__(self) -> MetricWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ---------------------------------------------------------------------------------------------
# Console output


def format_table(metrics: Mapping[str, Any], title: str = "") -> str:
    """Final metrics as plain text: one row per scalar, then one row per class.

    Every ``per_class_<m>`` dict (or list, whose classes are then numbered) becomes a column
    of the class block (``IoU`` for ``iou``); other non-scalars (a confusion matrix) are left out.

    >>> print(format_table({"pixel_accuracy": 0.97123, "mean_iou": 0.8, "images": 1449,
    ...                     "per_class_iou": {"background": 0.95, "cat": float("nan")}},
    ...                    title="VOC val"))
    VOC val
    pixel_accuracy  0.9712
    mean_iou        0.8000
    images          1449
    <BLANKLINE>
    class       IoU
    background  0.9500
    cat         nan
    """
    rows: list[tuple[str, str]] = []
    columns: dict[str, Mapping[str, Any]] = {}
    for key, value in metrics.items():
        if key.startswith("per_class_") and (per_class := _per_class(key, value)) is not None:
            name = key.removeprefix("per_class_")
            columns[{"iou": "IoU", "dice": "Dice"}.get(name, name)] = per_class
        elif isinstance(value, (int, np.integer)) and not isinstance(value, bool):
            rows.append((key, str(int(value))))
        elif (x := _scalar(value)) is not None:
            rows.append((key, format_number(x)))
    lines = [title] if title else []
    lines += _align(rows)
    if columns:
        classes = list(dict.fromkeys(c for col in columns.values() for c in col))
        block = [("class", *columns)]
        for c in classes:
            block.append((str(c), *(_cell(col.get(c)) for col in columns.values())))
        lines += ([""] if rows else []) + _align(block)
    return "\n".join(lines)


def _cell(value: Any) -> str:
    x = _scalar(value)
    return "-" if x is None else format_number(x)


def _align(rows: list[tuple[str, ...]]) -> list[str]:
    if not rows:
        return []
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    return ["  ".join([*(c.ljust(w) for c, w in zip(row, widths)), row[-1]]) for row in rows]
