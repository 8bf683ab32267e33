"""fcnjax.models: the recipes' networks against Keras built from their published code, parameter
counts, odd input sizes, and one training step of every model at tiny width."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fcnjax import models, ops
from fcnjax.models import FCN, ConvAutoencoder, SegNet, UNetMini, backbone_mask


def count(tree):
    return sum(int(np.prod(p.shape)) for p in jax.tree.leaves(tree))


def shapes_of(model, x, **kw):
    """(variables, output) shapes without computing anything."""
    variables = jax.eval_shape(model.init, jax.random.key(0), x)
    return variables, jax.eval_shape(functools.partial(model.apply, **kw), variables, x)


def rel_err(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    assert a.shape == b.shape, (a.shape, b.shape)
    return np.abs(a - b).max() / max(np.abs(b).max(), 1e-30)


# ------------------------------------------------------------------------------------
# Parameter counts (the POSTECH lab's Keras summaries).
# ------------------------------------------------------------------------------------


def test_seed_fcn_has_the_keras_summary_parameter_counts():
    model = models.get("fcn8s", num_classes=2, skip="features")
    variables, logits = shapes_of(model, jax.ShapeDtypeStruct((1, 224, 224, 3), jnp.float32))
    assert logits.shape == (1, 224, 224, 2)
    assert count(variables) == 136_514_116
    mask = backbone_mask(variables)
    frozen = sum(
        int(np.prod(p.shape))
        for p, m in zip(jax.tree.leaves(variables), jax.tree.leaves(mask))
        if m
    )
    assert frozen == 14_714_688
    # Parameter count does not depend on the input size.
    other, _ = shapes_of(model, jax.ShapeDtypeStruct((1, 97, 131, 3), jnp.float32))
    assert count(other) == 136_514_116


def test_autoencoder_has_51459_parameters():
    variables, out = shapes_of(ConvAutoencoder(), jnp.zeros((1, 28, 28, 1)))
    assert count(variables) == 51_459 and out.shape == (1, 28, 28, 1)


def test_paper_fcn_parameters():
    # VGG16 convs + fc6 + fc7 + score layers; the final upsampler has none.
    k = 21
    vgg = 14_714_688 + (7 * 7 * 512 * 4096 + 4096) + (4096 * 4096 + 4096)
    expected = {
        "32s": vgg + 4096 * k + k,
        "16s": vgg + 4096 * k + k + 16 * k * k + 512 * k + k,
        "8s": vgg + 4096 * k + k + 2 * 16 * k * k + 512 * k + k + 256 * k + k,
    }
    for variant, n in expected.items():
        variables, _ = shapes_of(FCN(k, variant), jnp.zeros((1, 64, 64, 3)))
        assert count(variables) == n, variant


# ------------------------------------------------------------------------------------
# Odd input sizes: logits aligned with the input.
# ------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [(500, 375), (97, 131), (33, 31)])
def test_output_matches_input_size(size):
    x = jax.ShapeDtypeStruct((2, *size, 3), jnp.float32)
    for skip in ("score", "features"):
        for variant in ("32s", "16s", "8s"):
            _, y = shapes_of(FCN(5, variant, skip=skip, width=0.0625), x)
            assert y.shape == (2, *size, 5), (skip, variant)
    for up in ("nearest", "bilinear", "transposed"):
        assert shapes_of(UNetMini(3, upsample=up), x)[1].shape == (2, *size, 3)
    assert shapes_of(UNetMini(3, widths=(8, 16, 32, 64, 128)), x)[1].shape == (2, *size, 3)
    assert shapes_of(SegNet(11), x)[1].shape == (2, *size, 11)


def test_bfloat16_compute_keeps_float32_parameters():
    x = jnp.zeros((1, 40, 40, 3))
    for model in [
        FCN(3, "8s", width=0.0625, dtype=jnp.bfloat16),
        FCN(3, "8s", skip="features", width=0.0625, dtype=jnp.bfloat16),
        UNetMini(3, widths=(4, 8), dtype=jnp.bfloat16),
        SegNet(3, widths=(4, 4), kernel_size=3, dtype=jnp.bfloat16),
    ]:
        variables, y = shapes_of(model, x)
        assert y.dtype == jnp.bfloat16, model
        assert {p.dtype for p in jax.tree.leaves(variables)} == {jnp.dtype(jnp.float32)}


# ------------------------------------------------------------------------------------
# Against Keras (JAX backend), built from the recipes' published code with the same weights.
# ------------------------------------------------------------------------------------


def test_autoencoder_matches_seed_keras_model():
    import keras
    from keras import layers as kl

    # The POSTECH lab's autoencoder (its section 3.3), verbatim apart from the imports.
    encoder = keras.models.Sequential(
        [
            kl.Input((28, 28, 1)),
            kl.Conv2D(32, (3, 3), strides=(2, 2), activation="relu", padding="SAME"),
            kl.Conv2D(64, (3, 3), strides=(2, 2), activation="relu", padding="SAME"),
            kl.Conv2D(2, (7, 7), padding="VALID"),
        ]
    )
    decoder = keras.models.Sequential(
        [
            kl.Input((1, 1, 2)),
            kl.Conv2DTranspose(64, (7, 7), strides=(1, 1), activation="relu", padding="VALID"),
            kl.Conv2DTranspose(32, (3, 3), strides=(2, 2), activation="relu", padding="SAME"),
            kl.Conv2DTranspose(1, (7, 7), strides=(2, 2), padding="SAME"),
        ]
    )
    assert encoder.count_params() + decoder.count_params() == 51_459
    params = {}
    for name, layer in zip(["enc1", "enc2", "enc3"], encoder.layers):
        k, b = (np.asarray(w) for w in layer.weights)
        params[name] = {"kernel": k, "bias": b}
    for name, layer in zip(["dec1", "dec2", "dec3"], decoder.layers):
        k, b = (np.asarray(w) for w in layer.weights)
        params[name] = {"kernel": np.asarray(ops.kernel_from_keras(k)), "bias": b}
    x = np.random.default_rng(0).uniform(size=(4, 28, 28, 1)).astype(np.float32)
    apply = jax.jit(ConvAutoencoder().apply, static_argnames="method")
    z = apply({"params": params}, x, method="encode")
    assert rel_err(z, np.asarray(encoder(x)).reshape(4, 2)) < 1e-5
    point = np.array([[2.0, -4.0]], np.float32)  # the lab's generated digit
    generated = apply({"params": params}, point, method="decode")
    assert rel_err(generated, decoder(point.reshape(1, 1, 1, 2))) < 1e-5
    assert rel_err(apply({"params": params}, x), decoder(encoder(x))) < 1e-5


def test_unet_mini_matches_keras_segmentation():
    import keras
    from keras.layers import Conv2D, Dropout, Input, MaxPooling2D, UpSampling2D, concatenate

    # keras-segmentation's unet_mini, verbatim apart from the input size.
    img_input = Input(shape=(24, 20, 3))
    conv1 = Conv2D(32, (3, 3), activation="relu", padding="same")(img_input)
    conv1 = Dropout(0.2)(conv1)
    conv1 = Conv2D(32, (3, 3), activation="relu", padding="same")(conv1)
    pool1 = MaxPooling2D((2, 2))(conv1)
    conv2 = Conv2D(64, (3, 3), activation="relu", padding="same")(pool1)
    conv2 = Dropout(0.2)(conv2)
    conv2 = Conv2D(64, (3, 3), activation="relu", padding="same")(conv2)
    pool2 = MaxPooling2D((2, 2))(conv2)
    conv3 = Conv2D(128, (3, 3), activation="relu", padding="same")(pool2)
    conv3 = Dropout(0.2)(conv3)
    conv3 = Conv2D(128, (3, 3), activation="relu", padding="same")(conv3)
    up1 = concatenate([UpSampling2D((2, 2))(conv3), conv2], axis=-1)
    conv4 = Conv2D(64, (3, 3), activation="relu", padding="same")(up1)
    conv4 = Dropout(0.2)(conv4)
    conv4 = Conv2D(64, (3, 3), activation="relu", padding="same")(conv4)
    up2 = concatenate([UpSampling2D((2, 2))(conv4), conv1], axis=-1)
    conv5 = Conv2D(32, (3, 3), activation="relu", padding="same")(up2)
    conv5 = Dropout(0.2)(conv5)
    conv5 = Conv2D(32, (3, 3), activation="relu", padding="same")(conv5)
    out = Conv2D(2, (1, 1), padding="same")(conv5)
    ref = keras.Model(img_input, out)

    names = [f"{b}_conv{i}" for b in ("down0", "down1", "bottom", "up1", "up0") for i in (1, 2)]
    convs = [layer for layer in ref.layers if isinstance(layer, Conv2D)]
    params = {
        name: {"kernel": np.asarray(c.kernel), "bias": np.asarray(c.bias)}
        for name, c in zip([*names, "head"], convs)
    }
    model = UNetMini(2)
    variables = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 24, 20, 3)))
    assert count(variables) == ref.count_params()
    x = np.random.default_rng(1).standard_normal((2, 24, 20, 3)).astype(np.float32)
    ours = jax.jit(model.apply)({"params": params}, x)
    assert rel_err(ours, ref.predict(x, verbose=0)) < 1e-5


def seed_fcn_keras(width, size, num_classes=2):
    """The POSTECH lab's FCN (its section 4) with every width scaled, on a Keras VGG16 layout."""
    import keras
    from keras import layers as kl

    from fcnjax.models.vgg import VGG16_BLOCKS, scaled

    inp = kl.Input((size, size, 3))
    x, pools = inp, []
    for b, widths in enumerate(VGG16_BLOCKS, 1):
        for c, w in enumerate(widths, 1):
            x = kl.Conv2D(
                scaled(w, width), 3, padding="same", activation="relu", name=f"block{b}_conv{c}"
            )(x)
        x = kl.MaxPooling2D(name=f"block{b}_pool")(x)
        pools.append(x)
    map5, pool4, pool3 = pools[4], pools[3], pools[2]
    conv6 = kl.Conv2D(scaled(4096, width), (7, 7), padding="SAME", activation="relu", name="conv6")(
        map5
    )
    fcn4 = kl.Conv2D(scaled(4096, width), (1, 1), padding="SAME", activation="relu", name="conv7")(
        conv6
    )
    fcn3 = kl.Conv2D(num_classes, (1, 1), padding="SAME", activation="relu", name="score")(fcn4)
    fcn2 = kl.Conv2DTranspose(
        scaled(512, width), (4, 4), strides=(2, 2), padding="SAME", name="upscore2"
    )(fcn3)
    fcn1 = kl.Conv2DTranspose(
        scaled(256, width), (4, 4), strides=(2, 2), padding="SAME", name="upscore_pool4"
    )(fcn2 + pool4)
    # The lab's network ends in a softmax; fcnjax returns the logits before it.
    output = kl.Conv2DTranspose(
        num_classes, (16, 16), strides=(8, 8), padding="SAME", name="upscore8"
    )(fcn1 + pool3)
    return keras.Model(inp, output)


def test_seed_fcn_matches_keras_at_reduced_width():
    ref = seed_fcn_keras(width=0.0625, size=64)
    model = FCN(2, "8s", skip="features", width=0.0625)
    variables = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 64, 64, 3)))
    assert count(variables) == ref.count_params()
    params = {"backbone": {}}
    for layer in ref.layers:
        if not layer.weights:
            continue
        k, b = (np.asarray(w) for w in layer.weights)
        if "transpose" in type(layer).__name__.lower():
            k = np.asarray(ops.kernel_from_keras(k))
        target = params["backbone"] if layer.name.startswith("block") else params
        target[layer.name] = {"kernel": k, "bias": b}
    assert jax.tree.map(jnp.shape, {"params": params}) == jax.tree.map(jnp.shape, variables)
    x = np.random.default_rng(2).uniform(0, 1, (2, 64, 64, 3)).astype(np.float32)
    ours = jax.jit(model.apply)({"params": params}, x)
    assert rel_err(ours, ref.predict(x, verbose=0)) < 1e-4


# ------------------------------------------------------------------------------------
# FCN-specific structure.
# ------------------------------------------------------------------------------------


def test_paper_fcn_starts_from_zero_scores_and_bilinear_upsampling():
    model = FCN(3, "8s", width=0.0625)
    x = jnp.asarray(np.random.default_rng(3).standard_normal((1, 70, 50, 3)), jnp.float32)
    variables = jax.jit(model.init)(jax.random.key(0), x)
    p = variables["params"]
    assert set(p) == {
        "backbone",
        "score_fr",
        "upscore2",
        "score_pool4",
        "upscore_pool4",
        "score_pool3",
    }
    for name in ("score_fr", "score_pool4", "score_pool3"):
        assert float(jnp.abs(p[name]["kernel"]).max()) == 0.0
    for name in ("upscore2", "upscore_pool4"):
        np.testing.assert_array_equal(p[name]["kernel"], ops.bilinear_kernel(2, 3))
    assert float(jnp.abs(jax.jit(model.apply)(variables, x)).max()) == 0.0


def test_registry():
    assert isinstance(models.get("FCN-32s", num_classes=2), FCN)
    assert models.get("unet_mini", num_classes=2).widths == (32, 64, 128)
    with pytest.raises(ValueError, match="unknown model 'fcn64s'"):
        models.get("fcn64s", num_classes=2)
    with pytest.raises(ValueError, match="`variant` must be one of"):
        jax.eval_shape(FCN(2, "4s").init, jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
    with pytest.raises(TypeError, match="model 'segnet_basic'"):
        models.get("segnet_basic", num_klasses=2)
    with pytest.raises(ValueError, match="expects images of shape"):
        ConvAutoencoder().init(jax.random.key(0), jnp.zeros((1, 32, 32, 1)))


# ------------------------------------------------------------------------------------
# One training step of every model at tiny width: finite, non-zero gradients everywhere.
# ------------------------------------------------------------------------------------

TINY = {
    "fcn8s": (models.FCN8s(3, width=0.0625), (2, 40, 36, 3)),
    "fcn8s_features": (models.FCN8s(3, skip="features", width=0.0625), (2, 40, 36, 3)),
    "unet_transposed": (UNetMini(3, widths=(4, 8, 16), upsample="transposed"), (2, 21, 18, 3)),
    "segnet_basic": (SegNet(3, widths=(4, 8), kernel_size=3), (2, 21, 18, 3)),
    "autoencoder": (ConvAutoencoder(), (2, 28, 28, 1)),
}


@pytest.mark.parametrize("name", TINY)
def test_one_training_step(name):
    model, shape = TINY[name]
    x = jnp.asarray(np.random.default_rng(6).uniform(size=shape), jnp.float32)
    rngs = {"params": jax.random.key(0), "dropout": jax.random.key(1)}
    variables = jax.jit(model.init)(rngs, x)
    params, state = variables["params"], {k: v for k, v in variables.items() if k != "params"}
    if name == "fcn8s":
        # Zero-initialised score layers stop every gradient below them: start elsewhere.
        params = jax.tree.map(lambda p: p + 0.01, params)

    def loss(p):
        out, new_state = model.apply(
            {"params": p, **state},
            x,
            train=True,
            rngs={"dropout": jax.random.key(2)},
            mutable=list(state),
        )
        return jnp.mean((out - 0.5) ** 2), new_state

    (value, new_state), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(params)
    assert np.isfinite(float(value))
    for path, g in jax.tree_util.tree_leaves_with_path(grads):
        assert np.all(np.isfinite(g)), jax.tree_util.keystr(path)
        assert float(jnp.abs(g).max()) > 0, jax.tree_util.keystr(path)
    if state:  # BatchNorm statistics were updated in training mode
        changed = jax.tree.map(lambda a, b: bool(jnp.any(a != b)), state, dict(new_state))
        assert all(jax.tree.leaves(changed))
