"""fcnjax.ops.conv_transpose against a NumPy scatter reference, PyTorch and Keras."""

import dataclasses
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from jax import lax
from jax.test_util import check_grads

from fcnjax import ops
from tests.reference import conv_transpose_ref, keras_crops

METHODS = ("dilated", "zero_insert", "subpixel", "auto")
# "auto" only ever dispatches to one of the three; property tests cover the three directly.
BASE_METHODS = METHODS[:3]
RTOL = 1e-5  # the contract: max |ours - oracle| <= RTOL * max |oracle|, float32


def assert_close(actual, expected, rtol=RTOL):
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    scale = max(np.abs(expected).max(), 1e-30)
    err = np.abs(actual - expected).max() / scale
    assert err <= rtol, f"relative error {err:.3g} > {rtol}"


# ------------------------------------------------------------------------------------
# Hypothesis strategy: one legal configuration inside the contract's ranges.
# ------------------------------------------------------------------------------------


@st.composite
def configs(draw, max_ndim=3, groups=(1, 2), torch_padding=False, keras=False):
    ndim = draw(st.integers(1, max_ndim))
    small = ndim == 3
    strides = tuple(draw(st.integers(1, 4)) for _ in range(ndim))
    window = tuple(draw(st.integers(1, 4 if small else 7)) for _ in range(ndim))
    dilation = tuple(draw(st.integers(1, 2)) for _ in range(ndim))
    if keras and max(strides) > 1:  # Keras refuses dilation together with strides > 1
        dilation = (1,) * ndim
    spatial = tuple(draw(st.integers(1, 3 if small else 6)) for _ in range(ndim))
    g = draw(st.sampled_from(groups))
    c_in = g * draw(st.integers(1, 2 if small else 3))
    c_out = g * draw(st.integers(1, 2 if small else 3))
    kinds = ["SAME", "VALID", "int", "per_dim"] + ([] if torch_padding or keras else ["pairs"])
    if keras:
        kinds = ["SAME", "VALID"]
    kind = draw(st.sampled_from(kinds))
    use_op = draw(st.booleans())
    if kind in ("SAME", "VALID") and keras:
        op_limit = strides  # Keras requires output_padding < strides
    else:
        op_limit = tuple(max(s, d) for s, d in zip(strides, dilation))
    op = tuple(draw(st.integers(0, m - 1)) for m in op_limit) if use_op else None
    k_eff = [d * (k - 1) + 1 for k, d in zip(window, dilation)]
    full = [(n - 1) * s + k for n, s, k in zip(spatial, strides, k_eff)]
    if kind in ("SAME", "VALID"):
        padding = kind
    elif kind == "int":
        padding = draw(st.integers(0, min(full) // 2))
    elif kind == "per_dim":
        padding = tuple(draw(st.integers(0, f // 2)) for f in full)
    else:
        padding = tuple((draw(st.integers(0, f // 2)), draw(st.integers(0, f // 2))) for f in full)
    if op is not None and torch_padding and kind in ("SAME", "VALID"):
        op = None
    return dict(
        spatial=spatial,
        window=window,
        strides=strides,
        dilation=dilation,
        groups=g,
        c_in=c_in,
        c_out=c_out,
        padding=padding,
        output_padding=op,
    )


def crops_of(cfg):
    """The (lo, hi) crops the configuration means, from Keras' and PyTorch's docs."""
    n = len(cfg["spatial"])
    op = cfg["output_padding"] or (None,) * n
    p = cfg["padding"]
    k_eff = [d * (k - 1) + 1 for k, d in zip(cfg["window"], cfg["dilation"])]
    if isinstance(p, str):
        return [keras_crops(p, k, s, o) for k, s, o in zip(k_eff, cfg["strides"], op)]
    pairs = (
        [(p, p)] * n if isinstance(p, int) else [v if isinstance(v, tuple) else (v, v) for v in p]
    )
    return [(lo, hi - (o or 0)) for (lo, hi), o in zip(pairs, op)]


def make_arrays(cfg, seed=0, batch=2):
    r = np.random.default_rng(seed)
    x = r.standard_normal((batch, *cfg["spatial"], cfg["c_in"])).astype(np.float32)
    k = r.standard_normal((*cfg["window"], cfg["c_in"], cfg["c_out"] // cfg["groups"]))
    return x, k.astype(np.float32)


def run(x, k, cfg, method="auto"):
    return ops.conv_transpose(
        x,
        k,
        cfg["strides"],
        cfg["padding"],
        output_padding=cfg["output_padding"],
        kernel_dilation=cfg["dilation"],
        feature_group_count=cfg["groups"],
        method=method,
    )


def shape_of(x, k, cfg):
    return ops.conv_transpose_shape(
        x.shape,
        k.shape,
        cfg["strides"],
        cfg["padding"],
        output_padding=cfg["output_padding"],
        kernel_dilation=cfg["dilation"],
        feature_group_count=cfg["groups"],
    )


def forward_and_vjp(x, k, ct, cfg, method):
    """y, dx, dk as one compiled program (one compilation per example, not per primitive)."""
    return methods_forward_and_vjp(x, k, ct, cfg, (method,))[method]


def methods_forward_and_vjp(x, k, ct, cfg, methods=BASE_METHODS):
    """{method: (y, dx, dk)}, every method in one compiled program (one compilation, not 3)."""

    def f(a, b, c):
        out = {}
        for m in methods:
            y, vjp = jax.vjp(lambda a_, b_, m=m: run(a_, b_, cfg, m), a, b)
            out[m] = (y, *vjp(c))
        return out

    return jax.jit(f)(x, k, ct)


def output_ok(cfg):
    k_eff = [d * (k - 1) + 1 for k, d in zip(cfg["window"], cfg["dilation"])]
    full = [(n - 1) * s + k for n, s, k in zip(cfg["spatial"], cfg["strides"], k_eff)]
    return all(f - lo - hi >= 1 for f, (lo, hi) in zip(full, crops_of(cfg)))


SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True)


# ------------------------------------------------------------------------------------
# The NumPy definition.
# ------------------------------------------------------------------------------------


@settings(max_examples=40, **SETTINGS)
@given(cfg=configs())
def test_matches_scatter_definition(cfg):
    assume(output_ok(cfg))
    x, k = make_arrays(cfg)
    expected = conv_transpose_ref(
        x, k, cfg["strides"], crops_of(cfg), cfg["dilation"], cfg["groups"]
    )
    shape = shape_of(x, k, cfg)
    assert shape == expected.shape
    ours = jax.jit(lambda a, b: {m: run(a, b, cfg, m) for m in BASE_METHODS})(x, k)
    for method in BASE_METHODS:
        assert_close(ours[method], expected)


@settings(max_examples=200, **SETTINGS)
@given(cfg=configs())
def test_geometry_holds_the_documented_crops_and_sizes(cfg):
    assume(output_ok(cfg))
    geo = ops.conv_transpose_geometry(
        (2, *cfg["spatial"], cfg["c_in"]),
        (*cfg["window"], cfg["c_in"], cfg["c_out"] // cfg["groups"]),
        cfg["strides"],
        cfg["padding"],
        output_padding=cfg["output_padding"],
        kernel_dilation=cfg["dilation"],
        feature_group_count=cfg["groups"],
    )
    assert geo.crops == tuple(tuple(c) for c in crops_of(cfg))
    k_eff = tuple(d * (k - 1) + 1 for k, d in zip(cfg["window"], cfg["dilation"]))
    full = tuple((n - 1) * s + k for n, s, k in zip(cfg["spatial"], cfg["strides"], k_eff))
    assert (geo.eff_window, geo.full_spatial) == (k_eff, full)
    assert geo.out_spatial == tuple(f - lo - hi for f, (lo, hi) in zip(full, geo.crops))
    assert (geo.ndim, geo.in_spatial, geo.window) == (
        len(cfg["spatial"]),
        cfg["spatial"],
        cfg["window"],
    )
    assert (geo.strides, geo.dilation) == (cfg["strides"], cfg["dilation"])
    assert (geo.groups, geo.c_in, geo.c_out) == (cfg["groups"], cfg["c_in"], cfg["c_out"])
    # The shape rules (see select_method) refine the strides' choice on CPU.
    unit = all(st == 1 for st in cfg["strides"])
    tiny = all(n < k for n, k in zip(cfg["spatial"], k_eff))
    single = cfg["c_out"] == 1 and max(k_eff) > 2 * max(cfg["strides"])
    expected = "dilated" if (tiny if unit else single) else ops.select_method(cfg["strides"], "cpu")
    assert ops.select_method(geo, "cpu") == expected


# ------------------------------------------------------------------------------------
# PyTorch: forward and both gradients.
# ------------------------------------------------------------------------------------


def torch_forward_and_grads(x, w_torch, cfg, cotangent):
    import torch

    torch.set_num_threads(1)
    n = len(cfg["spatial"])
    fn = getattr(torch.nn.functional, f"conv_transpose{n}d")
    xt = torch.tensor(np.moveaxis(x, -1, 1), dtype=torch.float64, requires_grad=True)
    wt = torch.tensor(w_torch, dtype=torch.float64, requires_grad=True)
    p = cfg["padding"]
    y = fn(
        xt,
        wt,
        stride=cfg["strides"],
        padding=p if isinstance(p, int) else tuple(p),
        output_padding=cfg["output_padding"] or 0,
        groups=cfg["groups"],
        dilation=cfg["dilation"],
    )
    ct = torch.tensor(np.moveaxis(cotangent, -1, 1), dtype=torch.float64)
    (y * ct).sum().backward()
    to_last = lambda t: np.moveaxis(t.detach().numpy(), 1, -1)  # noqa: E731
    return to_last(y), to_last(xt.grad), wt.grad.numpy()


@pytest.mark.requires_torch
@settings(max_examples=30, **SETTINGS)
@given(cfg=configs(torch_padding=True))
def test_matches_torch_forward_and_gradients(cfg):
    assume(output_ok(cfg))
    assume(not isinstance(cfg["padding"], str))
    x, k = make_arrays(cfg, seed=1)
    w_torch = np.asarray(ops.kernel_to_torch(k, cfg["groups"]))
    y_shape = shape_of(x, k, cfg)
    ct = np.random.default_rng(2).standard_normal(y_shape).astype(np.float32)
    y_t, dx_t, dw_t = torch_forward_and_grads(x, w_torch, cfg, ct)
    for y, dx, dk in methods_forward_and_vjp(x, k, ct, cfg).values():
        assert_close(y, y_t)
        assert_close(dx, dx_t)
        assert_close(ops.kernel_to_torch(dk, cfg["groups"]), dw_t)


def kernel_16_stride_8(padding):
    # FCN-8s' final upsampler (kernel 16, stride 8) on a 3x4 map, PyTorch's padding.
    cfg = dict(
        spatial=(3, 4),
        window=(16, 16),
        strides=(8, 8),
        dilation=(1, 1),
        groups=1,
        c_in=3,
        c_out=2,
        padding=padding,
        output_padding=None,
    )
    return (cfg, *make_arrays(cfg, seed=3))


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("padding", [0, 4, "SAME", "VALID"])
def test_kernel_16_stride_8_matches_definition(method, padding):
    cfg, x, k = kernel_16_stride_8(padding)
    expected = conv_transpose_ref(x, k, (8, 8), crops_of(cfg), (1, 1))
    assert_close(run(x, k, cfg, method), expected)


@pytest.mark.requires_torch
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("padding", [0, 4])
def test_kernel_16_stride_8_gradients_match_torch(method, padding):
    cfg, x, k = kernel_16_stride_8(padding)
    ct = np.ones(shape_of(x, k, cfg), np.float32)
    y_t, dx_t, dw_t = torch_forward_and_grads(x, np.asarray(ops.kernel_to_torch(k)), cfg, ct)
    _, vjp = jax.vjp(lambda a, b: run(a, b, cfg, method), x, k)
    dx, dk = vjp(jnp.asarray(ct))
    assert_close(dx, dx_t)
    assert_close(ops.kernel_to_torch(dk), dw_t)


# The subpixel method's code paths, which the small-channel property tests above rarely
# reach: one GEMM over im2col columns (normal or transposed orientation, chosen by its
# shape), an XLA convolution for shallow phases, phases grouped by tap count when the
# window is not a multiple of the stride, and phases no tap reaches (stride > window).
SUBPIXEL_PATHS = {
    "k3s2, 4 tap groups, im2col + conv": ((5, 4), (3, 3), (2, 2), 1, 16, 8),
    "k4s2, im2col transposed": ((4, 3), (4, 4), (2, 2), 1, 8, 40),
    "k3s2 groups=2, im2col + conv": ((4, 4), (3, 3), (2, 2), 2, 32, 16),
    "k4s2 groups=2, im2col transposed": ((3, 4), (4, 4), (2, 2), 2, 16, 80),
    "1-D k5s3, im2col both ways": ((6,), (5,), (3,), 1, 40, 24),
    "1-D k2s3, a phase with no taps": ((5,), (2,), (3,), 1, 40, 8),
    "3-D k3s2 dilation 2": ((3, 2, 3), (3, 2, 3), (2, 2, 2), 1, 12, 6),
}


def subpixel_path(case, padding):
    spatial, window, strides, groups, c_in, c_out = SUBPIXEL_PATHS[case]
    dilation = (2,) * len(spatial) if "dilation" in case else (1,) * len(spatial)
    cfg = dict(
        spatial=spatial,
        window=window,
        strides=strides,
        dilation=dilation,
        groups=groups,
        c_in=c_in,
        c_out=c_out,
        padding=padding,
        output_padding=None,
    )
    return (cfg, *make_arrays(cfg, seed=4))


@pytest.mark.parametrize("case", SUBPIXEL_PATHS, ids=list(SUBPIXEL_PATHS))
@pytest.mark.parametrize("padding", [1, "SAME"])
def test_subpixel_paths_match_definition(case, padding):
    cfg, x, k = subpixel_path(case, padding)
    expected = conv_transpose_ref(
        x, k, cfg["strides"], crops_of(cfg), cfg["dilation"], cfg["groups"]
    )
    assert_close(jax.jit(lambda a, b: run(a, b, cfg, "subpixel"))(x, k), expected)


@pytest.mark.requires_torch
@pytest.mark.parametrize("case", SUBPIXEL_PATHS, ids=list(SUBPIXEL_PATHS))
def test_subpixel_paths_gradients_match_torch(case):
    cfg, x, k = subpixel_path(case, 1)
    ct = np.random.default_rng(5).standard_normal(shape_of(x, k, cfg)).astype(np.float32)
    _, dx, dk = forward_and_vjp(x, k, ct, cfg, "subpixel")
    w_torch = np.asarray(ops.kernel_to_torch(k, cfg["groups"]))
    _, dx_t, dw_t = torch_forward_and_grads(x, w_torch, cfg, ct)
    assert_close(dx, dx_t)
    assert_close(ops.kernel_to_torch(dk, cfg["groups"]), dw_t)


@pytest.mark.requires_torch
def test_asymmetric_pairs_match_torch_full_output_cropped():
    import torch

    x = np.random.default_rng(4).standard_normal((1, 5, 4, 3)).astype(np.float32)
    k = np.random.default_rng(5).standard_normal((3, 4, 3, 2)).astype(np.float32)
    full = torch.nn.functional.conv_transpose2d(
        torch.tensor(np.moveaxis(x, -1, 1)),
        torch.tensor(np.asarray(ops.kernel_to_torch(k))),
        stride=2,
    )
    full = np.moveaxis(full.numpy(), 1, -1)  # (1, 11, 10, 2)
    for method in METHODS:
        y = ops.conv_transpose(x, k, 2, ((0, 3), (2, 1)), method=method)
        assert_close(y, full[:, 0:8, 2:9])


# ------------------------------------------------------------------------------------
# Keras 3 (JAX backend): forward and both gradients.
# ------------------------------------------------------------------------------------


def keras_layer(cfg):
    import keras

    n = len(cfg["spatial"])
    cls = getattr(keras.layers, f"Conv{n}DTranspose")
    layer = cls(
        filters=cfg["c_out"],
        kernel_size=cfg["window"],
        strides=cfg["strides"],
        padding=cfg["padding"].lower(),
        output_padding=cfg["output_padding"],
        dilation_rate=cfg["dilation"],
        use_bias=False,
        kernel_initializer="zeros",  # the tests pass their kernels; no random init to compile
    )
    layer.build((None, *cfg["spatial"], cfg["c_in"]))
    return layer


@settings(max_examples=30, **SETTINGS)
@given(cfg=configs(groups=(1,), keras=True))
def test_matches_keras_forward_and_gradients(cfg):
    assume(output_ok(cfg))
    layer = keras_layer(cfg)
    x, k = make_arrays(cfg, seed=6)
    keras_kernel = np.asarray(ops.kernel_to_keras(k))

    def keras_fn(a, kk, c):
        y, vjp = jax.vjp(lambda a_, kk_: layer.stateless_call([kk_], [], a_)[0], a, kk)
        return (y, *vjp(c))

    y_shape = jax.eval_shape(lambda a, kk: layer.stateless_call([kk], [], a)[0], x, keras_kernel)
    ct = np.random.default_rng(7).standard_normal(y_shape.shape).astype(np.float32)
    y_k, dx_k, dkk_k = jax.jit(keras_fn)(x, keras_kernel, ct)
    for y, dx, dk in methods_forward_and_vjp(x, k, ct, cfg).values():
        assert_close(y, y_k)
        assert_close(dx, dx_k)
        assert_close(ops.kernel_to_keras(dk), dkk_k)


@pytest.mark.requires_torch
def test_kernel_converters_match_a_torch_layer():
    import torch

    tl = torch.nn.ConvTranspose2d(4, 6, (3, 2), stride=2, groups=2, bias=False)
    k = ops.kernel_from_torch(tl.weight, feature_group_count=2)  # a tensor needing grad
    assert k.shape == (3, 2, 4, 3)
    np.testing.assert_array_equal(ops.kernel_to_torch(k, 2), tl.weight.detach().numpy())
    x = np.random.default_rng(8).standard_normal((1, 4, 5, 4)).astype(np.float32)
    y_t = tl(torch.tensor(np.moveaxis(x, -1, 1))).detach().numpy()
    y = ops.conv_transpose(x, k, 2, 0, feature_group_count=2)
    assert_close(y, np.moveaxis(y_t, 1, -1))


def test_kernel_converters_match_a_keras_layer():
    import keras

    kl = keras.layers.Conv3DTranspose(5, (2, 3, 1), strides=(1, 2, 3), use_bias=False)
    kl.build((None, 3, 3, 3, 2))
    kk = ops.kernel_from_keras(kl.kernel)
    assert kk.shape == (2, 3, 1, 2, 5)
    np.testing.assert_array_equal(ops.kernel_to_keras(kk), np.asarray(kl.kernel))


# ------------------------------------------------------------------------------------
# Invariants: adjoint identity, numerical gradients, transformations, dtypes.
# ------------------------------------------------------------------------------------


@settings(max_examples=25, **SETTINGS)
@given(cfg=configs())
def test_adjoint_of_strided_convolution(cfg):
    # <conv(u, K), v> == <u, conv_transpose(v, K)>, conv being the ordinary strided
    # convolution with the same kernel, stride, dilation, groups and crops as padding.
    assume(output_ok(cfg))
    x, k = make_arrays(cfg, seed=9)
    u = np.random.default_rng(10).standard_normal(shape_of(x, k, cfg)).astype(np.float32)
    n = len(cfg["spatial"])

    def both(x, k, u):  # one compiled program per example
        conv_u = lax.conv_general_dilated(
            u,
            jnp.swapaxes(k, -1, -2),  # (*window, C_out // g, C_in): lax's grouped HWIO
            window_strides=cfg["strides"],
            padding=crops_of(cfg),
            rhs_dilation=cfg["dilation"],
            dimension_numbers=lax.ConvDimensionNumbers(
                (0, n + 1, *range(1, n + 1)), (n + 1, n, *range(n)), (0, n + 1, *range(1, n + 1))
            ),
            feature_group_count=cfg["groups"],
            precision="highest",
        )
        return run(x, k, cfg, "auto"), conv_u

    y, conv_u = jax.jit(both)(x, k, u)
    assert y.shape == u.shape and conv_u.shape == x.shape
    lhs = np.vdot(np.asarray(conv_u, np.float64), x.astype(np.float64))
    rhs = np.vdot(u.astype(np.float64), np.asarray(y, np.float64))
    assert abs(lhs - rhs) <= 1e-4 * (abs(lhs) + np.abs(u).sum())


@pytest.mark.parametrize("method", METHODS)
def test_check_grads_forward_and_reverse(method):
    cfg = dict(
        spatial=(3, 4),
        window=(3, 4),
        strides=(2, 3),
        dilation=(1, 2),
        groups=2,
        c_in=2,
        c_out=4,
        padding=((1, 0), (2, 1)),
        output_padding=(1, 0),
    )
    x, k = make_arrays(cfg, seed=11, batch=1)
    # jax.enable_x64 since jax 0.8; jax.experimental's before (Colab's 0.7.2).
    enable_x64 = getattr(jax, "enable_x64", None)
    if enable_x64 is None:
        from jax.experimental import enable_x64
    with enable_x64(True):  # finite differences need float64 to be a sharp oracle
        x, k = x.astype(np.float64), k.astype(np.float64)
        check_grads(lambda a, b: run(a, b, cfg, method), (x, k), order=2, modes=("fwd", "rev"))


@pytest.mark.parametrize("method", METHODS)
def test_jit_vmap_and_bfloat16(method):
    cfg = dict(
        spatial=(4, 5),
        window=(4, 4),
        strides=(2, 2),
        dilation=(1, 1),
        groups=1,
        c_in=3,
        c_out=2,
        padding="SAME",
        output_padding=None,
    )
    x, k = make_arrays(cfg, seed=12, batch=2)
    eager = run(x, k, cfg, method)
    jitted = jax.jit(lambda a, b: run(a, b, cfg, method))(x, k)
    assert_close(jitted, eager)
    stacked = np.stack([x, 2 * x])  # vmap over an extra leading axis
    mapped = jax.vmap(lambda a: run(a, k, cfg, method))(stacked)
    assert_close(mapped[1], 2 * eager)
    y16 = run(x.astype(jnp.bfloat16), k.astype(jnp.bfloat16), cfg, method)
    assert y16.dtype == jnp.bfloat16
    assert_close(y16.astype(np.float32), eager, rtol=3e-2)
    y32 = ops.conv_transpose(
        x.astype(jnp.bfloat16),
        k.astype(jnp.bfloat16),
        2,
        method=method,
        preferred_element_type=jnp.float32,
    )
    assert y32.dtype == jnp.float32
    assert_close(y32, eager, rtol=3e-2)


def test_precision_is_forwarded():
    x, k = make_arrays(dict(spatial=(3,), window=(2,), c_in=2, c_out=2, groups=1), seed=13)
    for method in METHODS[:3]:
        text = (
            jax.jit(
                lambda a, b, m=method: ops.conv_transpose(a, b, 2, method=m, precision="highest")
            )
            .lower(x, k)
            .as_text()
        )
        assert "HIGHEST" in text, method


def test_zero_insert_picture():
    x = jnp.arange(1.0, 7.0).reshape(1, 2, 3, 1)
    z = ops.zero_insert(x, (2, 3))[0, ..., 0]
    expected = np.array([[1, 0, 0, 2, 0, 0, 3], [0] * 7, [4, 0, 0, 5, 0, 0, 6]], np.float32)
    np.testing.assert_array_equal(z, expected)


def test_kernel_4_stride_2_example_three_ways():
    # kernel 4, stride 2: scatter definition == zeros inserted + flipped-kernel convolution.
    y = np.array([1.0, 2.0, 3.0], np.float32)
    k = np.array([1.0, 10.0, 100.0, 1000.0], np.float32)
    scatter = np.zeros(8)
    for i, j in itertools.product(range(3), range(4)):
        scatter[2 * i + j] += y[i] * k[j]
    dilated = np.convolve(np.asarray(ops.zero_insert(y.reshape(1, 3, 1), 2))[0, :, 0], k)
    np.testing.assert_array_equal(dilated, scatter)
    ours = ops.conv_transpose(y.reshape(1, 3, 1), k.reshape(4, 1, 1), 2, "VALID")[0, :, 0]
    np.testing.assert_array_equal(ours, scatter)


# ------------------------------------------------------------------------------------
# Errors: raised at trace time, naming the argument.
# ------------------------------------------------------------------------------------

X = np.zeros((1, 4, 4, 2), np.float32)
K = np.zeros((3, 3, 2, 4), np.float32)


@pytest.mark.parametrize(
    "args, kwargs, match",
    [
        ((np.zeros((4, 2)), K, 2), {}, "`x` must be channels-last"),
        ((X, np.zeros((3, 2, 4)), 2), {}, "`kernel` must have rank 4"),
        ((X, np.zeros((3, 3, 3, 4)), 2), {}, "`kernel` has C_in=3"),
        ((X, K, 0), {}, "`strides` must be >= 1"),
        ((X, K, (2, 2, 2)), {}, "`strides` must be an int or a sequence of 2"),
        ((X, K, 2.5), {}, "`strides` must be an int"),
        ((X, K, 2), {"kernel_dilation": 0}, "`kernel_dilation` must be >= 1"),
        ((X, K, 2), {"output_padding": 2}, "`output_padding` must be smaller"),
        ((X, K, 1), {"output_padding": (0, 1)}, "`output_padding` must be smaller"),
        ((X, K, 2), {"output_padding": -1}, "`output_padding` must be >= 0"),
        ((X, K, 2), {"feature_group_count": 3}, "`feature_group_count`=3 must divide"),
        ((X, K, 2), {"feature_group_count": 0}, "`feature_group_count` must be a positive"),
        ((X, K, 2, "FULL"), {}, "unknown string 'FULL'"),
        ((X, K, 2, -1), {}, "`padding` crops must be >= 0"),
        ((X, K, 2, ((1, 2),)), {}, "`padding` must be"),
        ((X, K, 2, 5), {}, "crops the whole output"),
        ((X, K, 2), {"method": "fft"}, "`method` must be one of"),
    ],
)
def test_errors_name_the_argument(args, kwargs, match):
    with pytest.raises(ValueError, match=match):
        ops.conv_transpose(*args, **kwargs)
    with pytest.raises(ValueError, match=match):  # at trace time too, never an XLA error
        jax.jit(lambda: ops.conv_transpose(*args, **kwargs))()


def test_converter_errors():
    with pytest.raises(ValueError, match="`weight` must be"):
        ops.kernel_from_torch(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="`feature_group_count`=4"):
        ops.kernel_from_torch(np.zeros((2, 3, 3, 3)), feature_group_count=4)
    with pytest.raises(ValueError, match="`kernel` must be"):
        ops.kernel_from_keras(np.zeros((2,)))


def test_auto_selection_table():
    assert ops.select_method(2, "cpu") == "subpixel"
    assert ops.select_method((1, 1), "cpu") == "zero_insert"
    assert ops.select_method((2, 1), "cpu") == "subpixel"
    assert ops.select_method(2, "gpu") == "dilated"
    # The autoencoder's decoder, measured (bench/RESULTS.md): 1x1 code -> 7x7 (stride 1),
    # 7 -> 14 (64 -> 32, kernel 3, stride 2), 14 -> 28 (32 -> 1, kernel 7, stride 2).
    dec1 = ops.conv_transpose_geometry((32, 1, 1, 2), (7, 7, 2, 64), 1, "VALID")
    dec2 = ops.conv_transpose_geometry((32, 7, 7, 64), (3, 3, 64, 32), 2, "SAME")
    dec3 = ops.conv_transpose_geometry((32, 14, 14, 32), (7, 7, 32, 1), 2, "SAME")
    assert [ops.select_method(g, "cpu") for g in (dec1, dec2, dec3)] == [
        "dilated",
        "subpixel",
        "dilated",
    ]
    big = ops.conv_transpose_geometry((4, 28, 28, 64), (3, 3, 64, 64), 1, "SAME")
    assert ops.select_method(big, "cpu") == "zero_insert"
    for bad in (0, (2, 0), 1.5, (), "2"):
        with pytest.raises(ValueError, match="`geometry_or_strides` must be"):
            ops.select_method(bad, "cpu")


def test_geometry_by_hand():
    # 3x3 input, kernel 4, stride 2: the full output is (3 - 1) * 2 + 4 = 8 samples a side.
    same = ops.conv_transpose_geometry((1, 3, 3, 5), (4, 4, 5, 2), 2, "SAME")
    assert same.full_spatial == (8, 8) and same.crops == ((1, 1), (1, 1))
    assert same.out_spatial == (6, 6) and (same.c_in, same.c_out) == (5, 2)
    valid = ops.conv_transpose_geometry((1, 3, 3, 5), (4, 4, 5, 2), 2, "VALID")
    assert valid.crops == ((0, 0), (0, 0)) and valid.out_spatial == (8, 8)
    # PyTorch's padding 1 with output_padding 1: crop 1 and 1, then give 1 back at the end.
    torch_like = ops.conv_transpose_geometry((1, 3, 5), (3, 5, 4), 2, 1, output_padding=1)
    assert torch_like.crops == ((1, 0),) and torch_like.out_spatial == (6,)
    grouped = ops.conv_transpose_geometry((1, 3, 4), (3, 4, 3), 2, feature_group_count=2)
    assert (grouped.groups, grouped.c_out) == (2, 6)
    with pytest.raises(dataclasses.FrozenInstanceError):
        same.strides = (1, 1)
    with pytest.raises(ValueError, match="`kernel` has C_in=4"):
        ops.conv_transpose_geometry((1, 3, 3, 5), (4, 4, 4, 2), 2)
