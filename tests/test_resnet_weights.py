"""fcnjax.weights.load_resnet: torchvision and Keras files, checked against their own forwards.

The torchvision-layout files come from a PyTorch ResNet written here with torchvision's
module names and arithmetic (torchvision does not install here), the Keras ones from
``keras.applications.ResNet50`` through Keras' own legacy HDF5 writer, or by hand with
h5py for the first Keras ResNet50's (Caffe's) names; every model is randomly initialised,
BatchNorm statistics included. No test touches the network.
"""

import functools

import h5py
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import requests

from fcnjax import weights
from fcnjax.models.resnet import DEPTHS, ResNet
from fcnjax.models.vgg import scaled
from fcnjax.weights import (
    KERAS_CAFFE,
    TORCHVISION,
    WeightsUnavailableError,
    into_backbone,
    load_resnet,
)
from tests.test_weights import (
    _offline,
    _serve,
    assert_close,
    keras_layout_layers,
    save_keras_legacy_h5,
    torch_layout_state,
    write_keras_h5,
)

TAPS = ("stem", "layer1", "layer2", "layer3", "layer4")
KERAS_TAPS = ("conv1_relu", "conv2_block3_out", "conv3_block4_out", "conv4_block6_out")
KERAS_TAPS += ("conv5_block3_out",)
WIDTH = 1 / 16


@functools.partial(jax.jit, static_argnames=("depth", "width", "style"))
def resnet_forward(variables, x, depth, width, style):
    return ResNet(depth, style=style, width=width).apply(variables, x)


def resnet_shapes(depth, width=1.0, style="torchvision"):
    """The variables' shapes of ``ResNet(depth, style, width=width)``, without computing."""
    model = ResNet(depth, style=style, width=width)
    return jax.eval_shape(model.init, jax.random.key(0), jnp.ones((1, 64, 64, 3)))


def count(tree):
    return sum(int(np.prod(a.shape)) for a in jax.tree.leaves(tree))


# ------------------------------------------------------------------------------------
# Source models.
# ------------------------------------------------------------------------------------


def torch_resnet(depth, width, dilate=(False, False, False)):
    """torchvision.models.resnet{depth}'s module tree and arithmetic (v1.5), widths scaled;
    ``dilate`` is its ``replace_stride_with_dilation`` (bottleneck ResNets)."""
    import torch
    from torch import nn

    def conv(c_in, c_out, k, stride=1, dilation=1):
        pad = dilation * (k // 2)
        return nn.Conv2d(c_in, c_out, k, stride, pad, dilation=dilation, bias=False)

    class Block(nn.Module):
        def __init__(self, c_in, planes, stride, bottleneck, dilation=1):
            super().__init__()
            self.bottleneck = bottleneck
            out = planes * 4 if bottleneck else planes
            if bottleneck:  # v1.5: the stride on the 3x3 convolution
                self.conv1, self.bn1 = conv(c_in, planes, 1), nn.BatchNorm2d(planes)
                self.conv2 = conv(planes, planes, 3, stride, dilation)
                self.bn2 = nn.BatchNorm2d(planes)
                self.conv3, self.bn3 = conv(planes, out, 1), nn.BatchNorm2d(out)
            else:
                self.conv1, self.bn1 = conv(c_in, planes, 3, stride), nn.BatchNorm2d(planes)
                self.conv2, self.bn2 = conv(planes, planes, 3), nn.BatchNorm2d(planes)
            self.downsample = None
            if stride != 1 or c_in != out:
                self.downsample = nn.Sequential(conv(c_in, out, 1, stride), nn.BatchNorm2d(out))

        def forward(self, x):
            h = torch.relu(self.bn1(self.conv1(x)))
            h = self.bn2(self.conv2(h))
            if self.bottleneck:
                h = self.bn3(self.conv3(torch.relu(h)))
            return torch.relu(h + (x if self.downsample is None else self.downsample(x)))

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            stages, bottleneck = DEPTHS[depth]
            c = scaled(64, width)
            self.conv1, self.bn1 = nn.Conv2d(3, c, 7, 2, 3, bias=False), nn.BatchNorm2d(c)
            self.maxpool = nn.MaxPool2d(3, 2, 1)
            dilation = 1
            for i, n in enumerate(stages):
                planes = scaled(64 * 2**i, width)
                stride, previous = (2 if i else 1), dilation
                if i and dilate[i - 1]:  # torchvision's _make_layer
                    dilation, stride = dilation * stride, 1
                blocks = []
                for j in range(n):
                    d = previous if j == 0 else dilation
                    s_ = stride if j == 0 else 1
                    blocks.append(Block(c, planes, s_, bottleneck, d))
                    c = planes * 4 if bottleneck else planes
                setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
            self.fc = nn.Linear(c, 1000)

        def taps(self, x):
            out = {"stem": torch.relu(self.bn1(self.conv1(x)))}
            x = self.maxpool(out["stem"])
            for i in range(1, 5):
                x = out[f"layer{i}"] = getattr(self, f"layer{i}")(x)
            return out

    torch.manual_seed(depth)
    model = Net().eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.uniform_(m.weight, 0.5, 1.5)
                nn.init.normal_(m.bias, 0, 0.1)
                nn.init.normal_(m.running_mean, 0, 0.1)
                nn.init.uniform_(m.running_var, 0.5, 1.5)
                m.num_batches_tracked.fill_(7)
    return model


def randomize_keras_resnet(model, rng):
    """He-normal kernels, non-zero biases, random BatchNorm scales, offsets and statistics."""
    import keras

    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2D):
            kernel, bias = layer.get_weights()
            std = np.sqrt(2.0 / np.prod(kernel.shape[:-1]))
            layer.set_weights([rng.normal(0, std, kernel.shape), rng.normal(0, 0.1, bias.shape)])
        elif isinstance(layer, keras.layers.BatchNormalization):
            c = layer.get_weights()[0].shape
            gamma, beta = rng.uniform(0.3, 0.8, c), rng.normal(0, 0.1, c)
            layer.set_weights([gamma, beta, rng.normal(0, 0.1, c), rng.uniform(0.5, 1.5, c)])


def caffe_name(name):
    """keras.applications' layer name in the first Keras ResNet50 (Caffe's names)."""
    if name.startswith("conv1_"):
        return {"conv1_conv": "conv1", "conv1_bn": "bn_conv1"}[name]
    stage, block, k, kind = name.split("_")  # conv2, block1, 0, conv
    stage, block, k = stage[len("conv") :], int(block[len("block") :]), int(k)
    branch = "1" if k == 0 else "2" + "abc"[k - 1]
    return f"{'res' if kind == 'conv' else 'bn'}{stage}{'abcdef'[block - 1]}_branch{branch}"


def write_caffe_h5(path, layers):
    """A legacy Keras weights file by hand: ``{layer: [(weight name, array), ...]}``."""
    with h5py.File(path, "w") as f:
        names = ["input_1", *layers, "avg_pool"]
        f.attrs["layer_names"] = np.array([n.encode() for n in names])
        for layer in names:
            g = f.create_group(layer)
            found = layers.get(layer, [])
            g.attrs["weight_names"] = np.array([n.encode() for n, _ in found], dtype="S")
            for n, a in found:
                g.create_dataset(n, data=a)


def caffe_layers(model):
    """The Keras model's weights under the first Keras ResNet50's layer and weight names;
    each BatchNorm's tensors stored out of order (only their names tell them apart)."""
    import keras

    layers = {}
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2D):
            old = caffe_name(layer.name)
            kernel, bias = layer.get_weights()
            layers[old] = [(f"{old}_W:0", kernel), (f"{old}_b:0", bias)]
        elif isinstance(layer, keras.layers.BatchNormalization):
            old = caffe_name(layer.name)
            gamma, beta, mean, var = layer.get_weights()
            layers[old] = [
                (f"{old}_running_mean:0", mean),
                (f"{old}_gamma:0", gamma),
                (f"{old}_running_std:0", var),  # Keras 1's name of the moving variance
                (f"{old}_beta:0", beta),
            ]
    layers["fc1000"] = [("fc1000_W:0", np.ones((2048, 3))), ("fc1000_b:0", np.ones((3,)))]
    return layers


# ------------------------------------------------------------------------------------
# Numerical agreement with the source frameworks.
# ------------------------------------------------------------------------------------


@pytest.fixture(scope="module", params=[50, 18])
def torch_model(request):
    """A 1/16-width torchvision-style ResNet, a batch and its taps (NHWC)."""
    import torch

    torch.set_num_threads(1)
    model = torch_resnet(request.param, WIDTH)
    x = np.random.default_rng(4).normal(0, 2, (2, 64, 64, 3)).astype(np.float32)
    with torch.no_grad():
        taps = model.taps(torch.from_numpy(x).permute(0, 3, 1, 2))
    return request.param, model, x, {k: v.permute(0, 2, 3, 1).numpy() for k, v in taps.items()}


@pytest.mark.requires_torch
@pytest.mark.parametrize("fmt", ["pth", "safetensors"])
def test_torchvision_matches_torch(tmp_path, torch_model, fmt):
    import torch
    from safetensors.torch import save_file

    depth, model, x, taps = torch_model
    path = tmp_path / f"resnet{depth}-small.{fmt}"
    if fmt == "pth":
        torch.save(model.state_dict(), path)
    else:
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, path)
    variables, style, pre = load_resnet(path, depth=depth)
    assert (style, pre) == ("torchvision", TORCHVISION)
    shapes = resnet_shapes(depth, WIDTH)
    assert jax.tree.structure(variables) == jax.tree.structure(shapes)  # nothing left out
    assert jax.tree.map(np.shape, variables) == jax.tree.map(lambda s: s.shape, shapes)
    stem = model.conv1.weight.detach().numpy()  # (O, I, kh, kw) -> (kh, kw, I, O)
    np.testing.assert_array_equal(
        variables["params"]["conv1"]["kernel"][2, 5, 1, 3], stem[3, 1, 2, 5]
    )
    # Through into_backbone, as a model holding the ResNet as its `backbone` receives it.
    zeros = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), shapes)
    placed = {
        c: into_backbone({"backbone": zeros[c], "head": {}}, variables[c])["backbone"]
        for c in ("params", "batch_stats")
    }
    ours = resnet_forward(placed, x, depth=depth, width=WIDTH, style=style)
    for name in TAPS:
        assert_close(ours[name], taps[name])


@pytest.mark.requires_torch
def test_fcn_resnet50_matches_torchvisions_arithmetic(tmp_path):
    """FCNResNet against torchvision's ``fcn_resnet50`` arithmetic: the ResNet dilated to
    stride 8 (``replace_stride_with_dilation=[False, True, True]``), ``FCNHead`` on layer4
    and layer3, bilinear ``F.interpolate(..., align_corners=False)`` to an odd size."""
    import torch
    from safetensors.torch import save_file
    from torch import nn
    from torch.nn import functional as F

    from fcnjax.models import FCNResNet

    torch.set_num_threads(1)
    k = 5
    backbone = torch_resnet(50, WIDTH, dilate=(False, True, True))

    def head(c):  # torchvision.models.segmentation.fcn.FCNHead(c, k)
        m = nn.Sequential(
            nn.Conv2d(c, c // 4, 3, padding=1, bias=False),
            nn.BatchNorm2d(c // 4),
            nn.ReLU(),
            nn.Dropout(0.1),
            nn.Conv2d(c // 4, k, 1),
        )
        with torch.no_grad():
            nn.init.normal_(m[1].running_mean, 0, 0.1)
            nn.init.uniform_(m[1].running_var, 0.5, 1.5)
            nn.init.uniform_(m[1].weight, 0.5, 1.5)
        return m.eval()

    c4 = backbone.layer4[0].conv3.out_channels
    classifier, aux = head(c4), head(c4 // 2)
    x = np.random.default_rng(5).normal(0, 2, (2, 50, 42, 3)).astype(np.float32)
    with torch.no_grad():
        taps = backbone.taps(torch.from_numpy(x).permute(0, 3, 1, 2))
        assert taps["layer4"].shape[-2:] == (7, 6)  # stride 8: ceil(50 / 8), ceil(42 / 8)
        expected = (
            F.interpolate(
                classifier(taps["layer4"]), (50, 42), mode="bilinear", align_corners=False
            )
            .permute(0, 2, 3, 1)
            .numpy()
        )

    path = tmp_path / "resnet50.safetensors"
    save_file({k_: v.contiguous() for k_, v in backbone.state_dict().items()}, path)
    variables, style, _ = load_resnet(path)
    params, stats = {"backbone": variables["params"]}, {"backbone": variables["batch_stats"]}
    for name, m in (("classifier", classifier), ("aux_classifier", aux)):
        params[f"{name}_conv"] = {"kernel": m[0].weight.detach().numpy().transpose(2, 3, 1, 0)}
        params[f"{name}_bn"] = {
            "scale": m[1].weight.detach().numpy(),
            "bias": m[1].bias.detach().numpy(),
        }
        stats[f"{name}_bn"] = {"mean": m[1].running_mean.numpy(), "var": m[1].running_var.numpy()}
        params[f"{name}_out"] = {
            "kernel": m[4].weight.detach().numpy().transpose(2, 3, 1, 0),
            "bias": m[4].bias.detach().numpy(),
        }
    model = FCNResNet(k, aux_loss=True, width=WIDTH, backbone_style=style)
    shapes = jax.eval_shape(model.init, jax.random.key(0), x)
    assert jax.tree.structure({"params": params, "batch_stats": stats}) == jax.tree.structure(
        shapes
    )
    ours = jax.jit(model.apply)({"params": params, "batch_stats": stats}, x)
    assert_close(ours, expected)


@pytest.fixture(scope="module")
def keras_resnet50(tmp_path_factory):
    """keras.applications.ResNet50 (full width, 64x64), randomised; its legacy h5 and taps."""
    import keras

    rng = np.random.default_rng(5)
    model = keras.applications.ResNet50(weights=None, include_top=False, input_shape=(64, 64, 3))
    randomize_keras_resnet(model, rng)
    path = tmp_path_factory.mktemp("keras") / "resnet50_notop.h5"
    save_keras_legacy_h5(model, path)
    taps = keras.Model(model.input, [model.get_layer(n).output for n in KERAS_TAPS])
    x = rng.normal(0, 50, (2, 64, 64, 3)).astype(np.float32)
    return model, path, x, [np.asarray(t) for t in taps(x)]


def test_keras_applications_matches_keras(keras_resnet50):
    model, path, x, taps = keras_resnet50
    variables, style, pre = load_resnet(path, depth=50)
    assert (style, pre) == ("keras", KERAS_CAFFE)
    shapes = resnet_shapes(50, style="keras")
    assert jax.tree.map(np.shape, variables) == jax.tree.map(lambda s: s.shape, shapes)
    bn = model.get_layer("conv3_block1_0_bn").get_weights()  # gamma, beta, mean, variance
    np.testing.assert_array_equal(
        variables["batch_stats"]["layer2_0"]["downsample_bn"]["var"], bn[3]
    )
    ours = resnet_forward(variables, x, depth=50, width=1.0, style=style)
    for name, expected in zip(TAPS, taps):
        assert_close(ours[name], expected)


def test_caffe_names_load_the_same(tmp_path, keras_resnet50):
    model, path, _, _ = keras_resnet50
    old = tmp_path / "resnet50_caffe_names.h5"
    write_caffe_h5(old, caffe_layers(model))
    expected, _, _ = load_resnet(path, depth=50)
    variables, style, pre = load_resnet(old, depth=50)
    assert (style, pre) == ("keras", KERAS_CAFFE)
    assert jax.tree.structure(variables) == jax.tree.structure(expected)
    jax.tree.map(np.testing.assert_array_equal, variables, expected)


# ------------------------------------------------------------------------------------
# Parameter counts.
# ------------------------------------------------------------------------------------

# torchvision's published totals (ResNet*_Weights.IMAGENET1K_V1.meta["num_params"]), and
# the classifier fc: 512 (18, 34) or 2048 inputs, 1000 outputs.
TORCHVISION_PARAMS = {
    18: (11_689_512, 512),
    34: (21_797_672, 512),
    50: (25_557_032, 2048),
    101: (44_549_160, 2048),
    152: (60_192_808, 2048),
}


@pytest.mark.parametrize("depth", sorted(TORCHVISION_PARAMS))
def test_parameter_counts_match_torchvision(depth):
    total, features = TORCHVISION_PARAMS[depth]
    assert count(resnet_shapes(depth)["params"]) == total - (features * 1000 + 1000)


def test_parameter_counts_match_keras(keras_resnet50):
    model = keras_resnet50[0]
    shapes = resnet_shapes(50, style="keras")
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    assert count(shapes["params"]) == trainable == 23_534_592
    moving = sum(int(np.prod(w.shape)) for w in model.non_trainable_weights)
    assert count(shapes["batch_stats"]) == moving


# ------------------------------------------------------------------------------------
# Errors.
# ------------------------------------------------------------------------------------


def torchvision_state(depth, width, seed=0):
    """A random state dict in torchvision's key names and layouts for ``ResNet(depth,
    width=width)``, made without torch (Python 3.12 has none here) from fcnjax's variable
    shapes; ``fc`` and ``num_batches_tracked`` included, as in torchvision's files."""
    rng = np.random.default_rng(seed)
    shapes = resnet_shapes(depth, width)
    state = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(shapes)[0]:
        _, *names, last = [p.key for p in path]
        module = ".".join(names).replace("_", ".")
        module = module.replace("downsample.conv", "downsample.0").replace(
            "downsample.bn", "downsample.1"
        )
        key = {
            "kernel": "weight",
            "scale": "weight",
            "bias": "bias",
            "mean": "running_mean",
            "var": "running_var",
        }[last]
        shape = leaf.shape
        if last == "kernel":  # (kh, kw, I, O) -> torch's (O, I, kh, kw)
            shape = (shape[3], shape[2], shape[0], shape[1])
        value = rng.uniform(0.5, 1.5, shape) if last == "var" else rng.normal(0, 0.05, shape)
        state[f"{module}.{key}"] = value.astype(np.float32)
        if last == "var":
            state[f"{module}.num_batches_tracked"] = np.array(100, np.int64)
    channels = scaled(512, width) * (4 if DEPTHS[depth][1] else 1)  # layer4's output
    state["fc.weight"] = rng.normal(0, 0.05, (1000, channels)).astype(np.float32)
    state["fc.bias"] = np.zeros(1000, np.float32)
    return state


@pytest.fixture(scope="module")
def resnet50_state():
    return torchvision_state(50, WIDTH)


def test_torch_file_errors_listed_together(tmp_path, resnet50_state):
    from safetensors.numpy import save_file

    state = dict(resnet50_state)
    del state["layer2.1.bn2.running_var"]
    state["layer3.0.conv2.weight"] = state["layer3.0.conv2.weight"][:, :-1]  # C_in 16 -> 15
    state["layer1.0.conv1.bias"] = np.ones((4,), np.float32)  # torchvision's have no bias
    path = tmp_path / "broken.safetensors"
    save_file(state, path)
    with pytest.raises(ValueError) as info:
        load_resnet(path, depth=50)
    msg = str(info.value)
    for needle in (
        f"{path} does not hold ResNet-50 weights in the safetensors (torchvision names) layout",
        "missing: layer2.1.bn2.running_var",
        "layer3.0.conv2.weight: expected shape (16, 16, 3, 3), got (16, 15, 3, 3)",
        "unexpected: layer1.0.conv1.bias (4,)",
    ):
        assert needle in msg, (needle, msg)


def test_keras_file_errors_listed_together(tmp_path, keras_resnet50):
    layers = caffe_layers(keras_resnet50[0])
    del layers["bn3a_branch2b"]
    name, kernel = layers["res4b_branch2b"][0]
    layers["res4b_branch2b"][0] = (name, kernel[:, :, :-1])  # C_in 256 -> 255
    layers["bn2c_branch2c"] = [
        (n.replace("gamma", "weight"), a) for n, a in layers["bn2c_branch2c"]
    ]
    path = tmp_path / "broken.h5"
    write_caffe_h5(path, layers)
    with pytest.raises(ValueError) as info:
        load_resnet(path, depth=50)
    msg = str(info.value)
    for needle in (
        f"{path} does not hold ResNet-50 weights in the Keras HDF5 (Caffe names) layout",
        "missing: bn3a_branch2b scale",
        "missing: bn3a_branch2b var",
        "res4b_branch2b kernel (res4b_branch2b_W:0): expected shape (3, 3, 256, 256), got "
        "(3, 3, 255, 256)",
        "layer 'bn2c_branch2c': expected gamma, beta, moving mean, variance, found",
    ):
        assert needle in msg, (needle, msg)


@pytest.mark.parametrize(
    "file_depth, asked, needle",
    [
        (50, 101, "stages (3, 4, 6, 3) of bottleneck blocks, a ResNet-50"),
        (50, 34, "load it with depth=50."),
        (18, 50, "stages (2, 2, 2, 2) of basic blocks, a ResNet-18, not the ResNet-50 asked"),
    ],
)
def test_file_of_another_depth_says_which(tmp_path, resnet50_state, file_depth, asked, needle):
    from safetensors.numpy import save_file

    state = resnet50_state if file_depth == 50 else torchvision_state(18, WIDTH)
    path = tmp_path / f"resnet{file_depth}.safetensors"
    save_file(state, path)
    with pytest.raises(ValueError, match="this file holds a ResNet with stages") as info:
        load_resnet(path, depth=asked)
    assert needle in str(info.value) and f"depth={file_depth}" in str(info.value)
    with pytest.raises(ValueError, match="`depth` must be one of"):
        load_resnet(path, depth=42)


def test_vgg16_file_is_refused_clearly(tmp_path, rng):
    from safetensors.numpy import save_file

    path = tmp_path / "vgg16.safetensors"
    save_file(torch_layout_state(1 / 64, rng), path)
    with pytest.raises(
        ValueError, match="does not hold ResNet weights.*none of its .* tensors has a ResNet name"
    ) as info:
        load_resnet(path)
    assert "none of its 32 tensors" in str(info.value)
    assert "classifier.0.weight (64, 392)" in str(info.value)
    h5 = tmp_path / "vgg16.h5"
    write_keras_h5(h5, keras_layout_layers(1 / 64, rng))
    with pytest.raises(ValueError, match="none of its .* tensors has a ResNet name"):
        load_resnet(h5)


def test_into_backbone_nested_mismatches(tmp_path, resnet50_state):
    from safetensors.numpy import save_file

    path = tmp_path / "resnet50.safetensors"
    save_file(resnet50_state, path)
    variables, _, _ = load_resnet(path)
    model = resnet_shapes(50, width=1 / 8)  # twice the file's widths
    zeros = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), model)
    stats = dict(variables["batch_stats"], layer1_0={"bn9": {"mean": np.zeros(4)}})
    with pytest.raises(ValueError) as info:
        into_backbone({"backbone": zeros["batch_stats"]}, stats)
    msg = str(info.value)
    for needle in (
        "Cannot place the weights into params['backbone']",
        "layer1_0/bn9: not in params['backbone']['layer1_0']",
        "layer4_2/bn3/var: shape (128,) does not fit the model's (256,)",
    ):
        assert needle in msg, (needle, msg)
    params = {"backbone": {"conv1": {"kernel": zeros["params"]["conv1"]["kernel"]}}}
    with pytest.raises(ValueError) as info:
        into_backbone(params, {"conv1": {"kernel": {"x": 1}}, "layer9_0": {}})
    assert "conv1/kernel: not in params['backbone']['conv1']" in str(info.value)
    assert "layer9_0: not in params['backbone']" in str(info.value)


# ------------------------------------------------------------------------------------
# The published files (no network: patched).
# ------------------------------------------------------------------------------------


def test_published_files_and_checksums(tmp_path, monkeypatch):
    monkeypatch.setattr(requests, "get", _offline)
    with pytest.raises(WeightsUnavailableError) as info:
        load_resnet(depth=101, cache_dir=tmp_path / "offline")
    assert weights.TORCHVISION_RESNET_URLS[101] in str(info.value)
    assert str(tmp_path / "offline" / "resnet101-63fe2227.pth") in str(info.value)
    _serve(monkeypatch, b"not the weights")
    with pytest.raises(ValueError, match="expected sha256 0676ba61"):
        load_resnet(None, depth=50, cache_dir=tmp_path / "cache")
    with pytest.raises(ValueError, match="expected md5 4d473c1dd8becc155b73f8504c6f6626"):
        load_resnet(weights.KERAS_RESNET_URLS[50], cache_dir=tmp_path / "cache")
    assert not any((tmp_path / "cache").iterdir())


def test_into_backbone_skips_stages_the_encoder_does_not_build(tmp_path, resnet50_state, caplog):
    # keras-segmentation's U-Net reads f1 ... f4: its ResNet-50 stops after layer3.
    from safetensors.numpy import save_file

    path = tmp_path / "resnet50.safetensors"
    save_file(resnet50_state, path)
    variables, _, _ = load_resnet(path)
    model = ResNet(50, width=WIDTH, stages=3)
    shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.ones((1, 64, 64, 3)))
    zeros = {"backbone": jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), shapes["params"])}
    with pytest.raises(ValueError, match="layer4_0: not in params"):
        into_backbone(zeros, variables["params"])
    with caplog.at_level("INFO", logger="fcnjax.weights"):
        placed = into_backbone(zeros, variables["params"], skip_unbuilt=True)
    assert "layer4_0" not in placed["backbone"] and "layer4_0" in caplog.text
    np.testing.assert_array_equal(
        placed["backbone"]["layer3_5"]["conv3"]["kernel"],
        variables["params"]["layer3_5"]["conv3"]["kernel"],
    )
    with pytest.raises(ValueError, match="shape"):  # a misfit of a built layer still fails
        small = {"layer1_0": {"conv1": {"kernel": np.zeros((1, 1, 3, 3))}}}
        into_backbone(zeros, small, skip_unbuilt=True)
