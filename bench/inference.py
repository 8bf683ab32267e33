"""Sliding-window inference: memory and speed of a large image, and batched windows.

    python bench/inference.py                 # 6000x6000, full-width FCN-8s, 512 windows
    python bench/inference.py --quick         # 2000x2000, main job's width: seconds

1. One ``--size`` x ``--size`` RGB image through FCN-8s (4 classes, ``--width``) with
   ``--window`` windows (``fcnjax.inference.slide_host``: the predictor's path), each in a
   fresh process: its peak resident memory (``ru_maxrss``) and seconds per megapixel; then
   the same image whole (one forward pass), in a process limited to ``--whole-limit`` GiB of
   address space, or the error it ends with.
2. Windows batched: windows per second of ``slide_host`` with ``--batch`` windows per call
   against one call per window (batch 1), same network, same process.

Random weights: speed and memory do not depend on them. Prints one table; ratios, not
absolute times, are what to compare across machines.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

CHILD = r"""
import json, resource, sys, time
import numpy as np, jax, jax.numpy as jnp
from fcnjax import inference, models
args = json.loads(sys.argv[1])
if args["limit_gib"]:
    limit = int(args["limit_gib"] * 2**30)
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
model = models.get("fcn8s", num_classes=4, width=args["width"], dropout=0.0)
w = args["window"]
variables = jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, w, w, 3)))
# The predictor's path: uint8 windows, normalised ("unit") on the device.
net = jax.jit(lambda x: model.apply(variables, x.astype(jnp.float32) / 255, train=False))
x = np.random.default_rng(0).integers(0, 256, (1, args["size"], args["size"], 3), np.uint8)
start = time.perf_counter()
try:
    if args["whole"]:
        scores = np.asarray(net(x))
    else:
        scores = inference.slide_host(net, x, w, w, batch=args["batch"])
    labels = scores.argmax(-1)
    out = {"seconds": time.perf_counter() - start, "shape": list(labels.shape)}
except Exception as e:  # noqa: BLE001 (what the whole image ends with is the result)
    out = {"error": f"{type(e).__name__}: {str(e).splitlines()[0][:160]}"}
out["max_rss_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
out["windows"] = inference.num_windows(x.shape, w, w)
print("RESULT " + json.dumps(out))
"""


def child(**kwargs) -> dict:
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, json.dumps(kwargs)], capture_output=True, text=True
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if not lines:  # killed (the address-space limit can end XLA with an abort)
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1][:160]
        return {"error": f"exit {proc.returncode}: {tail}"}
    return json.loads(lines[0].removeprefix("RESULT "))


def batched(size: int, window: int, width: float, batch: int, repeats: int) -> dict:
    import jax
    import jax.numpy as jnp
    import numpy as np

    from fcnjax import inference, models

    model = models.get("fcn8s", num_classes=4, width=width, dropout=0.0)
    variables = jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, window, window, 3)))
    net = jax.jit(lambda x: model.apply(variables, x, train=False))
    x = np.random.default_rng(0).random((1, size, size, 3), np.float32)
    stride = window * 2 // 3
    count = inference.num_windows(x.shape, window, stride)
    rates = {}
    for b in (batch, 1):
        inference.slide_host(net, x, window, stride, batch=b)  # compile
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            inference.slide_host(net, x, window, stride, batch=b)
            best = min(best, time.perf_counter() - start)
        rates[b] = count / best
    return {"windows": count, "batched": rates[batch], "single": rates[1]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=6000)
    parser.add_argument("--window", type=int, default=512)
    parser.add_argument("--width", type=float, default=1.0)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--whole-limit", type=float, default=16.0)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.size, args.width = 2000, 0.125
    common = dict(size=args.size, width=args.width, window=args.window)
    slid = child(**common, batch=1, whole=False, limit_gib=0)
    whole = child(**common, batch=1, whole=True, limit_gib=args.whole_limit)
    mp = args.size**2 / 1e6
    print(f"FCN-8s width {args.width}, 4 classes, {args.size}x{args.size} ({mp:.1f} MP), CPU")
    for name, r in ((f"{args.window}-px windows", slid), ("whole image", whole)):
        what = f"{r['seconds'] / mp:.2f} s/MP" if "seconds" in r else r["error"]
        rss = f"{r['max_rss_gib']:.2f} GiB" if "max_rss_gib" in r else "-"
        print(f"  {name:<18} peak RSS {rss:>10}   {what}")
    b = batched(1024, 256, 0.125, 8, 3)
    print(
        f"batched windows (1024x1024, 256-px windows, stride 170, {b['windows']} windows, "
        f"width 0.125): batch 8 {b['batched']:.1f} windows/s, one per call "
        f"{b['single']:.1f} windows/s, ratio {b['batched'] / b['single']:.2f}x"
    )


if __name__ == "__main__":
    main()
