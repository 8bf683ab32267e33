"""keras-segmentation's ``pspnet_50`` / ``pspnet_101`` (issue 27) against Keras built from
its ``_pspnet_2.py`` (parameter counts, logits on the same weights at 473x473, its
smallest size), its pooling windows at 713x713, any input size, one training step, and
keras-segmentation's pretrained files (legacy Keras HDF5, written here from the Keras
model with random weights) read by ``weights.load_pspnet_caffe``."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fcnjax import models, ops, weights
from fcnjax.models import PSPNetCaffe
from fcnjax.models.pspnet_caffe import POOL_WINDOWS, layer_names
from fcnjax.models.vgg import scaled
from fcnjax.training import tasks
from tests.test_encoders import trainable
from tests.test_keras_segmentation_names import ZEROS, randomize
from tests.test_models import count, rel_err, shapes_of
from tests.test_weights import save_keras_legacy_h5

pytestmark = pytest.mark.usefixtures("cheap_compiles")


# ------------------------------------------------------------------------------------
# keras-segmentation's _pspnet_2.py in Keras 3, widths scaled; its Interp from TF's
# definition.
# ------------------------------------------------------------------------------------


def tf_bilinear(n_in, n_out):
    """TF 2's bilinear resizing (``tf.image.resize``, half-pixel centres) of one dimension
    as an ``(n_out, n_in)`` matrix: output ``i`` samples ``(i + 0.5) n_in / n_out - 0.5``,
    clamped to the input, between its two neighbours."""
    m = np.zeros((n_out, n_in), np.float32)
    for i in range(n_out):
        src = (i + 0.5) * n_in / n_out - 0.5
        lo, lerp = int(np.floor(src)), src - np.floor(src)
        m[i, min(max(lo, 0), n_in - 1)] += 1 - lerp
        m[i, min(max(lo + 1, 0), n_in - 1)] += lerp
    return m


def keras_interp(x, size):
    """``Interp(new_size)``: ``tf.image.resize(inputs, new_size)``."""
    import keras

    class Interp(keras.layers.Layer):
        def call(self, inputs):
            mh, mw = tf_bilinear(inputs.shape[1], size[0]), tf_bilinear(inputs.shape[2], size[1])
            return keras.ops.einsum("ih,jw,nhwc->nijc", mh, mw, inputs)

    return Interp()(x)


def keras_pspnet_caffe(depth, input_shape, n_classes, width=1.0):
    """``_build_pspnet(n_classes, depth, input_shape)`` before its reshape and softmax."""
    import keras
    from keras import layers as kl

    def bn(name):  # _pspnet_2.BN
        return kl.BatchNormalization(momentum=0.95, epsilon=1e-5, name=name)

    def conv(filters, k, name, **kw):
        return kl.Conv2D(scaled(filters, width), k, name=name, use_bias=False, **ZEROS, **kw)

    def residual_conv(prev, level, pad, lvl, sub, stride):
        n = f"conv{lvl}_{sub}_"
        prev = conv(64 * level, (1, 1), n + "1x1_reduce", strides=stride)(prev)
        prev = kl.Activation("relu")(bn(n + "1x1_reduce_bn")(prev))
        prev = kl.ZeroPadding2D(padding=(pad, pad))(prev)
        prev = conv(64 * level, (3, 3), n + "3x3", dilation_rate=pad)(prev)
        prev = kl.Activation("relu")(bn(n + "3x3_bn")(prev))
        prev = conv(256 * level, (1, 1), n + "1x1_increase")(prev)
        return bn(n + "1x1_increase_bn")(prev)

    def residual_short(prev, level, pad, lvl, sub, stride=1):
        prev = kl.Activation("relu")(prev)
        block = residual_conv(prev, level, pad, lvl, sub, stride)
        n = f"conv{lvl}_{sub}_1x1_proj"
        short = bn(n + "_bn")(conv(256 * level, (1, 1), n, strides=stride)(prev))
        return kl.Add()([block, short])

    def residual_empty(prev, level, pad, lvl, sub):
        prev = kl.Activation("relu")(prev)
        return kl.Add()([residual_conv(prev, level, pad, lvl, sub, 1), prev])

    inp = kl.Input((*input_shape, 3))
    x = inp
    for name, f, s in (("conv1_1_3x3_s2", 64, 2), ("conv1_2_3x3", 64, 1), ("conv1_3_3x3", 128, 1)):
        x = conv(f, (3, 3), name, strides=s, padding="same")(x)
        x = kl.Activation("relu")(bn(name + "_bn")(x))
    res = kl.MaxPooling2D(pool_size=(3, 3), padding="same", strides=(2, 2))(x)
    # (level, pad, blocks, stride) of stages 2 ... 5: ResNet(inp, layers).
    stages = ((1, 1, 3, 1), (2, 1, 4, 2), (4, 2, {50: 6, 101: 23}[depth], 1), (8, 4, 3, 1))
    for lvl, (level, pad, blocks, stride) in enumerate(stages, 2):
        res = residual_short(res, level, pad, lvl, 1, stride)
        for i in range(blocks - 1):
            res = residual_empty(res, level, pad, lvl, i + 2)
    res = kl.Activation("relu")(res)
    windows = POOL_WINDOWS[tuple(input_shape)]  # interp_block's kernel_strides_map
    feature_map_size = tuple(int(np.ceil(d / 8.0)) for d in input_shape)
    outs = {}
    for p in (1, 2, 3, 6):
        y = kl.AveragePooling2D((windows[p],) * 2, strides=(windows[p],) * 2)(res)
        y = conv(512, (1, 1), f"conv5_3_pool{p}_conv")(y)
        y = kl.Activation("relu")(bn(f"conv5_3_pool{p}_conv_bn")(y))
        outs[p] = keras_interp(y, feature_map_size)
    x = kl.Concatenate()([res, outs[6], outs[3], outs[2], outs[1]])
    x = conv(512, (3, 3), "conv5_4", padding="same")(x)
    x = kl.Dropout(0.1)(kl.Activation("relu")(bn("conv5_4_bn")(x)))
    x = kl.Conv2D(n_classes, (1, 1), name="conv6", **ZEROS)(x)
    return keras.Model(inp, keras_interp(x, input_shape))


def flax_variables(ref):
    """fcnjax's variables from the Keras model: every layer under its own name."""
    import keras

    params, stats = {}, {}
    for la in ref.layers:
        if isinstance(la, keras.layers.BatchNormalization):
            params[la.name] = {"scale": np.asarray(la.gamma), "bias": np.asarray(la.beta)}
            stats[la.name] = {
                "mean": np.asarray(la.moving_mean),
                "var": np.asarray(la.moving_variance),
            }
        elif isinstance(la, keras.layers.Conv2D):
            params[la.name] = {"kernel": np.asarray(la.kernel)}
            if la.use_bias:
                params[la.name]["bias"] = np.asarray(la.bias)
    return {"params": params, "batch_stats": stats}


@functools.cache
def tiny_keras(depth):
    """keras-segmentation's pspnet_<depth> at 473x473, width 1/16, 3 classes, random
    weights."""
    ref = keras_pspnet_caffe(depth, (473, 473), 3, width=1 / 16)
    randomize(ref, depth)
    return ref


# ------------------------------------------------------------------------------------
# Against Keras.
# ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name, depth, classes", [("pspnet_50", 50, 150), ("pspnet_101", 101, 19)])
def test_parameter_counts_equal_keras_segmentations(name, depth, classes):
    # keras-segmentation's pretrained classes; Keras at 473x473 (its default input); the
    # count does not depend on the input size.
    ref = keras_pspnet_caffe(depth, (473, 473), classes)
    model = models.get(name, num_classes=classes)
    assert isinstance(model, PSPNetCaffe) and model.depth == depth
    expected = flax_variables(ref)
    for shape in ((1, 473, 473, 3), (1, 713, 713, 3), (1, 97, 131, 3)):
        variables, logits = shapes_of(model, jax.ShapeDtypeStruct(shape, jnp.float32))
        assert logits.shape == (*shape[:3], classes)
        assert count(variables["params"]) == trainable(ref), (name, shape)
        n_stats = sum(int(np.prod(w.shape)) for w in ref.non_trainable_weights)
        assert count(variables["batch_stats"]) == n_stats
        assert jax.tree.map(np.shape, expected) == jax.tree.map(lambda s: s.shape, variables)
    assert sorted(expected["params"]) == sorted(
        [*layer_names(depth), *(f"{n}_bn" for n in layer_names(depth)[:-1])]
    )


@pytest.mark.parametrize("depth", [50, 101])
def test_logits_equal_keras_on_the_same_weights(depth):
    ref = tiny_keras(depth)
    model = PSPNetCaffe(3, depth=depth, width=1 / 16)
    x = np.random.default_rng(12).standard_normal((1, 473, 473, 3)).astype(np.float32)
    ours = jax.jit(model.apply)(flax_variables(ref), x)
    expected = ref.predict(x, verbose=0)
    assert expected.shape == (1, 473, 473, 3)
    assert rel_err(ours, expected) < 1e-4


def test_keras_segmentations_pooling_windows_are_the_adaptive_bins():
    # At both of its sizes the stride-8 feature (ceil(473 / 8) = 60, ceil(713 / 8) = 90,
    # as fcnjax's network computes it) splits exactly into its windows: average pooling
    # with window = stride is ops.adaptive_avg_pool's p bins.
    from keras import layers as kl

    model = PSPNetCaffe(2, width=1 / 16)

    def feature(x):
        variables = model.init(jax.random.key(0), x)
        _, taps = model.apply(variables, x, capture_intermediates=True, mutable=["intermediates"])
        return taps["intermediates"]["conv5_3_1x1_increase"]["__call__"][0]

    for size, windows in POOL_WINDOWS.items():
        side = -(-size[0] // 8)
        assert jax.eval_shape(feature, jnp.zeros((1, *size, 3))).shape[1:3] == (side, side)
        f = np.random.default_rng(side).standard_normal((1, side, side, 2)).astype(np.float32)
        for p, k in windows.items():
            keras_pooled = np.asarray(kl.AveragePooling2D((k, k), strides=(k, k))(f))
            assert keras_pooled.shape[1:3] == (p, p)
            np.testing.assert_allclose(ops.adaptive_avg_pool(f, p), keras_pooled, atol=1e-5)


# ------------------------------------------------------------------------------------
# Any input size, one training step, names and errors.
# ------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [(97, 131), (33, 17), (5, 7), (474, 473)])
def test_any_input_size(size):
    for name in ("pspnet_50", "pspnet_101"):
        x = jax.ShapeDtypeStruct((2, *size, 3), jnp.float32)
        _, logits = shapes_of(models.get(name, num_classes=4, width=0.125), x)
        assert logits.shape == (2, *size, 4), name


def test_one_training_step():
    model = PSPNetCaffe(3, width=1 / 16)
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
    for name, depth in (("pspnet_50", 50), ("pspnet_101", 101), ("PSPNet-101", 101)):
        model = models.get(name, num_classes=2)
        assert isinstance(model, PSPNetCaffe) and model.depth == depth
    for name in ("pspnet_50", "pspnet_101"):
        assert name in models.NAMES and name in models.REFERENCES
        assert models.backbone_of(name) is None
        assert "depth" in models.fields(name)
    x = jnp.zeros((1, 33, 33, 3))
    with pytest.raises(ValueError, match="`depth` must be 50 or 101; got 152"):
        shapes_of(PSPNetCaffe(2, depth=152), x)
    with pytest.raises(ValueError, match="`num_classes` must be a positive int"):
        shapes_of(PSPNetCaffe(0), x)
    with pytest.raises(ValueError, match=r"PSPNetCaffe input must be \(N, H, W, C\)"):
        shapes_of(PSPNetCaffe(2), jnp.zeros((33, 33, 3)))
    with pytest.raises(ValueError, match="`dropout` must be a rate in"):
        shapes_of(PSPNetCaffe(2, dropout=1.0), x)


# ------------------------------------------------------------------------------------
# keras-segmentation's pretrained files.
# ------------------------------------------------------------------------------------


def test_a_keras_file_loads_as_keras_layers_by_name(tmp_path):
    ref = tiny_keras(50)
    path = tmp_path / "pspnet50_ade20k.h5"
    save_keras_legacy_h5(ref, path)
    variables, fields, preprocessing = weights.load_pspnet_caffe(path)
    assert fields == {"num_classes": 3, "depth": 50, "width": 1 / 16}
    assert preprocessing == weights.KERAS_CAFFE  # the Caffe model's BGR less the means
    expected = flax_variables(ref)
    assert jax.tree.structure(variables) == jax.tree.structure(expected)
    for a, b in zip(jax.tree.leaves(variables), jax.tree.leaves(expected)):
        np.testing.assert_array_equal(a, b)
    x = np.random.default_rng(13).standard_normal((1, 61, 47, 3)).astype(np.float32)
    out = jax.jit(PSPNetCaffe(**fields).apply)(variables, x)
    assert out.shape == (1, 61, 47, 3)
    with pytest.raises(
        ValueError, match="holds pspnet_50, not the pspnet_101 asked for: load it with depth=50"
    ):
        weights.load_pspnet_caffe(path, depth=101)


def test_a_file_of_another_network_lists_what_is_wrong(tmp_path):
    import keras
    from keras import layers as kl

    inp = kl.Input((33, 33, 3))
    x = kl.Conv2D(4, 3, name="conv1_1_3x3_s2", **ZEROS)(inp)  # the stem, then nothing else
    x = kl.Conv2D(5, 1, name="conv6", **ZEROS)(x)
    x = kl.Conv2D(2, 1, name="score", **ZEROS)(x)
    path = tmp_path / "other.h5"
    save_keras_legacy_h5(keras.Model(inp, x), path)
    with pytest.raises(ValueError) as e:
        weights.load_pspnet_caffe(path)
    message = str(e.value)
    assert "does not hold pspnet_50 weights" in message
    assert "missing: conv1_1_3x3_s2_bn scale" in message and "missing: conv5_4 kernel" in message
    assert "unexpected: score/kernel" in message and "unexpected: conv1_1_3x3_s2 bias" in message
    assert "conv6 kernel (conv6/kernel): expected shape (1, 1, 32, 5), got (1, 1, 4, 5)" in message
