"""Bilinear kernels and upsampling; max pooling with switches and unpooling."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fcnjax import ops


def torch_nchw(x):
    import torch

    return torch.tensor(np.moveaxis(np.asarray(x), -1, 1))


# ------------------------------------------------------------------------------------
# Bilinear.
# ------------------------------------------------------------------------------------


def test_bilinear_filter_by_hand():
    # FCN's upsample_filt: size 2f - f%2, taps 1 - |j - centre| / f.
    np.testing.assert_allclose(ops.bilinear_filter(1), [1.0])
    np.testing.assert_allclose(ops.bilinear_filter(2), [0.25, 0.75, 0.75, 0.25])
    np.testing.assert_allclose(ops.bilinear_filter(3), [1 / 3, 2 / 3, 1, 2 / 3, 1 / 3])
    np.testing.assert_allclose(ops.bilinear_filter(4), [1, 3, 5, 7, 7, 5, 3, 1] / np.float64(8))
    assert ops.bilinear_filter(32).size == 64


def test_bilinear_kernel_is_diagonal():
    k = np.asarray(ops.bilinear_kernel(3, 4))
    assert k.shape == (5, 5, 4, 4)
    f = ops.bilinear_filter(3)
    for c in range(4):
        np.testing.assert_allclose(k[:, :, c, c], np.outer(f, f), rtol=1e-6)
    off = k.copy()
    off[:, :, np.arange(4), np.arange(4)] = 0
    assert not off.any()
    assert ops.bilinear_kernel(2, 1, jnp.bfloat16).dtype == jnp.bfloat16


@pytest.mark.parametrize("factor", [2, 3, 4, 8])
def test_transposed_conv_with_bilinear_kernel_is_bilinear_away_from_borders(factor):
    x = np.random.default_rng(0).standard_normal((2, 6, 7, 3)).astype(np.float32)
    y = ops.conv_transpose(x, ops.bilinear_kernel(factor, 3), factor, "SAME")
    assert y.shape == (2, 6 * factor, 7 * factor, 3)
    ref = jax.image.resize(x, y.shape, "linear")
    m = factor  # one input sample from each border, where zero padding differs from clamping
    np.testing.assert_allclose(y[:, m:-m, m:-m], ref[:, m:-m, m:-m], atol=1e-5)
    assert np.abs(np.asarray(y[:, :1]) - np.asarray(ref[:, :1])).max() > 1e-3  # borders differ


@pytest.mark.parametrize("factor", [2, 3, (2, 5)])
def test_upsample_bilinear_exact_everywhere(factor):
    x = np.random.default_rng(1).standard_normal((2, 5, 4, 3)).astype(np.float32)
    y = ops.upsample_bilinear(x, factor)
    fh, fw = (factor, factor) if isinstance(factor, int) else factor
    assert y.shape == (2, 5 * fh, 4 * fw, 3)
    np.testing.assert_allclose(y, jax.image.resize(x, y.shape, "linear"), atol=1e-5)


@pytest.mark.requires_torch
@pytest.mark.parametrize("factor", [2, 3, (2, 5)])
def test_upsample_bilinear_matches_torch(factor):
    import torch

    x = np.random.default_rng(1).standard_normal((2, 5, 4, 3)).astype(np.float32)
    y = ops.upsample_bilinear(x, factor)
    fh, fw = (factor, factor) if isinstance(factor, int) else factor
    ref = torch.nn.functional.interpolate(
        torch_nchw(x), scale_factor=(fh, fw), mode="bilinear", align_corners=False
    )
    np.testing.assert_allclose(y, np.moveaxis(ref.numpy(), 1, -1), atol=1e-5)


def test_upsample_1d_and_3d_and_integer_input():
    x = np.random.default_rng(2).standard_normal((1, 3, 2, 4, 2)).astype(np.float32)
    y = ops.upsample_bilinear(x, 2)
    np.testing.assert_allclose(y, jax.image.resize(x, (1, 6, 4, 8, 2), "linear"), atol=1e-5)
    z = ops.upsample_bilinear(jnp.array([0, 4]).reshape(1, 2, 1), 2)
    np.testing.assert_allclose(z[0, :, 0], [0.0, 1.0, 3.0, 4.0])
    assert z.dtype == jnp.float32


def test_bilinear_errors():
    with pytest.raises(ValueError, match="`factor` must be a positive int"):
        ops.bilinear_kernel(0, 3)
    with pytest.raises(ValueError, match="`channels` must be a positive int"):
        ops.bilinear_kernel(2, 0)
    with pytest.raises(ValueError, match="`factor` must be >= 1"):
        ops.upsample_bilinear(np.zeros((1, 2, 2, 1)), (2, 0))
    with pytest.raises(ValueError, match="`x` must be"):
        ops.upsample_bilinear(np.zeros((2, 2)), 2)


# ------------------------------------------------------------------------------------
# Max pooling with switches, unpooling.
# ------------------------------------------------------------------------------------


@pytest.mark.requires_torch
@pytest.mark.parametrize("window, strides", [(2, 2), (3, 2), ((2, 3), (2, 3))])
def test_max_pool_with_argmax_matches_torch(window, strides):
    import torch

    x = np.random.default_rng(3).standard_normal((2, 7, 9, 3)).astype(np.float32)
    pooled, idx = ops.max_pool_with_argmax(x, window, strides)
    ref, ref_idx = torch.nn.functional.max_pool2d(
        torch_nchw(x), window, strides, return_indices=True
    )
    np.testing.assert_array_equal(pooled, np.moveaxis(ref.numpy(), 1, -1))
    np.testing.assert_array_equal(idx, np.moveaxis(ref_idx.numpy(), 1, -1))
    assert idx.dtype == jnp.int32


@pytest.mark.requires_torch
def test_max_unpool_matches_torch():
    import torch

    x = np.random.default_rng(4).standard_normal((2, 7, 9, 3)).astype(np.float32)
    pooled, idx = ops.max_pool_with_argmax(x, 2)
    up = ops.max_unpool(pooled, idx, (7, 9))
    ref = torch.nn.functional.max_unpool2d(
        torch_nchw(pooled),
        torch.tensor(np.moveaxis(np.asarray(idx), -1, 1), dtype=torch.int64),
        2,
        output_size=(7, 9),
    )
    np.testing.assert_array_equal(up, np.moveaxis(ref.numpy(), 1, -1))


def test_max_unpool_inverts_the_bookkeeping():
    x = np.random.default_rng(4).standard_normal((2, 7, 9, 3)).astype(np.float32)
    pooled, idx = ops.max_pool_with_argmax(x, 2)
    # Pooling the unpooled map recovers values and switches (positive values, no ties).
    p = np.abs(np.asarray(pooled)) + 1
    again, idx_again = ops.max_pool_with_argmax(ops.max_unpool(p, idx, (7, 9)), 2)
    np.testing.assert_array_equal(again, p)
    np.testing.assert_array_equal(idx_again, idx)


def test_ties_nan_and_same_padding():
    x = np.zeros((1, 2, 2, 1), np.float32)
    _, idx = ops.max_pool_with_argmax(x, 2)
    assert int(idx[0, 0, 0, 0]) == 0  # first position wins a tie
    x = np.full((1, 3, 3, 1), -np.inf, np.float32)
    pooled, idx = ops.max_pool_with_argmax(x, 2, padding="SAME")
    assert pooled.shape == (1, 2, 2, 1)
    assert np.asarray(idx).max() < 9  # padding never wins, even against -inf
    x = np.array([1.0, np.nan, 3.0, 2.0], np.float32).reshape(1, 4, 1)
    pooled, idx = ops.max_pool_with_argmax(x, 2)
    assert np.isnan(pooled[0, 0, 0]) and int(idx[0, 0, 0]) == 1
    assert float(pooled[0, 1, 0]) == 3.0


def test_gradients_route_through_the_switches():
    x = np.random.default_rng(5).standard_normal((1, 6, 6, 2)).astype(np.float32)
    g = jax.grad(lambda a: jnp.sum(ops.max_pool_with_argmax(a, 2)[0] ** 2))(x)

    def plain_max_pool(a):
        return jax.lax.reduce_window(a, -jnp.inf, jax.lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")

    ref = jax.grad(lambda a: jnp.sum(plain_max_pool(a) ** 2))(x)
    np.testing.assert_allclose(g, ref)
    _, idx = ops.max_pool_with_argmax(x, 2)
    p = np.random.default_rng(6).standard_normal((1, 3, 3, 2)).astype(np.float32)
    q = np.random.default_rng(7).standard_normal((1, 6, 6, 2)).astype(np.float32)
    # Unpooling is the adjoint of gathering at the switches: <U p, q> = <p, G q>.
    lhs = np.vdot(ops.max_unpool(p, idx, (6, 6)), q)
    gathered = np.take_along_axis(q.reshape(1, 36, 2), np.asarray(idx).reshape(1, 9, 2), 1)
    np.testing.assert_allclose(lhs, np.vdot(p.reshape(1, 9, 2), gathered), rtol=1e-5)
    gp = jax.grad(lambda a: jnp.sum(ops.max_unpool(a, idx, (6, 6)) * q))(p)
    np.testing.assert_allclose(gp, gathered.reshape(p.shape), rtol=1e-6)


def test_overlapping_windows_accumulate_in_unpool():
    x = np.array([0.0, 5.0, 0.0], np.float32).reshape(1, 3, 1)
    pooled, idx = ops.max_pool_with_argmax(x, 2, 1)  # both windows pick position 1
    np.testing.assert_array_equal(idx[0, :, 0], [1, 1])
    np.testing.assert_array_equal(ops.max_unpool(pooled, idx, (3,))[0, :, 0], [0.0, 10.0, 0.0])


def test_pool_and_unpool_work_under_jit_and_vmap():
    x = np.random.default_rng(8).standard_normal((3, 2, 4, 4, 1)).astype(np.float32)

    def roundtrip(a):
        p, i = ops.max_pool_with_argmax(a, 2)
        return ops.max_unpool(p, i, (4, 4))

    out = jax.jit(jax.vmap(roundtrip))(x)
    np.testing.assert_array_equal(out[1], roundtrip(x[1]))


def test_pool_and_unpool_errors():
    x = np.zeros((1, 4, 4, 1), np.float32)
    with pytest.raises(ValueError, match="`window` must be >= 1"):
        ops.max_pool_with_argmax(x, 0)
    with pytest.raises(ValueError, match="`padding` must be"):
        ops.max_pool_with_argmax(x, 2, padding="FULL")
    with pytest.raises(ValueError, match="larger than the padded input"):
        ops.max_pool_with_argmax(x, 5)
    with pytest.raises(ValueError, match="must be floating point"):
        ops.max_pool_with_argmax(x.astype(np.int32), 2)
    p, i = ops.max_pool_with_argmax(x, 2)
    with pytest.raises(ValueError, match="`indices` must have the shape"):
        ops.max_unpool(p, i[:, :1], (4, 4))
    with pytest.raises(ValueError, match="`indices` must be integers"):
        ops.max_unpool(p, i.astype(np.float32), (4, 4))
    with pytest.raises(ValueError, match="`output_shape` must be the 2 spatial sizes"):
        ops.max_unpool(p, i, (4,))
    with pytest.raises(ValueError, match=r"`indices` must lie in \[0, 4\)"):
        ops.max_unpool(p, i, (2, 2))


@pytest.mark.parametrize("padding", ["SAME", "VALID"])
@pytest.mark.parametrize(
    ("shape", "window"),
    [((2, 9, 7, 3), 2), ((1, 8, 8, 2), (2, 3)), ((2, 7, 5, 1), 3), ((2, 11, 4), 2)],
)
def test_max_pool_matches_flax_forward_and_backward(rng, shape, window, padding):
    import flax.linen as nn

    x = jnp.asarray(rng.normal(size=shape), jnp.float32)  # no ties
    k = (window,) * (len(shape) - 2) if isinstance(window, int) else window
    ref = lambda x: nn.max_pool(x, k, k, padding=padding)  # noqa: E731
    y = ops.max_pool(x, window, padding)
    np.testing.assert_array_equal(y, ref(x))
    g = jnp.asarray(rng.normal(size=y.shape), jnp.float32)
    grad = lambda f: jax.grad(lambda x: jnp.vdot(f(x), g))(x)  # noqa: E731
    np.testing.assert_array_equal(grad(lambda x: ops.max_pool(x, window, padding)), grad(ref))


def test_max_pool_ties_go_to_the_first_maximum_and_errors():
    x = jnp.zeros((1, 2, 2, 1))  # four equal values: PyTorch and select_and_scatter pick one
    dx = jax.grad(lambda x: ops.max_pool(x, 2).sum())(x)
    assert dx[0, :, :, 0].tolist() == [[1.0, 0.0], [0.0, 0.0]]
    with pytest.raises(ValueError, match="`padding` must be"):
        ops.max_pool(x, 2, "FULL")
    with pytest.raises(ValueError, match="larger than the input"):
        ops.max_pool(x, 3, "VALID")
    with pytest.raises(ValueError, match="floating point"):
        ops.max_pool(jnp.zeros((1, 2, 2, 1), jnp.int32), 2)


def numpy_pool_with_switches(x, window, padding):
    """Reference: loops over (n, c) planes and windows; the first maximum in row-major
    order wins, NaN counts as the maximum, SAME pads (trailing) never win."""
    n, h, w, c = x.shape
    kh, kw = window
    oh, ow = (-(-h // kh), -(-w // kw)) if padding == "SAME" else (h // kh, w // kw)
    pooled = np.zeros((n, oh, ow, c), x.dtype)
    idx = np.zeros((n, oh, ow, c), np.int32)
    for b, i, j, ch in np.ndindex(n, oh, ow, c):
        rows = range(i * kh, min(i * kh + kh, h))
        cols = range(j * kw, min(j * kw + kw, w))
        best = None
        for r in rows:
            for q in cols:
                v = x[b, r, q, ch]
                if best is None or (np.isnan(v) and not np.isnan(best[0])) or v > best[0]:
                    best = (v, r * w + q)
        pooled[b, i, j, ch], idx[b, i, j, ch] = best
    return pooled, idx


@pytest.mark.parametrize(
    "shape, window, padding",
    [
        ((2, 8, 12, 3), (2, 2), "VALID"),
        ((2, 7, 9, 3), (2, 2), "VALID"),
        ((2, 7, 9, 3), (2, 2), "SAME"),
        ((1, 9, 8, 2), (3, 2), "SAME"),
    ],
)
def test_tiled_pooling_and_unpooling_against_numpy(shape, window, padding):
    # Non-overlapping windows take the reshape/argmax path and unpooling with `window`
    # the one-hot path: both must give what the loops give, ties and NaN included.
    rng = np.random.default_rng(11)
    x = rng.integers(-3, 3, shape).astype(np.float32)  # many ties
    x[0, 0, 1, 0] = np.nan
    pooled, idx = ops.max_pool_with_argmax(x, window, padding=padding)
    ref_pooled, ref_idx = numpy_pool_with_switches(x, window, padding)
    np.testing.assert_array_equal(idx, ref_idx)
    np.testing.assert_array_equal(pooled, ref_pooled)
    size = shape[1:3]
    expected = np.zeros(x.shape, np.float32)
    for b, i, j, c in np.ndindex(*ref_idx.shape):
        r, q = divmod(int(ref_idx[b, i, j, c]), size[1])
        expected[b, r, q, c] += ref_pooled[b, i, j, c]
    np.testing.assert_array_equal(ops.max_unpool(pooled, idx, size, window=window), expected)
    np.testing.assert_array_equal(ops.max_unpool(pooled, idx, size), expected)


def test_tiled_unpooling_gradients_equal_the_scatters():
    rng = np.random.default_rng(12)
    x = rng.standard_normal((2, 7, 10, 3)).astype(np.float32)
    q = rng.standard_normal(x.shape).astype(np.float32)

    def roundtrip(a, window):
        p, i = ops.max_pool_with_argmax(a, 2)
        return jnp.sum(ops.max_unpool(p**2, i, (7, 10), window=window) * q)

    dense = jax.grad(lambda a: roundtrip(a, 2))(x)
    scatter = jax.grad(lambda a: roundtrip(a, None))(x)
    np.testing.assert_allclose(dense, scatter, rtol=1e-6)
    assert np.count_nonzero(dense) == 2 * 3 * 3 * 5  # one switch per window


def test_tiled_unpooling_drops_an_index_outside_its_window():
    values = jnp.arange(1.0, 5.0).reshape(1, 2, 2, 1)
    indices = jnp.array([0, 3, 6, 15]).reshape(1, 2, 2, 1)  # 6 = (1, 2) is not window (1, 0)
    out = jax.jit(lambda v, i: ops.max_unpool(v, i, (4, 4), window=2))(values, indices)
    expected = np.zeros((4, 4), np.float32)
    expected[0, 0], expected[0, 3], expected[3, 3] = 1, 2, 4
    np.testing.assert_array_equal(out[0, ..., 0], expected)


@pytest.mark.requires_torch
def test_tiled_unpooling_matches_torch():
    import torch

    x = np.random.default_rng(4).standard_normal((2, 8, 10, 3)).astype(np.float32)
    pooled, idx = ops.max_pool_with_argmax(x, 2)
    ref = torch.nn.functional.max_unpool2d(
        torch_nchw(pooled),
        torch.tensor(np.moveaxis(np.asarray(idx), -1, 1), dtype=torch.int64),
        2,
        output_size=(8, 10),
    )
    up = ops.max_unpool(pooled, idx, (8, 10), window=2)
    np.testing.assert_array_equal(up, np.moveaxis(ref.numpy(), 1, -1))
