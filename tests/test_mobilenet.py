"""MobileNet encoders (issue 27): keras-segmentation's MobileNet v1 and its four networks
(``mobilenet_unet``, ``mobilenet_segnet``, ``fcn_8_mobilenet``, ``fcn_32_mobilenet``), and
MobileNetV2 in Keras' and torchvision's arithmetic.

Oracles: Keras built from keras-segmentation's published code (``mobilenet.py``,
``unet.py``, ``segnet.py``, ``fcn.py``), ``keras.applications.MobileNet``/``MobileNetV2``
(their files written by Keras' legacy HDF5 writer), and a PyTorch module written here with
torchvision's ``mobilenet_v2`` names and arithmetic (torchvision does not install here),
with segmentation_models_pytorch's ``make_dilated``. Every network randomly initialised,
BatchNorm statistics included; no test touches the network.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import requests

from fcnjax import models, ops, weights
from fcnjax.models import EncoderFCN, EncoderSegNet, EncoderUNet, MobileNet, MobileNetV2
from fcnjax.models.mobilenet import MOBILENET_V2_TAPS, is_mobilenet_layer
from fcnjax.training import tasks
from tests.test_encoders import _config, _initial, keras_segmentation, trainable
from tests.test_keras_segmentation_names import TOP_LEVEL, keras_fcn
from tests.test_models import count, rel_err, shapes_of
from tests.test_weights import (
    _offline,
    _serve,
    assert_close,
    keras_layout_layers,
    save_keras_legacy_h5,
    write_keras_h5,
)

pytestmark = pytest.mark.usefixtures("cheap_compiles")

NAMES = ("mobilenet_unet", "mobilenet_segnet", "fcn_8_mobilenet", "fcn_32_mobilenet")
V1_TAPS = ("conv_pw_1_relu", "conv_pw_3_relu", "conv_pw_5_relu", "conv_pw_11_relu")
V1_TAPS += ("conv_pw_13_relu",)
# keras.applications.MobileNetV2's layers at smp's levels (fcnjax: block_0_project_BN).
KERAS_V2_TAPS = ("expanded_conv_project_BN", "block_2_add", "block_5_add", "block_12_add")
KERAS_V2_TAPS += ("out_relu",)


# ------------------------------------------------------------------------------------
# keras-segmentation's MobileNet networks in Keras, from its code.
# ------------------------------------------------------------------------------------


def keras_mobilenet_encoder(shape, width=1.0):
    """``get_mobilenet_encoder`` (mobilenet.py) with ``alpha = width``: ``(img_input,
    [f1, ..., f5])``; every 3x3 convolution after ``ZeroPadding2D((1, 1))``."""
    from keras import layers as kl

    zeros = {"kernel_initializer": "zeros", "use_bias": False}
    img_input = kl.Input(shape)
    x = kl.ZeroPadding2D((1, 1), name="conv1_pad")(img_input)
    x = kl.Conv2D(int(32 * width), (3, 3), strides=(2, 2), name="conv1", **zeros)(x)
    x = kl.ReLU(6.0, name="conv1_relu")(kl.BatchNormalization(name="conv1_bn")(x))
    blocks = [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2)]
    blocks += [(512, 1)] * 5 + [(1024, 2), (1024, 1)]
    levels = []
    for i, (filters, stride) in enumerate(blocks, 1):
        x = kl.ZeroPadding2D((1, 1), name=f"conv_pad_{i}")(x)
        x = kl.DepthwiseConv2D(
            (3, 3),
            strides=stride,
            use_bias=False,
            depthwise_initializer="zeros",
            name=f"conv_dw_{i}",
        )(x)
        x = kl.ReLU(6.0)(kl.BatchNormalization(name=f"conv_dw_{i}_bn")(x))
        x = kl.Conv2D(int(filters * width), (1, 1), name=f"conv_pw_{i}", **zeros)(x)
        x = kl.BatchNormalization(name=f"conv_pw_{i}_bn")(x)
        x = kl.ReLU(6.0, name=f"conv_pw_{i}_relu")(x)
        if i in (1, 3, 5, 11, 13):
            levels.append(x)
    return img_input, levels


def keras_model(name, shape, n_classes, width=1.0):
    """keras-segmentation's ``name`` (its ``model_from_name``) before reshape and softmax."""
    import keras

    img_input, levels = keras_mobilenet_encoder(shape, width)
    if name in ("mobilenet_unet", "mobilenet_segnet"):  # _unet / _segnet read levels[:4]
        decoder = name.split("_")[1]
        out = keras_segmentation(decoder, levels[:4], n_classes, width)
    else:
        out = keras_fcn("8s" if name == "fcn_8_mobilenet" else "32s", levels, n_classes, width)
    return keras.Model(img_input, out)


def randomize(model, seed, x):
    """Random weights under which ``x``'s features stay alive through every layer (with
    mere random BatchNorm statistics the constant offsets swamp the input within a few
    blocks, and a misplaced pixel goes unseen): random kernels (variance 2 / fan-in),
    then each BatchNorm's statistics those of ``x``'s batch (one training-mode call with
    momentum 0), randomly perturbed."""
    import keras

    rng = np.random.default_rng(seed)
    norms = [la for la in model.layers if isinstance(la, keras.layers.BatchNormalization)]
    for w in model.weights:
        shape, leaf = tuple(w.shape), w.path.rsplit("/", 1)[-1]
        if leaf == "gamma":
            value = rng.uniform(0.5, 1.0, shape)
        elif len(shape) == 4:
            fan_in = 9 if "depthwise" in leaf else int(np.prod(shape[:-1]))
            value = rng.standard_normal(shape) * np.sqrt(2 / fan_in)
        else:  # biases, beta (the statistics are set below)
            value = rng.normal(0, 0.1, shape)
        w.assign(value.astype(np.float32))
    for la in norms:
        la.momentum = 0.0
    model(x, training=True)
    for la in norms:
        var = np.asarray(la.moving_variance)
        var = np.maximum(var, 0.1 * np.median(var))  # no channel blown up
        var *= rng.uniform(0.7, 1.3, var.shape)
        mean = np.asarray(la.moving_mean) + rng.normal(0, 0.1, var.shape) * np.sqrt(var)
        la.moving_variance.assign(var.astype(np.float32))
        la.moving_mean.assign(mean.astype(np.float32))
        la.momentum = 0.99
    return model


def lively(taps):
    """Features of a batch's two (random) images that differ, at every tap, by 100 times
    the tests' tolerance (not only the constant offsets of the biases), and that ReLU6
    mostly leaves unclipped: an oracle that a misplaced pixel fails."""
    for t in taps:
        t = np.asarray(t, np.float64)
        apart = np.abs(t[0] - t[1]).max() / np.abs(t).max()
        assert apart > 0.01 and np.mean(t == 6) < 0.15, (apart, np.mean(t == 6))
    return taps


def flax_variables(ref):
    """fcnjax's variables from the Keras model: the MobileNet's layers into ``backbone``
    (depthwise kernels ``(3, 3, C, 1)`` -> ``(3, 3, 1, C)``), the named FCN head at the top,
    keras_segmentation()'s unnamed decoder layers in order."""
    import keras

    params, stats = {}, {}
    convs = iter(["conv1", "conv2", "conv3", "conv4", "classifier"])
    bns = iter(["bn1", "bn2", "bn3", "bn4"])
    for la in ref.layers:
        if not la.weights:
            continue
        bn = isinstance(la, keras.layers.BatchNormalization)
        if is_mobilenet_layer(la.name):
            path, name = "backbone", la.name
        elif la.name.startswith(TOP_LEVEL):
            path, name = None, la.name
        else:
            path, name = "decoder", next(bns) if bn else next(convs)
        p = params.setdefault(path, {}) if path else params
        if bn:
            p[name] = {"scale": np.asarray(la.gamma), "bias": np.asarray(la.beta)}
            s = stats.setdefault(path, {}) if path else stats
            s[name] = {"mean": np.asarray(la.moving_mean), "var": np.asarray(la.moving_variance)}
        elif isinstance(la, keras.layers.Conv2DTranspose):
            p[name] = {"kernel": np.asarray(ops.kernel_from_keras(la.kernel))}
        elif isinstance(la, keras.layers.DepthwiseConv2D):
            p[name] = {"kernel": np.asarray(la.kernel).transpose(0, 1, 3, 2)}
        else:
            p[name] = {"kernel": np.asarray(la.kernel)}
            if la.use_bias:
                p[name]["bias"] = np.asarray(la.bias)
    return {"params": params, "batch_stats": stats}


@pytest.mark.parametrize("name", NAMES)
def test_parameter_counts_equal_keras_segmentations(name):
    """At full width and keras-segmentation's 224x224; fcnjax's are the same at any size."""
    import keras

    ref = keras_model(name, (224, 224, 3), 21)
    n_params = trainable(ref)
    n_stats = sum(int(np.prod(w.shape)) for w in ref.non_trainable_weights)
    del ref
    keras.backend.clear_session()
    model = models.get(name, num_classes=21)
    for shape in ((1, 224, 224, 3), (1, 97, 131, 3)):
        variables, logits = shapes_of(model, jax.ShapeDtypeStruct(shape, jnp.float32))
        assert logits.shape == (*shape[:3], 21)
        assert count(variables["params"]) == n_params, (name, shape)
        assert count(variables["batch_stats"]) == n_stats


@pytest.mark.parametrize("name", NAMES)
def test_logits_equal_keras_on_the_same_weights(name):
    width, k, size = 1 / 8, 3, (64, 96)
    import keras

    ref = keras_model(name, (*size, 3), k, width)
    x = np.random.default_rng(5).standard_normal((2, *size, 3)).astype(np.float32)
    randomize(ref, 4, x)
    deepest = "conv_pw_13_relu" if name.startswith("fcn") else "conv_pw_11_relu"
    lively([keras.Model(ref.input, ref.get_layer(deepest).output)(x)])
    model = models.get(name, num_classes=k, width=width)
    variables = flax_variables(ref)
    expected_tree = jax.eval_shape(model.init, jax.random.key(0), x)
    assert jax.tree.map(np.shape, variables) == jax.tree.map(lambda s: s.shape, expected_tree)
    ours = jax.jit(model.apply)(variables, x)
    keras_out = ref.predict(x, verbose=0)
    if name.startswith("fcn"):  # keras-segmentation's "valid" output: f / 2 more each side
        f = 8 if name == "fcn_8_mobilenet" else 32
        assert keras_out.shape == (2, size[0] + f, size[1] + f, k)
        expected = keras_out[:, f // 2 : f // 2 + size[0], f // 2 : f // 2 + size[1]]
    else:  # scores at stride 2, resized to the input
        assert keras_out.shape == (2, size[0] // 2, size[1] // 2, k)
        expected = jax.image.resize(keras_out, (2, *size, k), "bilinear")
    assert rel_err(ours, expected) < 1e-4


# ------------------------------------------------------------------------------------
# Any input size, one training step, names.
# ------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [(97, 131), (33, 17)])
@pytest.mark.parametrize("name", NAMES)
def test_any_input_size(name, size):
    x = jax.ShapeDtypeStruct((2, *size, 3), jnp.float32)
    _, logits = shapes_of(models.get(name, num_classes=4, width=0.125), x)
    assert logits.shape == (2, *size, 4)


TINY = {
    "mobilenet_unet": EncoderUNet(3, backbone="mobilenet", width=1 / 16),
    "mobilenet_segnet": EncoderSegNet(3, backbone="mobilenet", width=1 / 16),
    "fcn_8_mobilenet": EncoderFCN(3, backbone="mobilenet", width=1 / 16),
    "fcn_32_mobilenet": EncoderFCN(3, "32s", backbone="mobilenet", width=1 / 16),
}


@pytest.mark.parametrize("name", TINY)
def test_one_training_step(name):
    model = TINY[name]
    x = jnp.asarray(np.random.default_rng(6).uniform(size=(2, 37, 45, 3)), jnp.float32)
    variables = jax.jit(model.init)(jax.random.key(0), x)
    params, stats = variables["params"], variables["batch_stats"]
    mask = jnp.asarray(np.random.default_rng(7).integers(0, 3, (2, 37, 45)), jnp.int32)

    def loss(p):
        out, new = model.apply(
            {"params": p, "batch_stats": stats},
            x,
            train=True,
            rngs={"dropout": jax.random.key(2)},
            mutable=["batch_stats"],
        )
        assert out.shape == (2, 37, 45, 3)
        task = tasks.Segmentation(3)
        return task.loss(task.loss_sums(out, {"mask": mask})), new

    (value, new), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(params)
    assert np.isfinite(float(value))
    for path, g in jax.tree_util.tree_leaves_with_path(grads):
        assert np.all(np.isfinite(g)), jax.tree_util.keystr(path)
        assert float(jnp.abs(g).max()) > 0, jax.tree_util.keystr(path)
    changed = jax.tree.map(lambda a, b: bool(jnp.any(a != b)), stats, dict(new["batch_stats"]))
    assert all(jax.tree.leaves(changed))


def test_names_backbones_and_freezing():
    for name in NAMES:
        assert name in models.NAMES and name in models.REFERENCES
        assert models.backbone_of(name) == "mobilenet"
        model = models.get(name.replace("_", "-").upper(), num_classes=2)
        assert model.backbone == "mobilenet"
    assert models.get("fcn_32_mobilenet", num_classes=2).variant == "32s"
    assert {"mobilenet", "mobilenet_v2"} <= set(models.encoders.PRETRAINABLE)
    variables, _ = shapes_of(models.get("mobilenet_unet", num_classes=2), jnp.zeros((1, 64, 64, 3)))
    mask = models.backbone_mask(variables["params"])
    assert all(jax.tree.leaves(mask["backbone"])) and not any(jax.tree.leaves(mask["decoder"]))
    assert "conv_dw_11" in variables["params"]["backbone"]  # f4: blocks 12, 13 unbuilt
    assert "conv_dw_12" not in variables["params"]["backbone"]
    with pytest.raises(ValueError, match="`backbone` must be one of"):
        shapes_of(models.FCN(2, backbone="mobilenet"), jnp.zeros((1, 64, 64, 3)))
    with pytest.raises(ValueError, match="`output_stride` must be 32 for mobilenet"):
        models.encoders.encoder("mobilenet", output_stride=16)


# ------------------------------------------------------------------------------------
# Weights: Keras' MobileNet file into keras-segmentation's encoder.
# ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def keras_v1_file(tmp_path_factory):
    """keras.applications.MobileNet (alpha 0.25, 64x64), randomised, as its legacy h5."""
    import keras

    net = keras.applications.MobileNet(
        include_top=False, weights=None, alpha=0.25, input_shape=(64, 64, 3)
    )
    path = tmp_path_factory.mktemp("keras") / "mobilenet_0_25_no_top.h5"
    x = np.random.default_rng(7).standard_normal((2, 64, 64, 3)).astype(np.float32)
    save_keras_legacy_h5(randomize(net, 8, x), path)
    return net, path


def test_keras_mobilenet_file_gives_keras_segmentations_features(keras_v1_file):
    """keras-segmentation loads Keras' file by name into its encoder (symmetric padding)."""
    import keras

    net, path = keras_v1_file
    variables, pre = weights.load_mobilenet(path)
    assert pre == weights.KERAS_TF
    np.testing.assert_allclose(pre(np.array([0.0, 127.5, 255.0])), [-1.0, 0.0, 1.0])
    model = MobileNet(width=0.25)
    x = np.random.default_rng(9).standard_normal((2, 64, 96, 3)).astype(np.float32)
    shapes = jax.eval_shape(model.init, jax.random.key(0), x)
    assert jax.tree.map(np.shape, variables) == jax.tree.map(lambda s: s.shape, shapes)
    img_input, levels = keras_mobilenet_encoder((64, 96, 3), 0.25)
    ref = keras.Model(img_input, levels)
    ref.load_weights(str(path), by_name=True)  # as get_mobilenet_encoder does
    np.testing.assert_array_equal(
        ref.get_layer("conv_pw_4").kernel, net.get_layer("conv_pw_4").kernel
    )
    ours = jax.jit(model.apply)(variables, x)
    for tap, expected in zip(V1_TAPS, lively(ref(x))):
        assert_close(ours[tap], np.asarray(expected), 1e-4)
    n_params = sum(int(np.prod(w.shape)) for w in net.trainable_weights)
    assert count(shapes["params"]) == n_params


def test_backbone_weights_reach_mobilenet_unet(keras_v1_file, caplog):
    _, path = keras_v1_file
    variables, _ = weights.load_mobilenet(path)
    with caplog.at_level("INFO", logger="fcnjax"):
        params, stats = _initial(_config("mobilenet_unet", path, width=0.25))
    np.testing.assert_array_equal(
        params["backbone"]["conv_dw_7"]["kernel"], variables["params"]["conv_dw_7"]["kernel"]
    )
    np.testing.assert_array_equal(
        stats["backbone"]["conv_pw_11_bn"]["var"], variables["batch_stats"]["conv_pw_11_bn"]["var"]
    )
    assert not np.any(params["decoder"]["conv1"]["kernel"])
    assert "conv_dw_12" in caplog.text and "does not use" in caplog.text


# ------------------------------------------------------------------------------------
# Weights: MobileNetV2 from Keras and torchvision.
# ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def keras_v2(tmp_path_factory):
    """keras.applications.MobileNetV2 (alpha 0.35, 65x47: odd and even sizes meet
    correct_pad), randomised; its legacy h5 and its taps."""
    import keras

    net = keras.applications.MobileNetV2(
        include_top=False, weights=None, alpha=0.35, input_shape=(65, 47, 3)
    )
    path = tmp_path_factory.mktemp("keras") / "mobilenet_v2_0.35_no_top.h5"
    x = np.random.default_rng(11).standard_normal((2, 65, 47, 3)).astype(np.float32)
    save_keras_legacy_h5(randomize(net, 10, x), path)
    taps = keras.Model(net.input, [net.get_layer(n).output for n in KERAS_V2_TAPS])(x)
    return net, path, x, lively([np.asarray(t) for t in taps])


def test_keras_mobilenet_v2_matches_keras(keras_v2):
    net, path, x, taps = keras_v2
    variables, style, pre = weights.load_mobilenet_v2(path)
    assert (style, pre) == ("keras", weights.KERAS_TF)
    model = MobileNetV2(0.35, style="keras")
    shapes = jax.eval_shape(model.init, jax.random.key(0), x)
    assert jax.tree.map(np.shape, variables) == jax.tree.map(lambda s: s.shape, shapes)
    assert count(shapes["params"]) == sum(int(np.prod(w.shape)) for w in net.trainable_weights)
    ours = jax.jit(model.apply)(variables, x)
    for tap, expected in zip(MOBILENET_V2_TAPS, taps):
        assert_close(ours[tap], expected, 1e-4)


def torch_mobilenet_v2(width, seed=0):
    """torchvision.models.mobilenet_v2's module tree and arithmetic (``width_mult``), its
    convolutions initialised by torch's default from ``seed``."""
    import torch
    from torch import nn

    torch.manual_seed(seed)

    def divisible(v, d=8):  # torchvision's _make_divisible
        new = max(d, int(v + d / 2) // d * d)
        return new + d if new < 0.9 * v else new

    def cna(c_in, c_out, k=3, stride=1, groups=1):  # Conv2dNormActivation, ReLU6
        conv = nn.Conv2d(c_in, c_out, k, stride, (k - 1) // 2, groups=groups, bias=False)
        return nn.Sequential(conv, nn.BatchNorm2d(c_out), nn.ReLU6())

    class InvertedResidual(nn.Module):
        def __init__(self, inp, oup, stride, t):
            super().__init__()
            hidden = int(round(inp * t))
            self.use_res_connect = stride == 1 and inp == oup
            layers = [cna(inp, hidden, 1)] if t != 1 else []
            layers += [cna(hidden, hidden, 3, stride, hidden)]
            layers += [nn.Conv2d(hidden, oup, 1, 1, 0, bias=False), nn.BatchNorm2d(oup)]
            self.conv = nn.Sequential(*layers)

        def forward(self, x):
            return x + self.conv(x) if self.use_res_connect else self.conv(x)

    setting = [[1, 16, 1, 1], [6, 24, 2, 2], [6, 32, 3, 2], [6, 64, 4, 2]]
    setting += [[6, 96, 3, 1], [6, 160, 3, 2], [6, 320, 1, 1]]
    c = divisible(32 * width)
    last = divisible(1280 * max(1.0, width))
    features = [cna(3, c, stride=2)]
    for t, ch, n, s in setting:
        out = divisible(ch * width)
        for i in range(n):
            features.append(InvertedResidual(c, out, s if i == 0 else 1, t))
            c = out
    features.append(cna(c, last, 1))
    net = nn.Module()
    net.features = nn.Sequential(*features)
    net.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(last, 1000))
    return net


def calibrate(net, x, seed=12):
    """``net`` in eval mode, its BatchNorm statistics those of ``x``'s batch (one
    training-mode pass), randomly perturbed, its affine parameters random (as
    :func:`randomize` does for Keras)."""
    import torch
    from torch import nn

    norms = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    for m in norms:
        m.momentum = None  # the cumulative average: after one batch, its statistics
    with torch.no_grad():
        net.train().features(torch.from_numpy(x).permute(0, 3, 1, 2))
        gen = torch.Generator().manual_seed(seed)
        for m in norms:
            shape = m.weight.shape
            m.running_var.clamp_(min=0.1 * float(m.running_var.median())).mul_(
                torch.rand(shape, generator=gen) * 0.6 + 0.7
            )
            m.running_mean.add_(torch.randn(shape, generator=gen) * 0.1 * m.running_var.sqrt())
            m.weight.copy_(torch.rand(shape, generator=gen) * 0.5 + 0.5)
            m.bias.copy_(torch.randn(shape, generator=gen) * 0.1)
            m.momentum = 0.1
    return net.eval()


def make_dilated(net, output_stride):
    """A copy of ``net`` through segmentation_models_pytorch's ``make_dilated``: every
    convolution of each stage past ``output_stride`` at stride 1, dilated by the stage's
    stride over ``output_stride`` (``replace_strides_with_dilation``)."""
    import copy

    from torch import nn

    net = copy.deepcopy(net)
    stages = {16: net.features[7:14], 32: net.features[14:]}
    for stride, stage in stages.items():
        if stride > output_stride:
            rate = stride // output_stride
            for m in stage.modules():
                if isinstance(m, nn.Conv2d):
                    m.stride, m.dilation = (1, 1), (rate, rate)
                    m.padding = ((m.kernel_size[0] // 2) * rate,) * 2
    return net


def torch_taps(net, x):
    """smp's MobileNetV2Encoder levels: the outputs of features 1, 3, 6, 13, 18 (NHWC)."""
    import torch

    out, h = [], torch.from_numpy(x).permute(0, 3, 1, 2)
    with torch.no_grad():
        for i, m in enumerate(net.features):
            h = m(h)
            if i in (1, 3, 6, 13, 18):
                out.append(h.permute(0, 2, 3, 1).numpy())
    return out


@pytest.mark.requires_torch
@pytest.mark.parametrize("fmt", ["pth", "safetensors"])
def test_torchvision_mobilenet_v2_matches_torch(tmp_path, fmt):
    import torch

    x = np.random.default_rng(13).standard_normal((2, 45, 38, 3)).astype(np.float32)
    net = calibrate(torch_mobilenet_v2(0.25), x)
    path = tmp_path / f"mobilenet_v2.{fmt}"
    state = {k: v.contiguous() for k, v in net.state_dict().items()}
    if fmt == "pth":
        torch.save(state, path)
    else:
        from safetensors.torch import save_file

        save_file(state, path)
    variables, style, pre = weights.load_mobilenet_v2(path)
    assert (style, pre) == ("torchvision", weights.TORCHVISION)
    for output_stride in (32, 16, 8):
        model = MobileNetV2(0.25, output_stride=output_stride)
        shapes = jax.eval_shape(model.init, jax.random.key(0), x)
        assert jax.tree.map(np.shape, variables) == jax.tree.map(lambda s: s.shape, shapes)
        ours = jax.jit(model.apply)(variables, x)
        expected = lively(torch_taps(make_dilated(net, output_stride), x))
        if output_stride == 8:
            assert expected[4].shape[1:3] == (6, 5)  # ceil(45 / 8), ceil(38 / 8)
        for tap, e in zip(MOBILENET_V2_TAPS, expected):
            assert_close(ours[tap], e, 1e-4)
        if fmt == "safetensors":
            break


def test_parameter_counts_match_torchvision_and_keras():
    # torchvision's MobileNet_V2_Weights.IMAGENET1K_V1.meta["num_params"] less its
    # classifier (1280 x 1000 + 1000); Keras' MobileNetV2 without top has the same.
    x = jnp.zeros((1, 224, 224, 3))
    for style in ("torchvision", "keras"):
        shapes = jax.eval_shape(MobileNetV2(style=style).init, jax.random.key(0), x)
        assert count(shapes["params"]) == 3_504_872 - 1_281_000 == 2_223_872
    shapes = jax.eval_shape(MobileNet().init, jax.random.key(0), x)
    assert count(shapes["params"]) == 3_206_976  # keras.applications.MobileNet(1.0), no top
    assert count(shapes["batch_stats"]) == 2 * 10_944


# ------------------------------------------------------------------------------------
# Files of another network, damaged files, the published files.
# ------------------------------------------------------------------------------------


def test_file_of_another_network_says_what_it_holds(tmp_path, keras_v1_file, keras_v2, rng):
    from safetensors.numpy import save_file

    from tests.test_resnet_weights import torchvision_state

    with pytest.raises(ValueError, match="holds a MobileNetV2 .load it with load_mobilenet_v2"):
        weights.load_mobilenet(keras_v2[1])
    with pytest.raises(ValueError, match="holds a MobileNet v1 .load it with load_mobilenet."):
        weights.load_mobilenet_v2(keras_v1_file[1])
    resnet = tmp_path / "resnet18.safetensors"
    save_file(torchvision_state(18, 1 / 16), resnet)
    for load in (weights.load_mobilenet, weights.load_mobilenet_v2):
        with pytest.raises(ValueError, match="holds a ResNet .load it with load_resnet") as info:
            load(resnet)
        assert "its 122 tensors: bn1.bias (4,)" in str(info.value)
    vgg = tmp_path / "vgg16.h5"
    write_keras_h5(vgg, keras_layout_layers(1 / 64, rng))
    with pytest.raises(ValueError, match="holds a VGG16 .load it with load_vgg16"):
        weights.load_mobilenet(vgg)


@pytest.mark.requires_torch
def test_file_errors_listed_together(tmp_path):
    from safetensors.numpy import save_file

    net = torch_mobilenet_v2(0.25)
    state = {k: v.numpy() for k, v in net.state_dict().items()}
    del state["features.5.conv.1.0.weight"]  # block 4's depthwise kernel
    state["features.18.1.running_var"] = np.ones((7,), np.float32)
    state["features.19.weight"] = np.ones((3,), np.float32)
    path = tmp_path / "broken.safetensors"
    save_file(state, path)
    with pytest.raises(ValueError) as info:
        weights.load_mobilenet_v2(path)
    message = str(info.value)
    assert "does not hold MobileNetV2 weights in the safetensors (torchvision names)" in message
    assert "missing: features.5.conv.1.0.weight" in message
    assert "unexpected: features.19.weight (3,)" in message
    assert "features.18.1.running_var: expected shape (1280), got (7,)" in message


def test_published_files(tmp_path, monkeypatch, keras_v1_file):
    monkeypatch.setattr(requests, "get", _offline)
    with pytest.raises(weights.WeightsUnavailableError) as info:
        weights.load_mobilenet(cache_dir=tmp_path / "offline")
    assert weights.KERAS_MOBILENET_URL in str(info.value)
    assert str(tmp_path / "offline" / "mobilenet_1_0_224_tf_no_top.h5") in str(info.value)
    _serve(monkeypatch, b"not the weights")
    with pytest.raises(ValueError, match="expected sha256 b0353104"):  # in torchvision's name
        weights.load_mobilenet_v2(cache_dir=tmp_path / "cache")
    _serve(monkeypatch, keras_v1_file[1].read_bytes())  # Keras publishes no checksum
    variables, _ = weights.load_mobilenet(cache_dir=tmp_path / "cache")
    assert variables["params"]["conv1"]["kernel"].shape == (3, 3, 3, 8)


def test_imagenet_means_each_styles_file(monkeypatch, tmp_path, keras_v2):
    from fcnjax.config import ConfigError
    from fcnjax.training import experiment

    asked = []

    def fake_load(path):
        asked.append(path)
        raise RuntimeError("stop here")

    monkeypatch.setattr(weights, "load_mobilenet_v2", fake_load)
    experiment._load_backbone.cache_clear()
    for style in ("keras", "torchvision"):
        with pytest.raises(RuntimeError, match="stop here"):
            _initial(_config("unet", "imagenet", backbone="mobilenet_v2", backbone_style=style))
    assert asked == [weights.KERAS_MOBILENET_V2_URL, None]  # None: torchvision's
    monkeypatch.undo()
    experiment._load_backbone.cache_clear()
    config = _config("unet", keras_v2[1], backbone="mobilenet_v2", width=0.35)
    with pytest.raises(
        ConfigError, match="keras-style mobilenet_v2 .*: set model.backbone_style='keras'"
    ):
        _initial(config)
    config = _config(
        "unet", keras_v2[1], backbone="mobilenet_v2", width=0.35, backbone_style="keras"
    )
    params, _ = _initial(config)
    assert params["backbone"]["block_0_depthwise"]["kernel"].shape == (3, 3, 1, 16)
    experiment._load_backbone.cache_clear()
