"""A JAX function of images as an ONNX model, through jax2onnx, run by ONNX Runtime.

The conversion behind ``fcnjax.export.export(..., format="onnx")``, which documents the
graph; here is how jax2onnx is driven. :func:`convert` gives jax2onnx (opset
:data:`ONNX_OPSET`) a program it translates correctly, :func:`run` runs the bytes in ONNX
Runtime; both turn the converters' and the runtime's failures into one-line ValueErrors.
:func:`check_close` and :func:`check_labels` hold ONNX Runtime's answers to JAX's.

jax2onnx 0.17.1 mistranslates four things fcnjax's networks hold: ``lax.pad``,
``lax.clamp`` and integer ``lax.rem`` whose shapes hold a symbolic dimension (the batch) fail
to convert (it takes their shapes for constants); ``reduce_window_max`` (ResNet's 3x3 max
pooling, NHWC) becomes a ``MaxPool`` over all four axes; and a reshape to a shape with a 0
(``jnp.pad(..., mode="edge")``'s empty edges, in bilinear upsampling) becomes a ``Reshape``
whose 0 keeps the input's dimension. ONNX Runtime refuses the last two. :func:`onnx_ready`
traces the function once and replays it with those primitives replaced by equivalents it
translates (concatenations and slices, ``max`` and ``min``, integer arithmetic, the maximum
of strided slices) and without the arrays that have no elements (concatenations skip them).
Calls (``jit``, ``custom_jvp``, ``custom_vjp``, ``checkpoint``) are inlined on the way:
inference needs neither their boundaries nor their derivative rules.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.export  # a submodule jax < 0.8 does not import by itself
import jax.numpy as jnp
import numpy as np
from jax import lax

__all__ = [
    "CHECK_TOLERANCE",
    "EXTRA",
    "ONNX_OPSET",
    "check_close",
    "check_labels",
    "convert",
    "import_onnx",
    "onnx_ready",
    "run",
]

# ONNX Runtime >= 1.16 and TensorRT 10 run opset 17; every operator these graphs use
# (Conv, Pad, Slice, Concat, Reshape, ArgMax, Exp, ...) has its current form there.
ONNX_OPSET = 17
EXTRA = 'pip install "fcnjax[onnx]"'
CHECK_TOLERANCE = 1e-4  # ONNX Runtime against JAX: probabilities and reconstructions


def import_onnx():
    """``(jax2onnx, onnx, onnxruntime)``, or an ImportError naming the extra."""
    try:
        import jax2onnx
        import onnx
        import onnxruntime
    except ImportError as e:
        raise ImportError(
            f"ONNX export needs jax2onnx and onnxruntime ({e.name} is missing): {EXTRA} "
            "(Python >= 3.11; jax2onnx pins orbax-checkpoint < 0.11.37)."
        ) from e
    return jax2onnx, onnx, onnxruntime


def first_line(error: BaseException, limit: int | None = None) -> str:
    """An error's first line (its type's name if it has none), cut to ``limit`` characters."""
    text = str(error).strip().splitlines()
    line = text[0] if text else type(error).__name__
    return line if limit is None or len(line) <= limit else line[: limit - 3] + "..."


def convert(
    fn: Callable,
    spec: jax.ShapeDtypeStruct,
    output_names: Sequence[str],
    metadata: Mapping[str, str],
    what: str,
) -> bytes:
    """``fn`` of one input ``spec`` (named ``image``) as a checked, serialised ONNX model
    with ``output_names`` and ``metadata`` (``metadata_props``; the doc string too). ``fn``
    is one :func:`onnx_ready` gave (so that tracing errors are the caller's to explain).

    Raises:
      ValueError: jax2onnx cannot convert ``fn`` (naming the primitive where it says which;
        ``what`` names the model).
    """
    jax2onnx, onnx, _ = import_onnx()
    try:
        proto = jax2onnx.to_onnx(
            fn,
            inputs=[spec],
            model_name="fcnjax",
            opset=ONNX_OPSET,
            input_names=["image"],
            output_names=list(output_names),
        )
    except Exception as e:  # noqa: BLE001 (any converter failure: nothing is written)
        found = re.search(r"primitive '([^']+)'", str(e))
        step = f"the primitive {found[1]!r}" if found else "a step of the graph"
        raise ValueError(
            f"{what} cannot be exported to ONNX: jax2onnx could not convert {step} "
            f"({type(e).__name__}: {first_line(e)}). Export StableHLO instead "
            "(--format stablehlo)."
        ) from e
    for key, value in metadata.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    proto.doc_string = "; ".join(f"{k}: {v}" for k, v in metadata.items())
    onnx.checker.check_model(proto)
    return proto.SerializeToString()


def run(data: bytes, images: np.ndarray, what: str) -> list[np.ndarray]:
    """The outputs of the ONNX model ``data`` on ``images`` in ONNX Runtime (CPU).

    Raises:
      ValueError: ONNX Runtime cannot load or run it (``what`` names the model).
    """
    import onnxruntime

    try:
        session = onnxruntime.InferenceSession(data, providers=["CPUExecutionProvider"])
        return session.run(None, {"image": images})
    except Exception as e:  # noqa: BLE001 (ONNX Runtime's own error types)
        raise ValueError(
            f"ONNX Runtime cannot run the ONNX form of {what}: {first_line(e)}. Export "
            "StableHLO instead (--format stablehlo)."
        ) from e


def check_close(name: str, got: np.ndarray, want: np.ndarray, what: str) -> None:
    """Raises a ValueError naming ``name`` and ``what`` unless ONNX Runtime's ``got`` is
    within :data:`CHECK_TOLERANCE` of JAX's ``want`` everywhere (a NaN is not)."""
    error = float(np.max(np.abs(np.asarray(got, np.float64) - np.asarray(want))))
    if not error <= CHECK_TOLERANCE:  # NaN too
        raise ValueError(
            f"the ONNX form of {what} gives {name} {error:.3g} away from JAX's on a test "
            f"batch (tolerance {CHECK_TOLERANCE}): not written."
        )


def check_labels(
    got: np.ndarray, labels: np.ndarray, probs: np.ndarray, threshold: float, what: str
) -> None:
    """Raises a ValueError unless ONNX Runtime's labels ``got`` are JAX's ``labels``
    wherever float rounding cannot decide them: where the two best of ``probs`` (``(...,
    K)``) are more than :data:`CHECK_TOLERANCE` apart; for one output (``K = 1``) where the
    probability is more than that away from ``threshold``.

    >>> probs = np.array([[0.3], [0.50001], [0.9]])
    >>> check_labels(np.array([0, 0, 1]), np.array([0, 1, 1]), probs, 0.5, "a model")
    """
    if probs.shape[-1] == 1:
        clear = np.abs(probs[..., 0] - threshold) > CHECK_TOLERANCE
    else:
        top2 = np.sort(probs, axis=-1)[..., -2:]
        clear = top2[..., -1] - top2[..., 0] > CHECK_TOLERANCE
    wrong = int(((np.asarray(got) != labels) & clear).sum())
    if wrong:
        raise ValueError(
            f"the ONNX form of {what} gives other labels than JAX on {wrong} of {labels.size} "
            "pixels of a test batch: not written."
        )


_INLINED = {
    "jit": "jaxpr",
    "pjit": "jaxpr",
    "closed_call": "call_jaxpr",
    "core_call": "call_jaxpr",
    "custom_jvp_call": "call_jaxpr",
    "custom_vjp_call": "call_jaxpr",
    "checkpoint": "jaxpr",
    "remat": "jaxpr",
}


def onnx_ready(fn: Callable, spec: jax.ShapeDtypeStruct) -> Callable:
    """``fn`` as a function of the same results, free of what jax2onnx mistranslates, to be
    traced with ``spec`` (its symbolic dimensions are in the replayed equations).

    Tracing errors of ``fn`` (a network that cannot take ``spec``'s sizes) pass through.

    >>> f = lambda x: jnp.pad(x, ((0, 0), (1, 2)), constant_values=-1)
    >>> spec = jax.ShapeDtypeStruct(jax.export.symbolic_shape("b, 3"), jnp.int32)
    >>> primitives = lambda g: {e.primitive.name for e in jax.make_jaxpr(g)(spec).eqns}
    >>> sorted(primitives(f)), sorted(primitives(onnx_ready(f, spec)))
    (['jit'], ['broadcast_in_dim', 'concatenate'])
    >>> jax.export.export(jax.jit(onnx_ready(f, spec)))(spec).call(jnp.ones((1, 3), jnp.int32))
    Array([[-1,  1,  1,  1, -1, -1]], dtype=int32)
    """
    closed = jax.make_jaxpr(fn)(spec)
    tree = jax.tree.structure(jax.eval_shape(fn, spec))

    def ready(images):
        return jax.tree.unflatten(tree, _replay(closed.jaxpr, closed.consts, images))

    return ready


class _Empty:
    """A value with no elements (``jnp.pad(..., mode="edge")`` makes some): jax2onnx writes
    a reshape to a zero-sized shape as an ONNX ``Reshape`` whose 0 means "keep that
    dimension", which ONNX Runtime then refuses; so none is made, and concatenations skip
    them."""

    def __init__(self, aval):
        self.aval = aval

    def value(self):
        return lax.broadcast_in_dim(jnp.zeros((), self.aval.dtype), self.aval.shape, ())


def _is_empty(aval) -> bool:
    shape = getattr(aval, "shape", None)
    return shape is not None and any(not jax.export.is_symbolic_dim(d) and d == 0 for d in shape)


def _replay(jaxpr, consts, *args) -> list[Any]:
    from jax.extend import core as jcore

    env: dict[Any, Any] = {}
    read = lambda v: v.val if isinstance(v, jcore.Literal) else env[v]  # noqa: E731
    value = lambda x: x.value() if isinstance(x, _Empty) else x  # noqa: E731
    env.update(zip(jaxpr.constvars, consts))
    env.update(zip(jaxpr.invars, args))
    for eqn in jaxpr.eqns:
        name = eqn.primitive.name
        if eqn.outvars and all(_is_empty(v.aval) for v in eqn.outvars) and not eqn.effects:
            outs = [_Empty(v.aval) for v in eqn.outvars]
        elif name == "concatenate":
            parts = [x for x in map(read, eqn.invars) if not isinstance(x, _Empty)]
            outs = [parts[0] if len(parts) == 1 else eqn.primitive.bind(*parts, **eqn.params)]
        else:
            ins = [value(read(v)) for v in eqn.invars]
            outs = _apply(eqn, ins)
        env.update(zip(eqn.outvars, outs))  # a dropped output's var is never read
    return [value(read(v)) for v in jaxpr.outvars]


def _apply(eqn, ins: list[Any]) -> list[Any]:
    """One equation on ``ins``: a call inlined, a replaced primitive, or the primitive."""
    from jax.extend import core as jcore

    name = eqn.primitive.name
    sub = eqn.params.get(_INLINED.get(name, ""))
    if sub is not None:
        closed = isinstance(sub, jcore.ClosedJaxpr)
        return _replay(sub.jaxpr if closed else sub, sub.consts if closed else (), *ins)
    replacement = _REPLACED[name](eqn) if name in _REPLACED else None
    if replacement is not None:
        return [replacement(*ins)]
    outs = eqn.primitive.bind(*ins, **eqn.params)
    return outs if eqn.primitive.multiple_results else [outs]


def _symbolic(eqn) -> bool:
    return any(
        jax.export.is_symbolic_dim(d) for v in eqn.outvars for d in getattr(v.aval, "shape", ())
    )


def _pad_rule(eqn):
    if not _symbolic(eqn):
        return None
    return functools.partial(pad, config=eqn.params["padding_config"])


def pad(x: jax.Array, value: jax.Array, config) -> jax.Array:
    """``lax.pad(x, value, config)`` from concatenations, slices and reshapes.

    >>> x = jnp.arange(6.0).reshape(2, 3)
    >>> config = ((1, -1, 0), (-1, 2, 1))
    >>> bool((pad(x, jnp.float32(9), config) == lax.pad(x, 9.0, config)).all())
    True
    """
    value = value.astype(x.dtype)

    def fill(axis, n, shape):
        return lax.broadcast_in_dim(value, (*shape[:axis], n, *shape[axis + 1 :]), ())

    for axis, (lo, hi, interior) in enumerate(config):
        lo, hi, interior = int(lo), int(hi), int(interior)
        if interior:  # interleave: (..., n, 1 + interior, ...) -> (..., n * (1 + interior), ...)
            n = x.shape[axis]
            y = lax.expand_dims(x, (axis + 1,))
            y = lax.concatenate([y, fill(axis + 1, interior, y.shape)], axis + 1)
            y = lax.reshape(y, (*x.shape[:axis], n * (1 + interior), *x.shape[axis + 1 :]))
            x = lax.slice_in_dim(y, 0, n * (1 + interior) - interior, axis=axis)
        if lo < 0:  # negative padding crops, after the interior padding (as lax.pad)
            x = lax.slice_in_dim(x, -lo, x.shape[axis], axis=axis)
        if hi < 0:
            x = lax.slice_in_dim(x, 0, x.shape[axis] + hi, axis=axis)
        if lo > 0 or hi > 0:
            parts = [fill(axis, lo, x.shape)] if lo > 0 else []
            parts += [x] + ([fill(axis, hi, x.shape)] if hi > 0 else [])
            x = lax.concatenate(parts, axis)
    return x


def _rem_rule(eqn):
    if not _symbolic(eqn) or not jnp.issubdtype(eqn.outvars[0].aval.dtype, jnp.integer):
        return None
    # lax.div of integers rounds towards zero, so this is C's remainder, as lax.rem.
    return lambda x, y: lax.sub(x, lax.mul(y, lax.div(x, y)))


def _clamp_rule(eqn):
    if not _symbolic(eqn):
        return None
    return lambda lo, x, hi: lax.min(lax.max(x, lo), hi)


def _reduce_window_max_rule(eqn):
    params = eqn.params
    if any(d != 1 for d in (*params["base_dilation"], *params["window_dilation"])):
        return None
    return functools.partial(
        window_max,
        window=params["window_dimensions"],
        strides=params["window_strides"],
        padding=params["padding"],
    )


def window_max(x: jax.Array, window, strides, padding) -> jax.Array:
    """``lax.reduce_window(x, -inf, lax.max, window, strides, padding)`` as the maximum of
    the window's strided slices.

    >>> x = jnp.arange(30.0).reshape(1, 5, 6, 1) % 7
    >>> args = ((1, 3, 3, 1), (1, 2, 2, 1), ((0, 0), (1, 1), (1, 1), (0, 0)))
    >>> ref = lax.reduce_window(x, -jnp.inf, lax.max, *args)
    >>> bool((window_max(x, *args) == ref).all())
    True
    """
    floating = jnp.issubdtype(x.dtype, jnp.floating)
    low = jnp.array(-jnp.inf if floating else jnp.iinfo(x.dtype).min, x.dtype)
    x = pad(x, low, [(lo, hi, 0) for lo, hi in padding])
    out = [(n - k) // s + 1 for n, k, s in zip(x.shape, window, strides)]
    result = None
    for offsets in np.ndindex(*window):
        ends = [o + s * (m - 1) + 1 for o, s, m in zip(offsets, strides, out)]
        taps = lax.slice(x, offsets, ends, strides)
        result = taps if result is None else lax.max(result, taps)
    return result


_REPLACED = {
    "pad": _pad_rule,
    "rem": _rem_rule,
    "clamp": _clamp_rule,
    "reduce_window_max": _reduce_window_max_rule,
}
