"""The training progress bar: steps, images per second, ETA and the loss (tqdm).

:class:`Progress` shows them on a terminal, as a widget in a notebook, or as plain lines in
a log; :func:`format_number` is how a metric is written on the console (also by
:func:`fcnjax.training.summary.format_table`).
"""

from __future__ import annotations

import collections
import math
import sys
import time
from collections.abc import Callable
from typing import IO, Any

import tqdm.auto
import tqdm.autonotebook  # after tqdm.auto, which imports it with its warning silenced
import tqdm.std

__all__ = ["Progress", "format_number"]


def format_number(x: float) -> str:
    """A metric on the console: fixed point, which reads best for losses and accuracies, or
    an exponent where that would show too few digits (a learning rate of 1e-5).

    >>> format_number(0.31204), format_number(1e-5), format_number(float("nan"))
    ('0.3120', '1.000e-05', 'nan')
    """
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
        postfix = ", ".join(f"{name}={format_number(float(v))}" for name, v in scalars.items())
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
