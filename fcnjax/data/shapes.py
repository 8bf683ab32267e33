"""``shapes``: procedurally generated segmentation data, the offline default.

Each image holds 1 to ``max_objects`` filled circles, squares and triangles (rotated, of
equal area for equal size, possibly overlapping) on a textured, noisy background. Object
and background fills are drawn from **one** distribution of colour-pair gratings, so the
colour of a pixel says nothing about its class: a model has to find the outline (with a
guaranteed contrast between an object and the background it sits on) and recognise its
shape. Every example is a pure function of ``(seed, split, index)``.
"""

from __future__ import annotations

import math

import numpy as np

from fcnjax.data.core import Example, Source, as_int_tuple

SHAPE_CLASSES = ("background", "circle", "square", "triangle")
_SPLITS = {"train": 0, "validation": 1, "val": 1, "test": 2}
# Half-side of a square and circumradius of an equilateral triangle with the area of a
# circle of radius 1, so that area does not give the class away.
_SQUARE_HALF = math.sqrt(math.pi) / 2
_TRIANGLE_RADIUS = math.sqrt(4 * math.pi / (3 * math.sqrt(3)))


class Shapes(Source):
    """Circles (1), squares (2) and triangles (3) on background (0).

    Args:
      num_examples: examples in the split.
      size: ``(H, W)`` (or one int) of every image.
      split: ``"train"``, ``"validation"`` (``"val"``) or ``"test"``: disjoint streams.
      seed: the dataset seed; the same ``(seed, split, index)`` gives the same example.
      max_objects: at most this many objects per image (at least 1).
      noise: standard deviation of the per-pixel Gaussian noise (0-255 scale).
      min_contrast: least Euclidean RGB distance between an object's mean colour and the
        background's.
      radius_range: ``(low, high)`` object size (the radius of a circle of equal area)
        as a fraction of ``min(H, W)``.
      cache: keep rendered examples in memory (``H * W * 4`` bytes each), so that later
        epochs cost nothing to draw; per process (grain workers each keep their own).
      class_scale: each class's size factor (circle, square, triangle), multiplying an
        object's radius: ``(1, 1, 0.25)`` makes triangles rare in pixels (an imbalanced
        variant; the stream of images is the same, only the sizes change).
      binary: masks of 0 (background) and 1 (any shape), for binary segmentation.

    >>> src = Shapes(4, size=32)
    >>> ex = src[0]
    >>> ex['image'].shape, ex['image'].dtype, ex['mask'].shape, src.num_classes
    ((32, 32, 3), dtype('uint8'), (32, 32), 4)
    >>> bool((Shapes(4, size=32)[0]['image'] == ex['image']).all())
    True
    """

    class_names = SHAPE_CLASSES
    num_classes = len(SHAPE_CLASSES)
    verify_by_default = False

    def __init__(
        self,
        num_examples: int = 1024,
        size: int | tuple[int, int] = 128,
        split: str = "train",
        seed: int = 0,
        max_objects: int = 4,
        noise: float = 12.0,
        min_contrast: float = 80.0,
        radius_range: tuple[float, float] = (0.09, 0.2),
        cache: bool = False,
        class_scale: tuple[float, float, float] = (1.0, 1.0, 1.0),
        binary: bool = False,
    ):
        if int(num_examples) <= 0:
            raise ValueError(f"`num_examples` must be positive; got {num_examples}.")
        if split not in _SPLITS:
            raise ValueError(f"`split` must be one of {sorted(_SPLITS)}; got {split!r}.")
        if int(max_objects) < 1:
            raise ValueError(f"`max_objects` must be >= 1; got {max_objects}.")
        self.num_examples = int(num_examples)
        self.size = as_int_tuple(size, "size")
        if min(self.size) < 8:
            raise ValueError(f"`size` must be at least 8x8; got {self.size}.")
        self.split, self.seed = split, int(seed)
        self.max_objects, self.noise, self.min_contrast = int(max_objects), noise, min_contrast
        lo, hi = (float(r) for r in radius_range)
        if not 0 < lo <= hi < 0.5:
            raise ValueError(
                f"`radius_range` must satisfy 0 < low <= high < 0.5; got {radius_range}."
            )
        self.radius_range = (lo, hi)
        scale = tuple(class_scale) if isinstance(class_scale, (tuple, list)) else ()
        if len(scale) != 3 or not all(
            isinstance(f, (int, float)) and not isinstance(f, bool) and 0 < f <= 1 for f in scale
        ):
            raise ValueError(
                f"`class_scale` must be 3 numbers in (0, 1] (circle, square, triangle); "
                f"got {class_scale!r}."
            )
        self.class_scale = tuple(float(f) for f in scale)
        if not isinstance(binary, bool):
            raise ValueError(f"`binary` must be True or False; got {binary!r}.")
        self.binary = binary
        if binary:
            self.class_names, self.num_classes = ("background", "shape"), 2
        self._cache: dict[int, Example] | None = {} if cache else None

    def __len__(self) -> int:
        return self.num_examples

    def describe(self, index: int) -> str:
        return f"shapes[{self.split}, seed={self.seed}][{index}]"

    def image_size(self, index: int) -> tuple[int, int]:
        """``(H, W)`` of example ``index``: ``size``, for every example."""
        return self.size

    def load(self, index: int) -> Example:
        if self._cache is None:
            return self._render(index)
        example = self._cache.get(index)
        if example is None:
            example = self._cache[index] = self._render(index)
        return {k: v.copy() for k, v in example.items()}

    def _render(self, index: int) -> Example:
        rng = np.random.default_rng([self.seed, _SPLITS[self.split], int(index)])
        h, w = self.size
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        params = _texture_params(rng)
        background_mean, image = params[0], _render(params, yy, xx)
        mask = np.zeros((h, w), np.uint8)
        radius_range = (self.radius_range[0] * min(h, w), self.radius_range[1] * min(h, w))
        for _ in range(rng.integers(1, self.max_objects + 1)):
            cls = int(rng.integers(1, 4))
            r = rng.uniform(*radius_range) * self.class_scale[cls - 1]
            cy, cx = rng.uniform(r, h - r), rng.uniform(r, w - r)
            inside = _shape(cls, yy - cy, xx - cx, r, rng.uniform(0, 2 * np.pi))
            # Fill with a texture whose mean colour stands out from the background.
            for _ in range(100):
                params = _texture_params(rng)
                if np.linalg.norm(params[0] - background_mean) >= self.min_contrast:
                    break
            image[inside] = _render(params, yy[inside], xx[inside])
            mask[inside] = 1 if self.binary else cls
        image += rng.normal(0, self.noise, image.shape).astype(np.float32)
        return {"image": np.clip(np.rint(image), 0, 255).astype(np.uint8), "mask": mask}


def _texture_params(rng: np.random.Generator):
    """A grating between two random colours: (mean colour, a, b, direction, period, phase)."""
    a, b = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    theta, period, phase = rng.uniform(0, np.pi), rng.uniform(6, 40), rng.uniform(0, 2 * np.pi)
    return (a + b) / 2, a, b, theta, period, phase


def _render(params, yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
    """The grating at coordinates ``(yy, xx)``: float32 ``(*yy.shape, 3)``."""
    _, a, b, theta, period, phase = params
    k = 2 * np.pi / period
    arg = (np.float32(np.cos(theta) * k) * xx + np.float32(np.sin(theta) * k) * yy) + np.float32(
        phase
    )
    t = (0.5 + 0.5 * np.sin(arg))[..., None]
    return (a.astype(np.float32) + t * (b - a).astype(np.float32)).astype(np.float32)


def _shape(cls: int, dy: np.ndarray, dx: np.ndarray, r: float, angle: float) -> np.ndarray:
    """Boolean mask of a circle (1), square (2) or triangle (3) of 'radius' r, rotated."""
    if cls == 1:
        return dy * dy + dx * dx <= r * r
    c, s = math.cos(angle), math.sin(angle)
    u, v = c * dx + s * dy, -s * dx + c * dy
    if cls == 2:
        half = _SQUARE_HALF * r
        return (np.abs(u) <= half) & (np.abs(v) <= half)
    # Equilateral triangle: inside all three half-planes at distance R/2 from the centre.
    apothem = _TRIANGLE_RADIUS * r / 2
    inside = np.ones(u.shape, bool)
    for k in range(3):
        phi = 2 * np.pi * k / 3
        inside &= math.cos(phi) * u + math.sin(phi) * v <= apothem
    return inside
