"""fcnjax.weights: VGG16 files from Keras and torchvision, checked against their own forwards.

Every file here is written by the real writer of its format (Keras' legacy HDF5 writer,
``torch.save``, ``safetensors.torch.save_file``) from a randomly initialised model, or by
hand with h5py where a variant of the format is tested; no test touches the network.
"""

import functools
import hashlib
import sys
from pathlib import Path

import h5py
import jax
import jax.numpy as jnp
import numpy as np
import pooch
import pytest
import requests
from flax.core import FrozenDict, freeze

from fcnjax import download, weights
from fcnjax.models.vgg import VGG16, VGG16_BLOCKS, VGG16_CONVS, scaled
from fcnjax.weights import (
    KERAS_CAFFE,
    TORCHVISION,
    Preprocessing,
    WeightsUnavailableError,
    into_backbone,
    load_vgg16,
)

RTOL = 1e-4  # max |ours - oracle| <= RTOL * max |oracle|
TORCH_CONVS = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)
CONV_WIDTHS = [c for block in VGG16_BLOCKS for c in block]


def assert_close(actual, expected, rtol=RTOL):
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    scale = np.abs(expected).max()
    # A forward that ReLU killed would compare zeros with zeros: refuse that.
    assert scale > 0 and np.count_nonzero(expected) > expected.size // 10, "degenerate oracle"
    err = np.abs(actual - expected).max() / scale
    assert err <= rtol, f"relative error {err:.3g} > {rtol}"


@functools.partial(jax.jit, static_argnames=("width", "fc", "pool_padding"))
def vgg_forward(params, x, width, fc, pool_padding="SAME"):
    return VGG16(width=width, fc=fc, pool_padding=pool_padding).apply({"params": params}, x)


# ------------------------------------------------------------------------------------
# Source models.
# ------------------------------------------------------------------------------------


def randomize_keras(model, rng):
    """He-normal kernels and non-zero biases (Keras' zero biases would test nothing)."""
    for layer in model.layers:
        if layer.weights:
            kernel, bias = layer.get_weights()
            std = np.sqrt(2.0 / np.prod(kernel.shape[:-1]))
            layer.set_weights([rng.normal(0, std, kernel.shape), rng.normal(0, 0.1, bias.shape)])


def save_keras_legacy_h5(model, path):
    from keras.src.legacy.saving.legacy_h5_format import save_weights_to_hdf5_group

    with h5py.File(path, "w") as f:
        save_weights_to_hdf5_group(f, model)


def keras_vgg16(width, input_shape, top):
    """keras.applications.VGG16's layer graph and names, every width scaled."""
    import keras

    # Zero initialisers (randomize_keras sets the values): jax.random would compile per shape.
    zeros = {"kernel_initializer": "zeros"}
    inputs = keras.Input(input_shape)
    x = inputs
    for b, widths in enumerate(VGG16_BLOCKS, 1):
        for c, w in enumerate(widths, 1):
            x = keras.layers.Conv2D(
                scaled(w, width),
                3,
                padding="same",
                activation="relu",
                name=f"block{b}_conv{c}",
                **zeros,
            )(x)
        x = keras.layers.MaxPooling2D(2, strides=2, name=f"block{b}_pool")(x)
    if top:
        x = keras.layers.Flatten(name="flatten")(x)
        x = keras.layers.Dense(scaled(4096, width), activation="relu", name="fc1", **zeros)(x)
        x = keras.layers.Dense(scaled(4096, width), activation="relu", name="fc2", **zeros)(x)
        x = keras.layers.Dense(1000, activation="softmax", name="predictions", **zeros)(x)
    return keras.Model(inputs, x, name="vgg16")


def torch_vgg16(width):
    """torchvision.models.vgg16's module tree (same state-dict keys), every width scaled."""
    import torch
    from torch import nn

    class VGG(nn.Module):
        def __init__(self):
            super().__init__()
            layers, c_in = [], 3
            for widths in VGG16_BLOCKS:
                for w in widths:
                    layers += [nn.Conv2d(c_in, scaled(w, width), 3, padding=1), nn.ReLU(True)]
                    c_in = scaled(w, width)
                layers.append(nn.MaxPool2d(2, 2))
            self.features = nn.Sequential(*layers)
            self.avgpool = nn.AdaptiveAvgPool2d((7, 7))  # the identity on 224x224 inputs
            f = scaled(4096, width)
            fc1 = [nn.Linear(c_in * 49, f), nn.ReLU(True), nn.Dropout()]
            fc2 = [nn.Linear(f, f), nn.ReLU(True), nn.Dropout()]
            self.classifier = nn.Sequential(*fc1, *fc2, nn.Linear(f, 1000))

    torch.manual_seed(0)
    model = VGG().eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                nn.init.normal_(m.bias, 0, 0.1)
    return model


def torch_layout_state(width, rng, top=True):
    """A torchvision-layout state dict of NumPy arrays (for the error tests)."""
    state, c_in = {}, 3
    for i, w in zip(TORCH_CONVS, CONV_WIDTHS):
        c = scaled(w, width)
        state[f"features.{i}.weight"] = rng.normal(size=(c, c_in, 3, 3)).astype(np.float32)
        state[f"features.{i}.bias"] = rng.normal(size=(c,)).astype(np.float32)
        c_in = c
    if top:
        f = scaled(4096, width)
        for i, (n_in, n_out) in zip((0, 3, 6), ((49 * c_in, f), (f, f), (f, 10))):
            state[f"classifier.{i}.weight"] = rng.normal(size=(n_out, n_in)).astype(np.float32)
            state[f"classifier.{i}.bias"] = rng.normal(size=(n_out,)).astype(np.float32)
    return state


def keras_layout_layers(width, rng, top=True):
    """{layer: [kernel, bias]} in Keras' layout (for the hand-written HDF5 files)."""
    layers, c_in = {}, 3
    for name, w in zip(VGG16_CONVS, CONV_WIDTHS):
        c = scaled(w, width)
        layers[name] = [rng.normal(size=(3, 3, c_in, c)), rng.normal(size=(c,))]
        c_in = c
    if top:
        f = scaled(4096, width)
        for name, (n_in, n_out) in zip(_TOP, ((49 * c_in, f), (f, f), (f, 10))):
            layers[name] = [rng.normal(size=(n_in, n_out)), rng.normal(size=(n_out,))]
    return {k: [v.astype(np.float32) for v in vs] for k, vs in layers.items()}


_TOP = ("fc1", "fc2", "predictions")


def write_keras_h5(path, layers, names="new", under_model_weights=False, chunk_names=False):
    """The legacy Keras weights layout, by hand: ``layer_names`` and ``weight_names``."""
    with h5py.File(path, "w") as f:
        root = f.create_group("model_weights") if under_model_weights else f
        all_names = ["input_1", *layers, "flatten"]
        encoded = np.array([n.encode() for n in all_names])
        if chunk_names:  # how Keras splits an attribute too large for an HDF5 header
            for i, part in enumerate(np.array_split(encoded, 3)):
                root.attrs[f"layer_names{i}"] = part
        else:
            root.attrs["layer_names"] = encoded
        for layer in all_names:
            g = root.create_group(layer)
            arrays = layers.get(layer, [])
            if names == "old":  # the released files: block1_conv1_W_1:0, block1_conv1_b_1:0
                wnames = [f"{layer}_{s}_1:0" for s in "Wb"][: len(arrays)]
            else:  # Keras 2: block1_conv1/kernel:0 (nested groups in HDF5)
                wnames = [f"{layer}/{s}:0" for s in ("kernel", "bias")][: len(arrays)]
            g.attrs["weight_names"] = np.array([n.encode() for n in wnames], dtype="S")
            for n, a in zip(wnames, arrays):
                g.create_dataset(n, data=a)


# ------------------------------------------------------------------------------------
# Numerical agreement with the source frameworks.
# ------------------------------------------------------------------------------------


def test_keras_applications_notop_matches_keras(tmp_path, rng):
    import keras

    model = keras.applications.VGG16(weights=None, include_top=False, input_shape=(32, 32, 3))
    randomize_keras(model, rng)
    path = tmp_path / "vgg16_notop.h5"
    save_keras_legacy_h5(model, path)
    taps = keras.Model(
        model.input, [model.get_layer(n).output for n in ("block3_pool", "block5_pool")]
    )
    x = rng.normal(0, 50, (2, 32, 32, 3)).astype(np.float32)
    pool3, pool5 = (np.asarray(t) for t in taps(x))

    params, pre = load_vgg16(path, fc=False)
    assert pre == KERAS_CAFFE
    assert set(params) == set(VGG16_CONVS)
    assert all(a.dtype == np.float32 for leaves in params.values() for a in leaves.values())
    ours = vgg_forward(params, x, width=1.0, fc=False, pool_padding="VALID")
    assert_close(ours["pool3"], pool3)
    assert_close(ours["pool5"], pool5)


@pytest.fixture(scope="module")
def keras_top():
    """A 1/8-width Keras VGG16 with its classifier, its legacy h5 file and its outputs."""
    import keras

    rng = np.random.default_rng(1)
    model = keras_vgg16(0.125, (224, 224, 3), top=True)
    randomize_keras(model, rng)
    taps = keras.Model(
        model.input, [model.get_layer(n).output for n in ("block5_pool", "fc2", "predictions")]
    )
    x = rng.normal(0, 50, (2, 224, 224, 3)).astype(np.float32)
    return model, x, [np.asarray(t) for t in taps(x)]


def test_keras_with_top_matches_keras(tmp_path, keras_top):
    model, x, (pool5, fc2, _) = keras_top
    path = tmp_path / "vgg16_small.h5"
    save_keras_legacy_h5(model, path)
    params, pre = load_vgg16(path, fc=True)
    assert pre == KERAS_CAFFE
    assert set(params) == {*VGG16_CONVS, "fc6", "fc7"}
    assert params["fc6"]["kernel"].shape == (7, 7, 64, 512)
    assert params["fc7"]["kernel"].shape == (1, 1, 512, 512)
    ours = vgg_forward(params, x, width=0.125, fc=True)
    assert_close(ours["pool5"], pool5)
    # The centre of the convolutionalised fc7 sees exactly the dense fc2's input: this
    # fails if fc1's kernel is unflattened in any order but (H, W, C).
    assert_close(ours["fc7"][:, 3, 3, :], fc2)
    # fc=False ignores the classifier of a full file.
    assert set(load_vgg16(path, fc=False)[0]) == set(VGG16_CONVS)


@pytest.fixture(scope="module")
def torch_top():
    """A 1/8-width torchvision-style VGG16, its outputs on a 224x224 batch."""
    import torch

    torch.set_num_threads(1)
    model = torch_vgg16(0.125)
    x = np.random.default_rng(2).normal(0, 2, (2, 224, 224, 3)).astype(np.float32)
    with torch.no_grad():
        features = model.features(torch.from_numpy(x).permute(0, 3, 1, 2))
        flat = torch.flatten(model.avgpool(features), 1)
        fc2 = model.classifier[:5](flat)  # Linear, ReLU, Dropout, Linear, ReLU
    return model, x, features.permute(0, 2, 3, 1).numpy(), fc2.numpy()


@pytest.mark.requires_torch
@pytest.mark.parametrize("fmt", ["pth", "safetensors"])
def test_torchvision_matches_torch(tmp_path, torch_top, fmt):
    import torch
    from safetensors.torch import save_file

    model, x, pool5, fc2 = torch_top
    path = tmp_path / f"vgg16-small.{fmt}"
    if fmt == "pth":
        torch.save(model.state_dict(), path)
    else:
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, path)
    params, pre = load_vgg16(path, fc=True)
    assert pre == TORCHVISION
    assert set(params) == {*VGG16_CONVS, "fc6", "fc7"}
    ours = vgg_forward(params, x, width=0.125, fc=True)
    assert_close(ours["pool5"], pool5)
    # torch flattens pool5 in (C, H, W) order: the fc7 centre checks the unflattening.
    assert_close(ours["fc7"][:, 3, 3, :], fc2)


@pytest.mark.parametrize(
    "variant",
    [
        {"names": "old"},
        {"names": "new"},
        {"names": "new", "under_model_weights": True},
        {"names": "old", "chunk_names": True},
    ],
)
def test_keras_h5_variants(tmp_path, rng, variant):
    layers = keras_layout_layers(1 / 64, rng)
    path = tmp_path / "w.h5"
    write_keras_h5(path, layers, **variant)
    params, _ = load_vgg16(path, fc=True)
    for name in VGG16_CONVS:
        np.testing.assert_array_equal(params[name]["kernel"], layers[name][0])
        np.testing.assert_array_equal(params[name]["bias"], layers[name][1])
    c5, f = 8, 64
    np.testing.assert_array_equal(params["fc6"]["kernel"], layers["fc1"][0].reshape(7, 7, c5, f))
    np.testing.assert_array_equal(params["fc7"]["kernel"][0, 0], layers["fc2"][0])
    np.testing.assert_array_equal(params["fc7"]["bias"], layers["fc2"][1])


def test_safetensors_mapping_by_hand(tmp_path, rng):
    from safetensors.numpy import save_file

    state = torch_layout_state(1 / 64, rng)
    path = tmp_path / "w.safetensors"
    save_file(state, path)
    params, _ = load_vgg16(path)
    w = state["features.5.weight"]  # block2_conv1: (C_out, C_in, kh, kw)
    assert params["block2_conv1"]["kernel"][1, 2, 0, 1] == w[1, 0, 1, 2]
    w = state["classifier.0.weight"]  # (F, C5 * 7 * 7), (C, H, W) flattening
    # fc6[h, w, c, o] = weight[o, c * 49 + h * 7 + w]
    assert params["fc6"]["kernel"][2, 5, 3, 17] == w[17, 3 * 49 + 2 * 7 + 5]
    assert params["fc7"]["kernel"][0, 0, 4, 9] == state["classifier.3.weight"][9, 4]


# ------------------------------------------------------------------------------------
# Preprocessing.
# ------------------------------------------------------------------------------------


def test_preprocessing_by_hand():
    pixel = np.array([[[10, 20, 30]]], np.uint8)  # one RGB pixel
    np.testing.assert_allclose(
        KERAS_CAFFE(pixel)[0, 0], [30 - 103.939, 20 - 116.779, 10 - 123.68], rtol=1e-6
    )
    np.testing.assert_allclose(
        TORCHVISION(pixel)[0, 0],
        [(10 / 255 - 0.485) / 0.229, (20 / 255 - 0.456) / 0.224, (30 / 255 - 0.406) / 0.225],
        rtol=1e-6,
    )
    np.testing.assert_allclose(
        TORCHVISION(pixel)[0, 0], [-1.946657, -1.685574, -1.281569], rtol=1e-6
    )
    out = KERAS_CAFFE(pixel.astype(np.float64))
    assert isinstance(out, np.ndarray) and out.dtype == np.float32
    out = TORCHVISION(jnp.asarray(pixel))
    assert isinstance(out, jax.Array) and out.dtype == jnp.float32
    jitted = jax.jit(KERAS_CAFFE)(jnp.full((2, 3, 3), 255.0))
    np.testing.assert_allclose(jitted[0, 0], [255 - 103.939, 255 - 116.779, 255 - 123.68])
    with pytest.raises(ValueError, match="3 channels"):
        KERAS_CAFFE(np.zeros((4, 4, 4)))
    with pytest.raises(ValueError, match="3 values"):
        Preprocessing(mean=(1.0, 2.0), std=(1.0, 1.0, 1.0), bgr=False)


def test_preprocessing_lives_in_the_data_package():
    import ast

    from fcnjax import data
    from fcnjax.data import transforms

    assert weights.Preprocessing is data.Preprocessing is transforms.Preprocessing
    assert (weights.KERAS_CAFFE, weights.TORCHVISION) == (
        transforms.KERAS_CAFFE,
        transforms.TORCHVISION,
    )
    # The input pipeline needs neither the weights loader nor the models.
    tree = ast.parse(Path(transforms.__file__).read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            imported |= {f"{node.module}.{alias.name}" for alias in node.names}
    assert not {m for m in imported if m.startswith(("fcnjax.weights", "fcnjax.models"))}


def test_keras_caffe_matches_keras_preprocess_input(rng):
    from keras.applications.vgg16 import preprocess_input

    images = rng.integers(0, 256, (2, 5, 7, 3)).astype(np.float32)
    np.testing.assert_allclose(KERAS_CAFFE(images), preprocess_input(images.copy()), rtol=1e-6)


# ------------------------------------------------------------------------------------
# Errors.
# ------------------------------------------------------------------------------------


def test_torch_file_errors_listed_together(tmp_path, rng):
    from safetensors.numpy import save_file

    state = torch_layout_state(1 / 64, rng)
    del state["features.10.weight"], state["features.10.bias"]  # block3_conv1 missing
    state["features.1.weight"] = np.ones((3,), np.float32)  # a ReLU holds no tensors
    state["features.19.weight"] = state["features.19.weight"][:, :7]  # C_in 8 -> 7
    state["classifier.0.weight"] = state["classifier.0.weight"][:, :-1]  # not 49 * C5
    path = tmp_path / "broken.safetensors"
    save_file(state, path)
    with pytest.raises(ValueError) as info:
        load_vgg16(path)
    msg = str(info.value)
    assert str(path) in msg
    for needle in (
        "missing: features.10.weight",
        "missing: features.10.bias",
        "unexpected: features.1.weight",
        "features.19.weight: expected shape (*, 8, 3, 3), got (8, 7, 3, 3)",
        "classifier.0.weight: expected shape (*, 392), got (64, 391)",
    ):
        assert needle in msg, (needle, msg)


def test_keras_file_errors_listed_together(tmp_path, rng):
    layers = keras_layout_layers(1 / 64, rng)
    del layers["block3_conv1"]
    layers["block6_conv1"] = [np.ones((3, 3, 8, 8)), np.ones((8,))]
    k = layers["block2_conv2"][0]
    layers["block2_conv2"][0] = np.ones((5, 5, *k.shape[2:]))  # not 3x3
    path = tmp_path / "broken.h5"
    write_keras_h5(path, layers)
    with pytest.raises(ValueError) as info:
        load_vgg16(path)
    msg = str(info.value)
    for needle in (
        str(path),
        "missing: block3_conv1 kernel",
        "missing: block3_conv1 bias",
        "unexpected: block6_conv1/kernel:0 (3, 3, 8, 8) in layer 'block6_conv1'",
        "block2_conv2 kernel (block2_conv2/kernel:0): expected shape (3, 3, 2, *), got (5, 5",
    ):
        assert needle in msg, (needle, msg)


def test_fc_true_refuses_notop_files(tmp_path, rng):
    from safetensors.numpy import save_file

    path = tmp_path / "notop.h5"
    write_keras_h5(path, keras_layout_layers(1 / 64, rng, top=False))
    with pytest.raises(ValueError, match="notop.*fc=False"):
        load_vgg16(path, fc=True)
    assert set(load_vgg16(path, fc=False)[0]) == set(VGG16_CONVS)
    path = tmp_path / "features.safetensors"
    save_file(torch_layout_state(1 / 64, rng, top=False), path)
    with pytest.raises(ValueError, match="notop.*fc=False"):
        load_vgg16(path, fc=True)


def test_unreadable_inputs(tmp_path, monkeypatch, rng):
    with pytest.raises(FileNotFoundError, match="nothing.h5"):
        load_vgg16(tmp_path / "nothing.h5")
    text = tmp_path / "weights.txt"
    text.write_text("not weights")
    with pytest.raises(ValueError, match="unrecognised"):
        load_vgg16(text)
    pth = tmp_path / "w.pth"
    pth.write_bytes(b"PK\x03\x04")
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` now fails
    with pytest.raises(ImportError, match="safetensors"):
        load_vgg16(pth)


def test_loader_reads_any_backbone_file(tmp_path, rng):
    """The shared readers know no network: every tensor by name, dtypes kept."""
    from safetensors.numpy import save_file

    from fcnjax.weights import files

    state = {
        "layer1.0.bn1.running_mean": rng.normal(size=(4,)).astype(np.float32),
        "layer1.0.bn1.num_batches_tracked": np.array(7, np.int64),  # as ResNet's BN holds
    }
    path = tmp_path / "resnet-like.safetensors"
    save_file(state, path)
    assert files.file_format(path) == "safetensors"
    read = files.read_state_dict(path, "safetensors")
    assert set(read) == set(state) and read["layer1.0.bn1.num_batches_tracked"].dtype == np.int64
    np.testing.assert_array_equal(
        read["layer1.0.bn1.running_mean"], state["layer1.0.bn1.running_mean"]
    )
    layers = keras_layout_layers(1 / 64, rng, top=False)
    h5 = tmp_path / "w.h5"
    write_keras_h5(h5, layers)
    found = files.read_keras_h5(h5, {"block1_conv1"})
    assert set(found.arrays) == {"block1_conv1"} and not found.problems
    assert [n for n, _ in found.arrays["block1_conv1"]] == [
        "block1_conv1/kernel:0",
        "block1_conv1/bias:0",
    ]
    np.testing.assert_array_equal(found.arrays["block1_conv1"][0][1], layers["block1_conv1"][0])
    # Other layers are listed by shape, unread.
    assert set(found.shapes) == set(VGG16_CONVS) - {"block1_conv1"}
    assert found.shapes["block5_conv3"][0][1] == tuple(layers["block5_conv3"][0].shape)


# ------------------------------------------------------------------------------------
# Download and cache (file:// URLs and a patched requests/pooch: no network).
# ------------------------------------------------------------------------------------


def _offline(*args, **kwargs):
    raise requests.ConnectionError("[Errno -3] Temporary failure in name resolution")


def _serve(monkeypatch, payload: bytes):
    """Every http(s) download through pooch yields ``payload``."""

    def download(self, url, output_file, pooch=None, check_only=False):
        Path(output_file).write_bytes(payload)

    monkeypatch.setattr(pooch.HTTPDownloader, "__call__", download)


@pytest.mark.parametrize(
    "url, name",
    [
        (None, "vgg16_weights_tf_dim_ordering_tf_kernels.h5"),
        ("https://download.pytorch.org/models/vgg16-397923af.pth", "vgg16-397923af.pth"),
    ],
)
def test_offline_download_says_where_to_put_the_file(tmp_path, monkeypatch, url, name):
    monkeypatch.setattr(requests, "get", _offline)
    monkeypatch.setenv("FCNJAX_CACHE", str(tmp_path / "cache"))
    with pytest.raises(WeightsUnavailableError) as info:
        load_vgg16(url)
    assert isinstance(info.value, OSError)
    msg = str(info.value)
    assert (url or weights.VGG16_URLS[True]) in msg
    assert "no network" in msg
    assert str(tmp_path / "cache" / name) in msg
    with pytest.raises(WeightsUnavailableError, match="notop"):
        load_vgg16(None, fc=False, cache_dir=tmp_path / "other")


def _small_file(tmp_path, rng):
    from safetensors.numpy import save_file

    path = tmp_path / "src" / "vgg16-small.safetensors"
    path.parent.mkdir()
    save_file(torch_layout_state(1 / 64, rng), path)
    return path, hashlib.sha256(path.read_bytes()).hexdigest()


def test_checksum_mismatch_deletes_the_download(tmp_path, rng):
    path, actual = _small_file(tmp_path, rng)
    cache = tmp_path / "cache"
    with pytest.raises(ValueError) as info:
        load_vgg16(path.as_uri(), cache_dir=cache, sha256="0" * 64)
    assert f"expected sha256 {'0' * 64}" in str(info.value)
    assert f"got sha256 {actual}" in str(info.value)
    assert not any(cache.iterdir())  # neither the partial nor the final file remains
    with pytest.raises(ValueError, match="expected sha256"):
        load_vgg16(path, sha256="0" * 64)  # a local file is checked too


def test_published_checksums_are_checked(tmp_path, monkeypatch, rng):
    path, _ = _small_file(tmp_path, rng)
    _serve(monkeypatch, path.read_bytes())
    with pytest.raises(ValueError, match="expected md5 64373286793e3c8b2b4e3219cbf3544b"):
        load_vgg16(None, cache_dir=tmp_path / "cache")
    with pytest.raises(ValueError, match="expected sha256 397923af"):
        load_vgg16(weights.TORCHVISION_VGG16_URL, cache_dir=tmp_path / "cache")
    assert not any((tmp_path / "cache").iterdir())


def test_cached_file_is_reused_and_verified(tmp_path, monkeypatch, rng):
    path, digest = _small_file(tmp_path, rng)
    calls = []
    real_copy = download._copy_file_url

    def counting(url, *args, **kwargs):
        calls.append(url)
        return real_copy(url, *args, **kwargs)

    monkeypatch.setattr(download, "_copy_file_url", counting)
    cache = tmp_path / "cache"
    first, pre = load_vgg16(path.as_uri(), cache_dir=cache, sha256=digest)
    second, _ = load_vgg16(path.as_uri(), cache_dir=cache, sha256=digest)
    assert calls == [path.as_uri()]
    assert pre == TORCHVISION
    assert sorted(p.name for p in cache.iterdir()) == [path.name]
    jax.tree_util.tree_map(np.testing.assert_array_equal, first, second)
    # The cached copy is verified on every use.
    cached = cache / path.name
    cached.write_bytes(cached.read_bytes()[:-1] + b" ")
    with pytest.raises(ValueError, match=f"cached file {cached}"):
        load_vgg16(path.as_uri(), cache_dir=cache, sha256=digest)
    assert len(calls) == 1


# ------------------------------------------------------------------------------------
# into_backbone.
# ------------------------------------------------------------------------------------


def _fcn_like_params(width, fc):
    # Random values of the init's shapes (jax.random's compilation would cost seconds).
    shapes = jax.eval_shape(
        VGG16(width=width, fc=fc).init, jax.random.key(0), jnp.ones((1, 32, 32, 3))
    )["params"]
    rng = np.random.default_rng(3)
    backbone = jax.tree_util.tree_map(
        lambda s: jnp.asarray(rng.normal(size=s.shape), s.dtype), shapes
    )
    return {"backbone": backbone, "score": {"kernel": jnp.ones((1, 1, 4, 2))}}


@pytest.mark.parametrize("frozen", [False, True])
def test_into_backbone_replaces_without_mutating(tmp_path, rng, frozen):
    from safetensors.numpy import save_file

    path = tmp_path / "w.safetensors"
    save_file(torch_layout_state(1 / 64, rng), path)
    vgg, _ = load_vgg16(path, fc=True)
    params = _fcn_like_params(1 / 64, fc=True)
    params = freeze(params) if frozen else params
    before = jax.tree_util.tree_map(np.array, params)
    new = into_backbone(params, vgg)
    assert isinstance(new, FrozenDict) == frozen
    for name, leaves in vgg.items():
        for leaf, value in leaves.items():
            np.testing.assert_array_equal(new["backbone"][name][leaf], value)
            assert new["backbone"][name][leaf].dtype == jnp.float32
    assert new["score"]["kernel"] is params["score"]["kernel"]
    jax.tree_util.tree_map(np.testing.assert_array_equal, params, before)  # input unchanged
    assert not np.array_equal(params["backbone"]["fc6"]["kernel"], vgg["fc6"]["kernel"])
    out = VGG16(width=1 / 64, fc=True).apply({"params": new["backbone"]}, jnp.ones((1, 64, 64, 3)))
    assert out["fc7"].shape == (1, 2, 2, 64)

    partial = {k: v for k, v in vgg.items() if k not in ("fc6", "fc7")}  # fc=False weights
    kept = into_backbone(params, partial)
    assert kept["backbone"]["fc6"]["kernel"] is params["backbone"]["fc6"]["kernel"]


def test_into_backbone_refuses_mismatches(tmp_path, rng):
    from safetensors.numpy import save_file

    path = tmp_path / "w.safetensors"
    save_file(torch_layout_state(1 / 32, rng), path)
    vgg, _ = load_vgg16(path, fc=True)
    params = _fcn_like_params(1 / 64, fc=False)
    with pytest.raises(ValueError) as info:
        into_backbone(params, vgg)
    msg = str(info.value)
    assert "block1_conv1/kernel: shape (3, 3, 3, 2) does not fit the model's (3, 3, 3, 1)" in msg
    assert "block5_conv3/bias: shape (16,)" in msg
    assert "fc6: not in params['backbone']" in msg and "fc7: not in" in msg
    with pytest.raises(ValueError, match="no backbone 'encoder'"):
        into_backbone(params, vgg, key="encoder")
