"""``ops.conv`` (GEMM kernel gradient) against lax and PyTorch; ``layers.Conv`` vs ``nn.Conv``."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from fcnjax import layers, ops


def _lax(x, k, padding):
    return jax.lax.conv_general_dilated(
        x, k, (1, 1), padding, dimension_numbers=("NHWC", "HWIO", "NHWC")
    )


@pytest.mark.parametrize(
    "shape, window, padding",
    [((2, 9, 7, 5), (3, 3), "SAME"), ((1, 8, 8, 4), (7, 7), "SAME"),
     ((3, 6, 5, 2), (2, 3), "VALID"), ((2, 6, 6, 3), (3, 3), ((2, 0), (1, 3)))],
)  # fmt: skip
def test_gemm_gradients_match_lax_and_torch(rng, shape, window, padding):
    x = jnp.asarray(rng.normal(size=shape), jnp.float32)
    k = jnp.asarray(rng.normal(size=(*window, shape[-1], 6)), jnp.float32)
    y_ref = _lax(x, k, padding)
    g = jnp.asarray(rng.normal(size=y_ref.shape), jnp.float32)
    loss = lambda f: lambda x, k: jnp.vdot(f(x, k), g)  # noqa: E731
    y = ops.conv(x, k, padding, method="gemm")
    dx, dk = jax.jit(jax.grad(loss(lambda x, k: ops.conv(x, k, padding, method="gemm")), (0, 1)))(
        x, k
    )
    dx_ref, dk_ref = jax.grad(loss(lambda x, k: _lax(x, k, padding)), (0, 1))(x, k)
    np.testing.assert_allclose(y, y_ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(dx, dx_ref, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(dk, dk_ref, rtol=1e-5, atol=1e-4)
    if isinstance(padding, str) and padding == "VALID":
        tx = torch.tensor(np.asarray(x)).permute(0, 3, 1, 2).requires_grad_()
        tk = torch.tensor(np.asarray(k)).permute(3, 2, 0, 1).requires_grad_()
        ty = torch.nn.functional.conv2d(tx, tk)
        ty.backward(torch.tensor(np.asarray(g)).permute(0, 3, 1, 2))
        np.testing.assert_allclose(dk, tk.grad.permute(2, 3, 1, 0).numpy(), rtol=1e-4, atol=1e-4)


def test_auto_picks_gemm_only_for_wide_layers_on_cpu():
    x = jnp.ones((1, 4, 4, 64))
    wide, narrow = jnp.ones((3, 3, 64, 64)), jnp.ones((3, 3, 64, 8))
    text = lambda k: jax.jit(jax.grad(lambda x, k: ops.conv(x, k).sum(), 1)).lower(x, k).as_text()  # noqa: E731
    # The GEMM path's kernel gradient is dot_generals; XLA's is a convolution.
    assert "dot_general" in text(wide) and "dot_general" not in text(narrow)
    with pytest.raises(ValueError, match="`method`"):
        ops.conv(x, wide, method="im2col")
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
