"""Benchmark fcnjax.ops.conv_transpose against flax.linen.ConvTranspose and PyTorch.

    python bench/conv_transpose.py            # full table (about 3 minutes on 2 CPU cores)
    python bench/conv_transpose.py --quick    # fewer repetitions
    python bench/conv_transpose.py --device gpu --dtype bfloat16 --json out.json

Every number is a median over repetitions, measured in this run, so the ratios compare
like with like on a noisy machine. Shapes are (N, H=W, C_in -> C_out, kernel, stride) from
FCN-8s, the POSTECH lab's FCN and its autoencoder. Padding is Keras "SAME" (output
H * stride); PyTorch gets the padding/output_padding with the same output size.

On the GPU (``--device gpu``, ``bench/gpu.sh``) a PyTorch call's time includes
``torch.cuda.synchronize()``, as a JAX call's includes ``block_until_ready``; float32 is
TF32 on both sides. ``--dtype bfloat16``: inputs and kernel in bfloat16.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import platform
import time
from pathlib import Path

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


def bench_shape(shape, reps, methods, device="cpu", dtype="float32"):
    import flax.linen as nn
    import torch

    from fcnjax import ops

    n, h, ci, co, k, s = shape
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, h, h, ci)).astype(np.float32)
    w = (rng.standard_normal((k, k, ci, co)) * 0.05).astype(np.float32)
    ct = rng.standard_normal((n, h * s, h * s, co)).astype(np.float32)
    xj, wj, ctj = (jnp.asarray(a, dtype) for a in (x, w, ct))
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
    dev = torch.device("cuda" if device == "gpu" else "cpu")
    sync = torch.cuda.synchronize if device == "gpu" else lambda: None
    like = dict(device=dev, dtype=getattr(torch, dtype))
    xt = torch.tensor(np.moveaxis(x, -1, 1)).to(**like)
    xt = xt.contiguous(memory_format=torch.channels_last).requires_grad_(True)
    wt = torch.tensor(np.asarray(ops.kernel_to_torch(w))).to(**like).requires_grad_(True)
    ctt = torch.tensor(np.moveaxis(ct, -1, 1)).to(**like)
    ctt = ctt.contiguous(memory_format=torch.channels_last)
    conv = torch.nn.functional.conv_transpose2d

    def t_fwd():
        with torch.no_grad():
            conv(xt, wt, stride=s, padding=p, output_padding=op)
        sync()

    def t_fwd_bwd():
        xt.grad = wt.grad = None
        conv(xt, wt, stride=s, padding=p, output_padding=op).backward(ctt)
        sync()

    out["torch"] = (median_ms(t_fwd, reps), median_ms(t_fwd_bwd, reps))
    return out


def auto_method(shape):
    """The method ``method="auto"`` picks for ``shape`` on this backend."""
    from fcnjax import ops

    n, h, ci, co, k, s = shape
    return ops.select_method(ops.conv_transpose_geometry((n, h, h, ci), (k, k, ci, co), s))


def compile_fcn32s_upsampler(dtype="float32"):
    """Compile time + first call of FCN-32s' upsampler: kernel 64, stride 32, 7x7 -> 224x224."""
    import flax.linen as nn

    from fcnjax import ops

    x = jnp.ones((1, 7, 7, 21), dtype)
    k = ops.bilinear_kernel(32, 21).astype(dtype)
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


def fmt_ms(ms):
    """Milliseconds with a tenth's resolution, finer below 1 ms (a GPU's calls)."""
    return f"{ms:.1f}" if ms >= 1 else f"{ms:.3f}"


def write_json(path, data):
    if path:
        Path(path).write_text(json.dumps(data, indent=1) + "\n")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 repetitions instead of 7")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="torch threads")
    parser.add_argument("--device", choices=("cpu", "gpu"), default="cpu")
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
    parser.add_argument("--smoke", action="store_true", help="a dry run: one shape, one repetition")
    parser.add_argument("--json", metavar="PATH", help="also write the table to this file")
    args = parser.parse_args()
    # JAX's GPU first, then PyTorch: the first to start loads the CUDA libraries both use.
    if jax.default_backend() != args.device:
        parser.error(f"--device {args.device}, but JAX runs on {jax.default_backend()}")
    import flax
    import torch

    if args.device == "gpu":
        if not torch.cuda.is_available():
            parser.error("--device gpu, but PyTorch sees no CUDA device")
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    precision = contextlib.nullcontext
    if args.device == "gpu" and args.dtype == "float32":  # TF32, as PyTorch's allow_tf32
        precision = functools.partial(jax.default_matmul_precision, "tensorfloat32")
    torch.set_num_threads(args.threads)
    reps = 1 if args.smoke else 3 if args.quick else 7
    shapes = SHAPES[:1] if args.smoke else SHAPES
    device = jax.devices()[0]
    where = (
        f"{device.device_kind} / {torch.cuda.get_device_name()}, " if args.device == "gpu" else ""
    )
    print(
        f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"{where}backend={jax.default_backend()}, jax {jax.__version__}, flax {flax.__version__}, "
        f"torch {torch.__version__} ({args.threads} threads)"
        + ("" if args.dtype == "float32" and args.device == "cpu" else f", {args.dtype}")
    )
    header = "| shape (N, H, Cin->Cout, k, s) | pass |" + "".join(
        f" {m} ms |" for m in (*METHODS, "flax", "torch")
    )
    print(header + " auto/torch | flax/auto |")
    print("|" + " --- |" * (header.count("|") + 1))
    ratios = {"fwd": [], "fwd+bwd": []}
    speedup_vs_flax = []
    data = dict(
        device=args.device,
        dtype=args.dtype,
        device_kind=device.device_kind,
        backend=jax.default_backend(),
        jax=jax.__version__,
        torch=torch.__version__,
        reps=reps,
        methods=[*METHODS, "flax", "torch"],
        rows=[],
    )
    for shape in shapes:
        with precision():
            res = bench_shape(shape, reps, METHODS, args.device, args.dtype)
        for i, kind in enumerate(("fwd", "fwd+bwd")):
            r = res["auto"][i] / res["torch"][i]
            ratios[kind].append(r)
            fl = res["flax"][i] / res["auto"][i]
            if kind == "fwd+bwd":
                speedup_vs_flax.append(fl)
            cells = "".join(f" {fmt_ms(res[m][i])} |" for m in (*METHODS, "flax", "torch"))
            print(f"| {shape} | {kind} |{cells} {r:.2f} | {fl:.1f} |", flush=True)
            ms = {m: res[m][i] for m in (*METHODS, "flax", "torch")}
            row = {"shape": list(shape), "pass": kind, "ms": ms, "auto": auto_method(shape)}
            data["rows"].append(row)
        write_json(args.json, data)
    print()
    gm_f, gm_fb = geomean(ratios["fwd"]), geomean(ratios["fwd+bwd"])
    worst = max(ratios["fwd"] + ratios["fwd+bwd"])
    gm_flax = geomean(speedup_vs_flax)
    print(
        f"auto / torch, geometric mean: forward {gm_f:.2f}x, forward+backward {gm_fb:.2f}x "
        f"(target <= 1.0x); worst shape {worst:.2f}x (target <= 2x)"
    )
    print(f"flax / auto, forward+backward, geometric mean: {gm_flax:.1f}x faster (target >= 5x)")
    data.update(auto_over_torch=dict(fwd=gm_f, fwd_bwd=gm_fb, worst=worst), flax_over_auto=gm_flax)
    write_json(args.json, data)
    if args.smoke:
        return
    print(
        "\nFCN-32s upsampler (64x64 kernel, stride 32, 21 channels, 7x7 -> 224x224): "
        "compile + first call"
    )
    with precision():
        upsampler = compile_fcn32s_upsampler(args.dtype)
    for name, (secs, shape) in upsampler.items():
        print(f"  {name:26s} {secs:6.2f} s  -> {shape}")
    data["fcn32s_upsampler_compile_s"] = {name: secs for name, (secs, _) in upsampler.items()}
    write_json(args.json, data)


if __name__ == "__main__":
    main()
