"""Exported files of the main job's network: their sizes, and CPU latency against the Predictor.

    python bench/export.py                            # runs/shapes_fcn8s, 512x512, 5 repeats
    python bench/export.py --workdir W --size 256 --repeats 10

The workdir's network (default: the main job's FCN-8s, width 0.125, trained by
``python -m fcnjax``; any workdir does, weights do not change the speed) is exported for
``--size`` x ``--size`` images as StableHLO (``fcnjax.export``, CPU) and ONNX (jax2onnx,
opset 17; needs ``fcnjax[onnx]``). Then one random RGB image, in this one process, through

- the StableHLO file: ``jax.export.deserialize(...).call`` under ``jax.jit``;
- the ONNX file: an ``onnxruntime.InferenceSession`` (CPU, its default threads);
- the fcnjax :class:`~fcnjax.predict.Predictor` of the workdir (the network jitted,
  normalised on the device, argmax on the host),

each called once to compile, then ``--repeats`` times; the median is compared. Prints the
file sizes, the export times and one table of latency ratios against the Predictor (the
project's rule: ratios against peers measured in the same run), and whether the three give
the same labels.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import jax
import numpy as np

from fcnjax import export, predict


def timed(fn, repeats: int) -> tuple[float, object]:
    out = fn()  # compiles (or builds the session's plan)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workdir", default="runs/shapes_fcn8s")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    import onnxruntime as ort

    out = Path(tempfile.mkdtemp(prefix="fcnjax-bench-export-"))
    files, seconds = {}, {}
    for fmt, name in (("stablehlo", "model.stablehlo"), ("onnx", "model.onnx")):
        start = time.perf_counter()
        files[fmt] = export.export(
            args.workdir, out / name, format=fmt, size=(args.size, args.size)
        )
        seconds[fmt] = time.perf_counter() - start
    predictor = predict.load(args.workdir)
    image = np.random.default_rng(0).integers(0, 256, (args.size, args.size, 3), np.uint8)

    exported = jax.export.deserialize(files["stablehlo"].read_bytes())
    call = jax.jit(exported.call)
    session = ort.InferenceSession(str(files["onnx"]), providers=["CPUExecutionProvider"])
    runs = {
        "fcnjax Predictor (jit)": lambda: predictor(image),
        "StableHLO, jax.export.deserialize": lambda: np.asarray(call(image[None]))[0],
        "ONNX, onnxruntime": lambda: session.run(None, {"image": image[None]})[0][0],
    }
    results = {name: timed(fn, args.repeats) for name, fn in runs.items()}

    mib = {fmt: path.stat().st_size / 2**20 for fmt, path in files.items()}
    params = sum(x.size for x in jax.tree.leaves(predictor.variables))
    print(
        f"{predictor.config.model.name}, width {predictor.config.model.get('width')}, "
        f"{params:,} parameters ({params * 4 / 2**20:.2f} MiB float32), "
        f"{args.size}x{args.size} RGB, median of {args.repeats}, jax {jax.__version__}, "
        f"onnxruntime {ort.__version__}"
    )
    for fmt in files:
        print(f"  {fmt:9s} file {mib[fmt]:7.2f} MiB, exported in {seconds[fmt]:.1f} s")
    base_name = next(iter(results))
    base, labels = results[base_name]
    print(f"| {'path':36s} | ms / image | vs Predictor | same labels |")
    print(f"| {'-' * 36} | ---------- | ------------ | ----------- |")
    for name, (t, got) in results.items():
        same = float((np.asarray(got) == labels).mean())
        print(f"| {name:36s} | {t * 1e3:10.1f} | {t / base:11.2f}x | {same:10.4%} |")


if __name__ == "__main__":
    main()
