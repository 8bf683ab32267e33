"""Reconstruction of the input image (the convolutional autoencoder): mean squared error
per pixel and channel; reconstructions, the latent scatter and the decoded plane.

>>> import jax.numpy as jnp
>>> task = Autoencoder()
>>> batch = {"image": jnp.ones((2, 4, 4, 1))}
>>> sums = task.loss_sums(jnp.zeros((2, 4, 4, 1)), batch)
>>> float(task.loss(sums)), int(sums["norm"])
(1.0, 32)
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from fcnjax import losses, viz
from fcnjax.training.tasks._base import LOCAL, Across, Batch, Context, EvalAccumulator

__all__ = ["Autoencoder", "make"]

log = logging.getLogger("fcnjax.training.tasks.autoencoder")


@dataclasses.dataclass(frozen=True)
class Autoencoder:
    """Reconstruction of the input image: mean squared error per pixel and channel."""

    name: ClassVar[str] = "autoencoder"
    metric_names: ClassVar[tuple[str, ...]] = ("loss",)
    num_classes: ClassVar[None] = None

    def loss_sums(
        self, outputs: jax.Array, batch: Batch, across: Across = LOCAL
    ) -> dict[str, jax.Array]:
        """``f[N, H, W, C]`` reconstructions of ``batch['image']`` -> the global
        ``{"total": squared errors, "norm": their count}``."""
        target, where = batch["image"], batch.get("valid")
        total = losses.mean_squared_error(outputs, target, where=where, reduction="sum")
        n = target.shape[0] if where is None else jnp.sum(where, dtype=jnp.float32)
        return across.sum({"total": total, "norm": jnp.asarray(target[0].size * n, jnp.float32)})

    def loss(self, sums: Mapping[str, jax.Array]) -> jax.Array:
        """The mean squared error: ``total / norm``."""
        return sums["total"] / jnp.maximum(sums["norm"], 1e-12)

    def eval_sums(self, outputs: jax.Array, batch: Batch, across: Across = LOCAL) -> dict:
        return {"loss": self.loss_sums(outputs, batch, across)}

    def accumulator(self, class_names: Sequence[str] | None = None) -> EvalAccumulator:
        return EvalAccumulator(self.loss)

    def info(self) -> dict[str, Any]:
        return {"task": self.name, "num_classes": None, "class_weights": None}

    def write_pictures(
        self,
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


def make(loss: Mapping[str, Any], context: Context) -> Autoencoder:
    """The task; the ``loss`` section's classification settings do not apply."""
    return Autoencoder()


def _examples(source: Any, transform: Any, indices: range) -> list[dict[str, np.ndarray]]:
    return [transform(source[i], source.describe(i)) for i in indices]


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
