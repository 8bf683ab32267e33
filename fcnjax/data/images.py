"""Decoding images and masks as viewers show them, with one-line errors for any bad file.

Every image a user hands fcnjax (a folder source's, ``predict``'s, the statistics
command's) enters through :func:`read_image`, :func:`read_mask` or :func:`image_size`: EXIF
orientation applied, Pillow's decompression-bomb limit kept, and any failure a
:class:`~fcnjax.data.core.DataError` naming the file.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from fcnjax.data.core import DataError, log

__all__ = ["image_size", "read_image", "read_mask"]


def read_image(path: str | os.PathLike, channels: int = 3) -> np.ndarray:
    """Decodes an image file to ``uint8[H, W, channels]`` (RGB, or greyscale for 1), turned
    as viewers show it.

    A photo whose EXIF orientation tag says how to display it (phones store the sensor's
    pixels and record the rotation only in the tag) is transposed accordingly, as
    ``PIL.ImageOps.exif_transpose`` does: ``H`` and ``W`` are the displayed height and width
    (swapped from the stored ones for orientations 5 to 8), the frame a mask is drawn in.

    Raises :class:`DataError`, in one line naming the file, for a file that is missing, not an
    image, truncated or corrupt, 16/32-bit or float (it would be clipped to 8 bits), or that
    declares more pixels than Pillow's decompression-bomb limit (``PIL.Image.MAX_IMAGE_PIXELS``;
    raise it for images you trust).
    """
    img = _decode(path, "image")
    if img.mode == "F" or img.mode.startswith("I"):
        raise DataError(
            f"{path}: a {img.mode!r} (16/32-bit or float) image would be clipped to "
            "8 bits; convert it to 8-bit RGB or greyscale, or load it with the numpy "
            "source."
        )
    array = np.asarray(img.convert("RGB" if channels == 3 else "L"))
    return array if channels == 3 else array[..., None]


def read_mask(path: str | os.PathLike) -> np.ndarray:
    """Decodes a class-index mask file to ``uint8[H, W]``, turned by its EXIF orientation
    tag if it has one, like :func:`read_image`.

    Palette (``P``) PNGs give their palette indices (VOC), greyscale gives its values, and
    3-channel masks give their **first channel as OpenCV stores it** (BGR order, so the
    blue channel), exactly as keras-segmentation reads them; its masks store the class in
    every channel. A mask whose channels differ (a colour-coded mask, not class indices) is
    read the same way but logged as a warning naming the file. 16/32-bit masks must hold
    values <= 255. Unreadable files raise :class:`DataError` as :func:`read_image` does.
    """
    img = _decode(path, "mask")
    mode = img.mode
    array = np.asarray(img)
    if mode in ("RGB", "RGBA"):
        rgb = array[..., :3]
        if not ((rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all()):
            log.warning(
                "%s: the mask's channels differ; taking OpenCV's first (blue) channel as "
                "keras-segmentation does. Colour-coded masks need converting to class indices.",
                path,
            )
        array = rgb[..., 2]
    elif mode == "LA":
        array = array[..., 0]
    elif mode not in ("P", "L", "1") and not mode.startswith("I"):
        raise DataError(
            f"{path}: a mask must be a palette, greyscale, integer or RGB image of class "
            f"indices; got PIL mode {mode!r}."
        )
    if array.ndim != 2:
        raise DataError(f"{path}: expected a 2-D mask; decoded shape {array.shape}.")
    if array.dtype != np.uint8:
        if array.size and (array.min() < 0 or array.max() > 255):
            raise DataError(
                f"{path}: mask values must be in [0, 255]; got [{array.min()}, {array.max()}]."
            )
        array = array.astype(np.uint8)
    return array


def image_size(path: str | os.PathLike, what: str = "image") -> tuple[int, int]:
    """``(H, W)`` of an image file as :func:`read_image` gives it (EXIF orientations 5 to 8
    swap the stored two), from its header: no pixels are decoded. Raises :class:`DataError`
    as :func:`read_image` does, except for a file cut off in its pixel data, which only
    decoding finds."""
    return _decode(path, what, pixels=False)


def _decode(path: str | os.PathLike, what: str, pixels: bool = True) -> Any:
    """The PIL image of ``path``, decoded and turned to its EXIF orientation, or without
    ``pixels`` its displayed ``(H, W)`` from the header; any failure is a :class:`DataError`
    naming the file."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            if not pixels:
                return _displayed_size(img)
            img.load()
            return ImageOps.exif_transpose(img)  # a new image: the file closes here
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        # The warning is an exception only where warnings are errors (python -W error).
        limit = Image.MAX_IMAGE_PIXELS * (2 if isinstance(e, Image.DecompressionBombError) else 1)
        size = _declared_size(path)
        declared = f"{size[0]}x{size[1]} pixels" if size else f"more than {limit} pixels"
        raise DataError(
            f"{path}: the {what} declares {declared}, over Pillow's decompression-bomb limit "
            f"of {limit} pixels; raise PIL.Image.MAX_IMAGE_PIXELS if you trust the file."
        ) from e
    except UnidentifiedImageError as e:
        raise DataError(f"{path}: not an image file Pillow can read (format unknown).") from e
    except Exception as e:  # noqa: BLE001
        # Pillow's decoders report a damaged file with OSError, SyntaxError, ValueError,
        # EOFError, struct.error, IndexError...: whatever the type, the file is at fault.
        raise DataError(f"{path}: cannot read the {what} ({type(e).__name__}: {e}).") from e


def _declared_size(path: str | os.PathLike) -> tuple[int, int] | None:
    """``(width, height)`` from the header of ``path`` without Pillow's pixel limit, which
    ``Image.open`` applies as soon as it has read them (so its error cannot say them);
    None if no Pillow plugin reads the header."""
    from PIL import Image

    # Only for a message: whatever fails here, the caller reports the pixel limit without it.
    try:
        Image.init()
        with open(path, "rb") as f:
            prefix = f.read(16)
            for name in Image.ID:  # Image.open's own order and tests, less the limit
                factory, accept = Image.OPEN[name]
                ok = accept(prefix) if accept else True
                if not ok or isinstance(ok, str):
                    continue
                f.seek(0)
                try:
                    return factory(f, os.fsdecode(path)).size
                except Exception:  # noqa: BLE001 (not this format: try the next, as open does)
                    continue
    except Exception:  # noqa: BLE001
        pass
    return None


def _displayed_size(img: Any) -> tuple[int, int]:
    """``(H, W)`` of an opened, undecoded PIL image once turned to its EXIF orientation."""
    from PIL import Image, ImageOps

    # Pillow's TIFF reader gives (and decodes to) the turned size itself. Image's own
    # getexif reads what the header holds; PNG's would decode the pixels to find an eXIf
    # chunk placed after them (which a PNG should not do).
    exif = {} if img.format == "TIFF" else Image.Image.getexif(img)
    orientation = exif.get(ImageOps.ExifTags.Base.Orientation)
    return (img.width, img.height) if orientation in (5, 6, 7, 8) else (img.height, img.width)
