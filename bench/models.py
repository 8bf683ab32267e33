"""Forward+backward time of FCN-8s (VGG16, 224x224, batch 4): fcnjax against PyTorch.

    python bench/models.py            # about 1-2 minutes on 2 CPU cores
    python bench/models.py --reps 5

Both networks are the paper's FCN-8s (score skips, fixed bilinear x8 upsampler, fc6/fc7
as convolutions, dropout off) with the same shapes; PyTorch runs channels_last with
ceil-mode pooling. The step is the gradient of <logits, cotangent> with respect to every
parameter, in float32. Medians of --reps timed calls after one warm-up, same process.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import jax
import jax.numpy as jnp
import numpy as np

jax.config.update("jax_threefry_partitionable", False)  # fast init compile (tests/conftest.py)


def median_s(fn, reps):
    fn()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def torch_fcn8s(num_classes):
    import torch
    from torch import nn

    from fcnjax import ops
    from fcnjax.models.vgg import VGG16_BLOCKS

    class FCN8s(nn.Module):
        def __init__(self):
            super().__init__()
            layers, c = [], 3
            for widths in VGG16_BLOCKS:
                for w in widths:
                    layers += [nn.Conv2d(c, w, 3, padding=1), nn.ReLU(inplace=True)]
                    c = w
                layers.append(nn.MaxPool2d(2, 2, ceil_mode=True))
            self.features = nn.ModuleList(layers)
            self.fc6 = nn.Conv2d(512, 4096, 7, padding=3)
            self.fc7 = nn.Conv2d(4096, 4096, 1)
            self.score_fr = nn.Conv2d(4096, num_classes, 1)
            self.score_pool4 = nn.Conv2d(512, num_classes, 1)
            self.score_pool3 = nn.Conv2d(256, num_classes, 1)
            self.upscore2 = nn.ConvTranspose2d(num_classes, num_classes, 4, 2, 1, bias=False)
            self.upscore_pool4 = nn.ConvTranspose2d(num_classes, num_classes, 4, 2, 1, bias=False)
            k = np.asarray(ops.kernel_to_torch(ops.bilinear_kernel(8, 1)))
            self.register_buffer("up8", torch.tensor(k).repeat(num_classes, 1, 1, 1))

        def forward(self, x):
            h, w = x.shape[2:]
            pools = []
            for layer in self.features:
                x = layer(x)
                if isinstance(layer, nn.MaxPool2d):
                    pools.append(x)
            s = self.score_fr(torch.relu(self.fc7(torch.relu(self.fc6(x)))))
            p4 = self.score_pool4(pools[3])
            s = self.upscore2(s)[:, :, : p4.shape[2], : p4.shape[3]] + p4
            p3 = self.score_pool3(pools[2])
            s = self.upscore_pool4(s)[:, :, : p3.shape[2], : p3.shape[3]] + p3
            up = nn.functional.conv_transpose2d(s, self.up8, stride=8, padding=4, groups=s.shape[1])
            return up[:, :, :h, :w]

    return FCN8s()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    args = parser.parse_args()

    import torch

    from fcnjax import models

    torch.set_num_threads(args.threads)
    k, n, s = 21, args.batch, args.size
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, s, s, 3)).astype(np.float32)
    ct = rng.standard_normal((n, s, s, k)).astype(np.float32)

    model = models.FCN8s(num_classes=k)
    params = jax.jit(model.init)(jax.random.key(0), jnp.asarray(x[:1]))["params"]
    # Non-zero score layers, so every gradient is computed for real.
    params = jax.tree.map(lambda p: p + 1e-3, params)

    @jax.jit
    def grad_step(p, xb, cb):
        return jax.grad(lambda q: jnp.vdot(model.apply({"params": q}, xb), cb))(p)

    start = time.perf_counter()
    jax.block_until_ready(grad_step(params, x, ct))
    compile_s = time.perf_counter() - start
    t_jax = median_s(lambda: jax.block_until_ready(grad_step(params, x, ct)), args.reps)

    net = torch_fcn8s(k).to(memory_format=torch.channels_last)
    xt = torch.tensor(np.moveaxis(x, -1, 1)).contiguous(memory_format=torch.channels_last)
    ctt = torch.tensor(np.moveaxis(ct, -1, 1))

    def torch_step():
        net.zero_grad(set_to_none=True)
        (net(xt) * ctt).sum().backward()

    t_torch = median_s(torch_step, args.reps)
    print(
        f"# {platform.machine()}, {os.cpu_count()} cores, jax {jax.__version__}, "
        f"torch {torch.__version__} ({torch.get_num_threads()} threads)"
    )
    print(f"FCN-8s VGG16, {n} x {s}x{s}, forward+backward (gradients of all parameters):")
    print(f"  fcnjax (jit)   {t_jax:7.2f} s   (compile + first call {compile_s:.1f} s)")
    print(f"  PyTorch        {t_torch:7.2f} s")
    print(f"  fcnjax / PyTorch: {t_jax / t_torch:.2f}x")


if __name__ == "__main__":
    main()
