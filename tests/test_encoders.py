"""The decoders on pretrainable encoders (issue 17): torchvision's FCN-ResNet50,
keras-segmentation's ``vgg_unet`` / ``resnet50_unet`` / ``vgg_segnet`` / ``resnet50_segnet``,
FCN on a ResNet. Against Keras built from keras-segmentation's published code and against
torchvision's published parameter counts; any input size; one training step each."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fcnjax import models
from fcnjax.models import EncoderSegNet, EncoderUNet, FCNResNet, backbone_mask
from fcnjax.training import tasks
from tests.test_models import count, rel_err, shapes_of
from tests.test_weights import keras_vgg16

IMAGE = jax.ShapeDtypeStruct((1, 224, 224, 3), jnp.float32)


# Compiling dominates (a ResNet-50 training step at 1/16 width: 15 s).
pytestmark = pytest.mark.usefixtures("cheap_compiles")


# ------------------------------------------------------------------------------------
# keras-segmentation's models, built in Keras from its source (unet.py, segnet.py).
# ------------------------------------------------------------------------------------


def keras_segmentation(decoder, levels, num_classes, width=1.0):
    """keras-segmentation's ``_unet`` / ``segnet_decoder`` on ``levels`` (f1 ... f4), every
    width scaled by ``width``."""
    from keras import layers as kl

    from fcnjax.models.vgg import scaled

    f1, f2, f3, f4 = levels
    pad_conv = lambda o, w, **kw: kl.Conv2D(scaled(w, width), 3, padding="valid", **kw)(  # noqa: E731
        kl.ZeroPadding2D((1, 1))(o)
    )
    if decoder == "unet":
        o = kl.BatchNormalization()(pad_conv(f4, 512, activation="relu"))
        for w, skip in ((256, f3), (128, f2), (64, f1)):
            o = kl.concatenate([kl.UpSampling2D((2, 2))(o), skip], axis=-1)
            o = kl.BatchNormalization()(pad_conv(o, w, activation="relu"))
    else:  # segnet_decoder(f, n_classes, n_up=3): no activations
        o = kl.BatchNormalization()(pad_conv(f4, 512))
        for w in (256, 128, 64):
            o = kl.BatchNormalization()(pad_conv(kl.UpSampling2D((2, 2))(o), w))
    return kl.Conv2D(num_classes, (3, 3), padding="same")(o)


def keras_vgg_levels(size, width):
    """keras-segmentation's ``get_vgg_encoder``: Keras' VGG16 layers (widths scaled) and its
    levels f1 ... f4, the outputs of ``block1_pool`` ... ``block4_pool``."""
    net = keras_vgg16(width, (size, size, 3), top=False)
    return net.input, [net.get_layer(f"block{b}_pool").output for b in range(1, 5)]


def keras_resnet50_levels():
    """keras-segmentation's ``get_resnet50_encoder`` levels on Keras' ResNet50 layers: f1
    the stem's convolution (before BatchNorm), f2 ... f4 the outputs of stages 2 ... 4."""
    import keras

    net = keras.applications.ResNet50(include_top=False, weights=None, input_shape=(224, 224, 3))
    names = ("conv1_conv", "conv2_block3_out", "conv3_block4_out", "conv4_block6_out")
    return net, [net.get_layer(n).output for n in names]


def trainable(model) -> int:
    return sum(int(np.prod(w.shape)) for w in model.trainable_weights)


@pytest.mark.parametrize("decoder", ["unet", "segnet"])
def test_keras_segmentation_parameter_counts(decoder):
    import keras

    inp, levels = keras_vgg_levels(224, 1.0)
    vgg = keras.Model(inp, keras_segmentation(decoder, levels, 5))
    net, levels = keras_resnet50_levels()
    resnet = keras.Model(net.input, keras_segmentation(decoder, levels, 5))
    for name, ref, style in (
        (f"vgg_{decoder}", vgg, "torchvision"),
        (f"resnet50_{decoder}", resnet, "keras"),  # keras-segmentation's ResNet: conv biases
    ):
        variables, logits = shapes_of(models.get(name, num_classes=5, backbone_style=style), IMAGE)
        assert logits.shape == (1, 224, 224, 5)
        assert count(variables["params"]) == trainable(ref), name
        other, _ = shapes_of(
            models.get(name, num_classes=5, backbone_style=style),
            jax.ShapeDtypeStruct((1, 97, 131, 3), jnp.float32),
        )
        assert count(other["params"]) == trainable(ref), name


@pytest.mark.parametrize("decoder", ["unet", "segnet"])
def test_vgg_decoders_match_keras_segmentation(decoder):
    """Same weights, same input: fcnjax's logits are Keras' stride-2 scores, resized."""
    import keras

    width, size, k = 1 / 16, 64, 3
    inp, levels = keras_vgg_levels(size, width)
    ref = keras.Model(inp, keras_segmentation(decoder, levels, k, width))
    rng = np.random.default_rng(3)
    for w in ref.weights:  # BatchNorm statistics too: inference mode uses them
        if "variance" in w.path:
            w.assign(rng.uniform(0.5, 2.0, w.shape).astype(np.float32))
        else:
            w.assign((rng.standard_normal(w.shape) * 0.2).astype(np.float32))
    model = models.get(f"vgg_{decoder}", num_classes=k, width=width)
    x = rng.standard_normal((2, size, size, 3)).astype(np.float32)
    variables = jax.eval_shape(model.init, jax.random.key(0), x)
    convs = [la for la in ref.layers if isinstance(la, keras.layers.Conv2D)]
    bns = [la for la in ref.layers if isinstance(la, keras.layers.BatchNormalization)]
    assert len(convs) == 10 + 5 and len(bns) == 4  # no block5: the decoder reads pool4
    params = {"backbone": {}, "decoder": {}}
    stats = {"decoder": {}}
    for la in convs[:10]:
        params["backbone"][la.name] = {"kernel": np.asarray(la.kernel), "bias": np.asarray(la.bias)}
    names = ["conv1", "conv2", "conv3", "conv4", "classifier"]
    for name, la in zip(names, convs[10:]):
        params["decoder"][name] = {"kernel": np.asarray(la.kernel), "bias": np.asarray(la.bias)}
    for i, la in enumerate(bns, 1):
        params["decoder"][f"bn{i}"] = {"scale": np.asarray(la.gamma), "bias": np.asarray(la.beta)}
        stats["decoder"][f"bn{i}"] = {
            "mean": np.asarray(la.moving_mean),
            "var": np.asarray(la.moving_variance),
        }
    assert jax.tree.structure(params) == jax.tree.structure(variables["params"])
    ours = jax.jit(model.apply)({"params": params, "batch_stats": stats}, x)
    expected = ref.predict(x, verbose=0)
    assert expected.shape == (2, size // 2, size // 2, k)  # keras-segmentation: stride 2
    expected = jax.image.resize(expected, (2, size, size, k), "bilinear")
    assert rel_err(ours, expected) < 1e-4


# ------------------------------------------------------------------------------------
# torchvision's FCN-ResNet50 and FCN on ResNets.
# ------------------------------------------------------------------------------------


def test_fcn_resnet50_has_torchvisions_parameter_count():
    # torchvision.models.segmentation.fcn_resnet50 (COCO_WITH_VOC_LABELS_V1): 35,322,218
    # parameters with the auxiliary head, 21 classes.
    variables, logits = shapes_of(models.get("fcn_resnet50", num_classes=21, aux_loss=True), IMAGE)
    assert count(variables["params"]) == 35_322_218
    assert logits.shape == (1, 224, 224, 21)
    aux = 3 * 3 * 1024 * 256 + 2 * 256 + 256 * 21 + 21  # FCNHead(1024, 21)
    variables, _ = shapes_of(models.get("fcn_resnet50", num_classes=21), IMAGE)
    assert count(variables["params"]) == 35_322_218 - aux
    variables, _ = shapes_of(models.get("fcn_resnet101", num_classes=21, aux_loss=True), IMAGE)
    assert count(variables["params"]) == 54_314_346  # torchvision's fcn_resnet101


def test_fcn_on_resnet_scores_layer4_with_skips():
    model = models.get("fcn8s_resnet50", num_classes=21)
    variables, logits = shapes_of(model, IMAGE)
    p = variables["params"]
    assert logits.shape == (1, 224, 224, 21)
    assert p["score_fr"]["kernel"].shape == (1, 1, 2048, 21)
    assert p["score_pool4"]["kernel"].shape == (1, 1, 1024, 21)
    assert p["score_pool3"]["kernel"].shape == (1, 1, 512, 21)
    resnet50 = 23_508_032  # torchvision's resnet50 without its fc layer
    heads = (2048 + 1024 + 512) * 21 + 3 * 21 + 2 * 4 * 4 * 21 * 21
    assert count(p) == resnet50 + heads
    assert models.get("fcn_32_resnet50", num_classes=2).variant == "32s"
    with pytest.raises(ValueError, match="skip='features'"):
        shapes_of(models.get("fcn8s_resnet50", num_classes=2, skip="features"), IMAGE)


def test_backbone_mask_marks_the_resnet_encoder():
    variables, _ = shapes_of(models.get("resnet50_unet", num_classes=2), IMAGE)
    mask = backbone_mask(variables["params"])
    marked = sum(
        int(np.prod(p.shape))
        for p, m in zip(jax.tree.leaves(variables["params"]), jax.tree.leaves(mask))
        if m
    )
    # ResNet-50 through layer3 (the decoder reads f1 ... f4): no layer4 parameters.
    assert marked == count(variables["params"]["backbone"]) == 23_508_032 - 14_964_736
    assert not any(jax.tree.leaves(mask["decoder"]))


@pytest.mark.parametrize("size", [(97, 131), (33, 31)])
@pytest.mark.parametrize(
    "name", ["fcn_resnet50", "fcn8s_resnet50", "vgg_unet", "resnet50_unet", "resnet50_segnet"]
)
def test_any_input_size(name, size):
    x = jax.ShapeDtypeStruct((2, *size, 3), jnp.float32)
    _, logits = shapes_of(models.get(name, num_classes=4, width=0.125), x)
    assert logits.shape == (2, *size, 4)


def test_aux_head_only_in_training_and_torchvisions_loss():
    model = FCNResNet(3, aux_loss=True, width=1 / 16)
    x = jnp.asarray(np.random.default_rng(0).uniform(size=(2, 24, 20, 3)), jnp.float32)
    variables = jax.jit(model.init)(jax.random.key(0), x)
    out = jax.jit(model.apply)(variables, x)
    assert out.shape == (2, 24, 20, 3)
    train_apply = functools.partial(model.apply, train=True, mutable=["batch_stats"])
    train_out, _ = jax.jit(train_apply)(variables, x, rngs={"dropout": jax.random.key(1)})
    assert set(train_out) == {"out", "aux"} and train_out["aux"].shape == (2, 24, 20, 3)
    mask = jnp.asarray(np.random.default_rng(1).integers(0, 3, (2, 24, 20)), jnp.int32)
    task = tasks.Segmentation(3)
    loss = task.loss(task.loss_sums(train_out, {"mask": mask}))
    out_sums = task.loss_sums(train_out["out"], {"mask": mask})
    aux_loss = task.loss(task.loss_sums(train_out["aux"], {"mask": mask}))
    assert out_sums["cross_entropy"]["norm"] == 2 * 24 * 20
    np.testing.assert_allclose(loss, task.loss(out_sums) + 0.5 * aux_loss, rtol=1e-6)


TINY = {
    "fcn_resnet50": FCNResNet(3, aux_loss=True, width=1 / 16),
    "fcn8s_resnet18_keras": models.get(
        "fcn8s", num_classes=3, backbone="resnet18", backbone_style="keras", width=1 / 16
    ),
    "vgg_unet": EncoderUNet(3, width=1 / 16),
    "resnet50_unet": EncoderUNet(3, backbone="resnet50", width=1 / 16),
    "resnet34_segnet": EncoderSegNet(3, backbone="resnet34", width=1 / 16),
}


@pytest.mark.parametrize("name", TINY)
def test_one_training_step(name):
    model = TINY[name]
    x = jnp.asarray(np.random.default_rng(6).uniform(size=(2, 40, 36, 3)), jnp.float32)
    variables = jax.jit(model.init)(jax.random.key(0), x)
    params, stats = variables["params"], variables["batch_stats"]
    if name.startswith("fcn8s"):  # zero-initialised score layers stop the gradients below
        params = jax.tree.map(lambda p: p + 0.01, params)
    task = tasks.Segmentation(3)
    mask = jnp.asarray(np.random.default_rng(7).integers(0, 3, (2, 40, 36)), jnp.int32)

    def loss(p):
        out, new = model.apply(
            {"params": p, "batch_stats": stats},
            x,
            train=True,
            rngs={"dropout": jax.random.key(2)},
            mutable=["batch_stats"],
        )
        return task.loss(task.loss_sums(out, {"mask": mask})), new

    (value, new), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(params)
    assert np.isfinite(float(value))
    for path, g in jax.tree_util.tree_leaves_with_path(grads):
        assert np.all(np.isfinite(g)), jax.tree_util.keystr(path)
        assert float(jnp.abs(g).max()) > 0, jax.tree_util.keystr(path)
    changed = jax.tree.map(lambda a, b: bool(jnp.any(a != b)), stats, dict(new["batch_stats"]))
    assert all(jax.tree.leaves(changed))


def test_registry_names_and_fields():
    for name in (
        "vgg_unet",
        "resnet50_unet",
        "vgg_segnet",
        "resnet50_segnet",
        "fcn_8_vgg",
        "fcn_32_vgg",
        "fcn_8_resnet50",
        "fcn_32_resnet50",
        "fcn_resnet50",
        "fcn_resnet101",
        "fcn8s_resnet50",
        "resnet18",
        "resnet152",
    ):
        assert name in models.NAMES
    assert models.backbone_of("resnet50_segnet") == "resnet50"
    assert models.backbone_of("fcn_8_vgg") == "vgg16"
    assert models.backbone_of("fcn8s", backbone="resnet101") == "resnet101"
    assert models.backbone_of("segnet") is None and models.backbone_of("unet") is None
    assert isinstance(models.get("resnet50_unet", num_classes=3), EncoderUNet)
    with pytest.raises(ValueError, match="unknown backbone 'resnet49'"):
        shapes_of(EncoderUNet(2, backbone="resnet49"), IMAGE)
    with pytest.raises(ValueError, match="`backbone_style` must be one of"):
        shapes_of(EncoderUNet(2, backbone="resnet50", backbone_style="caffe"), IMAGE)
    with pytest.raises(ValueError, match="`backbone` must be a ResNet"):
        shapes_of(FCNResNet(2, backbone="vgg16"), IMAGE)


# ------------------------------------------------------------------------------------
# Backbone weights through the trainer's experiment (init.backbone_weights).
# ------------------------------------------------------------------------------------


def _initial(config):
    from fcnjax.training import experiment

    built = experiment.build(config, with_train=False, with_eval=False)
    run = built.run
    variables = jax.eval_shape(run.model.init, jax.random.key(0), jnp.zeros(run.example_shape))
    zeros = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), variables)
    return experiment.initial_params(built.init, zeros["params"], zeros.get("batch_stats"))


def _config(name, weights, **model):
    from fcnjax import config as config_lib

    c = config_lib.load_config("shapes_fcn8s:runlocal")
    model = {k: v for k, v in {"width": 1 / 16, **model}.items() if v is not None}
    c.model = dict(name=name, num_classes=4, **model)  # 4: the shapes data's classes
    c.init.backbone_weights = str(weights)
    return c


def test_resnet_weights_and_statistics_reach_the_model(tmp_path, caplog):
    from tests.test_configs import write_torchvision_resnet50

    path, state = write_torchvision_resnet50(tmp_path / "r50.safetensors", width=1 / 16)
    with caplog.at_level("INFO", logger="fcnjax"):
        params, stats = _initial(_config("resnet50_unet", path))
    kernel = state["layer2.3.conv3.weight"].transpose(2, 3, 1, 0)
    np.testing.assert_array_equal(params["backbone"]["layer2_3"]["conv3"]["kernel"], kernel)
    np.testing.assert_array_equal(
        stats["backbone"]["layer3_0"]["downsample_bn"]["var"],
        state["layer3.0.downsample.1.running_var"],
    )
    assert not np.any(params["decoder"]["conv1"]["kernel"])  # the decoder is left alone
    assert "layer4_0" in caplog.text and "does not use" in caplog.text
    params, stats = _initial(_config("fcn_resnet50", path, aux_loss=True))  # every stage
    np.testing.assert_array_equal(
        stats["backbone"]["layer4_2"]["bn3"]["mean"], state["layer4.2.bn3.running_mean"]
    )


def test_backbone_weights_errors_name_the_fix(tmp_path):
    from fcnjax.config import ConfigError
    from tests.test_configs import write_torchvision_resnet50

    path, _ = write_torchvision_resnet50(tmp_path / "r50.safetensors", width=1 / 16)
    with pytest.raises(ConfigError, match="set model.backbone_style='torchvision'"):
        _initial(_config("resnet50_unet", path, backbone_style="keras"))
    with pytest.raises(ConfigError, match="'unet' has none"):
        _initial(_config("unet", path, width=None))
    with pytest.raises(ValueError, match="ResNet-50, not the ResNet-101"):
        _initial(_config("fcn8s_resnet101", path))


def test_keras_style_imagenet_means_keras_file(monkeypatch):
    from fcnjax import weights
    from fcnjax.config import ConfigError
    from fcnjax.training import experiment

    asked = []

    def fake_load(path, depth):
        asked.append((path, depth))
        raise RuntimeError("stop here")

    monkeypatch.setattr(weights, "load_resnet", fake_load)
    experiment._load_backbone.cache_clear()
    with pytest.raises(RuntimeError, match="stop here"):
        _initial(_config("resnet50_unet", "imagenet", backbone_style="keras"))
    with pytest.raises(RuntimeError, match="stop here"):
        _initial(_config("fcn_resnet101", "imagenet"))
    assert asked == [(weights.KERAS_RESNET_URLS[50], 50), (None, 101)]  # None: torchvision's
    with pytest.raises(ConfigError, match="Keras publishes no ImageNet ResNet-18"):
        _initial(_config("fcn8s", "imagenet", backbone="resnet18", backbone_style="keras"))
    experiment._load_backbone.cache_clear()


def test_evaluation_size_apart_from_the_training_crops():
    from fcnjax import config as config_lib
    from fcnjax.training import experiment

    c = config_lib.load_config("shapes_fcn8s:runlocal")
    c.input.eval_size = (48, 40)
    run = experiment.build(c, with_train=False).run
    assert run.eval_transform.size == (48, 40) and tuple(run.train_transform.size) == (32, 32)
    full = config_lib.load_config("fcn_resnet50_voc")
    assert full.input.size == (480, 480) and full.input.eval_size == (512, 512)  # VOC <= 500


def test_staged_training_copies_batch_statistics_too(monkeypatch, tmp_path):
    # init.from_workdir (FCN's staged training) on a model with BatchNorm: the previous
    # run's statistics come with its parameters, or inference would mix them with fresh ones.
    from fcnjax import config as config_lib
    from fcnjax.training import experiment

    c = config_lib.load_config("shapes_fcn8s:runlocal")
    c.model = dict(name="fcn8s", backbone="resnet18", num_classes=4, width=1 / 16)
    c.init.from_workdir = str(tmp_path)
    built = experiment.build(c, with_train=False, with_eval=False)
    run = built.run
    shapes = jax.eval_shape(run.model.init, jax.random.key(0), jnp.zeros(run.example_shape))
    previous = jax.tree.map(lambda s: np.full(s.shape, 0.25, s.dtype), shapes)
    restored = {"params": previous["params"], "batch_stats": previous["batch_stats"]}
    monkeypatch.setattr(experiment.ckpt, "restore_state", lambda *a: (restored, 7))
    zeros = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), shapes)
    params, stats = experiment.initial_params(built.init, zeros["params"], zeros["batch_stats"])
    assert all(np.all(v == 0.25) for v in jax.tree.leaves(params))
    assert all(np.all(v == 0.25) for v in jax.tree.leaves(stats))
