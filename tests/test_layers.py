"""fcnjax.layers against Keras layers, jax.image.resize and hand-worked numbers."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fcnjax import layers, ops


def rel_err(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    assert a.shape == b.shape, (a.shape, b.shape)
    return np.abs(a - b).max() / max(np.abs(b).max(), 1e-30)


@pytest.mark.parametrize(
    "kernel, strides, padding, output_padding",
    [(4, 2, "same", None), (3, 2, "same", 1), (7, 1, "valid", None), (3, 3, "valid", 2)],
)
def test_conv_transpose_layer_matches_keras(kernel, strides, padding, output_padding):
    import keras

    x = np.random.default_rng(0).standard_normal((2, 5, 6, 3)).astype(np.float32)
    ref = keras.layers.Conv2DTranspose(
        4,
        kernel,
        strides,
        padding=padding,
        output_padding=output_padding,
        bias_initializer="random_normal",
    )
    expected = np.asarray(ref(x))
    k, b = (np.asarray(v) for v in ref.weights)
    layer = layers.ConvTranspose(4, kernel, strides, padding.upper(), output_padding=output_padding)
    params = {"params": {"kernel": ops.kernel_from_keras(k), "bias": b}}
    assert rel_err(layer.apply(params, x), expected) < 1e-5
    # init creates exactly these shapes
    shapes = jax.tree.map(jnp.shape, layer.init(jax.random.key(0), x))
    assert shapes == jax.tree.map(jnp.shape, params)


def test_conv_transpose_layer_bfloat16_compute_float32_params():
    layer = layers.ConvTranspose(8, 4, 2, dtype=jnp.bfloat16)
    x = jnp.ones((1, 4, 4, 3))
    variables = layer.init(jax.random.key(0), x)
    assert variables["params"]["kernel"].dtype == jnp.float32
    assert layer.apply(variables, x).dtype == jnp.bfloat16


def test_bilinear_init_upsamples_like_fcn():
    # A ConvTranspose(k=4, s=2) initialised bilinear equals the fixed "transposed" upsampler
    # and, away from the borders, exact bilinear interpolation.
    x = jnp.asarray(np.random.default_rng(1).standard_normal((1, 6, 5, 3)), jnp.float32)
    layer = layers.ConvTranspose(3, 4, 2, use_bias=False, kernel_init=layers.bilinear_init)
    y = layer.apply(layer.init(jax.random.key(0), x), x)
    np.testing.assert_allclose(y, layers.Upsample(2, "transposed").apply({}, x), atol=1e-6)
    exact = jax.image.resize(x, (1, 12, 10, 3), "linear")
    np.testing.assert_allclose(y[:, 1:-1, 1:-1], exact[:, 1:-1, 1:-1], atol=1e-5)
    assert float(jnp.abs(y[:, 0] - exact[:, 0]).max()) > 1e-2  # borders fade, as in FCN


def test_bilinear_init_values_and_errors():
    k = layers.bilinear_init(None, (16, 16, 2, 2))
    np.testing.assert_allclose(k[..., 1, 1], ops.bilinear_kernel(8, 1)[..., 0, 0])
    assert float(jnp.abs(k[..., 0, 1]).max()) == 0.0
    with pytest.raises(ValueError, match="C_in == C_out"):
        layers.bilinear_init(None, (4, 4, 2, 3))
    with pytest.raises(ValueError, match="2 \\* factor - factor % 2"):
        layers.bilinear_init(None, (3, 3, 2, 2))


@pytest.mark.parametrize("factor", [2, 3, (2, 4)])
def test_upsample_methods(factor):
    x = jnp.asarray(np.random.default_rng(2).standard_normal((2, 5, 4, 3)), jnp.float32)
    f = (factor, factor) if isinstance(factor, int) else factor
    out_shape = (2, 5 * f[0], 4 * f[1], 3)
    bil = layers.Upsample(factor, "bilinear").apply({}, x)
    assert rel_err(bil, jax.image.resize(x, out_shape, "linear")) < 1e-5
    near = layers.Upsample(factor, "nearest").apply({}, x)
    np.testing.assert_array_equal(near, np.repeat(np.repeat(x, f[0], 1), f[1], 2))
    tr = layers.Upsample(factor, "transposed").apply({}, x)
    if f[0] == f[1]:  # independent: the dense (k, k, C, C) FCN kernel
        dense = ops.conv_transpose(x, ops.bilinear_kernel(f[0], 3), f[0], "SAME")
        assert rel_err(tr, dense) < 1e-6
    assert tr.shape == out_shape
    with pytest.raises(ValueError, match="`method` must be one of"):
        layers.Upsample(2, "cubic").apply({}, x)


def test_crops_and_padding():
    x = jnp.arange(2 * 7 * 9 * 1.0).reshape(2, 7, 9, 1)
    np.testing.assert_array_equal(layers.crop_to(x, (3, 4), (1, 2)), x[:, 1:4, 2:6])
    np.testing.assert_array_equal(layers.center_crop(x, (3, 4)), x[:, 2:5, 2:6])
    y, size = layers.pad_to_multiple(x, (4, 8))
    assert y.shape == (2, 8, 16, 1) and size == (7, 9)
    np.testing.assert_array_equal(layers.crop_to(y, size), x)
    assert float(y[:, 7:].sum()) == 0.0
    y, _ = layers.pad_to_multiple(x, 4, mode="edge")
    np.testing.assert_array_equal(y[:, 7, :9], x[:, 6])
    with pytest.raises(ValueError, match="cannot crop 8 samples"):
        layers.crop_to(x, (8, 9))
    with pytest.raises(ValueError, match="`multiple`"):
        layers.pad_to_multiple(x, 0)


def test_unpool_modules_invert_pooling_positions():
    x = jnp.asarray(np.random.default_rng(3).standard_normal((1, 4, 6, 2)), jnp.float32)
    pooled, idx = layers.MaxPoolWithArgmax(2).apply({}, x)
    restored = layers.MaxUnpool().apply({}, pooled, idx, (4, 6))
    # Every pooled max sits at its original position, everything else is zero.
    np.testing.assert_array_equal(jnp.where(restored != 0, x, 0), restored)
    assert int((restored != 0).sum()) == pooled.size
