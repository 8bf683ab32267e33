"""Prediction and evaluation from a training workdir (keras-segmentation's names).

>>> # after `fcnjax train --config shapes_fcn8s --workdir runs/shapes`:
>>> # mask = predict_segmentation("runs/shapes", "photo.png", out_fname="out/photo.png")
>>> # predict_multiple("runs/shapes", "photos/", "out/")
>>> # evaluate_segmentation("runs/shapes")["mean_iou"]

A workdir holds ``config.json`` and orbax checkpoints (``checkpoints/``, ``best/``); the
model is rebuilt from the config and its parameters restored from the newest checkpoint
(``checkpoint="latest"``) or the best one (``"best"``).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import tqdm.auto

from fcnjax import config as config_lib
from fcnjax import data as data_lib
from fcnjax import inference as inference_lib
from fcnjax import models
from fcnjax.data.images import read_image
from fcnjax.ops import resize_logits
from fcnjax.prediction_files import (
    check_outputs,
    image_files,
    output_files,
    plan_outputs,
    save_prediction,
)
from fcnjax.training import checkpoints as ckpt
from fcnjax.training import evaluate, experiment
from fcnjax.training.settings import Loader

log = logging.getLogger("fcnjax.predict")

__all__ = [
    "Predictor",
    "evaluate_segmentation",
    "image_files",
    "load",
    "output_files",
    "plan_outputs",
    "predict_multiple",
    "predict_segmentation",
    "save_prediction",
]


@dataclass
class Predictor:
    """A trained model from a workdir: ``predictor(image) -> (H, W)`` class indices.

    ``inference`` says how an image is scored (:func:`fcnjax.inference.check_options`):
    sliding windows (``window``, ``stride``, ``blend``, ``batch``: cut and summed on the
    host, one compiled window batch for every image size), test-time augmentation
    (``flip``, ``scales``) and ``threshold``: a network with one output (binary,
    ``num_classes == 1``) labels a pixel 1 where its sigmoid exceeds it, else 0
    (:func:`fcnjax.inference.labels_from_scores`). ``progress``: a progress bar of an
    image's windows.
    """

    config: ml_collections.ConfigDict
    run: Any
    variables: Any
    step: int
    workdir: Path
    inference: dict[str, Any] = field(default_factory=lambda: dict(inference_lib.DEFAULTS))
    progress: bool = False

    @property
    def num_classes(self) -> int:
        return self.run.task.num_classes

    @property
    def channels(self) -> int:
        """The image channels the model was trained on (3: RGB, 1: greyscale)."""
        return int(self.run.example_shape[-1])

    def logits(self, image: np.ndarray) -> np.ndarray:
        """``uint8 (H, W, C)`` -> ``float32 (H, W, K)`` at the image's own size: the scores
        that :func:`fcnjax.inference.probabilities` and ``labels_from_scores`` read (after
        test-time augmentation, :func:`fcnjax.inference.scores_from_probabilities`).

        Raises ValueError unless ``C`` is :attr:`channels` (``(H, W)`` for greyscale too).
        """
        image = np.asarray(image)
        if image.ndim == 2 and self.channels == 1:
            image = image[..., None]
        if image.ndim != 3 or image.shape[-1] != self.channels:
            raise ValueError(
                f"the model of {self.workdir} takes images of {self.channels} channel(s), "
                f"(H, W, {self.channels}); got an array of shape {image.shape}."
            )
        h, w = image.shape[:2]
        transform = self.run.eval_transform
        if transform.mode == "resize" and self.inference["window"] is None:
            x, normalization = transform({"image": image})["image"], "none"
        else:  # fully convolutional (or windows): the image's own size, normalised on the
            x, normalization = image, transform.normalization  # device window by window
        return resize_logits(self._scores(x[None], normalization)[0], (h, w))

    def _scores(self, images: np.ndarray, normalization: Any) -> np.ndarray:
        """``(1, H, W, C)`` -> the scores :attr:`inference` asks for."""
        o, net = self.inference, _apply(self.run.model, normalization)

        def scores(x):
            if o["window"] is None:
                return net(self.variables, x)
            x = np.asarray(x)
            count = inference_lib.num_windows(x.shape, o["window"], o["stride"])
            bar = tqdm.auto.tqdm(
                total=count, desc="windows", leave=False, disable=not self.progress or count < 16
            )
            with bar:
                return inference_lib.slide_host(
                    functools.partial(net, self.variables),
                    x,
                    o["window"],
                    o["stride"],
                    blend=o["blend"],
                    batch=o["batch"],
                    progress=bar.update,
                )

        if not o["flip"] and o["scales"] == (1.0,):
            return np.asarray(scores(images))
        probs = inference_lib.augment(scores, images, flip=o["flip"], scales=o["scales"])
        return np.asarray(inference_lib.scores_from_probabilities(probs))

    def __call__(self, image: np.ndarray) -> np.ndarray:
        """``uint8 (H, W)`` labels: the argmax, or for one output 0/1 by the threshold."""
        labels = inference_lib.labels_from_scores(self.logits(image), self.inference["threshold"])
        return np.asarray(labels).astype(np.uint8)


@functools.lru_cache(maxsize=4)
def _apply(model, normalization):
    """The jitted network on ``[0, 255]`` images (uint8 or float), normalised inside."""

    def apply(variables, images):
        return model.apply(variables, data_lib.normalize(images, normalization), train=False)

    return jax.jit(apply)


def load(
    workdir: str | os.PathLike[str],
    checkpoint: str = "latest",
    *,
    inference: Mapping[str, Any] | None = None,
) -> Predictor:
    """The model of ``workdir`` with the parameters of its ``"latest"`` or ``"best"`` checkpoint.

    Reads only the workdir (``config.json``, ``run_info.json``, the checkpoint): the
    training data need not be there. ``inference`` overrides the config's ``inference``
    section (sliding windows, flips, scales, a binary network's threshold: :class:`Predictor`).

    Raises:
      FileNotFoundError: ``workdir`` or its ``config.json`` does not exist.
      CheckpointError: no complete checkpoint, or an unreadable one.
    """
    config, info, variables, step = _read(workdir, checkpoint)
    built = experiment.build(config, with_train=False, with_eval=False, info=info)
    variables = _checked(built.run, variables, Path(workdir), checkpoint, step, built.model_name)
    options = inference_lib.check_options({**built.inference, **(inference or {})})
    return Predictor(config, built.run, variables, step, Path(workdir), options)


def _read(workdir: str | os.PathLike[str], checkpoint: str) -> tuple[Any, Any, dict, int]:
    """``(config, run info, variables, step)`` of a workdir's checkpoint."""
    workdir = Path(workdir)
    if checkpoint not in ("latest", "best"):
        raise ValueError(f"`checkpoint` must be 'latest' or 'best'; got {checkpoint!r}.")
    if not (workdir / "config.json").is_file():
        raise FileNotFoundError(
            f"{workdir} is not a training workdir: it has no config.json "
            f"(train with `fcnjax train --config ... --workdir {workdir}`)."
        )
    config = config_lib.from_json((workdir / "config.json").read_text())
    state, step = ckpt.restore_state(_checkpoints(workdir, checkpoint), None)
    variables = {"params": state["params"]}
    if state.get("batch_stats"):
        variables["batch_stats"] = state["batch_stats"]
    return config, _run_info(workdir), variables, step


def _checked(
    run: Any, variables: dict, workdir: Path, checkpoint: str, step: int, model_name: str
) -> Any:
    """``variables`` on the device, refused (CheckpointError) unless they are the model's:
    Flax applies a model to parameters it does not use without a word, so another
    network's checkpoint must be refused here, not evaluated."""
    expected = jax.eval_shape(run.model.init, jax.random.key(0), jnp.zeros(run.example_shape))
    problems = ckpt.mismatches(expected, variables)
    if problems:
        saved = _checkpoints(workdir, checkpoint) / str(step)
        note = models.renamed(model_name)  # a name that changed meaning
        raise ckpt.CheckpointError(
            f"{saved} holds another network than {workdir / 'config.json'} "
            f"builds ({'; '.join(problems)}): the workdir's config and checkpoint disagree."
            + (f" {note}" if note else "")
        )
    return jax.tree.map(jnp.asarray, variables)


def _checkpoints(workdir: Path, checkpoint: str) -> Path:
    """The directory of a workdir's ``"latest"`` or ``"best"`` checkpoints."""
    return workdir / ("checkpoints" if checkpoint == "latest" else "best")


def _run_info(workdir: Path) -> dict[str, Any] | None:
    """``run_info.json``; None for workdirs older than it (the data then describes the run)."""
    path = workdir / "run_info.json"
    return json.loads(path.read_text()) if path.is_file() else None


def _predictor(workdir_or_predictor, checkpoint: str = "latest", inference=None) -> Predictor:
    if not isinstance(workdir_or_predictor, Predictor):
        return load(workdir_or_predictor, checkpoint, inference=inference)
    if not inference:
        return workdir_or_predictor
    options = inference_lib.check_options({**workdir_or_predictor.inference, **inference})
    return dataclasses.replace(workdir_or_predictor, inference=options)


def predict_segmentation(
    workdir: str | os.PathLike[str] | Predictor,
    inp: str | os.PathLike[str] | np.ndarray,
    out_fname: str | os.PathLike[str] | None = None,
    overlay: bool = True,
    *,
    checkpoint: str = "latest",
    overwrite: bool = False,
    inference: Mapping[str, Any] | None = None,
) -> np.ndarray:
    """The class of every pixel of one image: ``uint8 (H, W)`` at the image's size.

    Args:
      workdir: a training workdir (or a :class:`Predictor` from :func:`load`, to reuse).
      inp: an image file or a ``uint8 (H, W, C)`` array.
      out_fname: if given, writes there a palette PNG whose pixel values are the class
        indices (0 and 1 for a one-output network), ``<stem>_color.png`` (RGB), and with
        ``overlay`` ``<stem>_overlay.png`` (the prediction blended on the image).
      checkpoint: ``"latest"`` or ``"best"``.
      overwrite: replace existing output files (otherwise FileExistsError names them).
      inference: sliding windows, test-time augmentation and a binary network's
        ``threshold`` (:class:`Predictor`), over the config's ``inference`` section.
    """
    if out_fname is not None:
        inputs = [] if isinstance(inp, np.ndarray) else [Path(inp)]
        check_outputs(output_files(out_fname, overlay), inputs, overwrite)
    predictor = _predictor(workdir, checkpoint, inference)
    if isinstance(inp, np.ndarray):
        image = np.asarray(inp)
    else:  # converted as training converted it: RGB, or greyscale for a 1-channel model
        image = read_image(inp, channels=predictor.channels)
    mask = predictor(image)
    if out_fname is not None:
        save_prediction(mask, image, out_fname, overlay, overwrite=overwrite)
    return mask


def predict_multiple(
    workdir: str | os.PathLike[str] | Predictor,
    inp_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    overlay: bool = True,
    *,
    checkpoint: str = "latest",
    overwrite: bool = False,
    inference: Mapping[str, Any] | None = None,
) -> dict[str, np.ndarray]:
    """:func:`predict_segmentation` for every image in ``inp_dir`` -> ``{file name: mask}``.

    Writes ``out_dir/<stem>.png`` (class indices, palette), ``<stem>_color.png`` and
    ``<stem>_overlay.png`` for each image; checks first that no two images would write the
    same file and that nothing existing is replaced unless ``overwrite``
    (:func:`plan_outputs`).
    """
    inp_dir = Path(inp_dir)
    if not inp_dir.is_dir():
        raise FileNotFoundError(f"`inp_dir` {inp_dir} is not a directory.")
    plan = plan_outputs(image_files(inp_dir, "inp_dir"), out_dir, overlay, overwrite)
    predictor = _predictor(workdir, checkpoint, inference)
    return {
        p.name: predict_segmentation(predictor, p, out, overlay, overwrite=overwrite)
        for p, out in plan.items()
    }


def evaluate_segmentation(
    workdir: str | os.PathLike[str],
    *,
    split: str | None = None,
    data: dict[str, Any] | None = None,
    checkpoint: str = "latest",
    batch_size: int | None = None,
    inference: Mapping[str, Any] | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """FCN's four metrics (and per-class IoU, loss) of a trained model on a whole split.

    Reads the workdir (config, run info, checkpoint) and the evaluation split only: the
    class weights and the input normalisation come from ``run_info.json``.

    Args:
      workdir: a training workdir.
      split: the split to evaluate (default: the config's evaluation split).
      data: overrides of the evaluation source's config (e.g. another ``root``).
      checkpoint: ``"latest"`` or ``"best"``.
      batch_size: the evaluation batch (default: the config's), rounded up to a multiple
        of the devices.
      inference: overrides of the config's ``inference`` section: sliding windows
        (``window``, ``stride``, ``blend``, ``batch``) and test-time augmentation (``flip``,
        ``scales``), computed under ``jit`` with the batch sharded over the devices; a
        one-output network's ``threshold`` (given to the task's evaluation).
      progress: a progress bar of the evaluation's batches.
    """
    config, info, variables, step = _read(workdir, checkpoint)
    eval_data = experiment.eval_data_config(config) or config.data.to_dict()
    if split is not None:
        eval_data["split"] = split
    eval_data.update(data or {})
    options = inference_lib.check_options({**config.inference.to_dict(), **(inference or {})})
    with config.ignore_type():
        config.eval_data = ml_collections.ConfigDict(eval_data)
    config.inference.threshold = options["threshold"]  # the task's evaluation labels by it
    built = experiment.build(config, with_train=False, info=info)  # the split's source only
    run = built.run
    variables = _checked(run, variables, Path(workdir), checkpoint, step, built.model_name)
    size = batch_size or config.eval_batch_size or config.batch_size
    size = -(-size // jax.device_count()) * jax.device_count()
    results = evaluate.evaluate(
        run.model,
        variables,
        run.eval_source,
        run.eval_transform,
        run.task,
        size,
        loader=Loader.from_config(config.input).kwargs(),
        inference=options,
        progress=progress,
    )
    return {**results, "step": step, "split": eval_data.get("split")}
