"""UNet 3+ against its authors' PyTorch code (ZJUGiveLab/UNet-Version, models/UNet_3Plus.py):
parameters, logits on the same weights, a training step, any input size."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fcnjax import models
from fcnjax.models import UNet3Plus
from fcnjax.models.unet3_plus import _ceil_max_pool
from fcnjax.training import tasks

pytestmark = pytest.mark.usefixtures("cheap_compiles")

FILTERS = (64, 128, 256, 512, 1024)


def torch_unet3_plus(in_channels=3, n_classes=1, filters=FILTERS, any_size=False):
    """The authors' ``UNet_3Plus`` (its names and arithmetic; ``filters`` as an argument and
    the five stages' repeated lines as loops), returning ``d1`` before their sigmoid.

    ``any_size``: fcnjax's two changes for sizes not divisible by 16, written the PyTorch
    way: the encoder's MaxPool2d with ``ceil_mode=True`` and each upsampled map cropped at
    the end to the stage's size."""
    import torch
    from torch import nn

    class unetConv2(nn.Module):  # noqa: N801 (layers.py's, is_batchnorm=True, n=2)
        def __init__(self, in_size, out_size):
            super().__init__()
            for i in (1, 2):
                conv = nn.Sequential(
                    nn.Conv2d(in_size, out_size, 3, 1, 1),
                    nn.BatchNorm2d(out_size),
                    nn.ReLU(inplace=True),
                )
                setattr(self, f"conv{i}", conv)
                in_size = out_size

        def forward(self, x):
            return self.conv2(self.conv1(x))

    class UNet_3Plus(nn.Module):  # noqa: N801 (the authors' name)
        def __init__(self):
            super().__init__()
            n = len(filters)
            self.n = n
            for level in range(1, n + 1):
                prev = in_channels if level == 1 else filters[level - 2]
                setattr(self, f"conv{level}", unetConv2(prev, filters[level - 1]))
                if level < n:
                    setattr(self, f"maxpool{level}", nn.MaxPool2d(2, ceil_mode=any_size))
            self.CatChannels = filters[0]
            self.CatBlocks = n
            self.UpChannels = self.CatChannels * self.CatBlocks
            for d in range(n - 1, 0, -1):
                for j in range(1, n + 1):
                    if j < d:
                        name, k = f"h{j}_PT_hd{d}", 2 ** (d - j)
                        setattr(self, name, nn.MaxPool2d(k, k, ceil_mode=True))
                        cin = filters[j - 1]
                    elif j == d:
                        name, cin = f"h{d}_Cat_hd{d}", filters[d - 1]
                    else:
                        name = f"hd{j}_UT_hd{d}"
                        setattr(self, name, nn.Upsample(scale_factor=2 ** (j - d), mode="bilinear"))
                        cin = filters[-1] if j == n else self.UpChannels
                    setattr(self, f"{name}_conv", nn.Conv2d(cin, self.CatChannels, 3, padding=1))
                    setattr(self, f"{name}_bn", nn.BatchNorm2d(self.CatChannels))
                    setattr(self, f"{name}_relu", nn.ReLU(inplace=True))
                up = self.UpChannels
                setattr(self, f"conv{d}d_1", nn.Conv2d(up, up, 3, padding=1))
                setattr(self, f"bn{d}d_1", nn.BatchNorm2d(up))
                setattr(self, f"relu{d}d_1", nn.ReLU(inplace=True))
            self.outconv1 = nn.Conv2d(self.UpChannels, n_classes, 3, padding=1)

        def forward(self, inputs):
            n, m = self.n, lambda name: getattr(self, name)
            h = [self.conv1(inputs)]
            for level in range(2, n + 1):
                h.append(m(f"conv{level}")(m(f"maxpool{level - 1}")(h[-1])))
            hd = {n: h[-1]}
            for d in range(n - 1, 0, -1):
                parts = []
                for j in range(1, n + 1):
                    if j < d:
                        name, x = f"h{j}_PT_hd{d}", m(f"h{j}_PT_hd{d}")(h[j - 1])
                    elif j == d:
                        name, x = f"h{d}_Cat_hd{d}", h[d - 1]
                    else:
                        name, x = f"hd{j}_UT_hd{d}", m(f"hd{j}_UT_hd{d}")(hd[j])
                        x = x[:, :, : h[d - 1].shape[2], : h[d - 1].shape[3]]
                    parts.append(m(f"{name}_relu")(m(f"{name}_bn")(m(f"{name}_conv")(x))))
                fused = m(f"conv{d}d_1")(torch.cat(parts, 1))
                hd[d] = m(f"relu{d}d_1")(m(f"bn{d}d_1")(fused))
            return self.outconv1(hd[1])  # the authors return F.sigmoid(d1)

    return UNet_3Plus()


def flax_variables(model):
    """The torch model's weights and BatchNorm statistics under fcnjax's names."""
    from torch import nn

    params, stats = {}, {}
    for name, mod in model.named_modules():
        # conv{l}.conv{i}.0 / .1 -> conv{l}_{i} / conv{l}_{i}_bn; the decoder's as they are.
        key = name.replace(".conv", "_").replace(".0", "").replace(".1", "_bn")
        if isinstance(mod, nn.Conv2d):
            kernel = mod.weight.detach().numpy().transpose(2, 3, 1, 0)
            params[key] = {"kernel": kernel, "bias": mod.bias.detach().numpy()}
        elif isinstance(mod, nn.BatchNorm2d):
            params[key] = {"scale": mod.weight.detach().numpy(), "bias": mod.bias.detach().numpy()}
            stats[key] = {"mean": mod.running_mean.numpy(), "var": mod.running_var.numpy()}
    return {"params": params, "batch_stats": stats}


def randomised(model, seed):
    """Every weight and BatchNorm statistic random (statistics far from 0 / 1), eval mode."""
    import torch
    from torch import nn

    torch.manual_seed(seed)
    for mod in model.modules():
        if isinstance(mod, nn.BatchNorm2d):
            nn.init.uniform_(mod.weight, 0.5, 1.5)
            nn.init.uniform_(mod.bias, -0.3, 0.3)
            nn.init.uniform_(mod.running_mean, -0.3, 0.3)
            nn.init.uniform_(mod.running_var, 0.5, 1.5)
        elif isinstance(mod, nn.Conv2d):
            nn.init.kaiming_normal_(mod.weight)
            nn.init.uniform_(mod.bias, -0.1, 0.1)
    return model.eval()


@pytest.mark.requires_torch
def test_parameter_count_equals_the_authors_model():
    reference = torch_unet3_plus(3, 21)
    expected = sum(p.numel() for p in reference.parameters())
    x = jax.ShapeDtypeStruct((1, 64, 64, 3), jnp.float32)
    variables = jax.eval_shape(UNet3Plus(21).init, jax.random.key(0), x)
    count = sum(math.prod(p.shape) for p in jax.tree.leaves(variables["params"]))
    assert count == expected == 27_029_397  # 26,971,777 at 1 class: the paper's 26.97M
    # Every tensor by name, with the shape the weight transfer gives it.
    shapes = lambda tree: jax.tree.map(lambda leaf: leaf.shape, tree)  # noqa: E731
    assert shapes(flax_variables(reference)) == shapes(variables)


@pytest.mark.parametrize(
    ("size", "any_size"), [((32, 48), False), ((37, 45), True)], ids=["authors", "odd"]
)
@pytest.mark.requires_torch
def test_logits_equal_the_authors_on_the_same_weights(size, any_size):
    import torch

    filters = tuple(f // 16 for f in FILTERS)
    reference = randomised(torch_unet3_plus(3, 3, filters, any_size=any_size), seed=1)
    x = np.random.default_rng(2).normal(size=(2, *size, 3)).astype(np.float32)
    with torch.no_grad():
        expected = reference(torch.from_numpy(x).permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
    model = UNet3Plus(3, width=1 / 16)
    variables = flax_variables(reference)
    got = jax.jit(model.apply)(variables, x)
    assert got.shape == (2, *size, 3)
    np.testing.assert_allclose(np.asarray(got), expected.numpy(), rtol=1e-4, atol=1e-4)


@pytest.mark.requires_torch
def test_ceil_pooling_is_pytorchs_ceil_mode():
    import torch

    x = np.random.default_rng(3).normal(size=(1, 37, 45, 2)).astype(np.float32)
    for k in (2, 4, 8, 16):
        pool = torch.nn.MaxPool2d(k, k, ceil_mode=True)
        expected = pool(torch.from_numpy(x).permute(0, 3, 1, 2)).permute(0, 2, 3, 1).numpy()
        np.testing.assert_array_equal(np.asarray(_ceil_max_pool(x, k)), expected)


def test_one_training_step_at_an_odd_size():
    model = UNet3Plus(3, width=1 / 16)
    x = jnp.asarray(np.random.default_rng(6).uniform(size=(2, 37, 45, 3)), jnp.float32)
    variables = jax.jit(model.init)(jax.random.key(0), x)
    params, stats = variables["params"], variables["batch_stats"]
    task = tasks.Segmentation(3)
    mask = jnp.asarray(np.random.default_rng(7).integers(0, 3, (2, 37, 45)), jnp.int32)

    def loss(p):
        out, new = model.apply(
            {"params": p, "batch_stats": stats}, x, train=True, mutable=["batch_stats"]
        )
        assert out.shape == (2, 37, 45, 3)
        return task.loss(task.loss_sums(out, {"mask": mask})), new

    (value, new), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(params)
    assert np.isfinite(float(value))
    for path, g in jax.tree_util.tree_leaves_with_path(grads):
        assert np.all(np.isfinite(g)), jax.tree_util.keystr(path)
        assert float(jnp.abs(g).max()) > 0, jax.tree_util.keystr(path)
    changed = jax.tree.map(lambda a, b: bool(jnp.any(a != b)), stats, dict(new["batch_stats"]))
    assert all(jax.tree.leaves(changed))


@pytest.mark.parametrize("size", [(37, 45), (1, 1), (17, 100), (48, 33)])
def test_any_input_size_gives_logits_at_that_size(size):
    model = UNet3Plus(5, width=1 / 16)
    x = jax.ShapeDtypeStruct((1, *size, 3), jnp.float32)
    variables = jax.eval_shape(model.init, jax.random.key(0), x)
    assert jax.eval_shape(model.apply, variables, x).shape == (1, *size, 5)


def test_registered_and_arguments_checked():
    model = models.get("unet3_plus", num_classes=2)
    assert isinstance(model, UNet3Plus) and model.filters == FILTERS
    assert isinstance(models.get("UNet3Plus", num_classes=2), UNet3Plus)
    assert "Huang" in models.REFERENCES["unet3_plus"] and "unet3_plus" in models.NAMES
    with pytest.raises(ValueError, match="`filters`"):
        models.get("unet3_plus", num_classes=2, filters=(8, 0))
    with pytest.raises(ValueError, match="`cat_channels`"):
        models.get("unet3_plus", num_classes=2, cat_channels=0)
    x = jnp.zeros((1, 8, 8, 3))
    bad = {
        "filters": UNet3Plus(2, filters=(8,)),
        "num_classes": UNet3Plus(0),
        "cat_channels": UNet3Plus(2, cat_channels=-1),
        "width": UNet3Plus(2, width=0.0),
        "bn_momentum": UNet3Plus(2, bn_momentum=1.0),
    }
    for name, module in bad.items():
        with pytest.raises(ValueError, match=f"`{name}`"):
            jax.eval_shape(module.init, jax.random.key(0), x)
    with pytest.raises(ValueError, match=r"\(N, H, W, C\)"):
        jax.eval_shape(UNet3Plus(2).init, jax.random.key(0), jnp.zeros((8, 8, 3)))
