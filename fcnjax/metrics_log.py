"""``metrics.jsonl`` read back: the one reader of a training's metrics log.

The trainer (:class:`fcnjax.training.summary.JsonlWriter`) appends one JSON object per line,
``{"step": s, "time": t, "train/loss": ..., ...}``; :func:`fcnjax.plots.read_metrics` (the
curves, ``fcnjax plot``) and the trainer itself (what a resumed run logged already) read
it with :func:`read_jsonl`, which treats a damaged file in one way:

* a **cut-off last line** (no final newline and not JSON: a run killed while writing it) is
  skipped, with a warning on this module's logger naming the file and the line;
* any **other bad line** (not JSON, or not an object with an integer ``"step"``) is an
  error, a ``ValueError`` naming the file and the line: a record in the middle of the file
  was written whole, so one that cannot be read is damage, not an interrupted write.

Blank lines are ignored.

>>> import tempfile, pathlib
>>> path = pathlib.Path(tempfile.mkdtemp()) / "metrics.jsonl"
>>> _ = path.write_text('{"step": 1, "train/loss": 0.5}\\n{"step": 2, "train/lo')
>>> read_jsonl(path)  # the cut-off line is skipped (and logged)
[{'step': 1, 'train/loss': 0.5}]
>>> _ = path.write_text('{"step": 1}\\nnot json\\n{"step": 2}\\n')
>>> read_jsonl(path)  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
ValueError: .../metrics.jsonl, line 2: not a metrics record (Expecting value at column 1). ...
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any

__all__ = ["parse_jsonl", "read_jsonl"]

log = logging.getLogger(__name__)


def read_jsonl(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The records of a metrics log, in file order (see the module's docstring).

    Raises:
      FileNotFoundError: no file at ``path``.
      ValueError: a bad line other than a cut-off last one; the message names the file
        and the line.
    """
    with open(path, "rb") as f:
        data = f.read()
    return parse_jsonl(data, os.fspath(path))[0]


def parse_jsonl(data: bytes, name: str) -> tuple[list[dict[str, Any]], bool]:
    """The records of a metrics log's bytes, and whether a cut-off last line was skipped.

    ``name`` (the file) is for the messages. The rules are :func:`read_jsonl`'s.
    """
    lines = data.split(b"\n")  # the last item is what follows the last newline
    records = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError as e:  # JSONDecodeError, or bytes that are not UTF-8
            if n == len(lines):  # no newline after it: a write cut short
                log.warning(
                    "%s, line %d: skipped a cut-off last line (a run killed while writing it).",
                    name,
                    n,
                )
                return records, True
            raise ValueError(f"{name}, line {n}: not a metrics record ({_why(e)}). {_FIX}") from e
        if not isinstance(record, dict) or type(record.get("step")) is not int:
            why = "no integer 'step'" if isinstance(record, dict) else "not a JSON object"
            raise ValueError(f"{name}, line {n}: not a metrics record ({why}). {_FIX}")
        records.append(record)
    return records, False


_FIX = "Remove or repair that line: only the last line may be cut off (by a killed run)."


def _why(error: ValueError) -> str:
    if isinstance(error, json.JSONDecodeError):  # its own message counts lines from the record
        return f"{error.msg} at column {error.colno}"
    return str(error)
