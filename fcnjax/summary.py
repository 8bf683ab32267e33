"""Training logs: TensorBoard scalars, JSON lines, a progress bar, a table.

:class:`MetricWriter` is what the trainer uses: every ``write`` goes to ``workdir/metrics.jsonl``
(:class:`JsonlWriter`, for scripts and notebooks) and, through tensorboardX (no TensorFlow
needed), to TensorBoard event files under ``workdir/tensorboard/`` (for ``tensorboard
--logdir``). :class:`Progress` (tqdm) shows steps, images per second and ETA on a terminal, as a
widget in a notebook, or as plain lines in a log; :func:`format_table` prints final metrics.
"""

from __future__ import annotations

import collections
import itertools
import json
import math
import os
import sys
import time
from collections.abc import Callable, Mapping
from typing import IO, TYPE_CHECKING, Any

import numpy as np
import tqdm.auto
import tqdm.autonotebook  # after tqdm.auto, which imports it with its warning silenced
import tqdm.std

from fcnjax.workdir import write_atomic

if TYPE_CHECKING:
    import tensorboardX

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

    With ``resume_step`` (a resumed run's checkpoint step), the records of later steps, which a
    killed run wrote past its last checkpoint and the resumed run writes again, are removed
    first (:func:`drop_after`), so that every step appears once.
    """

    def __init__(self, path: str | os.PathLike[str], resume_step: int | None = None):
        self.path = os.fspath(path)
        if resume_step is not None:
            drop_after(self.path, resume_step)
        self._file = open(self.path, "a+b")
        # A killed writer can leave a cut-off last line: start on a fresh one.
        if self._file.tell() > 0:
            self._file.seek(-1, os.SEEK_END)
            if self._file.read(1) != b"\n":
                self._file.write(b"\n")

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


def drop_after(path: str | os.PathLike[str], step: int) -> int:
    """Removes the records of steps after ``step`` from a JSON-lines file; returns how many.

    A last line cut short by a killed run goes too; other lines that are not records (none
    that fcnjax writes) are kept as they are. The file is replaced atomically
    (:func:`fcnjax.workdir.write_atomic`): a kill leaves either the old file or the new.
    Nothing is written when nothing is removed, or when the file does not exist.
    """
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            lines = f.read().split(b"\n")
    except FileNotFoundError:
        return 0
    if lines[-1] == b"":
        lines.pop()  # after the last newline
    kept = []
    for i, line in enumerate(lines):
        try:
            record = json.loads(line)
        except ValueError:  # JSONDecodeError, or bytes that are not UTF-8
            if i == len(lines) - 1:
                continue  # cut off by a kill
            record = None
        if isinstance(record, dict) and isinstance(record.get("step"), int):
            if record["step"] > step:
                continue
        kept.append(line)
    dropped = len(lines) - len(kept)
    if dropped:
        write_atomic(path, b"".join(line + b"\n" for line in kept))
    return dropped


def read_jsonl(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The records of a JSON-lines file, skipping a last line cut short by a killed run."""
    with open(path, encoding="utf-8") as f:
        lines = [line for line in f.read().split("\n") if line.strip()]
    records = []
    for i, line in enumerate(lines):
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            if i < len(lines) - 1:
                raise
    return records


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


def _number(x: float) -> str:
    # Fixed point reads best for losses and accuracies; a learning rate of 1e-5 needs exponents.
    return f"{x:.4f}" if x == 0 or 1e-3 <= abs(x) < 1e5 or not math.isfinite(x) else f"{x:.3e}"


# tqdm's default line with the rate in images per second and "step" before the count.
_BAR_FORMAT = (
    "{l_bar}{bar}| step {n_fmt}/{total_fmt} [{elapsed}<{remaining}, {images_per_s}{postfix}]"
)


class _Bar(tqdm.auto.tqdm):
    """tqdm (a notebook widget when ``tqdm.auto`` finds one) with the rate given by ``rates``."""

    def __init__(self, rates: Callable[[], tuple[float, str]], **kwargs: Any):
        self.rates = rates
        super().__init__(**kwargs)

    @property
    def format_dict(self) -> dict[str, Any]:
        # Overriding format_dict is tqdm's documented way to add fields to bar_format.
        d = super().format_dict
        d["rate"], d["images_per_s"] = self.rates()
        return d


def _interactive(stream: IO[str]) -> bool:
    """Whether ``stream`` shows a redrawn bar: a terminal, or a notebook's own output."""
    if stream is sys.stdout or stream is sys.stderr:
        if tqdm.autonotebook.tqdm is not tqdm.std.tqdm:  # in Jupyter or Colab, with ipywidgets
            return True
    return bool(getattr(stream, "isatty", lambda: False)())


class Progress:
    """A tqdm bar of training steps with images per second, ETA and scalars such as the loss.

    ``42%|####2     | step 42/100 [00:10<00:14, 33.4 img/s, loss=0.3120]``

    Images per second are measured between the ends of updates, over the last ``window`` of
    them, so the first step, which includes compilation, never counts (it would understate
    the rate for most of a short run, as tqdm's own average would); the ETA is the remaining
    steps at that window's step rate, ``?`` until two updates. On a terminal, and as a widget
    in a notebook (``tqdm.auto``), the bar is redrawn in place by tqdm, at most ten times a
    second; on any other stream (a CI log, a file) a full line in the same format is printed
    when ``step`` reaches a multiple of ``every`` (default: about 20 lines in a run) and at
    ``total_steps``, with no carriage returns. ``time_fn`` is the clock of the rate and of
    those lines' elapsed time.

    >>> import io
    >>> clock = iter([9.0, 10.0, 11.0, 12.0, 13.0]).__next__  # step 1 compiles; then 1 s a step
    >>> out = io.StringIO()
    >>> with Progress(4, stream=out, every=2, time_fn=clock) as p:
    ...     for step in range(1, 5):
    ...         p.update(step, images=8, loss=1 / step)
    >>> print(out.getvalue(), end="")
     50%|#####     | step 2/4 [00:02<00:02, 8.0 img/s, loss=0.5000]
    100%|##########| step 4/4 [00:04<00:00, 8.0 img/s, loss=0.2500]
    """

    def __init__(
        self,
        total_steps: int,
        start_step: int = 0,
        stream: IO[str] | None = None,
        every: int | None = None,
        *,
        window: int = 20,
        time_fn: Callable[[], float] = time.perf_counter,
    ):
        checks = [("total_steps", total_steps, 0), ("start_step", start_step, 0)]
        checks += [("window", window, 1), ("every", 1 if every is None else every, 1)]
        for name, value, least in checks:
            if value < least:
                raise ValueError(f"Progress: expected {name} >= {least}, got {value}")
        self.total_steps = total_steps
        self.stream = sys.stderr if stream is None else stream
        self.every = every or max(1, (total_steps - start_step) // 20)
        self.time_fn = time_fn
        # (time, step, images counted so far) at the last `window` + 1 updates.
        self._points: collections.deque[tuple[float, int, int]] = collections.deque(
            maxlen=window + 1
        )
        self._images = 0
        self._start = time_fn()
        self._next_print = (start_step // self.every + 1) * self.every
        self._printed = start_step  # a second update at a printed step is not printed again
        self._bar: _Bar | None = None
        if _interactive(self.stream):
            self._bar = _Bar(
                self._rates,
                total=total_steps,
                initial=start_step,
                file=self.stream,
                bar_format=_BAR_FORMAT,
                unit="step",
                dynamic_ncols=True,
                position=0,  # the one bar: never below a bar left open elsewhere
            )

    def _rates(self) -> tuple[float, str]:
        """Steps per second (0 when unknown: tqdm then shows ``?``) and images per second."""
        # Differences from the oldest point kept, so the first update, whose step includes
        # compilation, adds neither its time nor its images.
        if self._points:
            (t0, s0, i0), (t1, s1, i1) = self._points[0], self._points[-1]
            if t1 > t0 and s1 > s0:
                return (s1 - s0) / (t1 - t0), f"{(i1 - i0) / (t1 - t0):.1f} img/s"
        return 0.0, "? img/s"

    def update(self, step: int, images: int, **scalars: float) -> None:
        """Records that training reached ``step``, with ``images`` processed since the last call.

        ``scalars`` (a loss, a learning rate) are shown after the rate.
        """
        now = self.time_fn()
        self._images += images
        self._points.append((now, step, self._images))
        postfix = ", ".join(f"{name}={_number(float(v))}" for name, v in scalars.items())
        if self._bar is not None:
            self._bar.set_postfix_str(postfix, refresh=False)
            self._bar.update(step - self._bar.n)
        elif step > self._printed and (step >= self.total_steps or step >= self._next_print):
            rate, images_per_s = self._rates()
            line = tqdm.std.tqdm.format_meter(
                step,
                self.total_steps,
                now - self._start,
                ascii=" #",
                unit="step",
                rate=rate,
                bar_format=_BAR_FORMAT,
                postfix=postfix,
                images_per_s=images_per_s,
            )
            self.stream.write(line + "\n")
            self.stream.flush()
            self._printed = step
            self._next_print = (step // self.every + 1) * self.every

    def write(self, text: str) -> None:
        """Prints ``text`` on its own line (e.g. evaluation results) without breaking the bar."""
        if self._bar is not None:
            self._bar.write(text, file=self.stream)
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def close(self) -> None:
        """Ends the bar, showing the last update even if it was not redrawn."""
        if self._bar is not None:
            self._bar.close()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


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
            columns["IoU" if name == "iou" else name] = per_class
        elif isinstance(value, (int, np.integer)) and not isinstance(value, bool):
            rows.append((key, str(int(value))))
        elif (x := _scalar(value)) is not None:
            rows.append((key, _number(x)))
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
    return "-" if x is None else _number(x)


def _align(rows: list[tuple[str, ...]]) -> list[str]:
    if not rows:
        return []
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    return ["  ".join([*(c.ljust(w) for c, w in zip(row, widths)), row[-1]]) for row in rows]
