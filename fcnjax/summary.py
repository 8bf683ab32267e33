"""Training logs without TensorFlow: TensorBoard event files, JSON lines, a progress bar, a table.

:class:`MetricWriter` is what the trainer uses: every ``write`` goes to ``workdir/metrics.jsonl``
(:class:`JsonlWriter`, for scripts and notebooks) and to TensorBoard event files under
``workdir/tensorboard/`` (:class:`EventWriter`, for ``tensorboard --logdir``). :class:`Progress`
shows steps, throughput and ETA on a terminal or in a log; :func:`format_table` prints final
metrics. Only the standard library and NumPy are used.
"""

from __future__ import annotations

import collections
import json
import math
import os
import socket
import struct
import sys
import time
from collections.abc import Callable, Mapping
from typing import IO, Any

import numpy as np

# ---------------------------------------------------------------------------------------------
# CRC-32C and TFRecord framing


def _crc32c_table() -> tuple[int, ...]:
    table = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ (0x82F63B78 if c & 1 else 0)  # Castagnoli polynomial, bit-reversed
        table.append(c)
    return tuple(table)


_CRC32C_TABLE = _crc32c_table()


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli), the checksum of TFRecord files; RFC 3720 appendix B.4.

    >>> hex(crc32c(b"123456789"))
    '0xe3069283'
    """
    crc = 0xFFFFFFFF
    for byte in data:
        crc = _CRC32C_TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def masked_crc32c(data: bytes) -> int:
    """TFRecord's masked CRC: ``crc32c`` rotated right by 15 bits plus ``0xA282EAD8``.

    The mask keeps the CRC of data that itself contains CRCs from being degenerate.

    >>> hex(masked_crc32c(b"123456789"))
    '0xc78ab0e5'
    """
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def tfrecord(data: bytes) -> bytes:
    """Frames ``data`` as one TFRecord: length, CRC of the length, data, CRC of the data."""
    length = struct.pack("<Q", len(data))
    return (
        length
        + struct.pack("<I", masked_crc32c(length))
        + data
        + struct.pack("<I", masked_crc32c(data))
    )


# ---------------------------------------------------------------------------------------------
# Protocol buffer encoding of the few messages TensorBoard needs


def _varint(n: int) -> bytes:
    n &= (1 << 64) - 1  # a negative int64 is encoded as its 64-bit two's complement
    out = bytearray()
    while n >= 0x80:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _int_field(field: int, value: int) -> bytes:
    return _varint(field << 3) + _varint(value)  # wire type 0


def _bytes_field(field: int, payload: bytes) -> bytes:
    return _varint(field << 3 | 2) + _varint(len(payload)) + payload


def _event(wall_time: float, step: int, *, file_version: str = "", summary: bytes = b"") -> bytes:
    out = _varint(1 << 3 | 1) + struct.pack("<d", wall_time) + _int_field(2, step)
    if file_version:
        out += _bytes_field(3, file_version.encode())
    if summary:
        out += _bytes_field(5, summary)
    return out


def _scalar_value(tag: str, value: float) -> bytes:
    return _bytes_field(1, tag.encode()) + _varint(2 << 3 | 5) + struct.pack("<f", value)


def _image_value(tag: str, png: bytes, height: int, width: int, colorspace: int) -> bytes:
    image = (
        _int_field(1, height)
        + _int_field(2, width)
        + _int_field(3, colorspace)
        + _bytes_field(4, png)
    )
    return _bytes_field(1, tag.encode()) + _bytes_field(4, image)


class EventWriter:
    """Writes a TensorBoard event file: ``logdir/events.out.tfevents.{time}.{host}.fcnjax``.

    The file is a sequence of TFRecords (``uint64`` length, little-endian; ``uint32`` masked
    CRC-32C of those 8 bytes; the data; ``uint32`` masked CRC-32C of the data). Each record's
    data is a serialized ``tensorflow.Event``, of which only these fields are written::

        Event   {double wall_time = 1; int64 step = 2; string file_version = 3; Summary summary = 5}
        Summary {repeated Value value = 1}
        Value   {string tag = 1; float simple_value = 2; Image image = 4}
        Image   {int32 height = 1; int32 width = 2; int32 colorspace = 3;
                 bytes encoded_image_string = 4}

    The first record is an Event holding only ``file_version: "brain.Event:2"``. Every call
    is flushed, so TensorBoard shows it while training runs (calls come once per logging
    interval, so the cost is one system call each).
    """

    def __init__(self, logdir: str | os.PathLike[str]):
        os.makedirs(logdir, exist_ok=True)
        base = os.path.join(
            logdir, f"events.out.tfevents.{int(time.time())}.{socket.gethostname()}.fcnjax"
        )
        self.path, n = base, 0
        while True:
            try:  # "x": two writers started in the same second never share a file
                self._file: IO[bytes] = open(self.path, "xb")
                break
            except FileExistsError:
                n += 1
                self.path = f"{base}.{n}"
        self._write(_event(time.time(), 0, file_version="brain.Event:2"))

    def _write(self, event: bytes) -> None:
        self._file.write(tfrecord(event))
        self._file.flush()

    def scalars(self, step: int, values: Mapping[str, float]) -> None:
        """Writes one Event at ``step`` with a ``simple_value`` (float32) per tag."""
        summary = b"".join(_bytes_field(1, _scalar_value(t, float(v))) for t, v in values.items())
        self._write(_event(time.time(), int(step), summary=summary))

    def image(
        self, step: int, tag: str, png_bytes: bytes, height: int, width: int, colorspace: int = 3
    ) -> None:
        """Writes one encoded image (PNG; ``colorspace`` 1 grey, 2 grey+alpha, 3 RGB, 4 RGBA)."""
        value = _image_value(tag, png_bytes, int(height), int(width), int(colorspace))
        self._write(_event(time.time(), int(step), summary=_bytes_field(1, value)))

    def flush(self) -> None:
        self._file.flush()

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> EventWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


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
    """

    def __init__(self, path: str | os.PathLike[str]):
        self.path = os.fspath(path)
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


class MetricWriter:
    """Writes metrics to ``workdir/metrics.jsonl`` and to TensorBoard in ``workdir/tensorboard``.

    Both get the same tags (see :func:`flatten_metrics`). With ``enabled=False`` nothing is
    created or written: pass ``enabled=jax.process_index() == 0`` so that only one host logs.
    """

    def __init__(self, workdir: str | os.PathLike[str], enabled: bool = True):
        self.enabled = enabled
        self.jsonl: JsonlWriter | None = None
        self.events: EventWriter | None = None
        if enabled:
            os.makedirs(workdir, exist_ok=True)
            self.jsonl = JsonlWriter(os.path.join(workdir, "metrics.jsonl"))
            self.events = EventWriter(os.path.join(workdir, "tensorboard"))

    def write(self, step: int, values: Mapping[str, Any], prefix: str = "train") -> None:
        if not self.enabled:
            return
        scalars = flatten_metrics(values, prefix)
        self.jsonl.write(step, scalars)
        self.events.scalars(step, scalars)

    def close(self) -> None:
        if self.enabled:
            self.jsonl.close()
            self.events.close()

    def __enter__(self) -> MetricWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ---------------------------------------------------------------------------------------------
# Console output


def _number(x: float) -> str:
    # Fixed point reads best for losses and accuracies; a learning rate of 1e-5 needs exponents.
    return f"{x:.4f}" if x == 0 or 1e-3 <= abs(x) < 1e5 or not math.isfinite(x) else f"{x:.3e}"


def _duration(seconds: float) -> str:
    minutes, s = divmod(int(round(seconds)), 60)
    h, m = divmod(minutes, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class Progress:
    """A progress line: ``step 120/800 [###.......] 15% loss 0.3120 | 85.3 img/s | ETA 1:23``.

    Images per second are measured between the ends of updates, over the last ``window`` of
    them, so the first step, which includes compilation, never counts (it would understate
    the rate for most of a short run); the ETA is the remaining steps at that window's step
    rate. On a terminal the line is redrawn in place at most ``1 / min_interval`` times a
    second; on any other stream (a CI log, a file) a full line is printed when ``step``
    reaches a multiple of ``every`` (default: about 20 lines in a run) and at ``total_steps``.

    >>> import io
    >>> clock = iter([10.0, 11.0, 12.0, 13.0]).__next__  # step 1 compiles; then 1 s a step
    >>> out = io.StringIO()
    >>> with Progress(4, stream=out, every=2, time_fn=clock) as p:
    ...     for step in range(1, 5):
    ...         p.update(step, images=8, loss=1 / step)
    >>> print(out.getvalue(), end="")
    step 2/4 [##########..........]  50% loss 0.5000 | 8.0 img/s | ETA 0:02
    step 4/4 [####################] 100% loss 0.2500 | 8.0 img/s | ETA 0:00
    """

    def __init__(
        self,
        total_steps: int,
        start_step: int = 0,
        stream: IO[str] | None = None,
        every: int | None = None,
        *,
        window: int = 20,
        width: int = 20,
        min_interval: float = 0.1,
        time_fn: Callable[[], float] = time.perf_counter,
    ):
        self.total_steps = total_steps
        self.stream = sys.stderr if stream is None else stream
        self.every = every or max(1, (total_steps - start_step) // 20)
        self.width = width
        self.min_interval = min_interval
        self.time_fn = time_fn
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        # (time, step, images counted so far) at the last `window` + 1 updates.
        self._points: collections.deque[tuple[float, int, int]] = collections.deque(
            maxlen=window + 1
        )
        self._images = 0
        self._next_print = (start_step // self.every + 1) * self.every
        self._printed = start_step  # a second update at a printed step is not printed again
        self._line = ""
        self._shown = ""  # the line now on the terminal
        self._drawn = -math.inf  # when the terminal line was last redrawn
        self._open = False  # a terminal line without its newline yet

    def update(self, step: int, images: int, **scalars: float) -> None:
        """Records that training reached ``step``, with ``images`` processed since the last call."""
        now = self.time_fn()
        # Rates are differences from the oldest point kept, so the first update, whose step
        # includes compilation, adds neither its time nor its images.
        self._images += images
        self._points.append((now, step, self._images))
        self._line = self._format(step, scalars)
        last = step >= self.total_steps
        if self.tty:
            if last or now - self._drawn >= self.min_interval:
                self._draw()
                self._drawn = now
        elif step > self._printed and (last or step >= self._next_print):
            self.stream.write(self._line + "\n")
            self.stream.flush()
            self._printed = step
            self._next_print = (step // self.every + 1) * self.every

    def _format(self, step: int, scalars: Mapping[str, float]) -> str:
        frac = min(max(step / self.total_steps, 0.0), 1.0) if self.total_steps else 1.0
        bar = "#" * int(frac * self.width)
        head = f"step {step}/{self.total_steps} [{bar.ljust(self.width, '.')}] {frac:4.0%}"
        head += "".join(f" {name} {_number(float(v))}" for name, v in scalars.items())
        parts = [head]
        (t0, s0, i0), (t1, s1, i1) = self._points[0], self._points[-1]
        if t1 > t0 and s1 > s0:
            parts.append(f"{(i1 - i0) / (t1 - t0):.1f} img/s")
            eta = max(self.total_steps - step, 0) * (t1 - t0) / (s1 - s0)
            parts.append(f"ETA {_duration(eta)}")
        return " | ".join(parts)

    def _draw(self) -> None:
        # Pad with spaces: "\r" moves the cursor back but leaves a longer old line's tail.
        self.stream.write("\r" + self._line.ljust(len(self._shown)))
        self.stream.flush()
        self._shown = self._line
        self._open = True

    def write(self, text: str) -> None:
        """Prints ``text`` on its own line (e.g. evaluation results) without breaking the bar."""
        if self._open:
            self.stream.write("\r" + " " * len(self._shown) + "\r")
        self.stream.write(text + "\n")
        if self._open:
            self._draw()
        self.stream.flush()

    def close(self) -> None:
        """Ends the terminal line, showing the last update even if it was not redrawn."""
        if self._open:
            self._draw()
            self.stream.write("\n")
            self.stream.flush()
            self._open = False

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
