"""Benchmark fcnjax.ops.conv_transpose against flax.linen.ConvTranspose and PyTorch.

    python bench/conv_transpose.py            # full table (about 3 minutes on 2 CPU cores)
    python bench/conv_transpose.py --quick    # fewer repetitions

Every number is a median over repetitions, measured in this run, so the ratios compare
like with like on a noisy machine. Shapes are (N, H=W, C_in -> C_out, kernel, stride) from
FCN-8s, the POSTECH lab's FCN and its autoencoder. Padding is Keras "SAME" (output
H * stride); PyTorch gets the padding/output_padding with the same output size.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import jax
import jax.numpy as jnp
import numpy as np

SHAPES = [
    (4, 7, 21, 21, 4, 2),
    (4, 14, 21, 21, 4, 2),
    (4, 28, 21, 21, 16, 8),
    (4, 7, 2, 512, 4, 2),
    (4, 14, 512, 256, 4, 2),
    (64, 7, 64, 32, 3, 2),
]
METHODS = ("auto", "subpixel", "dilated", "zero_insert")


def median_ms(fn, reps, min_seconds=0.3):
    """Median of at least `reps` calls spanning `min_seconds` (one call if a call takes > 1 s)."""
    fn()  # warm-up (compilation)
    times = []
    while len(times) < reps or sum(times) < min_seconds:
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
        if times[-1] > 1.0 or len(times) >= 500:
            break
    return 1e3 * float(np.median(times))


def torch_padding(k, s):
    # Keras SAME crops k - s in total (the odd one at the end); PyTorch crops
    # symmetrically and gives back output_padding at the end: same output size.
    total = k - s
    p = (total + 1) // 2
    return p, 2 * p - total


def jax_timers(fn, x, w, ct):
    fwd = jax.jit(fn)
    fwd_bwd = jax.jit(lambda a, b, c: jax.vjp(fn, a, b)[1](c))
    return (
        lambda: jax.block_until_ready(fwd(x, w)),
        lambda: jax.block_until_ready(fwd_bwd(x, w, ct)),
    )


def bench_shape(shape, reps, methods):
    import flax.linen as nn
    import torch

    from fcnjax import ops

    n, h, ci, co, k, s = shape
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, h, h, ci)).astype(np.float32)
    w = (rng.standard_normal((k, k, ci, co)) * 0.05).astype(np.float32)
    ct = rng.standard_normal((n, h * s, h * s, co)).astype(np.float32)
    xj, wj, ctj = map(jnp.asarray, (x, w, ct))
    out = {}
    for m in methods:
        f = lambda a, b, m=m: ops.conv_transpose(a, b, s, "SAME", method=m)  # noqa: E731
        fw, fb = jax_timers(f, xj, wj, ctj)
        out[m] = (median_ms(fw, reps), median_ms(fb, reps))

    layer = nn.ConvTranspose(co, (k, k), (s, s), padding="SAME", use_bias=False)
    f = lambda a, b: layer.apply({"params": {"kernel": b}}, a)  # noqa: E731
    fw, fb = jax_timers(f, xj, wj, ctj)
    out["flax"] = (median_ms(fw, reps), median_ms(fb, reps))

    p, op = torch_padding(k, s)
    xt = torch.tensor(np.moveaxis(x, -1, 1)).contiguous(memory_format=torch.channels_last)
    xt.requires_grad_(True)
    wt = torch.tensor(np.asarray(ops.kernel_to_torch(w)), requires_grad=True)
    ctt = torch.tensor(np.moveaxis(ct, -1, 1)).contiguous(memory_format=torch.channels_last)
    conv = torch.nn.functional.conv_transpose2d

    def t_fwd():
        with torch.no_grad():
            conv(xt, wt, stride=s, padding=p, output_padding=op)

    def t_fwd_bwd():
        xt.grad = wt.grad = None
        conv(xt, wt, stride=s, padding=p, output_padding=op).backward(ctt)

    out["torch"] = (median_ms(t_fwd, reps), median_ms(t_fwd_bwd, reps))
    return out


def compile_fcn32s_upsampler():
    """Compile time + first call of FCN-32s' upsampler: kernel 64, stride 32, 7x7 -> 224x224."""
    import flax.linen as nn

    from fcnjax import ops

    x = jnp.ones((1, 7, 7, 21))
    k = ops.bilinear_kernel(32, 21)
    results = {}
    for name, fn in [
        ("fcnjax auto", lambda a: ops.conv_transpose(a, k, 32, "SAME")),
        ("fcnjax upsample_bilinear", lambda a: ops.upsample_bilinear(a, 32)),
        (
            "flax ConvTranspose",
            lambda a: nn.ConvTranspose(21, (64, 64), (32, 32), "SAME", use_bias=False).apply(
                {"params": {"kernel": k}}, a
            ),
        ),
    ]:
        start = time.perf_counter()
        y = jax.block_until_ready(jax.jit(fn)(x))
        results[name] = (time.perf_counter() - start, y.shape)
    return results


def geomean(values):
    return float(np.exp(np.mean(np.log(values))))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 repetitions instead of 7")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="torch threads")
    args = parser.parse_args()
    import flax
    import torch

    torch.set_num_threads(args.threads)
    reps = 3 if args.quick else 7
    print(
        f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"backend={jax.default_backend()}, jax {jax.__version__}, flax {flax.__version__}, "
        f"torch {torch.__version__} ({args.threads} threads)"
    )
    header = "| shape (N, H, Cin->Cout, k, s) | pass |" + "".join(
        f" {m} ms |" for m in (*METHODS, "flax", "torch")
    )
    print(header + " auto/torch | flax/auto |")
    print("|" + " --- |" * (header.count("|") + 1))
    ratios = {"fwd": [], "fwd+bwd": []}
    speedup_vs_flax = []
    for shape in SHAPES:
        res = bench_shape(shape, reps, METHODS)
        for i, kind in enumerate(("fwd", "fwd+bwd")):
            r = res["auto"][i] / res["torch"][i]
            ratios[kind].append(r)
            fl = res["flax"][i] / res["auto"][i]
            if kind == "fwd+bwd":
                speedup_vs_flax.append(fl)
            cells = "".join(f" {res[m][i]:.1f} |" for m in (*METHODS, "flax", "torch"))
            print(f"| {shape} | {kind} |{cells} {r:.2f} | {fl:.1f} |", flush=True)
    print()
    gm_f, gm_fb = geomean(ratios["fwd"]), geomean(ratios["fwd+bwd"])
    worst = max(ratios["fwd"] + ratios["fwd+bwd"])
    gm_flax = geomean(speedup_vs_flax)
    print(
        f"auto / torch, geometric mean: forward {gm_f:.2f}x, forward+backward {gm_fb:.2f}x "
        f"(target <= 1.0x); worst shape {worst:.2f}x (target <= 2x)"
    )
    print(f"flax / auto, forward+backward, geometric mean: {gm_flax:.1f}x faster (target >= 5x)")
    print(
        "\nFCN-32s upsampler (64x64 kernel, stride 32, 21 channels, 7x7 -> 224x224): "
        "compile + first call"
    )
    for name, (secs, shape) in compile_fcn32s_upsampler().items():
        print(f"  {name:26s} {secs:6.2f} s  -> {shape}")


if __name__ == "__main__":
    main()
