"""keras-segmentation's networks on its vanilla encoder (issue 27): ``unet``, its ``segnet``
(SegNet-Basic is ``segnet_basic``), ``fcn_8``, ``fcn_32``; and ``unet_mini``. Against Keras built
from keras-segmentation's published code (``basic_models.py``, ``unet.py``, ``segnet.py``,
``fcn.py``): parameter counts at the default widths, logits on the same weights; any input
size; one training step each."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fcnjax import models, ops
from fcnjax.models import EncoderFCN, EncoderSegNet, EncoderUNet, UNetMini, VanillaEncoder
from fcnjax.models.vgg import scaled
from fcnjax.training import tasks
from tests.test_encoders import keras_segmentation, trainable
from tests.test_models import count, rel_err, shapes_of

pytestmark = pytest.mark.usefixtures("cheap_compiles")

# Every Keras layer starts at zero (the tests set the values): Keras on JAX would compile
# a random initialiser per shape. keras-segmentation's he_normal score layers included.
ZEROS = {"kernel_initializer": "zeros"}


# ------------------------------------------------------------------------------------
# keras-segmentation's code in Keras, widths scaled, layers named as fcnjax's.
# ------------------------------------------------------------------------------------


def keras_vanilla_encoder(shape, width=1.0):
    """``vanilla_encoder`` (basic_models.py): ``(img_input, [f1, ..., f5])``."""
    from keras import layers as kl

    img_input = kl.Input(shape)
    x, levels = img_input, []
    for b, filters in enumerate((64, 128, 256, 256, 256), 1):
        x = kl.ZeroPadding2D((1, 1))(x)
        x = kl.Conv2D(
            scaled(filters, width), (3, 3), padding="valid", name=f"block{b}_conv", **ZEROS
        )(x)
        x = kl.BatchNormalization(name=f"block{b}_bn")(x)
        x = kl.Activation("relu")(x)
        x = kl.MaxPooling2D((2, 2))(x)
        levels.append(x)
    return img_input, levels


def keras_crop(o1, o2):
    """``crop`` (fcn.py), with the shapes read off the tensors."""
    from keras import layers as kl

    (h1, w1), (h2, w2) = o1.shape[1:3], o2.shape[1:3]
    cx, cy = abs(w1 - w2), abs(h2 - h1)
    if w1 > w2:
        o1 = kl.Cropping2D(cropping=((0, 0), (0, cx)))(o1)
    else:
        o2 = kl.Cropping2D(cropping=((0, 0), (0, cx)))(o2)
    if h1 > h2:
        o1 = kl.Cropping2D(cropping=((0, cy), (0, 0)))(o1)
    else:
        o2 = kl.Cropping2D(cropping=((0, cy), (0, 0)))(o2)
    return o1, o2


def keras_fcn(variant, levels, n_classes, width=1.0):
    """``fcn_8`` / ``fcn_32`` (fcn.py) on ``levels``."""
    from keras import layers as kl

    f1, f2, f3, f4, f5 = levels
    o = kl.Conv2D(
        scaled(4096, width), (7, 7), activation="relu", padding="same", name="conv6", **ZEROS
    )(f5)
    o = kl.Dropout(0.5)(o)
    o = kl.Conv2D(
        scaled(4096, width), (1, 1), activation="relu", padding="same", name="conv7", **ZEROS
    )(o)
    o = kl.Dropout(0.5)(o)
    o = kl.Conv2D(n_classes, (1, 1), name="score_fr", **ZEROS)(o)
    up = dict(use_bias=False, **ZEROS)
    if variant == "32s":
        return kl.Conv2DTranspose(n_classes, (64, 64), strides=(32, 32), name="upscore32", **up)(o)
    o = kl.Conv2DTranspose(n_classes, kernel_size=(4, 4), strides=(2, 2), name="upscore2", **up)(o)
    o2 = kl.Conv2D(n_classes, (1, 1), name="score_pool4", **ZEROS)(f4)
    o, o2 = keras_crop(o, o2)
    o = kl.Add()([o, o2])
    o = kl.Conv2DTranspose(n_classes, (4, 4), strides=(2, 2), name="upscore_pool4", **up)(o)
    o2 = kl.Conv2D(n_classes, (1, 1), name="score_pool3", **ZEROS)(f3)
    o2, o = keras_crop(o2, o)
    o = kl.Add()([o2, o])
    return kl.Conv2DTranspose(n_classes, (16, 16), strides=(8, 8), name="upscore8", **up)(o)


def keras_model(name, shape, n_classes, width=1.0):
    """keras-segmentation's ``unet`` / ``segnet`` / ``fcn_8`` / ``fcn_32`` (its
    ``all_models.model_from_name``) before its reshape and softmax."""
    import keras

    img_input, levels = keras_vanilla_encoder(shape, width)
    if name in ("unet", "segnet"):  # _unet / _segnet read levels[:4]
        decoder = "unet" if name == "unet" else "segnet"
        out = keras_segmentation(decoder, levels[:4], n_classes, width)
    else:
        out = keras_fcn({"fcn_8": "8s", "fcn_32": "32s"}[name], levels, n_classes, width)
    return keras.Model(img_input, out)


def randomize(ref, seed):
    rng = np.random.default_rng(seed)
    for w in ref.weights:  # BatchNorm statistics too: inference mode uses them
        if "variance" in w.path:
            w.assign(rng.uniform(0.5, 2.0, w.shape).astype(np.float32))
        else:
            w.assign((rng.standard_normal(w.shape) * 0.2).astype(np.float32))


# Keras layers named as fcnjax's top-level layers (FCN's head, PSPNet's).
TOP_LEVEL = ("conv6", "conv7", "score", "upscore", "psp", "seg_feats", "classifier")


def flax_variables(ref):
    """fcnjax's variables from the Keras model: ``block*`` layers into ``backbone``, the
    named head layers at the top, keras_segmentation()'s unnamed decoder layers in order."""
    import keras

    params, stats = {}, {}
    convs = iter(["conv1", "conv2", "conv3", "conv4", "classifier"])
    bns = iter(["bn1", "bn2", "bn3", "bn4"])
    for la in ref.layers:
        if not la.weights:
            continue
        bn = isinstance(la, keras.layers.BatchNormalization)
        if la.name.startswith("block"):
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
        else:
            p[name] = {"kernel": np.asarray(la.kernel)}
            if la.use_bias:
                p[name]["bias"] = np.asarray(la.bias)
    return {"params": params, "batch_stats": stats}


# ------------------------------------------------------------------------------------
# Parameter counts and logits against Keras.
# ------------------------------------------------------------------------------------

VANILLA = ("unet", "segnet", "fcn_8", "fcn_32")


@pytest.mark.parametrize("name", VANILLA)
def test_parameter_counts_equal_keras_segmentations(name):
    # keras-segmentation's default input (416x608): its count does not depend on it.
    ref = keras_model(name, (416, 608, 3), 21)
    model = models.get(name, num_classes=21)
    for shape in ((1, 416, 608, 3), (1, 97, 131, 3)):
        variables, logits = shapes_of(model, jax.ShapeDtypeStruct(shape, jnp.float32))
        assert logits.shape == (*shape[:3], 21)
        assert count(variables["params"]) == trainable(ref), (name, shape)
        n_stats = sum(int(np.prod(w.shape)) for w in ref.non_trainable_weights)
        assert count(variables["batch_stats"]) == n_stats


def test_unet_mini_keeps_keras_segmentations_count():
    # keras-segmentation's unet_mini at 21 classes (the README's table): fcnjax's unet before
    # issue 27.
    variables, _ = shapes_of(models.get("unet_mini", num_classes=21), jnp.zeros((1, 360, 480, 3)))
    assert count(variables) == 472_213
    assert isinstance(models.get("unet-mini", num_classes=5), UNetMini)


@pytest.mark.parametrize(
    "name, size",
    [("unet", (48, 80)), ("segnet", (48, 80)), ("fcn_8", (64, 96)), ("fcn_32", (64, 96))],
)
def test_logits_equal_keras_on_the_same_weights(name, size):
    """48x80: a multiple of 16, not of 32 (keras-segmentation's U-Net takes it)."""
    width, k = 1 / 16, 3
    ref = keras_model(name, (*size, 3), k, width)
    randomize(ref, 4)
    model = models.get(name, num_classes=k, width=width)
    x = np.random.default_rng(5).standard_normal((2, *size, 3)).astype(np.float32)
    variables = flax_variables(ref)
    expected_tree = jax.eval_shape(model.init, jax.random.key(0), x)
    assert jax.tree.map(np.shape, variables) == jax.tree.map(lambda s: s.shape, expected_tree)
    ours = jax.jit(model.apply)(variables, x)
    keras_out = ref.predict(x, verbose=0)
    if name.startswith("fcn"):
        # keras-segmentation's "valid" output: f / 2 more pixels on each side.
        f = 8 if name == "fcn_8" else 32
        assert keras_out.shape == (2, size[0] + f, size[1] + f, k)
        expected = keras_out[:, f // 2 : f // 2 + size[0], f // 2 : f // 2 + size[1]]
    else:  # scores at stride 2, resized to the input
        assert keras_out.shape == (2, size[0] // 2, size[1] // 2, k)
        expected = jax.image.resize(keras_out, (2, *size, k), "bilinear")
    assert rel_err(ours, expected) < 1e-4


# ------------------------------------------------------------------------------------
# Any input size, one training step, names and errors.
# ------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [(97, 131), (33, 17)])
@pytest.mark.parametrize("name", VANILLA)
def test_any_input_size(name, size):
    x = jax.ShapeDtypeStruct((2, *size, 3), jnp.float32)
    _, logits = shapes_of(models.get(name, num_classes=4, width=0.125), x)
    assert logits.shape == (2, *size, 4)


TINY = {
    "unet": EncoderUNet(3, backbone="vanilla", width=1 / 16),
    "segnet": EncoderSegNet(3, backbone="vanilla", width=1 / 16),
    "fcn_8": EncoderFCN(3, width=1 / 16),
    "fcn_32": EncoderFCN(3, "32s", width=1 / 16),
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
        assert out.shape == (2, 37, 45, 3)
        return task.loss(task.loss_sums(out, {"mask": mask})), new

    (value, new), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(params)
    assert np.isfinite(float(value))
    for path, g in jax.tree_util.tree_leaves_with_path(grads):
        assert np.all(np.isfinite(g)), jax.tree_util.keystr(path)
        assert float(jnp.abs(g).max()) > 0, jax.tree_util.keystr(path)
    changed = jax.tree.map(lambda a, b: bool(jnp.any(a != b)), stats, dict(new["batch_stats"]))
    assert all(jax.tree.leaves(changed))


def test_names_fields_and_backbones():
    expected = {
        "unet": (EncoderUNet, "vanilla"),
        "segnet": (EncoderSegNet, "vanilla"),
        "fcn_8": (EncoderFCN, "vanilla"),
        "fcn_32": (EncoderFCN, "vanilla"),
        "unet_mini": (UNetMini, None),
    }
    for name, (cls, backbone) in expected.items():
        assert name in models.NAMES and name in models.REFERENCES
        model = models.get(name, num_classes=2)
        assert isinstance(model, cls) and getattr(model, "backbone", None) == backbone
        assert models.backbone_of(name) is None  # no pretrained weights for either
    assert models.get("fcn_32", num_classes=2).variant == "32s"
    assert models.get("FCN-8", num_classes=2).variant == "8s"
    assert models.backbone_of("fcn_8", backbone="vgg16") == "vgg16"
    assert isinstance(models.UNet(2), EncoderUNet) and models.UNet(2).backbone == "vanilla"
    assert "vanilla" in models.ENCODERS and "vanilla" not in models.encoders.PRETRAINABLE


def test_vanilla_encoder_levels_and_parameters():
    taps = jax.eval_shape(
        lambda x: VanillaEncoder().init_with_output(jax.random.key(0), x), jnp.zeros((1, 64, 96, 3))
    )
    (features, variables) = taps
    assert [features[f"pool{b}"].shape[1:] for b in range(1, 6)] == [
        (32, 48, 64),
        (16, 24, 128),
        (8, 12, 256),
        (4, 6, 256),
        (2, 3, 256),
    ]
    convs = 3 * 9 * 64 + 64 + 64 * 9 * 128 + 128 + 128 * 9 * 256 + 256 + 2 * (256 * 9 * 256 + 256)
    assert count(variables["params"]) == convs + 2 * (64 + 128 + 3 * 256)
    assert not any(jax.tree.leaves(models.backbone_mask(variables["params"])))  # not pretrained


def test_bad_arguments_are_named():
    x = jnp.zeros((1, 64, 64, 3))
    with pytest.raises(ValueError, match="`variant` must be '8s' or '32s'; got '16s'"):
        shapes_of(EncoderFCN(2, "16s"), x)
    with pytest.raises(ValueError, match=r"models.get\('fcn_8'\)"):
        shapes_of(models.FCN(2, backbone="vanilla"), x)
    with pytest.raises(ValueError, match="unknown backbone 'vanila'"):
        shapes_of(EncoderFCN(2, backbone="vanila"), x)
    with pytest.raises(ValueError, match="`dropout` must be a rate"):
        shapes_of(EncoderFCN(2, dropout=1.0), x)
    with pytest.raises(ValueError, match="`num_classes` must be a positive int"):
        shapes_of(EncoderFCN(0), x)
    with pytest.raises(ValueError, match=r"input must be \(N, H, W, C\)"):
        shapes_of(EncoderFCN(2), jnp.zeros((64, 64, 3)))
    with pytest.raises(ValueError, match="`output_stride` must be 32 for vanilla"):
        models.encoders.encoder("vanilla", output_stride=16)
    with pytest.raises(ValueError, match="`blocks` must be 1 ... 5"):
        shapes_of(VanillaEncoder(blocks=6), x)
    # The former unet's arguments: the error says where that network went.
    with pytest.raises(TypeError, match=r"does not take \['widths'\].*now `unet_mini`"):
        models.get("unet", num_classes=2, widths=(4, 8))
    with pytest.raises(TypeError, match=r"\['kernel_size'\].*now `segnet_basic`"):
        models.get("segnet", num_classes=2, kernel_size=3)


def test_a_workdir_of_the_former_unet_says_where_it_went(tmp_path):
    # A workdir trained before issue 27 names `unet` and holds unet_mini's parameters.
    import types

    from fcnjax import predict
    from fcnjax.training.checkpoints import CheckpointError

    x = jnp.zeros((1, 32, 32, 3))
    old = jax.eval_shape(UNetMini(2, widths=(4, 8)).init, jax.random.key(0), x)
    old = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), old)
    run = types.SimpleNamespace(model=models.get("unet", num_classes=2), example_shape=x.shape)
    with pytest.raises(CheckpointError, match="set model.name to unet_mini in its config.json"):
        predict._checked(run, old, tmp_path, "latest", 1, "unet")
    # And one of the former segnet (SegNet-Basic) under that name.
    old = jax.eval_shape(models.SegNet(2, widths=(4, 8)).init, jax.random.key(0), x)
    old = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), old)
    run = types.SimpleNamespace(model=models.get("segnet", num_classes=2), example_shape=x.shape)
    with pytest.raises(CheckpointError, match="set model.name to segnet_basic in its config"):
        predict._checked(run, old, tmp_path, "latest", 1, "segnet")
