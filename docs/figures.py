"""Writes the README's pictures into docs/images/ and prints the figures they come with.

    python -m fcnjax                 # the main job first: runs/shapes_fcn8s
    python docs/figures.py           # then this (about a minute more)

- ``zero_insertion.png``: :func:`fcnjax.viz.zero_insertion` (3x3 input, stride 2, kernel 4).
- ``shapes_predictions.png``, ``shapes_eval.png``, ``shapes_loss.png``: the main job's
  trained model on its first four validation images (:func:`fcnjax.viz.segmentation_figure`)
  and its curves (:func:`fcnjax.viz.plot_metrics`).
- ``shapes_slide.png``: the main job's model on one 384x576 image of many shapes, predicted by
  96-pixel windows every 64 pixels with Gaussian blending (:mod:`fcnjax.inference`); prints
  its pixel accuracy and that of one forward pass over the whole image.
- ``cae_latent.png``, ``cae_latent_grid.png``, ``cae_decoded.png``: the ``cae_mnist`` config
  (the full recipe: batch 32, 10 epochs) trained on fcnjax's look-alike digits
  (:func:`fcnjax.data.lookalike.mock_tfds`): MNIST itself cannot be downloaded here. Prints its
  validation MSE.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from fcnjax import config as config_lib
from fcnjax import data, predict, train, viz
from fcnjax.data.lookalike import mock_tfds

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "docs" / "images"


def main() -> int:
    OUT.mkdir(parents=True, exist_ok=True)
    viz.save_png(OUT / "zero_insertion.png", viz.zero_insertion(3, 2, 4, "SAME"))
    shapes = ROOT / "runs" / "shapes_fcn8s"
    if not (shapes / "final_metrics.json").is_file():
        print(f"{shapes}: run `python -m fcnjax` first", file=sys.stderr)
        return 1
    model = predict.load(shapes)
    val = data.get_source({**model.config.data.to_dict(), "split": "validation"})
    examples = [val[i] for i in range(4)]
    figure = viz.segmentation_figure(
        [e["image"] for e in examples],
        [model(e["image"]) for e in examples],
        [e["mask"] for e in examples],
        class_names=val.class_names,
        scale=2,
    )
    viz.save_png(OUT / "shapes_predictions.png", figure)
    print(f"main job: step {model.step}, predictions of its first 4 validation images")
    _slide_figure(shapes)
    for path in viz.plot_metrics(shapes, shapes / "plots"):
        if path.name in ("loss.png", "eval.png"):
            shutil.copy(path, OUT / f"shapes_{path.name}")
    workdir = ROOT / "runs" / "cae_lookalike"
    config = config_lib.load_config("cae_mnist")
    with mock_tfds(num_examples=6000):
        result = train.train_and_evaluate(config, workdir)
    for name in ("latent.png", "latent_grid.png", "decoded.png"):
        shutil.copy(workdir / name, OUT / f"cae_{name}")
    print(
        f"autoencoder (look-alike digits 1/5/6, {result['step']} steps): "
        f"validation MSE {result['eval']['loss']:.4f}"
    )
    return 0


def _slide_figure(workdir: Path) -> None:
    """A large image by windows: the main job's model saw whole 96x96 images."""
    import numpy as np

    options = {"window": (96, 96), "stride": (64, 64), "blend": "gaussian"}
    windows, whole = predict.load(workdir, inference=options), predict.load(workdir)
    big = data.Shapes(
        1, size=(384, 576), split="test", seed=7, max_objects=24, radius_range=(0.04, 0.075)
    )[0]
    masks = [windows(big["image"]), whole(big["image"])]
    figure = viz.segmentation_figure(
        [big["image"]], masks[:1], [big["mask"]], class_names=data.SHAPE_CLASSES
    )
    viz.save_png(OUT / "shapes_slide.png", figure)
    acc = [float(np.mean(m == big["mask"])) for m in masks]
    print(f"384x576 image: pixel accuracy {acc[0]:.4f} by 96-px windows, {acc[1]:.4f} whole")


if __name__ == "__main__":
    sys.exit(main())
