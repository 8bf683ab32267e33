"""The pictures a finished training run leaves in its workdir, one function per task.

Each takes the model, its (host) variables, a source with its evaluation transform, the
workdir and the config's ``outputs`` section, and returns the files it wrote.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import numpy as np

from fcnjax import ops, viz

__all__ = ["autoencoder", "segmentation"]

log = logging.getLogger("fcnjax.pictures")


def _examples(source: Any, transform: Any, indices: range) -> list[dict[str, np.ndarray]]:
    return [transform(source[i], source.describe(i)) for i in indices]


def segmentation(
    model: nn.Module,
    variables: Any,
    source: Any,
    transform: Any,
    workdir: Path,
    outputs: Mapping[str, Any],
) -> list[Path]:
    """``predictions.png``: the first ``outputs['num_examples']`` examples as image |
    ground truth | prediction, predictions at each image's own size.

    The examples may differ in size (``transform.mode="none"``): those of one size go
    through the model together."""
    n = min(outputs["num_examples"], len(source))
    raws = [source[i] for i in range(n)]
    images = [transform(raw, source.describe(i))["image"] for i, raw in enumerate(raws)]
    apply = jax.jit(functools.partial(model.apply, train=False))
    scores = [None] * n
    for shape in dict.fromkeys(image.shape for image in images):
        same = [i for i, image in enumerate(images) if image.shape == shape]
        batch = np.asarray(apply(variables, np.stack([images[i] for i in same])))
        for i, out in zip(same, batch):
            scores[i] = out
    predictions = []
    for raw, out in zip(raws, scores):
        h, w = raw["image"].shape[:2]
        if transform.mode == "resize":
            out = ops.resize_logits(out, (h, w))
        predictions.append(out.argmax(-1)[:h, :w])
    truths = [raw["mask"] for raw in raws] if all("mask" in r for r in raws) else None
    small = max(r["image"].shape[0] for r in raws) <= 128
    figure = viz.segmentation_figure(
        [raw["image"] for raw in raws],
        predictions,
        truths,
        class_names=source.class_names,
        scale=2 if small else 1,
    )
    return [viz.save_png(workdir / "predictions.png", figure)]


def autoencoder(
    model: nn.Module,
    variables: Any,
    source: Any,
    transform: Any,
    workdir: Path,
    outputs: Mapping[str, Any],
) -> list[Path]:
    """``reconstructions.png`` (input | output), ``latent.npz`` (the codes of the first
    ``outputs['latent_points']`` examples with their labels), and for a 2-D code
    ``latent.png`` (the scatter), ``latent_grid.png`` (the decoder over the plane the
    scatter shows) and ``decoded.png`` (``outputs['decode_point']`` decoded)."""
    n = min(outputs["num_examples"], len(source))
    examples = _examples(source, transform, range(n))
    apply = jax.jit(functools.partial(model.apply, train=False))
    recon = np.asarray(apply(variables, np.stack([e["image"] for e in examples])))
    rows = [[viz.to_uint8(e["image"]), viz.to_uint8(r)] for e, r in zip(examples, recon)]
    written = [viz.save_png(workdir / "reconstructions.png", viz.grid(rows))]
    latent, labels = _encode(model, variables, source, transform, outputs["latent_points"])
    point = tuple(outputs["decode_point"])
    np.savez(workdir / "latent.npz", latent=latent, label=labels, decode_point=point)
    written.append(workdir / "latent.npz")
    decode = jax.jit(functools.partial(model.apply, method="decode"))
    if len(point) == latent.shape[1]:
        decoded = np.asarray(decode(variables, np.asarray([point], np.float32)))[0]
        big = np.kron(viz.to_uint8(decoded), np.ones((8, 8, 1), np.uint8))
        written.append(viz.save_png(workdir / "decoded.png", big))
    if latent.shape[1] == 2:
        lo, hi = latent.min(0), latent.max(0)
        tiles = viz.latent_grid(lambda z: np.asarray(decode(variables, z)), lo, hi, n=12)
        written.append(viz.save_png(workdir / "latent_grid.png", tiles))
        try:
            plot = viz.scatter(latent, labels, highlight=point)
        except ImportError as e:  # matplotlib is the `viz` extra
            log.warning("latent.png not drawn: %s", e)
        else:
            written.append(viz.save_png(workdir / "latent.png", plot))
    return written


def _encode(model, variables, source, transform, count: int) -> tuple[np.ndarray, np.ndarray]:
    """The codes ``f32[m, D]`` and labels ``i64[m]`` of the first ``count`` examples."""
    m = min(count, len(source))
    encode = jax.jit(functools.partial(model.apply, method="encode"))
    codes, labels = [], []
    for start in range(0, m, 256):
        examples = _examples(source, transform, range(start, min(m, start + 256)))
        codes.append(np.asarray(encode(variables, np.stack([e["image"] for e in examples]))))
        labels += [int(e.get("label", 0)) for e in examples]
    return np.concatenate(codes).reshape(m, -1), np.asarray(labels)
