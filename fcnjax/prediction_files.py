"""The files of a prediction: the images it reads (:func:`image_files`, every header checked
before anything is written) and the PNGs it writes for each (:func:`output_files`,
:func:`plan_outputs`, :func:`save_prediction`: all of an image's files or none, nothing
replaced unless asked). Re-exported by :mod:`fcnjax.predict`.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from fcnjax import viz
from fcnjax.data.core import IMAGE_EXTENSIONS, some
from fcnjax.data.images import image_size
from fcnjax.training import workdir as workdir_lib

log = logging.getLogger("fcnjax.predict")

__all__ = ["check_outputs", "image_files", "output_files", "plan_outputs", "save_prediction"]


def output_files(out: str | os.PathLike[str], overlay: bool = True) -> list[Path]:
    """What a prediction written to ``out`` creates: ``out`` (class indices),
    ``<stem>_color.png`` and, with ``overlay``, ``<stem>_overlay.png``.

    >>> [p.name for p in output_files("masks/cat.png")]
    ['cat.png', 'cat_color.png', 'cat_overlay.png']
    """
    out = Path(out)
    names = [out, out.with_name(out.stem + "_color.png")]
    return names + [out.with_name(out.stem + "_overlay.png")] * overlay


def plan_outputs(
    inputs: list[Path],
    out_dir: str | os.PathLike[str],
    overlay: bool = True,
    overwrite: bool = False,
) -> dict[Path, Path]:
    """``{input: out_dir/<stem>.png}``, after checking that nothing is lost.

    Raises:
      NotADirectoryError: ``out_dir`` is a file.
      ValueError: two inputs would write the same file (``a.png`` and ``a.jpg``; or
        ``a_color.png`` and ``a.png``), or an output would replace an input; the message
        lists them.
      FileExistsError: outputs exist already and ``overwrite`` is False; it lists them.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise NotADirectoryError(f"--output {out_dir} is a file, not a directory.")
    plan = {p: out_dir / f"{p.stem}.png" for p in inputs}
    writers: dict[Path, list[Path]] = {}
    for p, out in plan.items():
        for f in output_files(out, overlay):
            writers.setdefault(f, []).append(p)
    clashes = [
        f"{' and '.join(str(p) for p in ps)} -> {f}" for f, ps in writers.items() if len(ps) > 1
    ]
    if clashes:
        raise ValueError(
            "these inputs would write the same output file: "
            + "; ".join(clashes)
            + ". Rename them, or predict them into separate output folders."
        )
    check_outputs(list(writers), inputs, overwrite)
    return plan


def check_outputs(outputs: list[Path], inputs: list[Path], overwrite: bool) -> None:
    """Raises unless writing ``outputs`` keeps every input and, without ``overwrite``,
    every existing file."""
    resolved = {p.resolve() for p in inputs}
    inputs_hit = [str(f) for f in outputs if f.resolve() in resolved]
    if inputs_hit:
        raise ValueError(f"the outputs would replace input images: {', '.join(inputs_hit)}.")
    existing = [str(f) for f in outputs if os.path.lexists(f)]  # a dangling link too
    if existing and not overwrite:
        shown = ", ".join(existing[:5]) + (f" and {len(existing) - 5} more" * (len(existing) > 5))
        raise FileExistsError(
            f"{len(existing)} output files exist already ({shown}); pass --overwrite "
            "(overwrite=True) to replace them, or choose another output folder."
        )


def save_prediction(
    mask: np.ndarray,
    image: np.ndarray,
    out_fname: str | os.PathLike[str],
    overlay: bool = True,
    *,
    colours: Any = None,
    overwrite: bool = False,
) -> list[Path]:
    """Writes one image's prediction, all files or none (also on Ctrl-C, which waits for
    the files: :func:`fcnjax.training.workdir.interrupts_deferred`) -> the paths written.

    Args:
      mask: ``uint8 (H, W)`` class indices.
      image: ``uint8 (H, W, C)``, the image predicted (for the overlay).
      out_fname: ``<stem>.png``: a palette PNG whose pixel values are the classes; beside it
        ``<stem>_color.png`` (RGB) and, with ``overlay``, ``<stem>_overlay.png``.
      colours: ``(num_classes, 3)`` uint8 colours (default :func:`fcnjax.viz.palette`).
      overwrite: replace existing files. Otherwise each is created exclusively
        (:func:`fcnjax.training.workdir.write_new`), so that another run writing the same names at
        the same time, or a link planted there, fails instead of being replaced or written
        through.
    """
    index, colour, *blend = output_files(out_fname, overlay)
    pictures = {index: viz.png_bytes(mask, colours)}  # palette PNG: pixel values are classes
    pictures[colour] = viz.png_bytes(viz.colorize(mask, colours))
    if blend:
        if image.shape[-1] == 1:
            image = np.repeat(image, 3, axis=-1)
        pictures[blend[0]] = viz.png_bytes(viz.overlay(image, mask, 0.5, colours))
    index.parent.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    with workdir_lib.interrupts_deferred():
        try:
            for path, data in pictures.items():
                written.append(workdir_lib.write_new(path, data, replace=overwrite))
        except FileExistsError:
            raise FileExistsError(
                f"{path} appeared while predicting (another run writing the same output "
                "folder?); it was not replaced. Pass --overwrite (overwrite=True) to replace it."
            ) from None
        except BaseException:  # a failed image (disk full, ...) leaves none of its files
            for done in written:
                done.unlink(missing_ok=True)
            raise
    return written


def image_files(path: str | os.PathLike[str], what: str = "--input") -> list[Path]:
    """``path`` itself if it is a file, else the files in the directory ``path`` whose names
    end with an image extension (hidden ones and names such as ``..png`` too), sorted.

    Entries named like images that are not files (a folder ``dir.png/``) are skipped with a
    warning naming them. Every file's header is checked here, so that a file that is not an
    image (or a decompression bomb) stops a prediction before it writes anything.

    Raises:
      FileNotFoundError: ``path`` does not exist or holds no image files (names ``what``).
      DataError: a file is not an image Pillow reads; names the file.
    """
    path = Path(path)
    if path.is_file():
        files = [path]
    elif not path.is_dir():
        raise FileNotFoundError(f"`{what}` {path} is neither an image file nor a directory.")
    else:
        # By name, not Path.suffix: pathlib gives ".png" no suffix, and it is a PNG file.
        named = sorted(p for p in path.iterdir() if p.name.lower().endswith(IMAGE_EXTENSIONS))
        files = [p for p in named if p.is_file()]
        others = [p.name for p in named if not p.is_file()]
        if others:
            log.warning("%s: skipping %s: named like images but not a file.", path, some(others))
    if not files:
        raise FileNotFoundError(
            f"`{what}` {path} holds no images ({', '.join(sorted(IMAGE_EXTENSIONS))})."
        )
    for f in files:
        image_size(f)  # the header: a file that is no image stops before any output
    return files
