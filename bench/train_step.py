"""Training-step time of every model family of the mission: fcnjax against PyTorch.

    python bench/train_step.py                    # every family, about 15 minutes on 2 cores
    python bench/train_step.py --quick            # fewer rounds, no breakdown
    python bench/train_step.py --only segnet unet_mini # some families
    python bench/train_step.py --device gpu --dtype bfloat16 --quick --json out.json

What is timed is one whole optimizer step on a fixed batch, float32, after warm-up (JAX's
compile excluded, and printed apart with the first call): `jax.jit(partial(train_step,
task=...), donate_argnums=0)` on the state of `create_train_state` with `make_optimizer`,
against `zero_grad(); loss.backward(); opt.step()` on the same network in PyTorch, with
as many threads as XLA:CPU uses (every core). The machine may be shared, so the two run
interleaved: each round times a block of consecutive steps of one, then of the other; the
figures are medians over rounds, and the ratio is the median of the per-round ratios (both
see the same load). PyTorch runs in a worker process (``--same-process``: in this one,
where each framework slows the other's first step after a switch; see ``TorchWorker``).

The families, at their recipes' shapes (softmax cross-entropy with ~10% of the pixels at
the ignore label 255; the autoencoder: mean squared error):

- ``fcn8s``: FCN-8s (VGG16, 21 classes, dropout 0.5, fixed bilinear x8), batch 4 at
  224x224, SGD momentum 0.9 + L2 5e-4 (Long et al.). Without --quick, also a breakdown into
  forward, forward+backward and the whole step.
- ``segnet``: SegNet-Basic (four levels of 64, 7x7, BatchNorm, max-unpooling with the
  pooling switches, 11 classes), batch 4 at CamVid's 360x480, SGD momentum 0.9 (SegNet
  Tutorial); ``segnet_small``: the same at 180x240.
- ``unet_mini``: keras-segmentation's ``unet_mini`` (32/64/128, dropout 0.2, nearest upsampling +
  concatenation, 2 classes), batch 2 at 200x200, Adam 1e-3.
- ``autoencoder``: the POSTECH lab's autoencoder (28x28x1, batch 32, Adam 1e-3).
- ``fcn_resnet50``: torchvision's FCN-ResNet50 (ResNet-50 v1.5 dilated to output stride
  8, FCNHead on layer4 and the auxiliary FCNHead on layer3, dropout 0.1, bilinear resize
  to the input; 21 classes, 35,322,218 parameters), loss CE(out) + 0.5 CE(aux), SGD lr
  0.02 momentum 0.9 + L2 1e-4 (torchvision's segmentation reference, without its
  polynomial schedule), batch 2 at 320x320 (``FCN_RESNET_SHAPE``; torchvision trains
  4 x 480x480 crops per GPU, too slow for a 2-core CPU).
- ``deeplabv3_resnet50``: torchvision's DeepLabV3-ResNet50, the same with ``DeepLabHead``
  (ASPP: 1x1 and three dilated 3x3 branches at rates 12, 24, 36, image pooling,
  projection, dropout 0.5; 3x3 convolution, BatchNorm, ReLU, 1x1 to the classes) on
  layer4 in place of the FCNHead (42,004,074 parameters), the same loss, optimizer and
  batch.
- ``shapes`` (fcnjax alone, images/s): the ``shapes_fcn8s`` recipe's step.

``--device gpu`` (``bench/gpu.sh``): both on the GPU, FCN-ResNet50 at torchvision's 4 x
480x480 crops, one PyTorch worker for every family; the step's time includes waiting for
the device (``block_until_ready``, ``torch.cuda.synchronize``). float32 is TF32 on both
sides (``jax_default_matmul_precision``, ``allow_tf32``); ``--dtype bfloat16`` is mixed
precision on both: float32 parameters, bfloat16 compute (fcnjax's ``dtype``, PyTorch's
autocast). ``--tiny`` (checks that the script runs, measures nothing): batch 1 at 32x32,
short rounds.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import platform
import sys
import time
import traceback
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

_PARTITIONABLE = jax.config.jax_threefry_partitionable
sys.path.insert(0, str(Path(__file__).resolve().parent))
import models as bench_models  # noqa: E402  (bench/models.py: the PyTorch FCN-8s)

# bench/models.py switches to the classic threefry for a fast init compile; the step keeps
# JAX's default PRNG (the one the trainer's dropout uses).
jax.config.update("jax_threefry_partitionable", _PARTITIONABLE)

from fcnjax import config as config_lib  # noqa: E402
from fcnjax import models  # noqa: E402
from fcnjax.training.optim import make_optimizer  # noqa: E402
from fcnjax.training.steps import create_train_state, train_step  # noqa: E402
from fcnjax.training.tasks import Autoencoder, Segmentation  # noqa: E402

IGNORE = 255


def interleaved(fns, rounds, steps):
    """Seconds per call of each of ``fns`` (name -> callable): ``rounds`` rounds, each
    timing ``steps`` consecutive calls of every function in turn. Returns name -> list of
    per-round means. A :class:`Remote` function times its block in its own process."""
    times = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            if isinstance(fn, Remote):
                times[name].append(fn.block(steps) / steps)
                continue
            start = time.perf_counter()
            for _ in range(steps):
                fn()
            times[name].append((time.perf_counter() - start) / steps)
    return times


class Remote:
    """A PyTorch function living in a worker process (``TorchWorker``), called by name."""

    def __init__(self, worker, name):
        self.worker, self.name = worker, name

    def block(self, steps):
        """Seconds that ``steps`` consecutive calls took, timed in the worker."""
        return self.worker.ask(("run", self.name, steps))

    def __call__(self):
        self.block(1)


class TorchWorker:
    """The PyTorch side in its own process (``--same-process``: in this one).

    Alternating two frameworks in one process makes each pay for the other: the first
    step after a switch is slower (measured: fcnjax 5.8 -> 7.8 s, PyTorch 6.2 -> 7.2 s for
    FCN-8s), since both allocate gigabytes that the other then reuses or returns. Users
    run one framework per process; so does this benchmark, still interleaving the rounds
    so that both see the same machine load. ``load`` builds a family's step in it (on the
    GPU one worker serves every family: CUDA starts once)."""

    def __init__(self, threads, device="cpu", dtype="float32"):
        import multiprocessing as mp

        ctx = mp.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(target=_torch_worker, args=(child, threads, device, dtype))
        self.process.start()
        child.close()  # the worker's end: if the worker dies, recv() here raises EOFError
        self.info = {}

    def load(self, kind, batch):
        """Builds ``kind``'s step on ``batch`` in the worker, in place of the previous one."""
        self.info = self.ask(("load", kind, batch))  # facts (parameter count)

    def ask(self, request):
        self.conn.send(request)
        reply = self.conn.recv()
        if isinstance(reply, tuple) and reply[:1] == ("error",):
            raise RuntimeError(f"in the PyTorch worker:\n{reply[1]}")
        return reply

    def fn(self, name):
        return Remote(self, name)

    def close(self):
        with contextlib.suppress(OSError):
            self.conn.send(None)
        self.process.join(timeout=30)
        if self.process.is_alive():
            self.process.kill()


def torch_context(device, dtype):
    """PyTorch's side of ``--device`` and ``--dtype``: ``(device, autocast, sync)``, where
    ``autocast()`` is the forward pass's context and ``sync()`` waits for the device."""
    import torch

    if device == "gpu":
        torch.backends.cuda.matmul.allow_tf32 = True  # float32 as TF32, as JAX's precision
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True  # fixed shapes: tuned kernels, as XLA autotunes
        dev, sync = torch.device("cuda"), torch.cuda.synchronize
    else:
        dev, sync = torch.device("cpu"), lambda: None
    if dtype == "bfloat16":  # float32 parameters, bfloat16 compute: fcnjax's `dtype`
        return dev, functools.partial(torch.autocast, dev.type, dtype=torch.bfloat16), sync
    return dev, contextlib.nullcontext, sync


def _torch_fns(kind, batch, device="cpu", dtype="float32"):
    context = torch_context(device, dtype)
    if kind == "fcn8s":
        step, parts = torch_fcn8s_step(21, batch, context=context)
        return {"step": step, **parts}, {}
    builders = {
        "segnet": torch_segnet,
        "unet_mini": torch_unet_mini,
        "autoencoder": torch_autoencoder,
        "fcn_resnet50": torch_fcn_resnet50,
        "deeplabv3_resnet50": functools.partial(torch_fcn_resnet50, head="deeplabv3"),
    }
    step, n_params = torch_step(kind, builders[kind](), batch, context=context)
    return {"step": step}, {"params": n_params}


def _torch_worker(conn, threads, device, dtype):
    # bench/models.py computes FCN-8s' bilinear kernel with JAX: on the CPU, so that this
    # process does not take a share of the GPU's memory for JAX.
    jax.config.update("jax_platforms", "cpu")
    import torch

    torch.set_num_threads(threads)
    fns = {}
    while (request := conn.recv()) is not None:
        try:
            if request[0] == "load":
                fns = {}  # the previous family's network goes first
                fns, info = _torch_fns(*request[1:], device=device, dtype=dtype)
                conn.send(info)
                continue
            _, name, steps = request
            start = time.perf_counter()
            for _ in range(steps):
                fns[name]()
            conn.send(time.perf_counter() - start)
        except Exception:
            conn.send(("error", traceback.format_exc()))


def steps_for(fn, seconds):
    """Calls of ``fn`` (already warm) that take about ``seconds``."""
    start = time.perf_counter()
    fn()
    return max(1, round(seconds / max(time.perf_counter() - start, 1e-6)))


def ratio(times, a, b):
    """Median over rounds of time(a) / time(b)."""
    return float(np.median(np.asarray(times[a]) / np.asarray(times[b])))


def images_per_s(label, n, times, compile_s=None):
    s = float(np.median(times))
    extra = "" if compile_s is None else f"; compile + first call {compile_s:.1f} s"
    rate = f"{n / s:8.0f}" if n / s >= 10 else f"{n / s:8.2f}"  # FCN-ResNet50: 0.09
    return f"  {label:18} {rate} images/s   ({1e3 * s:.2f} ms/step{extra})"


def segmentation_batch(rng, n, size, num_classes, ignored=0.1):
    h, w = size
    image = rng.standard_normal((n, h, w, 3)).astype(np.float32)
    mask = rng.integers(0, num_classes, (n, h, w)).astype(np.int32)
    mask[rng.random((n, h, w)) < ignored] = IGNORE
    return {"image": image, "mask": mask}


class JaxStep:
    """The trainer's step as it runs in the loop: jitted once, state donated."""

    def __init__(self, model, optimizer, batch, task, total_steps=1000, seed=0):
        example = jnp.asarray(batch["image"][:1])
        shapes = jax.eval_shape(model.init, jax.random.key(seed), example)["params"]
        tx = make_optimizer(optimizer, shapes, total_steps)
        self.state = create_train_state(model, tx, example, jax.random.key(seed))
        self.batch = jax.device_put(batch)
        self.task = task
        self.step = jax.jit(functools.partial(train_step, task=task), donate_argnums=0)
        start = time.perf_counter()
        self()
        self.compile_s = time.perf_counter() - start
        self()

    def __call__(self):
        self.state, metrics = self.step(self.state, self.batch)
        jax.block_until_ready((self.state, metrics))


def fcn8s_breakdown(step: JaxStep):
    """Forward (loss) and forward+backward (loss and gradients) of ``step``'s objective,
    without the optimizer: the few lines of `train_step` before `tx.update`."""
    state, batch, task = step.state, step.batch, step.task

    def loss(params, rng):
        out = state.apply_fn({"params": params}, batch["image"], train=True, rngs={"dropout": rng})
        return task.loss(task.loss_sums(out, batch))

    rng = jax.random.key(1)
    fwd = jax.jit(loss)
    grad = jax.jit(jax.value_and_grad(loss))

    def run(fn):
        return lambda: jax.block_until_ready(fn(step.state.params, rng))

    for fn in (fwd, grad):
        run(fn)()
    return {"forward": run(fwd), "forward+backward": run(grad)}


def torch_fcn8s_step(num_classes, batch, dropout=0.5, context=None):
    import torch
    import torch.nn.functional as F
    from torch import nn

    dev, autocast, sync = context or torch_context("cpu", "float32")
    torch.manual_seed(0)
    net = bench_models.torch_fcn8s(num_classes)
    # fcnjax drops out after fc6's and fc7's ReLU; dropout before the ReLU that
    # bench/models.py applies is the same function (the mask and 1/(1-p) are >= 0).
    net.fc6 = nn.Sequential(net.fc6, nn.Dropout(dropout))
    net.fc7 = nn.Sequential(net.fc7, nn.Dropout(dropout))
    net = net.to(dev, memory_format=torch.channels_last).train()
    opt = torch.optim.SGD(net.parameters(), lr=1e-4, momentum=0.9, weight_decay=5e-4)
    x, y = torch_batch(batch, dev)

    def forward():
        with autocast():
            return F.cross_entropy(net(x), y, ignore_index=IGNORE)

    def step():
        opt.zero_grad(set_to_none=True)
        forward().backward()
        opt.step()
        sync()

    def forward_only():
        with torch.no_grad():  # as the jitted JAX forward: no graph kept
            forward()
        sync()

    def forward_backward():
        net.zero_grad(set_to_none=True)
        forward().backward()
        sync()

    for _ in range(2):
        step()
    return step, {"forward": forward_only, "forward+backward": forward_backward}


def torch_batch(batch, dev):
    """``batch`` as PyTorch tensors on ``dev``: the image channels_last, the mask (if any)."""
    import torch

    x = torch.tensor(np.moveaxis(batch["image"], -1, 1)).to(dev)
    x = x.contiguous(memory_format=torch.channels_last)
    y = torch.tensor(batch["mask"], dtype=torch.long).to(dev) if "mask" in batch else None
    return x, y


def torch_autoencoder():
    from torch import nn

    return nn.Sequential(
        nn.Conv2d(1, 32, 3, 2, 1),
        nn.ReLU(),
        nn.Conv2d(32, 64, 3, 2, 1),
        nn.ReLU(),
        nn.Conv2d(64, 2, 7),
        nn.ConvTranspose2d(2, 64, 7),
        nn.ReLU(),
        nn.ConvTranspose2d(64, 32, 3, 2, 1, output_padding=1),
        nn.ReLU(),
        nn.ConvTranspose2d(32, 1, 7, 2, 3, output_padding=1),
    )


def torch_segnet(num_classes=11, widths=(64, 64, 64, 64), k=7):
    """SegNet-Basic as `fcnjax.models.SegNet`: conv-BN-ReLU-pool (switches) down;
    unpool-conv-BN up (no ReLU); a 1x1 classifier."""
    import torch.nn.functional as F
    from torch import nn

    class SegNet(nn.Module):
        def __init__(self):
            super().__init__()
            c, self.enc, self.dec = 3, nn.ModuleList(), nn.ModuleList()
            for w in widths:
                self.enc.append(
                    nn.Sequential(nn.Conv2d(c, w, k, padding=k // 2), nn.BatchNorm2d(w))
                )
                c = w
            for i in reversed(range(len(widths))):
                w = widths[max(i - 1, 0)]
                self.dec.append(
                    nn.Sequential(nn.Conv2d(c, w, k, padding=k // 2), nn.BatchNorm2d(w))
                )
                c = w
            self.classifier = nn.Conv2d(c, num_classes, 1)

        def forward(self, x):
            switches = []
            for layer in self.enc:
                x = F.relu(layer(x))
                size = x.shape[-2:]
                x, idx = F.max_pool2d(x, 2, 2, return_indices=True)
                switches.append((idx, size))
            for layer, (idx, size) in zip(self.dec, reversed(switches)):
                x = layer(F.max_unpool2d(x, idx, 2, 2, output_size=size))
            return self.classifier(x)

    return SegNet()


def torch_unet_mini(num_classes=2, widths=(32, 64, 128), dropout=0.2):
    """keras-segmentation's ``unet_mini`` as `fcnjax.models.UNetMini`."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    def block(c, w):
        return nn.Sequential(
            nn.Conv2d(c, w, 3, padding=1),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Conv2d(w, w, 3, padding=1),
            nn.ReLU(),
        )

    class UNetMini(nn.Module):
        def __init__(self):
            super().__init__()
            c, self.down = 3, nn.ModuleList()
            for w in widths[:-1]:
                self.down.append(block(c, w))
                c = w
            self.bottom = block(c, widths[-1])
            c, self.up = widths[-1], nn.ModuleList()
            for w in reversed(widths[:-1]):
                self.up.append(block(c + w, w))
                c = w
            self.head = nn.Conv2d(c, num_classes, 1)

        def forward(self, x):
            skips = []
            for layer in self.down:
                x = layer(x)
                skips.append(x)
                x = F.max_pool2d(x, 2)
            x = self.bottom(x)
            for layer, skip in zip(self.up, reversed(skips)):
                x = F.interpolate(x, scale_factor=2, mode="nearest")
                x = layer(torch.cat([x, skip], 1))
            return self.head(x)

    return UNetMini()


def torch_fcn_resnet50(num_classes=21, aux_loss=True, head="fcn"):
    """torchvision's ``fcn_resnet50`` (torchvision does not install here), as
    `fcnjax.models.FCNResNet`: ResNet-50 v1.5 (stride on the bottleneck's 3x3, BatchNorm,
    Kaiming fan-out) with ``replace_stride_with_dilation=[False, True, True]``, an
    ``FCNHead`` on layer4 and (``aux_loss``) on layer3, bilinear resize
    (``align_corners=False``) to the input. In training it returns ``{"out", "aux"}``.
    ``head="deeplabv3"``: torchvision's ``deeplabv3_resnet50``, ``DeepLabHead`` on layer4
    (`fcnjax.models.DeepLabV3`)."""
    import torch.nn.functional as F
    from torch import nn

    class Bottleneck(nn.Module):
        def __init__(self, inplanes, planes, stride, dilation, downsample):
            super().__init__()
            self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(planes)
            self.conv2 = nn.Conv2d(
                planes, planes, 3, stride, padding=dilation, dilation=dilation, bias=False
            )
            self.bn2 = nn.BatchNorm2d(planes)
            self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
            self.bn3 = nn.BatchNorm2d(planes * 4)
            self.relu = nn.ReLU(inplace=True)
            self.downsample = downsample

        def forward(self, x):
            out = self.relu(self.bn1(self.conv1(x)))
            out = self.relu(self.bn2(self.conv2(out)))
            out = self.bn3(self.conv3(out))
            identity = x if self.downsample is None else self.downsample(x)
            return self.relu(out + identity)

    def fcn_head(channels):
        inter = channels // 4
        return nn.Sequential(
            nn.Conv2d(channels, inter, 3, padding=1, bias=False),
            nn.BatchNorm2d(inter),
            nn.ReLU(),
            nn.Dropout(0.1),
            nn.Conv2d(inter, num_classes, 1),
        )

    def deeplab_head(channels, rates=(12, 24, 36), f=256):
        return nn.Sequential(
            torch_aspp(channels, rates, f),
            nn.Conv2d(f, f, 3, padding=1, bias=False),
            nn.BatchNorm2d(f),
            nn.ReLU(),
            nn.Conv2d(f, num_classes, 1),
        )

    class FCNResNet50(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
            self.bn1 = nn.BatchNorm2d(64)
            self.relu = nn.ReLU(inplace=True)
            self.maxpool = nn.MaxPool2d(3, 2, 1)
            self.inplanes, self.dilation = 64, 1
            self.layer1 = self._make_layer(64, 3)
            self.layer2 = self._make_layer(128, 4, stride=2)
            self.layer3 = self._make_layer(256, 6, stride=2, dilate=True)
            self.layer4 = self._make_layer(512, 3, stride=2, dilate=True)
            for m in self.modules():
                if isinstance(m, nn.Conv2d):
                    nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            # torchvision's heads keep PyTorch's default initialisation.
            self.classifier = deeplab_head(2048) if head == "deeplabv3" else fcn_head(2048)
            self.aux_classifier = fcn_head(1024) if aux_loss else None

        def _make_layer(self, planes, blocks, stride=1, dilate=False):
            previous = self.dilation
            if dilate:
                self.dilation, stride = self.dilation * stride, 1
            downsample = None
            if stride != 1 or self.inplanes != planes * 4:
                downsample = nn.Sequential(
                    nn.Conv2d(self.inplanes, planes * 4, 1, stride, bias=False),
                    nn.BatchNorm2d(planes * 4),
                )
            layers = [Bottleneck(self.inplanes, planes, stride, previous, downsample)]
            self.inplanes = planes * 4
            layers += [
                Bottleneck(self.inplanes, planes, 1, self.dilation, None) for _ in range(1, blocks)
            ]
            return nn.Sequential(*layers)

        def forward(self, x):
            size = x.shape[-2:]
            x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
            c3 = self.layer3(self.layer2(self.layer1(x)))
            out = F.interpolate(
                self.classifier(self.layer4(c3)), size, mode="bilinear", align_corners=False
            )
            if self.aux_classifier is None:
                return {"out": out}
            aux = F.interpolate(self.aux_classifier(c3), size, mode="bilinear", align_corners=False)
            return {"out": out, "aux": aux}

    return FCNResNet50()


def torch_aspp(c_in, rates, f):
    """torchvision's ``ASPP`` (``models/segmentation/deeplabv3.py``), as
    `fcnjax.models.ASPP`: 1x1, three dilated 3x3 and an image pooling branch (each with
    BatchNorm and ReLU), concatenated, projected (1x1, BatchNorm, ReLU), dropout 0.5."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    def conv_bn_relu(k, dilation=1):
        conv = nn.Conv2d(c_in, f, k, padding=dilation * (k // 2), dilation=dilation, bias=False)
        return nn.Sequential(conv, nn.BatchNorm2d(f), nn.ReLU())

    class ASPPPooling(nn.Sequential):
        def forward(self, x):
            size = x.shape[-2:]
            for mod in self:
                x = mod(x)
            return F.interpolate(x, size=size, mode="bilinear", align_corners=False)

    class ASPP(nn.Module):
        def __init__(self):
            super().__init__()
            pool = ASPPPooling(nn.AdaptiveAvgPool2d(1), *conv_bn_relu(1))
            branches = [conv_bn_relu(1), *(conv_bn_relu(3, r) for r in rates), pool]
            self.convs = nn.ModuleList(branches)
            self.project = nn.Sequential(
                nn.Conv2d(len(branches) * f, f, 1, bias=False),
                nn.BatchNorm2d(f),
                nn.ReLU(),
                nn.Dropout(0.5),
            )

        def forward(self, x):
            return self.project(torch.cat([conv(x) for conv in self.convs], dim=1))

    return ASPP()


TORCH_OPTIMIZERS = {
    "segnet": lambda params: __import__("torch").optim.SGD(params, lr=0.01, momentum=0.9),
    "fcn_resnet50": lambda params: __import__("torch").optim.SGD(
        params, lr=0.02, momentum=0.9, weight_decay=1e-4
    ),
    "deeplabv3_resnet50": lambda params: __import__("torch").optim.SGD(
        params, lr=0.02, momentum=0.9, weight_decay=1e-4
    ),
    "unet_mini": lambda params: __import__("torch").optim.Adam(params, lr=1e-3),
    "autoencoder": lambda params: __import__("torch").optim.Adam(params, lr=1e-3),
}


def torch_step(kind, net, batch, context=None):
    """A training step of ``net`` (channels_last) on ``batch``: cross-entropy with the
    ignore label on masks (FCN-ResNet: ``out`` + 0.5 ``aux``), else mean squared error
    against the input. ``context``: :func:`torch_context`'s (default: CPU, float32)."""
    import torch
    import torch.nn.functional as F

    dev, autocast, sync = context or torch_context("cpu", "float32")
    torch.manual_seed(0)
    net = net.to(dev, memory_format=torch.channels_last).train()
    n_params = sum(p.numel() for p in net.parameters())
    opt = TORCH_OPTIMIZERS[kind](net.parameters())
    x, y = torch_batch(batch, dev)
    if kind in ("fcn_resnet50", "deeplabv3_resnet50"):  # torchvision's: out + 0.5 * aux

        def objective():
            out = net(x)
            ce = {k: F.cross_entropy(v, y, ignore_index=IGNORE) for k, v in out.items()}
            return ce["out"] + 0.5 * ce["aux"] if "aux" in ce else ce["out"]

    elif y is not None:
        objective = lambda: F.cross_entropy(net(x), y, ignore_index=IGNORE)  # noqa: E731
    else:
        out_shape = tuple(net(x).shape)
        if out_shape != tuple(x.shape):
            raise AssertionError(f"PyTorch {kind} output {out_shape} != input {tuple(x.shape)}")
        objective = lambda: F.mse_loss(net(x), x)  # noqa: E731

    def loss():
        with autocast():
            return objective()

    def step():
        opt.zero_grad(set_to_none=True)
        loss().backward()
        opt.step()
        sync()

    for _ in range(2):
        step()
    return step, n_params


def shapes_setup():
    """Model, input size, batch size and optimizer of the shapes recipe, and where from."""
    if "shapes_fcn8s" not in config_lib.config_names():
        model = dict(
            name="fcn8s",
            num_classes=4,
            width=0.25,
            backbone="vgg16_bn",
            dropout=0.0,
            final_upsample="bilinear",
        )
        return model, (64, 64), 16, dict(name="adamw", learning_rate=2e-3), 1000, "built-in"
    config = config_lib.load_config("shapes_fcn8s")
    model = dict(config.model)
    model.setdefault("num_classes", config.data.get("num_classes", 4))
    size = config.input.size or config.data.get("size", 64)
    size = (size, size) if isinstance(size, int) else tuple(size)
    steps = config.num_steps or 1000
    where = f"the shapes_fcn8s config (dtype {config.dtype})"
    return model, size, config.batch_size, config.optimizer.to_dict(), steps, where


FAMILIES = ("fcn8s", "segnet", "segnet_small", "unet_mini", "autoencoder", "fcn_resnet50")
FAMILIES += ("deeplabv3_resnet50", "shapes")
# FCN-ResNet50's batch: torchvision trains 4 x 480x480 crops per GPU, too slow here.
FCN_RESNET_SHAPE = (2, (320, 320))
FCN_RESNET_SHAPE_GPU = (4, (480, 480))
TINY_SHAPE = (1, (32, 32))  # --tiny: every segmentation family


def family(name, rng, dtype="float32", device="cpu", tiny=False):
    """``(title, fcnjax model, optimizer, batch, task, torch kind or None)`` of a family, the
    model computing in ``dtype`` (parameters float32) at ``device``'s shapes."""
    kw = {} if dtype == "float32" else {"dtype": jnp.dtype(dtype)}

    def seg_batch(n, size, num_classes, min_n=1):
        n, size = (max(TINY_SHAPE[0], min_n), TINY_SHAPE[1]) if tiny else (n, size)
        batch = segmentation_batch(rng, n, size, num_classes)
        return batch, f"{n} x {size[0]}x{size[1]}"

    sgd = dict(name="sgd", learning_rate=1e-4, momentum=0.9, weight_decay=5e-4)
    adam = dict(name="adam", learning_rate=1e-3)
    if name == "fcn8s":
        model = models.get("fcn8s", num_classes=21, **kw)
        batch, shape = seg_batch(4, (224, 224), 21)
        title = f"FCN-8s VGG16, 21 classes, dropout 0.5, batch {shape}, SGD momentum + L2"
        return title, model, sgd, batch, Segmentation(21), "fcn8s"
    if name in ("segnet", "segnet_small"):
        size = (360, 480) if name == "segnet" else (180, 240)
        model = models.get("segnet_basic", num_classes=11, **kw)
        batch, shape = seg_batch(4, size, 11)
        momentum = dict(name="sgd", learning_rate=0.01, momentum=0.9)
        title = f"SegNet-Basic, 11 classes, batch {shape}, SGD momentum"
        return title, model, momentum, batch, Segmentation(11), "segnet"
    if name == "unet_mini":
        model = models.get("unet_mini", num_classes=2, **kw)
        batch, shape = seg_batch(2, (200, 200), 2)
        title = f"unet_mini (U-Net 32/64/128), dropout 0.2, 2 classes, batch {shape}, Adam"
        return title, model, adam, batch, Segmentation(2), "unet_mini"
    if name == "autoencoder":
        n = 2 if tiny else 32
        batch = {"image": rng.random((n, 28, 28, 1), dtype=np.float32)}
        title = f"autoencoder (51,459 parameters), batch {n} x 28x28x1, Adam, MSE"
        return title, models.get("autoencoder", **kw), adam, batch, Autoencoder(), "autoencoder"
    if name == "fcn_resnet50":
        n, size = FCN_RESNET_SHAPE_GPU if device == "gpu" else FCN_RESNET_SHAPE
        model = models.get("fcn_resnet50", num_classes=21, aux_loss=True, **kw)
        batch, shape = seg_batch(n, size, 21)
        sgd = dict(name="sgd", learning_rate=0.02, momentum=0.9, weight_decay=1e-4)
        title = (
            f"FCN-ResNet50 (output stride 8, aux head), 21 classes, batch {shape}, "
            "SGD momentum + L2, CE + 0.5 aux"
        )
        return title, model, sgd, batch, Segmentation(21), "fcn_resnet50"
    if name == "deeplabv3_resnet50":  # as fcn_resnet50, DeepLabHead on layer4
        n, size = FCN_RESNET_SHAPE_GPU if device == "gpu" else FCN_RESNET_SHAPE
        model = models.get("deeplabv3_resnet50", num_classes=21, aux_loss=True, **kw)
        # Training BatchNorm after the image pooling needs 2 samples (PyTorch refuses 1).
        batch, shape = seg_batch(n, size, 21, min_n=2)
        sgd = dict(name="sgd", learning_rate=0.02, momentum=0.9, weight_decay=1e-4)
        title = (
            f"DeepLabV3-ResNet50 (output stride 8, ASPP, aux head), 21 classes, batch {shape}, "
            "SGD momentum + L2, CE + 0.5 aux"
        )
        return title, model, sgd, batch, Segmentation(21), "deeplabv3_resnet50"
    spec, size, n, optimizer, total, where = shapes_setup()
    spec = dict(spec, **kw)
    model = models.get(spec.pop("name"), **spec)
    batch, shape = seg_batch(n, size, spec["num_classes"])
    title = f"shapes recipe ({where}{'' if not kw else ', run in ' + dtype}), batch {shape}"
    return title, model, optimizer, batch, Segmentation(spec["num_classes"]), None


def run_family(name, args, threads, rng, shared_worker=None):
    """Times one family; prints its lines and returns its row of the summary table."""
    title, model, optimizer, batch, task, kind = family(
        name, rng, args.dtype, args.device, args.tiny
    )
    n = len(batch["image"])
    jax_step = JaxStep(model, optimizer, batch, task)
    worker, torch_fn, torch_parts = None, None, {}
    if kind is not None and args.same_process:
        fns, _ = _torch_fns(kind, batch, args.device, args.dtype)
        torch_fn, torch_parts = fns["step"], fns
    elif kind is not None:
        worker = shared_worker or TorchWorker(threads, args.device, args.dtype)
        try:
            worker.load(kind, batch)
        except BaseException:
            if worker is not shared_worker:
                worker.close()
            raise
        torch_fn = worker.fn("step")
        if kind == "fcn8s":
            torch_parts = {p: worker.fn(p) for p in ("forward", "forward+backward")}
    try:
        fns = {"fcnjax": jax_step} if torch_fn is None else {"fcnjax": jax_step, "torch": torch_fn}
        block_s = 0.05 if args.tiny else 0.3 if args.quick else 1.0
        steps = max(steps_for(fn, block_s) for fn in fns.values())
        rounds = 2 if args.tiny else 3 if args.quick else 5
        t = interleaved(fns, rounds, steps)
        params = sum(x.size for x in jax.tree.leaves(jax_step.state.params))
        row = dict(family=name, title=title, batch=n, params=params, rounds=rounds, steps=steps)
        theirs = ""
        if worker and worker.info:
            row["torch_params"] = worker.info["params"]
            theirs = f" / PyTorch {worker.info['params']:,}"
            theirs += "" if worker.info["params"] == params else " (DIFFERENT NETWORKS)"
        print(f"\n{name}: {title}; {rounds} rounds x {steps} steps, medians:")
        print(f"  parameters: fcnjax {params:,}{theirs}")
        print(images_per_s("fcnjax train_step", n, t["fcnjax"], jax_step.compile_s))
        row.update(fcnjax_ms=1e3 * np.median(t["fcnjax"]), compile_s=jax_step.compile_s)
        if torch_fn is not None:
            print(images_per_s("PyTorch step", n, t["torch"]))
            row.update(torch_ms=1e3 * np.median(t["torch"]), ratio=ratio(t, "fcnjax", "torch"))
            print(f"  fcnjax / PyTorch time: {row['ratio']:.2f}x (target <= 1.0)")
        if kind == "fcn8s" and not args.quick:
            breakdown(jax_step, torch_parts, torch_fn)
    finally:
        if worker is not None and worker is not shared_worker:
            worker.close()
    return row


def breakdown(jax_step, torch_parts, torch_fn):
    jax_parts = fcn8s_breakdown(jax_step)
    fns = {}
    for part in ("forward", "forward+backward"):
        fns[f"fcnjax {part}"] = jax_parts[part]
        fns[f"torch {part}"] = torch_parts[part]
    fns["fcnjax step"], fns["torch step"] = jax_step, torch_fn
    t = interleaved(fns, 3, 1)
    print("  breakdown (3 rounds x 1 call, medians, ms):")
    print(f"    {'':18} {'fcnjax':>8} {'PyTorch':>8} {'ratio':>6}")
    for part in ("forward", "forward+backward", "step"):
        a, b = f"fcnjax {part}", f"torch {part}"
        print(
            f"    {part:18} {1e3 * np.median(t[a]):8.0f} {1e3 * np.median(t[b]):8.0f} "
            f"{ratio(t, a, b):6.2f}"
        )


def precision_note(device, dtype):
    """What ``--device``/``--dtype`` compute in, for the headers."""
    if dtype == "bfloat16":
        return "bfloat16 (float32 parameters; fcnjax dtype=bfloat16, PyTorch autocast)"
    return "float32 (TF32 matmuls and convolutions on both)" if device == "gpu" else "float32"


def write_json(path, meta, rows):
    """The run so far as JSON (rewritten after every family: a run cut short keeps its rows)."""
    if path:
        text = json.dumps({"meta": meta, "rows": rows}, indent=1, default=float)
        Path(path).write_text(text + "\n")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds, no breakdown")
    parser.add_argument("--only", nargs="+", choices=FAMILIES, default=FAMILIES)
    parser.add_argument(
        "--same-process",
        action="store_true",
        help="run PyTorch in this process too (each framework then slows the other)",
    )
    parser.add_argument("--device", choices=("cpu", "gpu"), default="cpu")
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
    parser.add_argument("--tiny", action="store_true", help="batch 1 at 32x32: a dry run")
    parser.add_argument("--json", metavar="PATH", help="also write the rows to this file")
    parser.add_argument(
        "--budget", type=float, metavar="SECONDS", help="start no family after this time"
    )
    args = parser.parse_args()
    sys.stdout.reconfigure(line_buffering=True)  # progress of a long run, also into a file

    # JAX's GPU first, then PyTorch: the first to start loads the CUDA libraries both use.
    backend = jax.default_backend()
    if backend != args.device:
        parser.error(
            f"--device {args.device}, but JAX runs on {backend}: "
            + ("install a CUDA jaxlib" if args.device == "gpu" else "set JAX_PLATFORMS=cpu")
        )
    if args.device == "gpu" and args.dtype == "float32":
        jax.config.update("jax_default_matmul_precision", "tensorfloat32")

    import torch

    if args.device == "gpu" and not torch.cuda.is_available():
        parser.error("--device gpu, but PyTorch sees no CUDA device")
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    # XLA:CPU's thread pool has one thread per core. A dry run takes one: PyTorch's threads
    # wait by spinning, which on a busy machine made a tiny U-Net step 400 ms, not 13 ms.
    threads = 1 if args.tiny else cores
    torch.set_num_threads(threads)
    rng = np.random.default_rng(0)
    device = jax.devices()[0]
    torch_device = ""
    if args.device == "gpu":
        device = f"{device}, {device.device_kind}"
        torch_device = f"{torch.cuda.get_device_name()}, "
    print(
        f"# {platform.machine()}, {cores} cores, jax {jax.__version__} ({device}), "
        f"torch {torch.__version__} ({torch_device}{torch.get_num_threads()} threads, "
        f"{'this process' if args.same_process else 'a worker process'}), "
        f"{precision_note(args.device, args.dtype)}; "
        f"load average {os.getloadavg()[0]:.1f} (other processes make the timings noisy)"
    )
    meta = dict(
        device=args.device,
        dtype=args.dtype,
        precision=precision_note(args.device, args.dtype),
        device_kind=jax.devices()[0].device_kind,
        torch_device=torch.cuda.get_device_name() if args.device == "gpu" else "cpu",
        jax=jax.__version__,
        torch=torch.__version__,
        quick=args.quick,
        tiny=args.tiny,
        families=list(args.only),
    )
    rows, failed, start = [], [], time.perf_counter()
    # One worker for every family on the GPU (and in a dry run, which checks that path).
    shared = None
    if args.device == "gpu" or args.tiny:
        shared = TorchWorker(threads, args.device, args.dtype)
    write_json(args.json, meta, rows)
    try:
        for name in args.only:
            now = time.perf_counter() - start
            if args.budget is not None and now > args.budget:
                print(f"\n{name}: skipped (--budget {args.budget:.0f} s; {now:.0f} s used)")
                rows.append(dict(family=name, skipped=f"time budget ({now:.0f} s used)"))
                write_json(args.json, meta, rows)
                continue
            try:
                rows.append(run_family(name, args, threads, rng, shared))
            except Exception as error:  # the other families still run; the exit code says
                traceback.print_exc()
                print(f"\n{name}: FAILED: {type(error).__name__}: {error}")
                rows.append(dict(family=name, error=f"{type(error).__name__}: {error}"))
                failed.append(name)
                if shared is not None and not shared.process.is_alive():  # e.g. out of memory
                    shared = TorchWorker(threads, args.device, args.dtype)
            write_json(args.json, meta, rows)
    finally:
        if shared is not None:
            shared.close()
    print("\n| family | fcnjax ms/step | PyTorch ms/step | fcnjax / PyTorch | compile + 1st call |")
    print("| --- | --- | --- | --- | --- |")
    for row in rows:
        if "fcnjax_ms" not in row:
            continue
        theirs_s = f"{row['torch_ms']:.1f}" if "torch_ms" in row else "-"
        r_s = f"{row['ratio']:.2f}x" if "ratio" in row else "-"
        print(
            f"| {row['family']} | {row['fcnjax_ms']:.1f} | {theirs_s} | {r_s} | "
            f"{row['compile_s']:.1f} s |"
        )
    print(f"\n# load average at the end {os.getloadavg()[0]:.1f}")
    if failed:
        sys.exit(f"failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()
