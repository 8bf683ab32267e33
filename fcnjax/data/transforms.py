"""Joint image/mask transforms: small pure NumPy functions, and the two recipes built from them.

Geometric transforms take and return ``(image, mask)`` with ``image`` ``uint8[H, W, C]``
and ``mask`` ``uint8[H, W]`` or ``None`` (image-only data); random ones take a
``numpy.random.Generator`` first, so one seed gives one result. Images are resized
bilinearly, masks by nearest neighbour (labels are never blended). :func:`normalize` ends
every recipe; the normalisation pretrained weights expect, :class:`Preprocessing`
(:data:`KERAS_CAFFE`, :data:`TORCHVISION`), lives here so the input pipeline needs neither
the models nor :mod:`fcnjax.weights` (which re-exports it).

>>> rng = np.random.default_rng(0)
>>> image, mask = np.zeros((40, 60, 3), np.uint8), np.ones((40, 60), np.uint8)
>>> image, mask = random_crop(rng, image, mask, (64, 64))   # pads with IGNORE_LABEL first
>>> image.shape, mask.shape, sorted(np.unique(mask).tolist())
((64, 64, 3), (64, 64), [1, 255])
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from fcnjax.data.core import IGNORE_LABEL, DataError, Example, as_int_tuple

Mask = np.ndarray | None

NORMALIZATIONS = ("unit", "imagenet", "caffe", "none")


def resize(image: np.ndarray, mask: Mask, size: Sequence[int]) -> tuple[np.ndarray, Mask]:
    """Resizes to ``size = (H, W)``: the image bilinearly (PIL, antialiased when shrinking),
    the mask by nearest neighbour."""
    if image.shape[:2] == tuple(size):
        return image, mask
    return _resize_region(image, mask, size)


def _resize_region(
    image: np.ndarray, mask: Mask, size: Sequence[int], box: tuple[float, ...] | None = None
) -> tuple[np.ndarray, Mask]:
    """PIL resize of ``box`` (default: everything) to ``size = (H, W)``: the image bilinear,
    the mask nearest."""
    from PIL import Image

    h, w = size
    channels = image.shape[-1]
    pil = Image.fromarray(image[..., 0] if channels == 1 else image)
    out = np.asarray(pil.resize((w, h), Image.BILINEAR, box=box))
    out = out[..., None] if channels == 1 else out
    if mask is not None:
        mask = np.asarray(Image.fromarray(mask).resize((w, h), Image.NEAREST, box=box))
    return out, mask


def random_scale(
    rng: np.random.Generator,
    image: np.ndarray,
    mask: Mask,
    scale_range: tuple[float, float] = (0.5, 2.0),
) -> tuple[np.ndarray, Mask]:
    """Resizes by one factor drawn uniformly from ``scale_range`` (both sides alike)."""
    s = rng.uniform(*scale_range)
    h, w = image.shape[:2]
    return resize(image, mask, (max(1, round(h * s)), max(1, round(w * s))))


def pad_to(
    image: np.ndarray,
    mask: Mask,
    size: Sequence[int],
    fill: int = 0,
    ignore_label: int = IGNORE_LABEL,
) -> tuple[np.ndarray, Mask]:
    """Pads bottom and right up to at least ``size``: the image with ``fill``, the mask with
    ``ignore_label`` (so padding never counts in a loss or metric)."""
    h, w = image.shape[:2]
    ph, pw = max(0, size[0] - h), max(0, size[1] - w)
    if not (ph or pw):
        return image, mask
    image = np.pad(image, ((0, ph), (0, pw), (0, 0)), constant_values=fill)
    if mask is not None:
        mask = np.pad(mask, ((0, ph), (0, pw)), constant_values=ignore_label)
    return image, mask


def random_crop(
    rng: np.random.Generator,
    image: np.ndarray,
    mask: Mask,
    size: Sequence[int],
    fill: int = 0,
    ignore_label: int = IGNORE_LABEL,
) -> tuple[np.ndarray, Mask]:
    """A uniformly placed ``size`` crop, after :func:`pad_to` where the image is smaller."""
    image, mask = pad_to(image, mask, size, fill, ignore_label)
    h, w = image.shape[:2]
    y = int(rng.integers(0, h - size[0] + 1))
    x = int(rng.integers(0, w - size[1] + 1))
    crop = np.s_[y : y + size[0], x : x + size[1]]
    return image[crop], None if mask is None else mask[crop]


def random_scale_crop(
    rng: np.random.Generator,
    image: np.ndarray,
    mask: Mask,
    size: Sequence[int],
    scale_range: tuple[float, float] = (0.5, 2.0),
    fill: int = 0,
    ignore_label: int = IGNORE_LABEL,
) -> tuple[np.ndarray, Mask]:
    """:func:`random_scale` then :func:`random_crop`, computed by resizing only the cropped
    region: the same random draws and the same pixels (up to rounding: image values by 1-2,
    masks where a nearest-neighbour pick is a tie), several times faster when upscaling.
    """
    s = rng.uniform(*scale_range)
    h, w = image.shape[:2]
    sh, sw = max(1, round(h * s)), max(1, round(w * s))
    y = int(rng.integers(0, max(sh, size[0]) - size[0] + 1))
    x = int(rng.integers(0, max(sw, size[1]) - size[1] + 1))
    # The part of the crop inside the scaled image, and where it lies in the original.
    ch, cw = min(size[0], sh - y), min(size[1], sw - x)
    fy, fx = h / sh, w / sw
    box = (x * fx, y * fy, (x + cw) * fx, (y + ch) * fy)
    out, mask = _resize_region(image, mask, (ch, cw), box)
    return pad_to(out, mask, size, fill, ignore_label)


def hflip(image: np.ndarray, mask: Mask) -> tuple[np.ndarray, Mask]:
    """Mirrors left-right."""
    return image[:, ::-1], None if mask is None else mask[:, ::-1]


def random_flip(
    rng: np.random.Generator, image: np.ndarray, mask: Mask, p: float = 0.5
) -> tuple[np.ndarray, Mask]:
    """:func:`hflip` with probability ``p``."""
    return hflip(image, mask) if rng.uniform() < p else (image, mask)


def color_jitter(
    rng: np.random.Generator,
    image: np.ndarray,
    brightness: float = 0.2,
    contrast: float = 0.2,
    saturation: float = 0.2,
) -> np.ndarray:
    """Image-only photometric jitter on ``float32[H, W, C]`` in ``[0, 255]``.

    Brightness scales by ``U(1 - b, 1 + b)``; contrast blends with the mean grey level by
    ``U(1 - c, 1 + c)``; saturation (RGB only) blends with the pixel's grey by
    ``U(1 - s, 1 + s)``, as torchvision's ``ColorJitter``; the result is clipped to [0, 255].
    """
    image = np.asarray(image, np.float32)
    if brightness:
        image = image * rng.uniform(1 - brightness, 1 + brightness)
    if contrast:
        c = rng.uniform(1 - contrast, 1 + contrast)
        image = (image - _grey(image).mean()) * c + _grey(image).mean()
    if saturation and image.shape[-1] == 3:
        s = rng.uniform(1 - saturation, 1 + saturation)
        grey = _grey(image)[..., None]
        image = (image - grey) * s + grey
    return np.clip(image, 0, 255).astype(np.float32)


def _grey(image: np.ndarray) -> np.ndarray:
    if image.shape[-1] == 1:
        return image[..., 0]
    return image @ np.array([0.299, 0.587, 0.114], np.float32)


@dataclasses.dataclass(frozen=True)
class Preprocessing:
    """The input normalisation a set of weights was trained with.

    Calling it maps RGB images with values in ``[0, 255]`` to the network's input:
    ``x * scale``, then (if ``bgr``) channels reversed to BGR, then ``(x - mean) / std``.
    ``mean`` and ``std`` are given in the network's channel order (BGR when ``bgr``).

    Attributes:
      mean: per-channel mean subtracted after scaling.
      std: per-channel divisor.
      bgr: reverse RGB to BGR (Caffe-trained weights, as Keras' VGG16).
      scale: multiplier applied first (``1 / 255`` for torchvision).

    >>> import numpy as np
    >>> KERAS_CAFFE(np.array([[[10, 20, 30]]], np.uint8))
    array([[[ -73.939,  -96.779, -113.68 ]]], dtype=float32)
    >>> TORCHVISION(np.full((2, 4, 4, 3), 255.0)).shape
    (2, 4, 4, 3)
    """

    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    bgr: bool
    scale: float = 1.0

    def __post_init__(self):
        for field in ("mean", "std"):
            value = tuple(float(v) for v in getattr(self, field))
            if len(value) != 3:
                raise ValueError(f"`{field}` must have 3 values (one per channel); got {value}.")
            object.__setattr__(self, field, value)
        if any(s == 0 for s in self.std):
            raise ValueError(f"`std` must be non-zero; got {self.std}.")

    def __call__(self, images: Any) -> Any:
        """Normalise RGB images.

        Args:
          images: ``(..., H, W, 3)`` RGB, uint8 or float with values in ``[0, 255]``; a
            NumPy array (or anything ``np.asarray`` takes) or a JAX array (also traced).

        Returns:
          ``(..., H, W, 3)`` float32, the network's input; a JAX array for JAX input and
          a NumPy array otherwise.
        """
        xp = jnp if isinstance(images, jax.Array) else np
        x = xp.asarray(images)
        if x.ndim < 1 or x.shape[-1] != 3:
            raise ValueError(
                f"Preprocessing expects RGB images (..., H, W, 3) with 3 channels last; "
                f"got shape {x.shape}."
            )
        x = x.astype(np.float32)
        if self.scale != 1.0:
            x = x * np.float32(self.scale)
        if self.bgr:
            x = x[..., ::-1]
        x = x - np.asarray(self.mean, np.float32)
        if self.std != (1.0, 1.0, 1.0):
            x = x / np.asarray(self.std, np.float32)
        return x


# Keras' "caffe" mode (keras.applications.vgg16.preprocess_input): BGR, ImageNet mean.
KERAS_CAFFE = Preprocessing(mean=(103.939, 116.779, 123.68), std=(1.0, 1.0, 1.0), bgr=True)
# torchvision's ImageNet models: [0, 1], then ImageNet mean and standard deviation.
TORCHVISION = Preprocessing(
    mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), bgr=False, scale=1 / 255
)


def normalize(image: np.ndarray, normalization: str | Preprocessing) -> np.ndarray:
    """Maps ``[0, 255]`` images to the network input, as ``float32``.

    ``"unit"``: ``x / 255`` (the autoencoder and U-Net recipes); ``"imagenet"``: torchvision's
    mean/std on ``[0, 1]`` (:data:`TORCHVISION`); ``"caffe"``: BGR minus the Caffe means, for
    the Keras/Caffe VGG16 (:data:`KERAS_CAFFE`); ``"none"``: unchanged; or any
    :class:`Preprocessing` (e.g. from :func:`fcnjax.weights.load_vgg16`). A JAX array (also
    a traced one: an exported graph normalises its uint8 input) gives a JAX array.
    """
    xp = jnp if isinstance(image, jax.Array) else np
    image = xp.asarray(image, np.float32)
    if isinstance(normalization, Preprocessing):
        return xp.asarray(normalization(image), np.float32)
    if normalization == "unit":
        return image * np.float32(1 / 255)
    if normalization == "none":
        return image
    if normalization in ("imagenet", "caffe"):
        if image.shape[-1] != 3:
            raise DataError(f"{normalization!r} normalisation needs RGB images; got {image.shape}.")
        pre = TORCHVISION if normalization == "imagenet" else KERAS_CAFFE
        return xp.asarray(pre(image), np.float32)
    raise ValueError(
        f"`normalization` must be one of {NORMALIZATIONS} or a Preprocessing; "
        f"got {normalization!r}."
    )


def _finish(example: Example, image: np.ndarray, mask: Mask, normalization) -> Example:
    out = {k: v for k, v in example.items() if k not in ("image", "mask")}
    out["image"] = normalize(image, normalization)
    if mask is not None:
        out["mask"] = np.asarray(mask, np.int32)
    return out


@dataclasses.dataclass(frozen=True)
class TrainTransform:
    """The training recipe: geometry, flip, jitter, normalisation (a grain ``random_map``).

    Attributes:
      size: ``(H, W)`` of every output (``None`` only with ``mode="none"``).
      mode: ``"crop"``: random scale in ``scale_range`` then a random ``size`` crop padded
        with ``IGNORE_LABEL`` (FCN/DeepLab style); ``"resize"``: resize every example to
        ``size`` (keras-segmentation style); ``"none"``: keep the source's size.
      scale_range: the ``(low, high)`` random scale for ``"crop"`` (``None``: no scaling).
      flip: random horizontal flips.
      jitter: ``(brightness, contrast, saturation)`` for :func:`color_jitter` (``None``: off).
      normalization: see :func:`normalize`.
    """

    size: tuple[int, int] | None = None
    mode: str = "crop"
    scale_range: tuple[float, float] | None = (0.5, 2.0)
    flip: bool = True
    jitter: tuple[float, float, float] | None = (0.2, 0.2, 0.2)
    normalization: str | Preprocessing = "unit"

    def __post_init__(self):
        _check_mode(self.mode, ("crop", "resize", "none"), self.size)
        if self.size is not None:
            object.__setattr__(self, "size", as_int_tuple(self.size, "size"))
        if self.scale_range is not None:
            lo, hi = (float(v) for v in self.scale_range)
            if not 0 < lo <= hi:
                raise ValueError(f"`scale_range` must be 0 < low <= high; got {self.scale_range}.")
            object.__setattr__(self, "scale_range", (lo, hi))
        if self.jitter is not None and (len(self.jitter) != 3 or min(self.jitter) < 0):
            raise ValueError(f"`jitter` must be 3 non-negative numbers; got {self.jitter}.")
        normalize(np.zeros((1, 1, 3), np.uint8), self.normalization)  # validates the name

    def __call__(self, example: Example, rng: np.random.Generator) -> Example:
        image, mask = example["image"], example.get("mask")
        if self.mode == "crop":
            if self.scale_range is not None:
                image, mask = random_scale_crop(rng, image, mask, self.size, self.scale_range)
            else:
                image, mask = random_crop(rng, image, mask, self.size)
        elif self.mode == "resize":
            image, mask = resize(image, mask, self.size)
        if self.flip:
            image, mask = random_flip(rng, image, mask)
        image = np.asarray(image, np.float32)
        if self.jitter is not None:
            image = color_jitter(rng, image, *self.jitter)
        return _finish(example, image, mask, self.normalization)


@dataclasses.dataclass(frozen=True)
class EvalTransform:
    """The evaluation recipe: every pixel of every example kept, then normalisation.

    Attributes:
      size: ``(H, W)`` of every output.
      mode: ``"pad"``: pad bottom/right to ``size`` with ``IGNORE_LABEL`` (labels exactly as
        given; an example larger than ``size`` is an error naming it); ``"resize"``: resize
        image and mask to ``size`` (the mask by nearest neighbour); ``"none"``: unchanged.
      normalization: see :func:`normalize`.
    """

    size: tuple[int, int] | None = None
    mode: str = "pad"
    normalization: str | Preprocessing = "unit"

    def __post_init__(self):
        _check_mode(self.mode, ("pad", "resize", "none"), self.size)
        if self.size is not None:
            object.__setattr__(self, "size", as_int_tuple(self.size, "size"))
        normalize(np.zeros((1, 1, 3), np.uint8), self.normalization)

    def __call__(self, example: Example, where: str = "") -> Example:
        image, mask = example["image"], example.get("mask")
        if self.mode == "pad":
            h, w = image.shape[:2]
            if h > self.size[0] or w > self.size[1]:
                raise DataError(
                    f"{where or 'an example'}: {h}x{w} is larger than the evaluation size "
                    f"{self.size[0]}x{self.size[1]}; raise `size` or use mode='resize'."
                )
            image, mask = pad_to(image, mask, self.size)
        elif self.mode == "resize":
            image, mask = resize(image, mask, self.size)
        return _finish(example, image, mask, self.normalization)


def _check_mode(mode: str, modes: tuple[str, ...], size) -> None:
    if mode not in modes:
        raise ValueError(f"`mode` must be one of {modes}; got {mode!r}.")
    if mode != "none" and size is None:
        raise ValueError(f"mode={mode!r} needs `size` (H, W).")
