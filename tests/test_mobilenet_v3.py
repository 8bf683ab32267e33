"""torchvision's MobileNetV3-Large encoder, its weights and ``lraspp_mobilenet_v3_large``
(issue 27), against PyTorch modules written here with torchvision's module names and
arithmetic (``torchvision/models/mobilenetv3.py``, ``ops/misc.py``'s
``Conv2dNormActivation`` and ``SqueezeExcitation``, ``models/segmentation/lraspp.py``;
torchvision does not install beside the pinned torch). Parameter counts against
torchvision's published totals; logits on the same weights; odd input sizes; one
training step; files of another network refused."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fcnjax import models, weights
from fcnjax.models import LRASPP, MobileNetV3Large, encoders
from fcnjax.training import tasks
from fcnjax.weights import TORCHVISION, into_backbone, load_mobilenet_v3
from tests.test_encoders import _config, _initial
from tests.test_models import count
from tests.test_weights import assert_close

pytestmark = pytest.mark.usefixtures("cheap_compiles")

# torchvision's MobileNet_V3_Large_Weights.IMAGENET1K_V1.meta["num_params"] (with the
# classifier: Linear(960, 1280) and Linear(1280, 1000)) and LRASPP_MobileNet_V3_Large's.
TORCHVISION_PARAMS = 5_483_032
CLASSIFIER = 960 * 1280 + 1280 + 1280 * 1000 + 1000
LRASPP_PARAMS = 3_221_538
TAPS = ("features_1", "features_3", "features_6", "features_12", "features_16", "low", "high")
WIDTH = 0.5


# ------------------------------------------------------------------------------------
# torchvision's code in PyTorch.
# ------------------------------------------------------------------------------------


def _make_divisible(v, divisor=8):  # torchvision.models._utils._make_divisible
    new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:
        new_v += divisor
    return new_v


# _mobilenet_v3_conf("mobilenet_v3_large"): input, kernel, expanded, out, SE, act, stride.
_CONF = [
    (16, 3, 16, 16, False, "RE", 1),
    (16, 3, 64, 24, False, "RE", 2),
    (24, 3, 72, 24, False, "RE", 1),
    (24, 5, 72, 40, True, "RE", 2),
    (40, 5, 120, 40, True, "RE", 1),
    (40, 5, 120, 40, True, "RE", 1),
    (40, 3, 240, 80, False, "HS", 2),
    (80, 3, 200, 80, False, "HS", 1),
    (80, 3, 184, 80, False, "HS", 1),
    (80, 3, 184, 80, False, "HS", 1),
    (80, 3, 480, 112, True, "HS", 1),
    (112, 3, 672, 112, True, "HS", 1),
    (112, 5, 672, 160, True, "HS", 2),
    (160, 5, 960, 160, True, "HS", 1),
    (160, 5, 960, 160, True, "HS", 1),
]


def torch_mobilenet_v3_large(width=1.0, dilated=False, seed=0):
    """torchvision's ``mobilenet_v3_large(width_mult=width, dilated=dilated)``, randomly
    initialised (BatchNorm statistics and SE biases too), in eval mode."""
    import torch
    from torch import nn

    norm = functools.partial(nn.BatchNorm2d, eps=0.001, momentum=0.01)

    def conv_norm_act(c_in, c_out, k, stride=1, groups=1, dilation=1, act=None):
        pad = (k - 1) // 2 * dilation  # Conv2dNormActivation
        layers = [
            nn.Conv2d(c_in, c_out, k, stride, pad, dilation=dilation, groups=groups, bias=False),
            norm(c_out),
        ]
        return nn.Sequential(*layers, *([act()] if act else []))

    class SqueezeExcitation(nn.Module):  # torchvision.ops.SqueezeExcitation
        def __init__(self, c, squeeze):
            super().__init__()
            self.avgpool = nn.AdaptiveAvgPool2d(1)
            self.fc1, self.fc2 = nn.Conv2d(c, squeeze, 1), nn.Conv2d(squeeze, c, 1)
            self.activation, self.scale_activation = nn.ReLU(), nn.Hardsigmoid()

        def forward(self, x):
            s = self.fc2(self.activation(self.fc1(self.avgpool(x))))
            return self.scale_activation(s) * x

    class InvertedResidual(nn.Module):
        def __init__(self, c_in, k, c_exp, c_out, se, act, stride, dilation):
            super().__init__()
            self.use_res_connect = stride == 1 and c_in == c_out
            act = nn.Hardswish if act == "HS" else nn.ReLU
            layers = []
            if c_exp != c_in:
                layers.append(conv_norm_act(c_in, c_exp, 1, act=act))
            stride = 1 if dilation > 1 else stride
            layers.append(conv_norm_act(c_exp, c_exp, k, stride, c_exp, dilation, act))
            if se:
                layers.append(SqueezeExcitation(c_exp, _make_divisible(c_exp // 4, 8)))
            layers.append(conv_norm_act(c_exp, c_out, 1))
            self.block = nn.Sequential(*layers)

        def forward(self, x):
            out = self.block(x)
            return out + x if self.use_res_connect else out

    class MobileNetV3(nn.Module):
        def __init__(self):
            super().__init__()
            adjust = lambda c: _make_divisible(c * width, 8)  # noqa: E731
            layers = [conv_norm_act(3, adjust(16), 3, 2, act=nn.Hardswish)]
            for i, (c_in, k, c_exp, c_out, se, act, stride) in enumerate(_CONF):
                dilation = 2 if dilated and i >= 12 else 1
                layers.append(
                    InvertedResidual(
                        adjust(c_in), k, adjust(c_exp), adjust(c_out), se, act, stride, dilation
                    )
                )
            last = adjust(160)
            layers.append(conv_norm_act(last, 6 * last, 1, act=nn.Hardswish))
            self.features = nn.Sequential(*layers)
            self.avgpool = nn.AdaptiveAvgPool2d(1)
            self.classifier = nn.Sequential(
                nn.Linear(6 * last, adjust(1280)),
                nn.Hardswish(),
                nn.Dropout(0.2),
                nn.Linear(adjust(1280), 1000),
            )

        def taps(self, x):
            out = {}
            for i, module in enumerate(self.features):
                x = out[f"features_{i}"] = module(x)
            # _lraspp_mobilenetv3: stage_indices [0, 2, 4, 7, 13, 16]; low [-4], high [-1]
            out["low"], out["high"] = out["features_4"], out["features_16"]
            return out

    torch.manual_seed(seed)
    model = MobileNetV3().eval()
    _randomize(model)
    return model


def _randomize(model):
    import torch
    from torch import nn

    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
                if m.bias is not None:
                    nn.init.normal_(m.bias, 0, 0.2)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.uniform_(m.weight, 0.5, 1.5)
                nn.init.normal_(m.bias, 0, 0.1)
                nn.init.normal_(m.running_mean, 0, 0.1)
                nn.init.uniform_(m.running_var, 0.5, 1.5)
                m.num_batches_tracked.fill_(7)


def torch_lraspp_head(low_channels, high_channels, num_classes, inter_channels=128):
    """torchvision's ``LRASPPHead``, randomly initialised, in eval mode."""
    import torch.nn.functional as F
    from torch import nn

    class LRASPPHead(nn.Module):
        def __init__(self):
            super().__init__()
            self.cbr = nn.Sequential(
                nn.Conv2d(high_channels, inter_channels, 1, bias=False),
                nn.BatchNorm2d(inter_channels),
                nn.ReLU(inplace=True),
            )
            self.scale = nn.Sequential(
                nn.AdaptiveAvgPool2d(1),
                nn.Conv2d(high_channels, inter_channels, 1, bias=False),
                nn.Sigmoid(),
            )
            self.low_classifier = nn.Conv2d(low_channels, num_classes, 1)
            self.high_classifier = nn.Conv2d(inter_channels, num_classes, 1)

        def forward(self, low, high):
            x = self.cbr(high) * self.scale(high)
            x = F.interpolate(x, size=low.shape[-2:], mode="bilinear", align_corners=False)
            return self.low_classifier(low) + self.high_classifier(x)

    head = LRASPPHead().eval()
    _randomize(head)
    return head


def nchw(x):
    import torch

    return torch.from_numpy(np.ascontiguousarray(x)).permute(0, 3, 1, 2)


def nhwc(t):
    return t.detach().permute(0, 2, 3, 1).numpy()


# ------------------------------------------------------------------------------------
# Parameter counts and shapes.
# ------------------------------------------------------------------------------------


def shapes_of(model, size=(65, 71)):
    x = jax.ShapeDtypeStruct((1, *size, 3), jnp.float32)
    return jax.eval_shape(lambda x: model.init_with_output(jax.random.key(0), x), x)


@pytest.mark.requires_torch
def test_parameter_counts_equal_torchvisions():
    oracle = torch_mobilenet_v3_large()
    torch_count = sum(p.numel() for p in oracle.parameters())
    assert torch_count == TORCHVISION_PARAMS  # the oracle is torchvision's network
    features = sum(p.numel() for p in oracle.features.parameters())
    assert features == TORCHVISION_PARAMS - CLASSIFIER == 2_971_952
    head = torch_lraspp_head(40, 960, 21)
    assert features + sum(p.numel() for p in head.parameters()) == LRASPP_PARAMS
    for dilated in (False, True):
        _, variables = shapes_of(MobileNetV3Large(dilated=dilated))
        assert count(variables["params"]) == features
        buffers = sum(b.numel() for n, b in oracle.features.named_buffers() if "running" in n)
        assert count(variables["batch_stats"]) == buffers
    _, variables = shapes_of(models.get("lraspp_mobilenet_v3_large", num_classes=21))
    assert count(variables["params"]) == LRASPP_PARAMS


@pytest.mark.parametrize(
    "dilated, strides", [(False, (2, 4, 8, 16, 32)), (True, (2, 4, 8, 16, 16))]
)
def test_levels_and_segmentation_taps(dilated, strides):
    size = (65, 71)
    backbone = encoders.encoder("mobilenet_v3_large", output_stride=16 if dilated else 32)
    assert isinstance(backbone, MobileNetV3Large) and backbone.dilated == dilated
    taps, _ = shapes_of(backbone, size)
    levels = encoders.levels(taps)
    expected = [(-(-size[0] // s), -(-size[1] // s)) for s in strides]  # ceil(h / s)
    assert [f.shape[1:3] for f in levels] == expected
    assert [f.shape[-1] for f in levels] == [16, 24, 40, 112, 960]
    assert taps["low"].shape == (1, 9, 9, 40) and taps["high"].shape == taps["features_16"].shape
    taps, variables = shapes_of(MobileNetV3Large(levels=4), size)
    assert (
        "features_16" not in taps
        and "high" not in taps
        and "features_13" not in variables["params"]
    )
    with pytest.raises(ValueError, match="`output_stride` must be 32 or 16"):
        encoders.encoder("mobilenet_v3_large", output_stride=8)


@pytest.mark.parametrize("size", [(65, 71), (33, 17), (1, 1)])
def test_lraspp_logits_at_any_input_size(size):
    model = LRASPP(3, width=0.25, inter_channels=8)
    x = jax.ShapeDtypeStruct((2, *size, 3), jnp.float32)
    variables = jax.eval_shape(model.init, jax.random.key(0), x)
    assert jax.eval_shape(model.apply, variables, x).shape == (2, *size, 3)


# ------------------------------------------------------------------------------------
# torchvision's files, and logits equal on the same weights.
# ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def torch_file(tmp_path_factory):
    """A randomly initialised half-width MobileNetV3-Large, saved as torchvision would."""
    import torch

    torch.set_num_threads(1)
    model = torch_mobilenet_v3_large(WIDTH, seed=3)
    path = tmp_path_factory.mktemp("mobilenet") / "mobilenet_v3_large-small.pth"
    torch.save(model.state_dict(), path)
    return model, path


@functools.partial(jax.jit, static_argnames=("dilated",))
def mobilenet_forward(variables, x, dilated):
    return MobileNetV3Large(WIDTH, dilated).apply(variables, x)


@pytest.mark.requires_torch
@pytest.mark.parametrize("fmt", ["pth", "safetensors"])
def test_torchvision_file_gives_torchs_features(tmp_path, torch_file, fmt):
    import torch
    from safetensors.torch import save_file

    model, path = torch_file
    if fmt == "safetensors":
        path = tmp_path / "mobilenet_v3_large.safetensors"
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, path)
    variables, pre = load_mobilenet_v3(path)
    assert pre == TORCHVISION
    _, shapes = shapes_of(MobileNetV3Large(WIDTH))
    assert jax.tree.map(np.shape, variables) == jax.tree.map(lambda s: s.shape, shapes)
    dw = model.features[4].block[1][0].weight.detach().numpy()  # (C, 1, 5, 5) -> (5, 5, 1, C)
    kernel = variables["params"]["features_4"]["block_1"]["conv"]["kernel"]
    np.testing.assert_array_equal(kernel[1, 3, 0, 7], dw[7, 0, 1, 3])
    zeros = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), shapes)
    placed = {
        c: into_backbone({"backbone": zeros[c], "head": {}}, variables[c])["backbone"]
        for c in ("params", "batch_stats")
    }
    x = np.random.default_rng(4).normal(0, 1, (2, 65, 71, 3)).astype(np.float32)
    for dilated in (False, True):
        oracle = torch_mobilenet_v3_large(WIDTH, dilated)
        oracle.load_state_dict(model.state_dict())
        with torch.no_grad():
            expected = oracle.taps(nchw(x))
        ours = mobilenet_forward(placed, x, dilated)
        for name in TAPS:
            assert_close(ours[name], nhwc(expected[name]), rtol=1e-4)


@pytest.mark.requires_torch
def test_lraspp_matches_torchvisions_arithmetic(torch_file):
    import torch
    import torch.nn.functional as F

    model, path = torch_file
    oracle = torch_mobilenet_v3_large(WIDTH, dilated=True)
    oracle.load_state_dict(model.state_dict())
    low, high = oracle.features[4].block[-1][0].out_channels, oracle.features[16][0].out_channels
    head = torch_lraspp_head(low, high, 5, inter_channels=16)
    x = np.random.default_rng(5).normal(0, 1, (2, 65, 71, 3)).astype(np.float32)
    with torch.no_grad():
        taps = oracle.taps(nchw(x))
        out = head(taps["low"], taps["high"])
        expected = nhwc(F.interpolate(out, size=(65, 71), mode="bilinear", align_corners=False))
    loaded, _ = load_mobilenet_v3(path)

    def conv(m):
        leaves = {"kernel": m.weight.detach().numpy().transpose(2, 3, 1, 0)}
        return leaves if m.bias is None else {**leaves, "bias": m.bias.detach().numpy()}

    bn = head.cbr[1]
    params = {
        "backbone": loaded["params"],
        "classifier": {
            "cbr_conv": conv(head.cbr[0]),
            "cbr_bn": {"scale": bn.weight.detach().numpy(), "bias": bn.bias.detach().numpy()},
            "scale_conv": conv(head.scale[1]),
            "low_classifier": conv(head.low_classifier),
            "high_classifier": conv(head.high_classifier),
        },
    }
    stats = {
        "backbone": loaded["batch_stats"],
        "classifier": {"cbr_bn": {"mean": bn.running_mean.numpy(), "var": bn.running_var.numpy()}},
    }
    ours_model = LRASPP(5, inter_channels=16, width=WIDTH)
    shapes = jax.eval_shape(ours_model.init, jax.random.key(0), x)
    variables = {"params": params, "batch_stats": stats}
    assert jax.tree.structure(variables) == jax.tree.structure(shapes)
    assert_close(jax.jit(ours_model.apply)(variables, x), expected, rtol=1e-4)


# ------------------------------------------------------------------------------------
# Training.
# ------------------------------------------------------------------------------------


def numpy_init(tree, rng):
    """He-normal kernels, zero biases, unit BatchNorm scales and variances, zero means."""

    def init(path, s):
        leaf = path[-1].key
        if leaf == "kernel":
            fan_in = int(np.prod(s.shape[:-1]))
            return jnp.asarray(rng.normal(0, np.sqrt(2 / fan_in), s.shape), s.dtype)
        return jnp.full(s.shape, 1.0 if leaf in ("scale", "var") else 0.0, s.dtype)

    return jax.tree_util.tree_map_with_path(init, tree)


def test_one_training_step():
    model = LRASPP(3, width=0.25, inter_channels=8)
    x = jnp.asarray(np.random.default_rng(6).normal(size=(2, 37, 45, 3)), jnp.float32)
    # Random values without compiling the initialisers (jit(model.init) took 20 s, 2 cores).
    shapes = jax.eval_shape(model.init, jax.random.key(0), x)
    params, stats = (
        numpy_init(shapes[c], np.random.default_rng(8)) for c in ("params", "batch_stats")
    )
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


# ------------------------------------------------------------------------------------
# Files that are not MobileNetV3-Large's, and the trainer's init.backbone_weights.
# ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_state():
    """A 1/8-width state dict (NumPy): its blocks 2 and 3 have no expansion (8 -> 8)."""
    model = torch_mobilenet_v3_large(0.125, seed=1)
    assert len(model.features[2].block) == 2  # expanded == input: no block.0 expansion
    return {k: v.numpy() for k, v in model.state_dict().items()}


@pytest.mark.requires_torch
def test_any_width_loads(tmp_path, small_state):
    from safetensors.numpy import save_file

    path = tmp_path / "small.safetensors"
    save_file(small_state, path)
    variables, _ = load_mobilenet_v3(path)
    _, shapes = shapes_of(MobileNetV3Large(0.125))
    assert jax.tree.map(np.shape, variables) == jax.tree.map(lambda s: s.shape, shapes)
    np.testing.assert_array_equal(
        variables["batch_stats"]["features_15"]["block_3"]["bn"]["var"],
        small_state["features.15.block.3.1.running_var"],
    )


@pytest.mark.requires_torch
def test_errors_are_listed_together(tmp_path, small_state):
    from safetensors.numpy import save_file

    state = dict(small_state)
    del state["features.5.block.1.1.running_var"]
    state["features.7.block.1.0.weight"] = state["features.7.block.1.0.weight"][:-1]
    state["features.4.block.2.fc9.weight"] = np.ones((2, 2), np.float32)
    path = tmp_path / "broken.safetensors"
    save_file(state, path)
    with pytest.raises(ValueError) as info:
        load_mobilenet_v3(path)
    msg = str(info.value)
    c = small_state["features.7.block.1.0.weight"].shape[0]
    for needle in (
        f"{path} does not hold MobileNetV3-Large weights in the safetensors (torchvision names)",
        "missing: features.5.block.1.1.running_var",
        f"features.7.block.1.0.weight: expected shape ({c}, 1, 3, 3), got ({c - 1}, 1, 3, 3)",
        "unexpected: features.4.block.2.fc9.weight (2, 2)",
    ):
        assert needle in msg, (needle, msg)


def _index(key):
    return int(key.split(".")[1])


@pytest.mark.requires_torch
def test_file_of_another_network_is_refused_naming_what_it_holds(tmp_path, small_state):
    from safetensors.numpy import save_file

    from tests.test_resnet_weights import torchvision_state

    path = tmp_path / "resnet18.safetensors"
    state = torchvision_state(18, 1 / 16)
    save_file(state, path)
    with pytest.raises(ValueError, match="none of its .* tensors has a MobileNetV3 name") as info:
        load_mobilenet_v3(path)
    assert f"none of its {len(state)} tensors" in str(info.value)
    assert "bn1.bias (4,)" in str(info.value)
    truncated = {
        k: v for k, v in small_state.items() if not k.startswith("features.") or _index(k) <= 12
    }
    save_file(truncated, path)  # features.0 ... features.12: MobileNetV3-Small's length
    with pytest.raises(ValueError, match=r"has 13 modules \(MobileNetV3-Small's count\), not"):
        load_mobilenet_v3(path)
    with pytest.raises(ValueError, match="Keras HDF5"):
        import h5py

        with h5py.File(tmp_path / "w.h5", "w") as f:
            f.attrs["layer_names"] = np.array([b"conv1"])
        load_mobilenet_v3(tmp_path / "w.h5")


def test_registry_backbone_and_mask():
    model = models.get("LRASPP-MobileNet-V3-Large", num_classes=2)
    assert isinstance(model, LRASPP) and model.backbone == "mobilenet_v3_large"
    assert models.backbone_of("lraspp_mobilenet_v3_large") == "mobilenet_v3_large"
    assert "mobilenet_v3_large" in encoders.PRETRAINABLE
    assert "lraspp_mobilenet_v3_large" in models.REFERENCES
    _, variables = shapes_of(LRASPP(2, width=0.25, inter_channels=8))
    mask = models.backbone_mask(variables["params"])
    assert all(jax.tree.leaves(mask["backbone"]))
    assert not any(jax.tree.leaves(mask["classifier"]))
    with pytest.raises(ValueError, match="`backbone` must be one of"):
        shapes_of(models.FCN(2, backbone="mobilenet_v3_large"))  # not silently a VGG16
    with pytest.raises(ValueError, match="`backbone` must be 'mobilenet_v3_large'"):
        shapes_of(LRASPP(2, backbone="resnet50"))


@pytest.mark.requires_torch
def test_backbone_weights_reach_the_model(tmp_path, small_state, monkeypatch):
    from safetensors.numpy import save_file

    from fcnjax.training import experiment

    path = tmp_path / "small.safetensors"
    save_file(small_state, path)
    params, stats = _initial(_config("lraspp_mobilenet_v3_large", path, width=0.125))
    np.testing.assert_array_equal(
        params["backbone"]["features_13"]["block_2"]["fc1"]["bias"],
        small_state["features.13.block.2.fc1.bias"],
    )
    np.testing.assert_array_equal(
        stats["backbone"]["features_0"]["bn"]["mean"], small_state["features.0.1.running_mean"]
    )
    assert not np.any(params["classifier"]["low_classifier"]["kernel"])  # the head is left
    asked = []

    def fake_load(path):
        asked.append(path)
        raise RuntimeError("stop here")

    monkeypatch.setattr(weights, "load_mobilenet_v3", fake_load)
    experiment._load_backbone.cache_clear()
    with pytest.raises(RuntimeError, match="stop here"):
        _initial(_config("lraspp_mobilenet_v3_large", "imagenet"))
    assert asked == [None]  # None: torchvision's IMAGENET1K_V1 file
    experiment._load_backbone.cache_clear()
    assert weights.TORCHVISION_MOBILENET_V3_LARGE_URL.endswith("mobilenet_v3_large-8738ca79.pth")
    assert weights.KNOWN_CHECKSUMS[weights.TORCHVISION_MOBILENET_V3_LARGE_URL] == (
        "sha256",
        "8738ca79",
    )
