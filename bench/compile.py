"""Where the first training step's time goes: tracing and lowering, XLA's compile, the call.

    python bench/compile.py                      # every family of bench/train_step.py
    python bench/compile.py --only fcn8s segnet  # some

Each family runs in a fresh process (no in-memory or persistent compilation cache) and
times, for the trainer's step (``jax.jit(partial(train_step, task=...),
donate_argnums=0)`` on bench/train_step.py's network, batch and optimizer):

- ``lower``: tracing the step and lowering it to StableHLO (``jit(...).trace(...).lower()``,
  Python and JAX);
- ``compile``: XLA's optimisation and code generation (``lowered.compile()``);
- ``call``: the first call of the compiled step;
- ``total``: the three together, what bench/train_step.py prints as "compile + 1st call";
and counts, in XLA's optimised program, the convolutions, their distinct shapes, the
fusions and the bytes of constants (large folded constants slow the compile).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
FAMILIES = ("fcn8s", "segnet", "segnet_small", "unet_mini", "autoencoder", "fcn_resnet50", "shapes")


def _constant_bytes(hlo: str) -> int:
    """Bytes of the non-scalar constants in an HLO text."""
    sizes = {"f32": 4, "s32": 4, "u32": 4, "bf16": 2, "f16": 2, "s8": 1, "u8": 1, "pred": 1}
    total = 0
    for dtype, dims in re.findall(r"= (\w+)\[([\d,]+)\]\{?[\d,]*\}? constant\(", hlo):
        n = 1
        for d in dims.split(","):
            n *= int(d)
        total += n * sizes.get(dtype, 4)
    return total


def measure(name: str) -> dict:
    """The timings and counts of one family, in this process."""
    sys.path.insert(0, str(HERE))
    import jax
    import numpy as np
    import train_step as bench  # bench/train_step.py: the families

    from fcnjax.training.optim import make_optimizer
    from fcnjax.training.steps import create_train_state, train_step

    title, model, optimizer, batch, task, _ = bench.family(name, np.random.default_rng(0))
    example = jax.numpy.asarray(batch["image"][:1])
    shapes = jax.eval_shape(model.init, jax.random.key(0), example)["params"]
    state = create_train_state(
        model, make_optimizer(optimizer, shapes, 1000), example, jax.random.key(0)
    )
    batch = jax.device_put(batch)
    jax.block_until_ready(state)
    step = jax.jit(functools.partial(train_step, task=task), donate_argnums=0)
    t0 = time.perf_counter()
    lowered = step.trace(state, batch).lower()
    t1 = time.perf_counter()
    compiled = lowered.compile()
    t2 = time.perf_counter()
    jax.block_until_ready(compiled(state, batch))
    t3 = time.perf_counter()
    hlo = compiled.as_text()
    convs = re.findall(r"= (\S+) convolution\((.*?)\), window=\{([^}]*)\}", hlo)
    shapes = {(out, re.sub(r"%[\w.\-]+", "", operands), window) for out, operands, window in convs}
    return {
        "family": name,
        "title": title,
        "lower_s": t1 - t0,
        "compile_s": t2 - t1,
        "call_s": t3 - t2,
        "total_s": t3 - t0,
        "convolutions": len(convs),
        "distinct_convolutions": len(shapes),
        "fusions": len(re.findall(r" fusion\(", hlo)),
        "constant_kib": _constant_bytes(hlo) / 1024,
        "jax": jax.__version__,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", choices=FAMILIES, default=FAMILIES)
    parser.add_argument("--child", choices=FAMILIES, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.child)))
        return
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_")}  # no cache
    print(f"# load average {os.getloadavg()[0]:.1f} (other processes slow the compile)")
    print(
        "| family | lower s | XLA compile s | first call s | total s | convolutions "
        "(distinct) | fusions | constants KiB |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for name in args.only:
        out = subprocess.run(
            [sys.executable, __file__, "--child", name],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        if out.returncode:
            print(f"| {name} | failed: {out.stderr.strip().splitlines()[-1]} |")
            continue
        r = json.loads(out.stdout.strip().splitlines()[-1])
        print(
            f"| {name} | {r['lower_s']:.1f} | {r['compile_s']:.1f} | {r['call_s']:.1f} | "
            f"**{r['total_s']:.1f}** | {r['convolutions']} ({r['distinct_convolutions']}) | "
            f"{r['fusions']} | {r['constant_kib']:.0f} |",
            flush=True,
        )
    print(f"# load average at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
