"""`python -m fcnjax`: the seed's 1-D transposed convolution three ways, and a timing table."""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np

from fcnjax import ops


def _median_ms(fn, *args, reps: int = 5) -> float:
    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - start)
    return 1e3 * float(np.median(times))


def main() -> None:
    x = np.array([1.0, 2.0, 3.0], np.float32)
    k = np.array([1.0, 10.0, 100.0, 1000.0], np.float32)
    print("The seed's 1-D example: kernel 4, stride 2 (VALID: full output, no crop)")
    print(f"  input x = {x.tolist()}, kernel k = {k.tolist()}")
    scatter = np.zeros(8, np.float32)
    for i in range(3):
        scatter[2 * i : 2 * i + 4] += x[i] * k
    print(f"  1. scatter x[i] * k onto output[2i : 2i+4]  -> {scatter.tolist()}")
    zeros = np.asarray(ops.zero_insert(x.reshape(1, 3, 1), 2))[0, :, 0]
    print(
        f"  2. insert zeros {zeros.tolist()}, convolve with k -> {np.convolve(zeros, k).tolist()}"
    )
    ours = ops.conv_transpose(x.reshape(1, 3, 1), k.reshape(4, 1, 1), 2, "VALID")[0, :, 0]
    print(f"  3. fcnjax.ops.conv_transpose                -> {np.asarray(ours).tolist()}")

    print(f"\nForward + backward, ms (median of 5), backend={jax.default_backend()}")
    shapes = [(4, 14, 512, 256, 4, 2), (4, 28, 21, 21, 16, 8), (64, 7, 64, 32, 3, 2)]
    methods = ("dilated", "zero_insert", "subpixel")
    print(f"  {'(N, H, Cin->Cout, k, s)':28}" + "".join(f"{m:>13}" for m in methods))
    rng = np.random.default_rng(0)
    for n, h, ci, co, ks, s in shapes:
        xs = jnp.asarray(rng.standard_normal((n, h, h, ci)), jnp.float32)
        ws = jnp.asarray(rng.standard_normal((ks, ks, ci, co)) * 0.05, jnp.float32)
        row = f"  {f'({n}, {h}, {ci}->{co}, {ks}, {s})':28}"
        for m in methods:
            loss = jax.jit(
                jax.grad(
                    lambda a, b, m=m, s=s: jnp.sum(ops.conv_transpose(a, b, s, method=m) ** 2),
                    argnums=(0, 1),
                )
            )
            row += f"{_median_ms(loss, xs, ws):13.1f}"
        print(row)
    print(f"  method='auto' uses {ops.select_method(2)!r} for stride 2 here.")
