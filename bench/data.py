"""Input pipeline throughput at 224x224, and whether it slows a training step down.

    python bench/data.py              # about 2 minutes on 2 CPU cores
    python bench/data.py --quick      # pipeline only, no training step

Data: 128 VOC-sized (500x375) JPEG images with palette-PNG masks written to a temporary
folder (from the shapes generator), read by the ``folder`` source and the full training
transform (random scale 0.5-2, 224x224 crop with ignore padding, flip, colour jitter,
ImageNet normalisation); and the ``shapes`` source generated on the fly at 224x224.

Reported, all in one process:
1. images/s decoded and augmented, for 0, 1 and 2 worker processes (2 threads each);
2. the FCN-8s (VGG16, 224x224, batch 4) SGD step alone, in images/s;
3. the same steps fed by the loader (1 worker): time per step against (2), the ratio that
   says whether the pipeline is the bottleneck (1.00x = it is free).
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import jax

jax.config.update("jax_threefry_partitionable", False)  # fast init compile (tests/conftest.py)


def write_folder(root: Path, n: int) -> None:
    from PIL import Image

    from fcnjax import data

    (root / "images").mkdir()
    (root / "masks").mkdir()
    src = data.Shapes(n, size=(375, 500), seed=1)
    for i in range(n):
        ex = src[i]
        Image.fromarray(ex["image"]).save(root / "images" / f"{i:05d}.jpg", quality=90)
        mask = Image.fromarray(ex["mask"]).convert("P")
        mask.save(root / "masks" / f"{i:05d}.png")


def images_per_s(loader, batches: int) -> float:
    it = iter(loader)
    next(it)  # start-up (worker processes, first decode) is not throughput
    start = time.perf_counter()
    n = 0
    for _ in range(batches):
        n += len(next(it)["image"])
    return n / (time.perf_counter() - start)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--batches", type=int, default=24)
    parser.add_argument("--quick", action="store_true", help="skip the training step part")
    args = parser.parse_args()

    from fcnjax import data

    print(f"# {platform.machine()}, {os.cpu_count()} cores, jax {jax.__version__}")
    transform = data.TrainTransform(size=(224, 224), normalization="imagenet")
    with tempfile.TemporaryDirectory() as tmp:
        write_folder(Path(tmp), 128)
        folder = data.verify(data.Folder(tmp, num_classes=4))
        shapes = data.Shapes(100_000, size=224)
        print(f"Pipeline throughput, 224x224 crops, batch {args.batch}, images/s:")
        print("| source | workers=0 | workers=1 | workers=2 |")
        print("| --- | --- | --- | --- |")
        rates = {}
        for name, src in (("folder (JPEG 500x375 + PNG)", folder), ("shapes (generated)", shapes)):
            row = []
            for workers in (0, 1, 2):
                loader = data.train_loader(src, args.batch, transform, workers=workers)
                rate = images_per_s(loader, args.batches)
                rates[name, workers] = rate
                row.append(f"{rate:.0f}")
            print(f"| {name} | " + " | ".join(row) + " |")
        if args.quick:
            return
        step_rate, fed_rate = train_step_rates(folder, transform)
        best = max(rates[k] for k in rates if k[0].startswith("folder"))
        print("\nFCN-8s SGD step (VGG16, 224x224, batch 4), images/s:")
        print(f"  step alone, same batch every time      {step_rate:8.2f}")
        print(f"  step fed by train_loader (1 worker)     {fed_rate:8.2f}")
        print(
            f"  fed / alone time ratio: {step_rate / fed_rate:.2f}x  (1.00x: the pipeline is free)"
        )
        print(f"  pipeline headroom: {best / step_rate:.0f}x the step's images/s")


def train_step_rates(source, transform, steps: int = 3) -> tuple[float, float]:
    import jax.numpy as jnp
    import optax

    from fcnjax import data, models

    batch = 4
    model = models.FCN8s(num_classes=4)
    params = jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, 224, 224, 3)))["params"]
    opt = optax.sgd(1e-4, momentum=0.9)
    state = opt.init(params)

    @jax.jit
    def step(params, state, images, masks):
        def loss_fn(p):
            logits = model.apply({"params": p}, images)
            valid = masks != data.IGNORE_LABEL
            losses = optax.softmax_cross_entropy_with_integer_labels(
                logits, jnp.where(valid, masks, 0)
            )
            return jnp.sum(losses * valid) / jnp.maximum(valid.sum(), 1)

        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, state = opt.update(grads, state, params)
        return optax.apply_updates(params, updates), state, loss

    loader = iter(data.train_loader(source, batch, transform, workers=1))
    first = next(loader)
    fixed = jnp.asarray(first["image"]), jnp.asarray(first["mask"])
    params, state, loss = step(params, state, *fixed)  # compile
    jax.block_until_ready(loss)

    start = time.perf_counter()
    for _ in range(steps):
        params, state, loss = step(params, state, *fixed)
        jax.block_until_ready(loss)
    alone = steps * batch / (time.perf_counter() - start)

    start = time.perf_counter()
    for _ in range(steps):
        b = next(loader)
        params, state, loss = step(params, state, jnp.asarray(b["image"]), jnp.asarray(b["mask"]))
        jax.block_until_ready(loss)
    fed = steps * batch / (time.perf_counter() - start)
    return alone, fed


if __name__ == "__main__":
    main()
