"""Pictures with PIL and NumPy only: palettes, coloured masks, overlays, grids, a scatter.

>>> import numpy as np
>>> palette(3)[:3].tolist()
[[0, 0, 0], [128, 0, 0], [0, 128, 0]]
>>> palette()[15].tolist(), palette()[255].tolist()  # VOC's person and void colours
([192, 128, 128], [224, 224, 192])
>>> mask = np.array([[0, 1], [2, 255]])
>>> colorize(mask)[1].tolist()  # class 2 is green; the ignore label is white
[[0, 128, 0], [255, 255, 255]]
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from fcnjax.data.core import IGNORE_LABEL

__all__ = ["colorize", "grid", "overlay", "palette", "save_png", "scatter", "to_uint8"]


def palette(num_classes: int = 256) -> np.ndarray:
    """PASCAL VOC's colour map (bit-interleaved class index): ``uint8[num_classes, 3]``."""
    colours = np.zeros((max(num_classes, 1), 3), np.uint8)
    for i in range(len(colours)):
        c, r, g, b = i, 0, 0, 0
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        colours[i] = (r, g, b)
    return colours


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
