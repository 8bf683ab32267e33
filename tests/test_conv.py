"""``ops.conv`` (GEMM kernel gradient, im2col) against lax and PyTorch; ``layers.Conv`` vs
``nn.Conv``."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fcnjax import layers, ops


def _lax(x, k, padding):
    return jax.lax.conv_general_dilated(
        x, k, (1, 1), padding, dimension_numbers=("NHWC", "HWIO", "NHWC")
    )


@pytest.mark.parametrize("method", ["gemm", "im2col"])
@pytest.mark.parametrize(
    "shape, window, padding, c_out",
    [
        ((2, 9, 7, 5), (3, 3), "SAME", 6),
        ((1, 8, 8, 4), (7, 7), "SAME", 6),
        ((3, 6, 5, 2), (2, 3), "VALID", 6),
        ((2, 6, 6, 3), (3, 3), ((2, 0), (1, 3)), 6),
        ((1, 5, 5, 72), (3, 3), "SAME", 64),
    ],  # 72 x 64 > 4096: the per-tap kernel gradient
)
def test_gradients_match_lax(rng, shape, window, padding, c_out, method):
    x = jnp.asarray(rng.normal(size=shape), jnp.float32)
    k = jnp.asarray(rng.normal(size=(*window, shape[-1], c_out)), jnp.float32)
    y_ref = _lax(x, k, padding)
    g = jnp.asarray(rng.normal(size=y_ref.shape), jnp.float32)
    loss = lambda f: lambda x, k: jnp.vdot(f(x, k), g)  # noqa: E731
    y = ops.conv(x, k, padding, method=method)
    dx, dk = jax.jit(jax.grad(loss(lambda x, k: ops.conv(x, k, padding, method=method)), (0, 1)))(
        x, k
    )
    dx_ref, dk_ref = jax.grad(loss(lambda x, k: _lax(x, k, padding)), (0, 1))(x, k)
    np.testing.assert_allclose(y, y_ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(dx, dx_ref, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(dk, dk_ref, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize(
    "shape, window, padding, strides, dilation, c_out",
    [
        ((2, 9, 8, 70), (1, 1), "VALID", 1, 1, 64),  # ResNet's 1x1: per-tap product
        ((2, 9, 8, 6), (1, 1), "VALID", 2, 1, 5),  # its stride-2 projection
        ((2, 9, 8, 5), (3, 3), ((1, 1), (1, 1)), 2, 1, 6),  # v1.5's stride-2 3x3
        ((2, 11, 10, 5), (3, 3), ((2, 2), (2, 2)), 1, 2, 6),  # dilated 3x3 (DeepLab)
        ((1, 12, 13, 70), (3, 3), "SAME", (2, 1), (1, 3), 64),  # SAME, per-tap
        ((2, 15, 14, 3), (7, 7), ((3, 3), (3, 3)), 2, 1, 4),  # ResNet's stem
        ((2, 9, 8, 6), (1, 1), ((-1, 0), (0, -2)), 1, 1, 5),  # negative padding crops
    ],
)
def test_strided_and_dilated_gradients_match_lax(
    rng, shape, window, padding, strides, dilation, c_out
):
    x = jnp.asarray(rng.normal(size=shape), jnp.float32)
    k = jnp.asarray(rng.normal(size=(*window, shape[-1], c_out)), jnp.float32)
    pair = lambda v: (v, v) if isinstance(v, int) else v  # noqa: E731

    def ref(x, k):
        return jax.lax.conv_general_dilated(
            x,
            k,
            pair(strides),
            padding,
            rhs_dilation=pair(dilation),
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
        )

    def ours(x, k):  # the products' path, whatever `auto` picks for these small shapes
        return ops.conv(x, k, padding, strides=strides, dilation=dilation, method="gemm")

    g = jnp.asarray(rng.normal(size=ref(x, k).shape), jnp.float32)
    loss = lambda f: lambda x, k: jnp.vdot(f(x, k), g)  # noqa: E731
    np.testing.assert_allclose(jax.jit(ours)(x, k), ref(x, k), rtol=1e-5, atol=1e-4)
    dx, dk = jax.jit(jax.grad(loss(ours), (0, 1)))(x, k)
    dx_ref, dk_ref = jax.grad(loss(ref), (0, 1))(x, k)
    np.testing.assert_allclose(dx, dx_ref, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(dk, dk_ref, rtol=1e-5, atol=1e-4)
    if shape[-1] == 6:  # bfloat16 in, bfloat16 gradients out
        xb, kb = x.astype(jnp.bfloat16), k.astype(jnp.bfloat16)
        dxb, dkb = jax.grad(lambda x, k: jnp.sum(ours(x, k).astype(jnp.float32)), (0, 1))(xb, kb)
        assert dxb.dtype == dkb.dtype == jnp.bfloat16
    with pytest.raises(ValueError, match="needs strides=1 and dilation=1"):
        ops.conv(x, k, padding, strides=2, method="im2col")
    with pytest.raises(ValueError, match="`strides` must be a positive int"):
        ops.conv(x, k, padding, strides=0)


@pytest.mark.requires_torch
@pytest.mark.parametrize("method", ["gemm", "im2col"])
def test_kernel_gradient_matches_torch(rng, method):
    import torch

    x = jnp.asarray(rng.normal(size=(3, 6, 5, 2)), jnp.float32)
    k = jnp.asarray(rng.normal(size=(2, 3, 2, 6)), jnp.float32)
    g = jnp.asarray(rng.normal(size=(3, 5, 3, 6)), jnp.float32)
    dk = jax.jit(jax.grad(lambda k: jnp.vdot(ops.conv(x, k, "VALID", method=method), g)))(k)
    tx = torch.tensor(np.asarray(x)).permute(0, 3, 1, 2).requires_grad_()
    tk = torch.tensor(np.asarray(k)).permute(3, 2, 0, 1).requires_grad_()
    ty = torch.nn.functional.conv2d(tx, tk)
    ty.backward(torch.tensor(np.asarray(g)).permute(0, 3, 1, 2))
    np.testing.assert_allclose(dk, tk.grad.permute(2, 3, 1, 0).numpy(), rtol=1e-4, atol=1e-4)


def test_auto_picks_gemm_for_wide_layers_and_im2col_for_large_windows_on_cpu():
    x = jnp.ones((1, 4, 4, 64))
    wide, narrow, large = jnp.ones((3, 3, 64, 64)), jnp.ones((3, 3, 64, 8)), jnp.ones((7, 7, 64, 8))
    text = lambda k: jax.jit(jax.grad(lambda x, k: ops.conv(x, k).sum(), 1)).lower(x, k).as_text()  # noqa: E731
    # The GEMM path's kernel gradient is dot_generals; XLA's is a convolution; im2col is
    # a matrix product forward (and so backward), with no convolution at all.
    forward = lambda x, k: jax.jit(ops.conv).lower(x, k).as_text()  # noqa: E731
    assert "dot_general" in text(wide) and "dot_general" not in text(narrow)
    assert "dot_general" in text(jnp.ones((1, 1, 64, 8)))  # 1x1: XLA's is 9x the forward
    assert "convolution" in forward(x, wide)
    assert "dot_general" in forward(x, large) and "convolution" not in forward(x, large)
    big = jnp.ones((64, 64, 64, 64))  # columns of 64 * 64 * 64 * 49 * 64 floats: 3 GiB
    assert "convolution" in forward(big, large)
    with pytest.raises(ValueError, match="`method`"):
        ops.conv(x, wide, method="winograd")
    with pytest.raises(ValueError, match="same C_in"):
        ops.conv(x, jnp.ones((3, 3, 8, 8)))


def test_conv_layer_is_interchangeable_with_flax_conv(rng):
    x = jnp.asarray(rng.normal(size=(2, 10, 10, 3)), jnp.float32)
    ours, flax_conv = layers.Conv(5, 3), nn.Conv(5, (3, 3), padding="SAME")
    params = flax_conv.init(jax.random.key(0), x)
    assert jax.tree.map(jnp.shape, ours.init(jax.random.key(0), x)) == jax.tree.map(
        jnp.shape, params
    )
    np.testing.assert_allclose(
        ours.apply(params, x), flax_conv.apply(params, x), rtol=1e-5, atol=1e-5
    )
    y = layers.Conv(5, 3, dtype=jnp.bfloat16).apply(params, x)
    assert y.dtype == jnp.bfloat16


@pytest.mark.parametrize(
    "shape, window, padding",
    [
        ((2, 50, 17, 8), (7, 7), "SAME"),  # 50 rows: blocks of 24, the last one padded
        ((1, 24, 20, 4), (5, 5), "VALID"),
        ((2, 9, 11, 3), (7, 5), ((3, 2), (1, 4))),
    ],
)
def test_kernel_gradient_by_row_blocks_matches_lax(rng, shape, window, padding):
    # The large-window kernel gradient (SegNet's 7x7 over maps too big for full columns),
    # called directly: the maps here are small enough for the other paths.
    from fcnjax.ops._conv import _kernel_grad_by_rows, _pads

    x = jnp.asarray(rng.standard_normal(shape), jnp.float32)
    kernel = jnp.asarray(rng.standard_normal((*window, shape[-1], 6)), jnp.float32)
    pads = _pads(padding, window, shape[1:3], (1, 1), (1, 1))

    def ref(k):
        return jax.lax.conv_general_dilated(
            x, k, (1, 1), pads, dimension_numbers=("NHWC", "HWIO", "NHWC")
        )

    g = jnp.asarray(rng.standard_normal(ref(kernel).shape), jnp.float32)
    (expected,) = jax.vjp(ref, kernel)[1](g)
    xp = jnp.pad(x, ((0, 0), *pads, (0, 0)))
    got = _kernel_grad_by_rows(xp, g, *window)
    np.testing.assert_allclose(got, expected, rtol=2e-5, atol=2e-5 * float(jnp.abs(expected).max()))
