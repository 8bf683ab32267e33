"""Plots drawn with matplotlib: the latent-space scatter and training curves.

matplotlib is the ``viz`` extra (``pip install "fcnjax[viz]"``) and is imported only when a
plot is drawn. Figures are built as ``matplotlib.figure.Figure`` objects and rendered by the
Agg canvas, never through ``pyplot``: no global figure state, no backend switch, safe in
notebooks and threads. Everything here is re-exported by :mod:`fcnjax.viz`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from fcnjax.metrics_log import read_jsonl

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["figure_to_array", "plot_metrics", "read_metrics", "scatter", "scatter_figure"]


def _figure_class(what: str):
    """``matplotlib.figure.Figure``, or an ImportError that says how to install it."""
    try:
        from matplotlib.figure import Figure
    except ImportError as e:
        raise ImportError(
            f'{what} needs matplotlib, the viz extra: pip install "fcnjax[viz]" '
            f"(or pip install matplotlib)."
        ) from e
    return Figure


def figure_to_array(fig: Figure) -> np.ndarray:
    """Renders a matplotlib figure with the Agg canvas: ``uint8 (H, W, 3)``.

    ``H, W`` are the figure's size in inches times its dpi.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = fig.canvas if isinstance(fig.canvas, FigureCanvasAgg) else FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def _class_colours(k: int) -> list:
    """``k`` distinct colours: matplotlib's tab10 (tab20 past 10 classes, turbo past 20)."""
    import matplotlib

    if k <= 10:
        return [matplotlib.colormaps["tab10"](i) for i in range(k)]
    if k <= 20:
        return [matplotlib.colormaps["tab20"](i) for i in range(k)]
    return [matplotlib.colormaps["turbo"](i / (k - 1)) for i in range(k)]


def _scatter_inputs(points, labels, highlight, size):
    pts = np.asarray(points, np.float64)
    if pts.ndim != 2 or pts.shape[1] != 2:
        raise ValueError(f"`points` must be (M, 2) points of a plane; got shape {pts.shape}.")
    if labels is not None:
        labels = np.asarray(labels).reshape(-1)
        if len(labels) != len(pts):
            raise ValueError(
                f"`labels` must hold one label per point: {len(pts)} points, {len(labels)} labels."
            )
    if highlight is not None:
        highlight = np.asarray(highlight, np.float64).reshape(-1)
        if highlight.shape != (2,) or not np.isfinite(highlight).all():
            raise ValueError(f"`highlight` must be one finite point (x, y); got {highlight!r}.")
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 100:
        raise ValueError(f"`size` must be an int >= 100 (pixels); got {size!r}.")
    return pts, labels, highlight


def scatter_figure(
    points: np.ndarray,
    labels: np.ndarray | None = None,
    *,
    highlight: Sequence[float] | None = None,
    highlight_label: str = "decoded",
    axis_labels: tuple[str, str] = ("z1", "z2"),
    title: str | None = None,
    size: int = 480,
) -> Figure:
    """A 2-D scatter plot as a matplotlib ``Figure`` (see :func:`scatter` for the pixels).

    Args:
      points: ``(M, 2)`` points, e.g. an autoencoder's 2-D latent codes.
      labels: ``(M,)`` class labels (any values; one colour per distinct label, sorted,
        with a legend), or None (one colour, no legend).
      highlight: one point ``(x, y)`` to mark with a black cross and its coordinates, e.g.
        the latent point the trainer decodes into ``decoded.png``.
      highlight_label: the text before the coordinates.
      axis_labels: the x and y axis labels.
      title: the axes' title, or None.
      size: the figure's side in pixels (100 dpi).

    Returns:
      A ``Figure`` with one axes (ticks, grid, labels) and, with ``labels``, a legend.

    Raises:
      ValueError: ``points`` not ``(M, 2)``, ``labels`` not one per point, ``highlight``
        not two finite numbers, or ``size`` below 100.
      ImportError: without matplotlib (``pip install "fcnjax[viz]"``).
    """
    pts, labels, highlight = _scatter_inputs(points, labels, highlight, size)
    Figure = _figure_class("viz.scatter")
    fig = Figure(figsize=(size / 100, size / 100), dpi=100, layout="constrained")
    ax = fig.add_subplot()
    marker = dict(s=10 if len(pts) > 500 else 24, alpha=0.7, linewidths=0)
    if labels is None:
        ax.scatter(pts[:, 0], pts[:, 1], color="tab:blue", **marker)
    else:
        names = np.unique(labels)
        for name, colour in zip(names, _class_colours(len(names))):
            chosen = pts[labels == name]
            ax.scatter(chosen[:, 0], chosen[:, 1], color=colour, label=str(name), **marker)
        ax.legend(
            title="label",
            loc="upper left",
            bbox_to_anchor=(1.02, 1.0),
            borderaxespad=0,
            markerscale=1.5,
            frameon=False,
            ncols=1 if len(names) <= 12 else 2,
        )
    if highlight is not None:
        _mark(ax, pts, highlight, highlight_label)
    ax.set_xlabel(axis_labels[0])
    ax.set_ylabel(axis_labels[1])
    if title:
        ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.set_axisbelow(True)  # grid lines under the points
    return fig


def _mark(ax, pts: np.ndarray, point: np.ndarray, text: str) -> None:
    """A black cross at ``point`` and its label, on the side towards the middle of the data."""
    x, y = point
    ax.scatter([x], [y], marker="X", s=160, color="black", edgecolors="white", zorder=3)
    mid = (pts.min(0) + pts.max(0)) / 2 if len(pts) else point
    right, top = x <= mid[0], y <= mid[1]
    ax.annotate(
        f"{text} ({x:g}, {y:g})",
        (x, y),
        xytext=(10 if right else -10, 10 if top else -10),
        textcoords="offset points",
        ha="left" if right else "right",
        va="bottom" if top else "top",
        fontsize=9,
        zorder=4,
        bbox=dict(boxstyle="round,pad=0.25", facecolor="white", edgecolor="0.5", alpha=0.9),
    )


def scatter(
    points: np.ndarray,
    labels: np.ndarray | None = None,
    *,
    highlight: Sequence[float] | None = None,
    size: int = 480,
    **kwargs,
) -> np.ndarray:
    """A 2-D scatter plot ``uint8 (size, size, 3)``: axes, ticks, one colour per label.

    The figure of :func:`scatter_figure` (same arguments; ``kwargs`` go to it) rendered by
    Agg. The trainer writes an autoencoder's 2-D latent codes this way into ``latent.png``,
    coloured by class, with the point it decodes highlighted.

    >>> codes, digits = np.random.default_rng(0).normal(size=(30, 2)), np.arange(30) % 3
    >>> image = scatter(codes, digits, highlight=(2, -4), size=240)
    >>> image.shape, image.dtype
    ((240, 240, 3), dtype('uint8'))
    """
    return figure_to_array(scatter_figure(points, labels, highlight=highlight, size=size, **kwargs))


def read_metrics(path: str | Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Reads a training's ``metrics.jsonl`` (a workdir or the file).

    The file is read by :func:`fcnjax.metrics_log.read_jsonl`: a cut-off last line (a run
    killed while writing it) is skipped with a warning; any other bad line is a
    ``ValueError`` naming the file and the line.

    Returns:
      ``{name: (steps int64[M], values float64[M])}`` for every numeric metric, in step
      order (a resumed run's repeated steps keep their last value).
    """
    path = Path(path)
    file = path / "metrics.jsonl" if path.is_dir() else path
    if not file.is_file():
        raise FileNotFoundError(
            f"{file}: no metrics file (a workdir holds metrics.jsonl once training has logged)."
        )
    series: dict[str, dict[int, float]] = {}
    for record in read_jsonl(file):
        for key, value in record.items():
            if key not in ("step", "time") and isinstance(value, (int, float)):
                series.setdefault(key, {})[record["step"]] = float(value)
    return {
        k: (np.asarray(sorted(v), np.int64), np.asarray([v[s] for s in sorted(v)]))
        for k, v in series.items()
    }


def _smooth(values: np.ndarray, weight: float = 0.6) -> np.ndarray:
    """TensorBoard's exponential moving average, debiased."""
    out, last = np.empty_like(values), 0.0
    for i, v in enumerate(values):
        last = weight * last + (1 - weight) * v
        out[i] = last / (1 - weight ** (i + 1))
    return out


def _loss_figure(Figure, series):
    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    if "train/loss" in series:
        s, v = series["train/loss"]
        ax.plot(s, v, color="C0", alpha=0.3, label="training")
        ax.plot(s, _smooth(v), color="C0", label="training (smoothed)")
    if "eval/loss" in series:
        ax.plot(*series["eval/loss"], "o-", color="C1", label="validation")
    ax.set(xlabel="step", ylabel="loss", title="loss")
    ax.grid(alpha=0.3)
    ax.legend()
    return fig


def _eval_figure(Figure, series, main, per_class):
    fig = Figure(figsize=(11 if per_class else 6, 4))
    axes = fig.subplots(1, 2 if per_class else 1, squeeze=False)[0]
    for k in main:
        axes[0].plot(*series[f"eval/{k}"], "o-", label=k.replace("_", " "))
    axes[0].set(xlabel="step", title="validation")
    for k in per_class:
        axes[-1].plot(*series[k], "o-", label=k.removeprefix("eval/iou/"))
    if per_class:
        axes[-1].set(xlabel="step", title="validation IoU per class")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return fig


def _learning_rate_figure(Figure, series):
    fig = Figure(figsize=(6, 3))
    ax = fig.subplots()
    ax.plot(*series["train/learning_rate"])
    ax.set(xlabel="step", ylabel="learning rate", title="learning rate")
    ax.grid(alpha=0.3)
    return fig


def plot_metrics(workdir: str | Path, out_dir: str | Path | None = None) -> list[Path]:
    """Training curves of a workdir as PNGs (needs matplotlib: ``fcnjax[viz]``).

    Writes ``loss.png`` (training loss, raw and smoothed, and the validation loss),
    ``eval.png`` (the FCN metrics; for segmentation also one IoU curve per class) and
    ``learning_rate.png`` into ``out_dir`` (default ``workdir/plots``); a figure whose
    metrics were never logged is skipped.

    Returns:
      The paths written.
    """
    Figure = _figure_class("training curves (viz.plot_metrics, fcnjax plot)")
    series = read_metrics(workdir)
    main = ("mean_iou", "pixel_accuracy", "mean_accuracy", "frequency_weighted_iou")
    main = [k for k in main if f"eval/{k}" in series]
    per_class = sorted(k for k in series if k.startswith("eval/iou/"))
    figures = {}
    if "train/loss" in series or "eval/loss" in series:
        figures["loss.png"] = _loss_figure(Figure, series)
    if main:
        figures["eval.png"] = _eval_figure(Figure, series, main, per_class)
    if "train/learning_rate" in series:
        figures["learning_rate.png"] = _learning_rate_figure(Figure, series)
    if not figures:
        raise ValueError(f"{workdir}: metrics.jsonl holds no loss, evaluation or learning rate.")
    out_dir = Path(out_dir) if out_dir is not None else Path(workdir) / "plots"
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, fig in figures.items():
        fig.tight_layout()
        fig.savefig(out_dir / name, dpi=110)
    return [out_dir / name for name in figures]
