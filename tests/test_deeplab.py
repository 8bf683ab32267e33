"""DeepLabV3 (torchvision's ``deeplabv3_resnet50``/``101``) and DeepLabV3+
(segmentation_models_pytorch's ``DeepLabV3Plus``): parameter counts (torchvision's
published ones; smp's counted on a PyTorch module written here with smp's names and
arithmetic), logits on the same weights against PyTorch modules written with
torchvision's and smp's code (neither installs beside the pinned torch), the weights
moved by :func:`fcnjax.weights.segmentation_variables`; training steps; any input size."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fcnjax import models, ops, weights
from fcnjax.models import DeepLabV3, DeepLabV3Plus
from fcnjax.models.vgg import scaled
from fcnjax.training import tasks
from tests.test_models import count, shapes_of
from tests.test_resnet_weights import WIDTH, torch_resnet
from tests.test_weights import assert_close

pytestmark = pytest.mark.usefixtures("cheap_compiles")

IMAGE = jax.ShapeDtypeStruct((1, 97, 131, 3), jnp.float32)


# ------------------------------------------------------------------------------------
# torchvision's and smp's modules, widths scaled (``f`` for their 256, ``low`` for 48).
# ------------------------------------------------------------------------------------


def torch_aspp(c_in, f, rates, separable=False, dropout=0.5):
    """torchvision's ``ASPP`` (``deeplabv3.py``), or smp's with ``separable``
    (``decoders/deeplabv3/decoder.py``: ``ASPPSeparableConv``)."""
    import torch
    from torch import nn
    from torch.nn import functional as F

    class ASPPPooling(nn.Sequential):
        def __init__(self):
            pool, conv = nn.AdaptiveAvgPool2d(1), nn.Conv2d(c_in, f, 1, bias=False)
            super().__init__(pool, conv, nn.BatchNorm2d(f), nn.ReLU())

        def forward(self, x):
            size = x.shape[-2:]
            for mod in self:
                x = mod(x)
            return F.interpolate(x, size=size, mode="bilinear", align_corners=False)

    def branch(rate):
        if separable:
            conv = torch_separable(c_in, f, 3, padding=rate, dilation=rate, bias=False)
        else:
            conv = nn.Conv2d(c_in, f, 3, padding=rate, dilation=rate, bias=False)
        return nn.Sequential(conv, nn.BatchNorm2d(f), nn.ReLU())

    class ASPP(nn.Module):
        def __init__(self):
            super().__init__()
            first = nn.Sequential(nn.Conv2d(c_in, f, 1, bias=False), nn.BatchNorm2d(f), nn.ReLU())
            self.convs = nn.ModuleList([first, *map(branch, rates), ASPPPooling()])
            self.project = nn.Sequential(
                nn.Conv2d(len(self.convs) * f, f, 1, bias=False),
                nn.BatchNorm2d(f),
                nn.ReLU(),
                nn.Dropout(dropout),
            )

        def forward(self, x):
            return self.project(torch.cat([conv(x) for conv in self.convs], dim=1))

    return ASPP()


def torch_separable(c_in, c_out, k, padding=0, dilation=1, bias=True):
    """smp's ``SeparableConv2d``: depthwise, then pointwise."""
    from torch import nn

    depthwise = nn.Conv2d(
        c_in, c_in, k, padding=padding, dilation=dilation, groups=c_in, bias=False
    )
    return nn.Sequential(depthwise, nn.Conv2d(c_in, c_out, 1, bias=bias))


def torch_fcn_head(c, k, dropout=0.1):
    """torchvision's ``FCNHead``."""
    from torch import nn

    inter = c // 4
    return nn.Sequential(
        nn.Conv2d(c, inter, 3, padding=1, bias=False),
        nn.BatchNorm2d(inter),
        nn.ReLU(),
        nn.Dropout(dropout),
        nn.Conv2d(inter, k, 1),
    )


def torch_deeplabv3(depth, k, width, dropout=0.5, aux_dropout=0.1, rates=(12, 24, 36)):
    """torchvision's ``deeplabv3_resnet{depth}`` with ``aux_loss``: ResNet with
    ``replace_stride_with_dilation=[False, True, True]``, ``DeepLabHead`` on layer4,
    ``FCNHead`` on layer3, bilinear ``align_corners=False`` to the input."""
    from torch import nn
    from torch.nn import functional as F

    f = scaled(256, width)

    class DeepLabV3(nn.Module):
        def __init__(self):
            super().__init__()
            self.backbone = torch_resnet(depth, width, dilate=(False, True, True))
            del self.backbone.fc
            c4 = self.backbone.layer4[0].conv3.out_channels
            self.classifier = nn.Sequential(  # DeepLabHead
                torch_aspp(c4, f, rates, dropout=dropout),
                nn.Conv2d(f, f, 3, padding=1, bias=False),
                nn.BatchNorm2d(f),
                nn.ReLU(),
                nn.Conv2d(f, k, 1),
            )
            self.aux_classifier = torch_fcn_head(c4 // 2, k, aux_dropout)

        def forward(self, x):
            size = x.shape[-2:]
            taps = self.backbone.taps(x)
            out = {
                "out": self.classifier(taps["layer4"]),
                "aux": self.aux_classifier(taps["layer3"]),
            }
            return {
                n: F.interpolate(v, size, mode="bilinear", align_corners=False)
                for n, v in out.items()
            }

    return DeepLabV3()


def smp_replace_strides_with_dilation(module, dilation_rate):
    """smp's ``encoders/_utils.py``, as ``make_dilated`` applies it to ``layer4``."""
    from torch import nn

    for mod in module.modules():
        if isinstance(mod, nn.Conv2d):
            mod.stride = (1, 1)
            mod.dilation = (dilation_rate, dilation_rate)
            kh, kw = mod.kernel_size
            mod.padding = ((kh // 2) * dilation_rate, (kh // 2) * dilation_rate)


def torch_deeplabv3plus(depth, k, width, mobilenet_v2=None, rates=(12, 24, 36)):
    """smp's ``DeepLabV3Plus(encoder_name=f"resnet{depth}", classes=k)`` (its defaults:
    encoder output stride 16, rates 12, 24, 36, separable ASPP, dropout 0.5, upsampling 4),
    or on ``mobilenet_v2`` (a torchvision ``mobilenet_v2``, ``encoder_name="mobilenet_v2"``:
    smp's ``make_dilated`` of its last stage; levels after features 1, 3, 6, 13, 18)."""
    import torch
    from torch import nn

    f, low = scaled(256, width), scaled(48, width)

    class Decoder(nn.Module):  # DeepLabV3PlusDecoder
        def __init__(self, channels):
            super().__init__()
            self.aspp = nn.Sequential(
                torch_aspp(channels[-1], f, rates, separable=True),
                torch_separable(f, f, 3, padding=1, bias=False),
                nn.BatchNorm2d(f),
                nn.ReLU(),
            )
            self.up = nn.Upsample(mode="bilinear", scale_factor=4, align_corners=True)
            self.block1 = nn.Sequential(
                nn.Conv2d(channels[2], low, 1, bias=False), nn.BatchNorm2d(low), nn.ReLU()
            )
            self.block2 = nn.Sequential(
                torch_separable(low + f, f, 3, padding=1, bias=False), nn.BatchNorm2d(f), nn.ReLU()
            )

        def forward(self, features):
            aspp_features = self.up(self.aspp(features[-1]))
            high_res_features = self.block1(features[2])
            return self.block2(torch.cat([aspp_features, high_res_features], dim=1))

    class MobileNetV2Plus(nn.Module):
        def __init__(self):
            super().__init__()
            from tests.test_mobilenet import make_dilated

            self.encoder = make_dilated(mobilenet_v2, 16)
            del self.encoder.classifier
            c = [3, *(self.encoder.features[i][0].out_channels for i in (0,))]
            c += [m.conv[-2].out_channels for m in (self.encoder.features[i] for i in (3, 6, 13))]
            self.decoder = Decoder([*c, self.encoder.features[18][0].out_channels])
            self.segmentation_head = nn.Sequential(
                nn.Conv2d(f, k, 1),
                nn.Upsample(mode="bilinear", scale_factor=4, align_corners=True),
            )

        def forward(self, x):
            features, h = [x], x
            for i, m in enumerate(self.encoder.features):
                h = m(h)
                if i in (1, 3, 6, 13, 18):
                    features.append(h)
            return self.segmentation_head(self.decoder(features))

    if mobilenet_v2 is not None:
        return MobileNetV2Plus()

    class DeepLabV3Plus(nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder = torch_resnet(depth, width)
            del self.encoder.fc
            smp_replace_strides_with_dilation(self.encoder.layer4, 2)  # output stride 16
            c = [3, self.encoder.bn1.num_features]
            c += [getattr(self.encoder, f"layer{i}")[-1].bn3.num_features for i in range(1, 5)]
            self.decoder = Decoder(c)
            self.segmentation_head = nn.Sequential(  # SegmentationHead(kernel_size=1)
                nn.Conv2d(f, k, 1),
                nn.Upsample(mode="bilinear", scale_factor=4, align_corners=True),
            )

        def forward(self, x):
            taps = self.encoder.taps(x)
            features = [x, taps["stem"], *(taps[f"layer{i}"] for i in range(1, 5))]
            return self.segmentation_head(self.decoder(features))

    return DeepLabV3Plus()


def randomized(model, seed):
    """Every BatchNorm's scale, offset and statistics random, biases non-zero; eval mode."""
    import torch
    from torch import nn

    torch.manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                nn.init.uniform_(m.weight, 0.5, 1.5)
                nn.init.normal_(m.bias, 0, 0.1)
                nn.init.normal_(m.running_mean, 0, 0.1)
                nn.init.uniform_(m.running_var, 0.5, 1.5)
            elif isinstance(m, nn.Conv2d) and m.bias is not None:
                nn.init.normal_(m.bias, 0, 0.1)
    return model.eval()


def nchw(x):
    import torch

    return torch.from_numpy(np.ascontiguousarray(np.moveaxis(x, -1, 1)))


def nhwc(t):
    return t.detach().permute(0, 2, 3, 1).numpy()


def state_of(model):
    return {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}


# ------------------------------------------------------------------------------------
# Parameter counts.
# ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, expected",
    [("deeplabv3_resnet50", 42_004_074), ("deeplabv3_resnet101", 60_996_202)],
)
def test_deeplabv3_has_torchvisions_parameter_count(name, expected):
    # torchvision's DeepLabV3_ResNet{50,101}_Weights.COCO_WITH_VOC_LABELS_V1 meta["num_params"]
    variables, logits = shapes_of(models.get(name, num_classes=21, aux_loss=True), IMAGE)
    assert count(variables["params"]) == expected
    assert logits.shape == (1, 97, 131, 21)
    variables, _ = shapes_of(models.get(name, num_classes=21), IMAGE)
    aux = 1024 * 256 * 9 + 2 * 256 + 256 * 21 + 21  # FCNHead(1024, 21)
    assert count(variables["params"]) == expected - aux


@pytest.mark.requires_torch
@pytest.mark.parametrize("depth, expected", [(50, 26_682_725), (101, 45_674_853)])
def test_deeplabv3plus_has_smps_parameter_count(depth, expected):
    torch_model = torch_deeplabv3plus(depth, 21, 1.0)
    assert sum(p.numel() for p in torch_model.parameters()) == expected
    model = models.get(f"deeplabv3plus_resnet{depth}", num_classes=21)
    variables, logits = shapes_of(model, IMAGE)
    assert count(variables["params"]) == expected
    assert logits.shape == (1, 97, 131, 21)
    # Every tensor of smp's full-size state dict has its place, of the right shape.
    loaded = weights.segmentation_variables(state_of(torch_model), model)
    assert jax.tree.map(np.shape, loaded) == jax.tree.map(lambda s: s.shape, variables)


# ------------------------------------------------------------------------------------
# Logits on the same weights.
# ------------------------------------------------------------------------------------


@pytest.mark.requires_torch
def test_deeplabv3_resnet50_matches_torchvisions_arithmetic():
    """Eval logits at an odd size; then training mode without dropout (batch statistics,
    the auxiliary head on layer3) against torch's training-mode forward."""
    import torch

    torch.set_num_threads(1)
    k = 5
    # Rates below the 7x6 stride-8 map's size, so that every dilated tap reads features
    # (at the default 12, 24, 36 the off-centre taps of so small a map read padding).
    rates = (2, 3, 5)
    net = randomized(torch_deeplabv3(50, k, WIDTH, dropout=0.0, aux_dropout=0.0, rates=rates), 3)
    x = np.random.default_rng(5).normal(0, 2, (2, 50, 42, 3)).astype(np.float32)
    state = state_of(net)  # before the training forward updates the statistics
    with torch.no_grad():
        expected = nhwc(net(nchw(x))["out"])
        net.train()
        expected_train = {n: nhwc(v) for n, v in net(nchw(x)).items()}
    model = DeepLabV3(
        k, aux_loss=True, width=WIDTH, dropout=0.0, aspp_dropout=0.0, atrous_rates=rates
    )
    variables = weights.segmentation_variables(state, model)
    assert_close(jax.jit(model.apply)(variables, x), expected)
    apply = functools.partial(model.apply, train=True, mutable=["batch_stats"])
    out, _ = jax.jit(apply)(variables, x)
    for name in ("out", "aux"):
        # Batch statistics in float32 (Flax's variance is E[x^2] - E[x]^2, of activations in
        # the thousands here) put "out" 1.04e-4 from torch's; in float64 both agree to 1e-13.
        assert_close(out[name], expected_train[name], rtol=3e-4)


@pytest.mark.requires_torch
def test_deeplabv3plus_resnet50_matches_smps_arithmetic():
    """At smp's sizes (multiples of 16) the same logits; at an odd size, smp's on the
    zero-padded image, cropped."""
    import torch

    torch.set_num_threads(1)
    k = 4
    rates = (1, 2, 3)  # below the 4x3 stride-16 map's size (see the DeepLabV3 test)
    net = randomized(torch_deeplabv3plus(50, k, WIDTH, rates=rates), 4)
    model = DeepLabV3Plus(k, width=WIDTH, atrous_rates=rates)
    variables = weights.segmentation_variables(state_of(net), model)
    apply = jax.jit(model.apply)
    x = np.random.default_rng(6).normal(0, 2, (2, 64, 48, 3)).astype(np.float32)
    with torch.no_grad():
        expected = nhwc(net(nchw(x)))
        odd = x.copy()
        odd[:, 50:], odd[:, :, 42:] = 0, 0
        expected_odd = nhwc(net(nchw(odd)))[:, :50, :42]
    assert_close(apply(variables, x), expected)
    assert_close(apply(variables, x[:, :50, :42]), expected_odd)


def test_smp_dilates_the_first_block_of_layer4():
    """smp's make_dilated dilates every convolution of layer4 (torchvision keeps the first
    block's 3x3 at the previous dilation): DeepLabV3Plus' encoder differs from a ResNet
    at output stride 16 with torchvision's rule."""
    from fcnjax.models import ResNet

    x = jnp.asarray(np.random.default_rng(0).normal(size=(1, 64, 64, 3)), jnp.float32)
    tv = ResNet(50, output_stride=16, width=WIDTH)
    variables = jax.jit(tv.init)(jax.random.key(0), x)
    smp = ResNet(50, output_stride=16, width=WIDTH, dilate_first_block=True)
    a, b = jax.jit(tv.apply)(variables, x), jax.jit(smp.apply)(variables, x)
    np.testing.assert_array_equal(a["layer3"], b["layer3"])
    assert a["layer4"].shape == b["layer4"].shape == (1, 4, 4, 128)
    assert not np.allclose(a["layer4"], b["layer4"])


@pytest.mark.requires_torch
def test_resize_align_corners_is_torchs():
    import torch
    from torch.nn import functional as F

    x = np.random.default_rng(1).normal(size=(2, 5, 7, 3)).astype(np.float32)
    for size in [(20, 28), (9, 4), (5, 7), (1, 3)]:
        expected = nhwc(F.interpolate(nchw(x), size, mode="bilinear", align_corners=True))
        np.testing.assert_allclose(ops.resize_align_corners(x, size), expected, atol=1e-5)
    with torch.no_grad():
        up = torch.nn.Upsample(scale_factor=4, mode="bilinear", align_corners=True)
        np.testing.assert_allclose(
            ops.resize_align_corners(x, (20, 28)), nhwc(up(nchw(x))), atol=1e-5
        )


# ------------------------------------------------------------------------------------
# Training, sizes, names, errors.
# ------------------------------------------------------------------------------------

TINY = {
    "deeplabv3_resnet50": DeepLabV3(3, aux_loss=True, width=WIDTH),
    "deeplabv3plus_resnet50": DeepLabV3Plus(3, width=WIDTH),
    "deeplabv3_mobilenet_v3_large": DeepLabV3(
        3, backbone="mobilenet_v3_large", aux_loss=True, width=WIDTH
    ),
    "deeplabv3plus_mobilenet_v2": DeepLabV3Plus(3, backbone="mobilenet_v2", width=WIDTH),
}


@pytest.mark.parametrize("name", TINY)
def test_one_training_step(name):
    model = TINY[name]
    x = jnp.asarray(np.random.default_rng(6).uniform(size=(2, 37, 45, 3)), jnp.float32)
    variables = jax.jit(model.init)(jax.random.key(0), x)
    params, stats = variables["params"], variables["batch_stats"]
    task = tasks.Segmentation(3)
    mask = jnp.asarray(np.random.default_rng(7).integers(0, 3, (2, 37, 45)), jnp.int32)

    def loss(p):
        out, new = model.apply(
            {"params": p, "batch_stats": stats},
            x,
            train=True,
            rngs={"dropout": jax.random.key(2)},
            mutable=["batch_stats"],
        )
        if isinstance(model, DeepLabV3):  # torchvision's loss: out + 0.5 aux
            assert set(out) == {"out", "aux"} and out["aux"].shape == (2, 37, 45, 3)
        assert (out["out"] if isinstance(out, dict) else out).shape == (2, 37, 45, 3)
        return task.loss(task.loss_sums(out, {"mask": mask})), new

    (value, new), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(params)
    assert np.isfinite(float(value))
    for path, g in jax.tree_util.tree_leaves_with_path(grads):
        assert np.all(np.isfinite(g)), jax.tree_util.keystr(path)
        assert float(jnp.abs(g).max()) > 0, jax.tree_util.keystr(path)
    changed = jax.tree.map(lambda a, b: bool(jnp.any(a != b)), stats, dict(new["batch_stats"]))
    assert all(jax.tree.leaves(changed))


@pytest.mark.parametrize("size", [(97, 131), (33, 31), (16, 16)])
@pytest.mark.parametrize(
    "name, kw",
    [
        ("deeplabv3_resnet50", {}),
        ("deeplabv3_resnet101", {}),
        ("deeplabv3_mobilenet_v3_large", {}),
        ("deeplabv3plus_resnet50", {}),
        ("deeplabv3plus_mobilenet_v2", {}),
        ("deeplabv3plus", {"backbone": "resnet18", "output_stride": 8}),
    ],
)
def test_any_input_size(name, kw, size):
    x = jax.ShapeDtypeStruct((2, *size, 3), jnp.float32)
    _, logits = shapes_of(models.get(name, num_classes=4, width=0.125, **kw), x)
    assert logits.shape == (2, *size, 4)


def test_names_fields_and_errors():
    for name, cls, backbone in [
        ("deeplabv3_resnet50", DeepLabV3, "resnet50"),
        ("deeplabv3_resnet101", DeepLabV3, "resnet101"),
        ("deeplabv3plus_resnet50", DeepLabV3Plus, "resnet50"),
        ("deeplabv3plus_resnet101", DeepLabV3Plus, "resnet101"),
        ("deeplabv3plus", DeepLabV3Plus, "resnet50"),
        ("deeplabv3plus_mobilenet_v2", DeepLabV3Plus, "mobilenet_v2"),
        ("deeplabv3_mobilenet_v3_large", DeepLabV3, "mobilenet_v3_large"),
    ]:
        assert name in models.NAMES and models.REFERENCES[name]
        model = models.get(name, num_classes=2)
        assert isinstance(model, cls) and model.backbone == backbone
        assert models.backbone_of(name) == backbone
    assert models.get("DeepLabV3Plus-ResNet101", num_classes=2).backbone == "resnet101"
    with pytest.raises(ValueError, match="keeps stride 16.*must be 32 for vgg16"):
        shapes_of(DeepLabV3Plus(2, backbone="vgg16"), IMAGE)
    with pytest.raises(ValueError, match="`output_stride` must be 8 or 16"):
        shapes_of(DeepLabV3Plus(2, output_stride=32), IMAGE)
    with pytest.raises(ValueError, match="`backbone` must be a ResNet"):
        shapes_of(DeepLabV3(2, backbone="vgg16"), IMAGE)
    with pytest.raises(ValueError, match="`aspp_dropout` must be a rate"):
        shapes_of(DeepLabV3Plus(2, aspp_dropout=1.0), IMAGE)
    with pytest.raises(ValueError, match="`model.aspp_dropout` must be a rate"):
        models.check_arguments({"aspp_dropout": -0.1}, prefix="model.")


@pytest.mark.requires_torch
def test_state_dict_errors_are_listed_together():
    net = torch_deeplabv3(50, 3, WIDTH)
    state = state_of(net)
    del state["classifier.0.convs.2.1.running_var"]
    state["classifier.9.weight"] = np.zeros((3,), np.float32)
    state["aux_classifier.4.bias"] = np.zeros((7,), np.float32)
    model = DeepLabV3(3, aux_loss=True, width=WIDTH)
    with pytest.raises(ValueError) as info:
        weights.segmentation_variables(state, model, what="f.pth")
    message = str(info.value)
    assert message.startswith("f.pth does not hold this DeepLabV3:")
    assert "missing: running_var of aspp/bn2" in message
    assert "unexpected: classifier.9.weight (3,)" in message
    assert "aux_classifier.4.bias: expected shape (3), got (7,)" in message
    # Without the auxiliary head, its tensors are unexpected.
    with pytest.raises(ValueError, match="unexpected: aux_classifier.0.weight"):
        weights.segmentation_variables(state_of(net), DeepLabV3(3, width=WIDTH))


def test_imagenet_resnet_reaches_the_backbone(tmp_path):
    """init.backbone_weights (a torchvision ResNet-50 file) fills both networks' encoder;
    the heads are left alone."""
    from tests.test_configs import write_torchvision_resnet50
    from tests.test_encoders import _config, _initial

    path, state = write_torchvision_resnet50(tmp_path / "r50.safetensors", width=WIDTH)
    kernel = state["layer4.0.conv2.weight"].transpose(2, 3, 1, 0)
    for name in ("deeplabv3_resnet50", "deeplabv3plus_resnet50"):
        params, stats = _initial(_config(name, path))
        np.testing.assert_array_equal(params["backbone"]["layer4_0"]["conv2"]["kernel"], kernel)
        np.testing.assert_array_equal(
            stats["backbone"]["layer1_0"]["bn1"]["var"], state["layer1.0.bn1.running_var"]
        )
        assert not np.any(params["aspp"]["project_conv"]["kernel"])


@pytest.mark.requires_torch
def test_torchvision_fcn_resnet50_file_loads(tmp_path):
    """load_torchvision_segmentation on a safetensors file of torchvision's fcn_resnet50
    (its names: backbone., classifier., aux_classifier.): the logits are torch's."""
    import torch
    from safetensors.torch import save_file
    from torch.nn import functional as F

    from fcnjax.models import FCNResNet

    torch.set_num_threads(1)
    backbone = torch_resnet(50, WIDTH, dilate=(False, True, True))
    del backbone.fc
    c4 = backbone.layer4[0].conv3.out_channels
    net = torch.nn.ModuleDict(
        {
            "backbone": backbone,
            "classifier": torch_fcn_head(c4, 3),
            "aux_classifier": torch_fcn_head(c4 // 2, 3),
        }
    )
    randomized(net, 8)
    path = tmp_path / "fcn_resnet50.safetensors"
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, path)
    x = np.random.default_rng(9).normal(0, 2, (1, 45, 37, 3)).astype(np.float32)
    with torch.no_grad():
        scores = net["classifier"](backbone.taps(nchw(x))["layer4"])
        expected = nhwc(F.interpolate(scores, (45, 37), mode="bilinear", align_corners=False))
    model = FCNResNet(3, aux_loss=True, width=WIDTH)
    variables = weights.load_torchvision_segmentation(path, model)
    assert_close(jax.jit(model.apply)(variables, x), expected)
    with pytest.raises(ValueError, match="backbone_style='torchvision'"):
        weights.load_torchvision_segmentation(path, FCNResNet(3, backbone_style="keras"))
    with pytest.raises(TypeError, match="got PSPNet"):
        weights.load_torchvision_segmentation(path, models.PSPNet(3))


@pytest.mark.requires_torch
def test_deeplabv3_mobilenet_v3_large_matches_torchvisions_arithmetic():
    """torchvision's ``_deeplabv3_mobilenetv3``: the dilated MobileNetV3-Large's
    ``features`` (``IntermediateLayerGetter``: ``backbone.{i}``), ``DeepLabHead`` on the
    last (960 channels at full width, stride 16), ``FCNHead`` on ``features.4`` (stride 8),
    both resized to the input; its state dict read by ``segmentation_variables``."""
    import torch
    from torch import nn
    from torch.nn import functional as F

    from tests.test_mobilenet_v3 import WIDTH as MW
    from tests.test_mobilenet_v3 import torch_mobilenet_v3_large

    torch.set_num_threads(1)
    k, f = 5, scaled(256, MW)
    rates = (1, 2, 3)  # below the 5x5 stride-16 map's size (see the DeepLabV3 test)
    mobilenet = torch_mobilenet_v3_large(MW, dilated=True, seed=4)
    high, low = (
        mobilenet.features[16][0].out_channels,
        mobilenet.features[4].block[-1][0].out_channels,
    )

    class Oracle(nn.Module):
        def __init__(self):
            super().__init__()
            self.backbone = mobilenet.features
            self.classifier = nn.Sequential(  # DeepLabHead(960, k)
                torch_aspp(high, f, rates),
                nn.Conv2d(f, f, 3, padding=1, bias=False),
                nn.BatchNorm2d(f),
                nn.ReLU(),
                nn.Conv2d(f, k, 1),
            )
            self.aux_classifier = torch_fcn_head(low, k)

        def forward(self, x):
            taps = mobilenet.taps(x)
            out = {"out": self.classifier(taps["high"]), "aux": self.aux_classifier(taps["low"])}
            return {n: F.interpolate(v, x.shape[-2:], mode="bilinear") for n, v in out.items()}

    net = randomized(Oracle(), 5)
    x = np.random.default_rng(6).normal(0, 1, (2, 65, 71, 3)).astype(np.float32)
    with torch.no_grad():
        expected = nhwc(net(nchw(x))["out"])
    model = models.get(
        "deeplabv3_mobilenet_v3_large", num_classes=k, aux_loss=True, width=MW, atrous_rates=rates
    )
    variables = weights.segmentation_variables(state_of(net), model)
    assert_close(jax.jit(model.apply)(variables, x), expected, rtol=1e-4)
    # The full-width network has torchvision's published size (with the auxiliary head).
    full = models.get("deeplabv3_mobilenet_v3_large", num_classes=21, aux_loss=True)
    assert count(shapes_of(full, IMAGE)[0]["params"]) == 11_029_328


@pytest.mark.requires_torch
def test_deeplabv3plus_mobilenet_v2_matches_smps_arithmetic():
    """smp's ``DeepLabV3Plus(encoder_name="mobilenet_v2")``: torchvision's MobileNetV2 with
    its last stage dilated (output stride 16), the decoder on its stride-4 (24-channel)
    and last (1280-channel) features; its state dict read by ``segmentation_variables``."""
    import torch

    from tests.test_mobilenet import calibrate, torch_mobilenet_v2

    torch.set_num_threads(1)
    k = 4
    x = np.random.default_rng(8).normal(0, 1, (2, 64, 48, 3)).astype(np.float32)
    encoder = calibrate(torch_mobilenet_v2(WIDTH), x)
    rates = (1, 2, 3)  # below the 4x3 stride-16 map's size (see the DeepLabV3 test)
    net = torch_deeplabv3plus(None, k, WIDTH, mobilenet_v2=encoder, rates=rates)
    randomized(net.decoder, 9), randomized(net.segmentation_head, 9)
    net.eval()
    with torch.no_grad():
        expected = nhwc(net(nchw(x)))
    model = models.get("deeplabv3plus_mobilenet_v2", num_classes=k, width=WIDTH, atrous_rates=rates)
    variables = weights.segmentation_variables(state_of(net), model)
    assert_close(jax.jit(model.apply)(variables, x), expected, rtol=1e-4)
    # smp's DeepLabV3Plus(encoder_name="mobilenet_v2", classes=21): torchvision's 2,223,872
    # without its classifier + the decoder on its 1280 and 24 channels (counted by hand).
    full = models.get("deeplabv3plus_mobilenet_v2", num_classes=21)
    assert count(shapes_of(full, IMAGE)[0]["params"]) == 4_383_653
