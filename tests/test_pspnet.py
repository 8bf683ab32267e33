"""keras-segmentation's PSPNet (issue 27): ``pspnet``, ``vgg_pspnet``, ``resnet50_pspnet``
against Keras built from its ``pspnet.py`` (parameter counts at its default input,
logits on the same weights at its sizes), any input size, one training step each; and
``ops.adaptive_avg_pool`` against its definition."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fcnjax import models, ops
from fcnjax.models import PSPNet
from fcnjax.models.vgg import scaled
from fcnjax.training import tasks
from tests.test_encoders import trainable
from tests.test_keras_segmentation_names import (
    ZEROS,
    flax_variables,
    keras_vanilla_encoder,
    randomize,
)
from tests.test_models import count, rel_err, shapes_of

pytestmark = pytest.mark.usefixtures("cheap_compiles")


# ------------------------------------------------------------------------------------
# keras-segmentation's pspnet.py in Keras, widths scaled, layers named as fcnjax's.
# ------------------------------------------------------------------------------------


def keras_resize_image(x, s):
    """``resize_image`` (model_utils.py): ``K.resize_images(..., interpolation='bilinear')``
    by integer factors, which Keras' ``UpSampling2D(interpolation='bilinear')`` calls."""
    from keras import layers as kl

    return kl.UpSampling2D(size=tuple(s), interpolation="bilinear")(x)


def keras_pool_block(feats, pool_factor, width):
    from keras import layers as kl

    h, w = feats.shape[1:3]
    pool_size = strides = [
        int(np.round(float(h) / pool_factor)),
        int(np.round(float(w) / pool_factor)),
    ]
    x = kl.AveragePooling2D(pool_size, strides=strides, padding="same")(feats)
    x = kl.Conv2D(
        scaled(512, width),
        (1, 1),
        padding="same",
        use_bias=False,
        name=f"psp{pool_factor}_conv",
        **ZEROS,
    )(x)
    x = kl.BatchNormalization(name=f"psp{pool_factor}_bn")(x)
    x = kl.Activation("relu")(x)
    return keras_resize_image(x, strides)


def keras_pspnet(img_input, levels, n_classes, width=1.0):
    """``_pspnet`` (pspnet.py) on ``levels``, before its reshape and softmax."""
    import keras
    from keras import layers as kl

    assert img_input.shape[1] % 192 == 0 and img_input.shape[2] % 192 == 0  # as _pspnet
    o = levels[4]
    pool_outs = [o]
    for p in [1, 2, 3, 6]:
        pool_outs.append(keras_pool_block(o, p, width))
    o = kl.Concatenate(axis=-1)(pool_outs)
    o = kl.Conv2D(scaled(512, width), (1, 1), use_bias=False, name="seg_feats_conv", **ZEROS)(o)
    o = kl.BatchNormalization(name="seg_feats_bn")(o)
    o = kl.Activation("relu")(o)
    o = kl.Conv2D(n_classes, (3, 3), padding="same", name="classifier", **ZEROS)(o)
    return keras.Model(img_input, keras_resize_image(o, (8, 8)))


def keras_model(name, shape, n_classes, width=1.0):
    import keras

    from tests.test_weights import keras_vgg16

    if name == "pspnet":
        img_input, levels = keras_vanilla_encoder(shape, width)
    elif name == "vgg_pspnet":  # get_vgg_encoder: Keras' VGG16 layers, f5 = block5_pool
        net = keras_vgg16(width, shape, top=False)
        img_input, levels = net.input, [None] * 4 + [net.get_layer("block5_pool").output]
    else:  # get_resnet50_encoder's f5: stage 5 of Keras' ResNet-50 (biases: style "keras")
        net = keras.applications.ResNet50(include_top=False, weights=None, input_shape=shape)
        img_input, levels = net.input, [None] * 4 + [net.get_layer("conv5_block3_out").output]
    return keras_pspnet(img_input, levels, n_classes, width)


# ------------------------------------------------------------------------------------
# Against Keras.
# ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["pspnet", "vgg_pspnet", "resnet50_pspnet"])
def test_parameter_counts_equal_keras_segmentations(name):
    ref = keras_model(name, (384, 576, 3), 21)  # keras-segmentation's default input
    style = dict(backbone_style="keras") if name.startswith("resnet") else {}
    model = models.get(name, num_classes=21, **style)
    for shape in ((1, 384, 576, 3), (1, 97, 131, 3)):
        variables, logits = shapes_of(model, jax.ShapeDtypeStruct(shape, jnp.float32))
        assert logits.shape == (*shape[:3], 21)
        assert count(variables["params"]) == trainable(ref), (name, shape)


@pytest.mark.parametrize("name, size", [("pspnet", (192, 384)), ("vgg_pspnet", (192, 192))])
def test_logits_equal_keras_on_the_same_weights(name, size):
    width, k = 1 / 16, 3
    ref = keras_model(name, (*size, 3), k, width)
    randomize(ref, 8)
    model = models.get(name, num_classes=k, width=width)
    x = np.random.default_rng(9).standard_normal((2, *size, 3)).astype(np.float32)
    variables = flax_variables(ref)
    expected_tree = jax.eval_shape(model.init, jax.random.key(0), x)
    assert jax.tree.map(np.shape, variables) == jax.tree.map(lambda s: s.shape, expected_tree)
    ours = jax.jit(model.apply)(variables, x)
    keras_out = ref.predict(x, verbose=0)
    assert keras_out.shape == (2, size[0] // 4, size[1] // 4, k)  # stride 4
    expected = jax.image.resize(keras_out, (2, *size, k), "bilinear")
    assert rel_err(ours, expected) < 1e-4


# ------------------------------------------------------------------------------------
# Any input size, one training step, names, the pooling op.
# ------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [(97, 131), (33, 17), (224, 224)])
def test_any_input_size(size):
    for name in ("pspnet", "vgg_pspnet", "resnet50_pspnet"):
        x = jax.ShapeDtypeStruct((2, *size, 3), jnp.float32)
        _, logits = shapes_of(models.get(name, num_classes=4, width=0.125), x)
        assert logits.shape == (2, *size, 4), name


@pytest.mark.parametrize("backbone", ["vanilla", "vgg16", "resnet50"])
def test_one_training_step(backbone):
    model = PSPNet(3, backbone=backbone, width=1 / 16)
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


def test_names_and_errors():
    for name, backbone in (
        ("pspnet", "vanilla"),
        ("vgg_pspnet", "vgg16"),
        ("resnet50_pspnet", "resnet50"),
    ):
        assert name in models.NAMES and name in models.REFERENCES
        model = models.get(name, num_classes=2)
        assert isinstance(model, PSPNet) and model.backbone == backbone
    assert models.backbone_of("pspnet") is None
    assert models.backbone_of("resnet50_pspnet") == "resnet50"
    x = jnp.zeros((1, 64, 64, 3))
    with pytest.raises(ValueError, match="`num_classes` must be a positive int"):
        shapes_of(PSPNet(0), x)
    with pytest.raises(ValueError, match=r"PSPNet input must be \(N, H, W, C\)"):
        shapes_of(PSPNet(2), jnp.zeros((64, 64, 3)))
    with pytest.raises(ValueError, match="unknown backbone 'resnet51'"):
        shapes_of(PSPNet(2, backbone="resnet51"), x)
    with pytest.raises(ValueError, match="`output_size` must be >= 1"):
        ops.adaptive_avg_pool(x, 0)


def test_adaptive_avg_pool_follows_its_definition():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 7, 5, 3)).astype(np.float32)

    def reference(x, bins):  # bin i of p over L: floor(i L / p) ... ceil((i + 1) L / p) - 1
        (h, w), (ph, pw) = x.shape[1:3], bins
        out = np.zeros((x.shape[0], ph, pw, x.shape[3]))
        for i in range(ph):
            for j in range(pw):
                rows = slice(i * h // ph, -(-(i + 1) * h // ph))
                cols = slice(j * w // pw, -(-(j + 1) * w // pw))
                out[:, i, j] = x[:, rows, cols].mean(axis=(1, 2))
        return out

    for bins in ((1, 1), (2, 3), (3, 2), (6, 6), (7, 5)):
        np.testing.assert_allclose(ops.adaptive_avg_pool(x, bins), reference(x, bins), atol=1e-6)
    # Where the bins divide the size, average pooling with window = stride = L / p.
    y = rng.standard_normal((1, 12, 6, 2)).astype(np.float32)
    windows = y.reshape(1, 4, 3, 3, 2, 2).mean(axis=(2, 4))
    np.testing.assert_allclose(ops.adaptive_avg_pool(y, (4, 3)), windows, atol=1e-6)
