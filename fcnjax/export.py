"""A trained model as one file that runs without fcnjax: StableHLO (``jax.export``) or ONNX.

>>> # after `fcnjax train --config shapes_fcn8s --workdir runs/shapes`:
>>> # export("runs/shapes", "shapes.stablehlo")                  # needs only jax to run
>>> # export("runs/shapes", "shapes.onnx", format="onnx")        # needs only onnxruntime

What the graph holds. Its input is what a user has: ``image``, ``uint8 (B, H, W, C)``, RGB
(or greyscale, ``C = 1``), channels-last. The run's input normalisation
(``input.normalization``: ``x / 255``, torchvision's or Caffe's means, a backbone's
:class:`~fcnjax.data.Preprocessing`) is inside the graph, and so are the parameters (as
constants) and the network in inference mode (BatchNorm's running averages, no dropout).
Its outputs:

- segmentation: ``labels``, ``int32 (B, H, W)``, the class of every pixel (the argmax of
  the logits, as :class:`fcnjax.predict.Predictor`); with ``probabilities=True`` also
  ``probabilities``, ``float32 (B, H, W, K)``, the softmax of the logits;
- the autoencoder (``task="autoencoder"``, ``cae_mnist``): ``reconstruction``,
  ``float32 (B, H, W, C)``, the decoded image in the network's normalised space (for
  ``input.normalization="unit"``, ``[0, 1]``, not clipped). There are no classes:
  ``probabilities`` is refused.

Sizes. ``B`` is symbolic: one file takes any batch. ``H, W`` are the run's example size
(``run_info.json``'s ``example_shape``, the evaluation size) unless ``size=(H, W)`` says
otherwise; ``dynamic=True`` makes them symbolic too where the network allows it (FCN-ResNet
does; FCN's crop offsets, SegNet's and U-Net's padding to a multiple of their stride and the
autoencoder's fixed 28x28 do not, and are refused with a ValueError suggesting ``--size``).
A run that resized its evaluation images (``input.eval_mode="resize"``) expects images
resized to ``H, W`` (fcnjax resizes with PIL, bilinear); the graph does not resize.

StableHLO (``format="stablehlo"``): ``jax.export.export(jax.jit(fn), platforms=...)``,
serialised (``Exported.serialize()``). Lowered for ``platforms`` (default ``("cpu",)``;
any of ``cpu``, ``cuda``, ``rocm``, ``tpu``: one file for several). Running it needs only
jax (the same or a newer version, within jax.export's compatibility window)::

    import jax, numpy as np
    exported = jax.export.deserialize(open("shapes.stablehlo", "rb").read())
    labels = exported.call(np.zeros((2, 96, 96, 3), np.uint8))   # int32 (2, 96, 96)

ONNX (``format="onnx"``, needs ``pip install "fcnjax[onnx]"``, Python >= 3.11): converted
by jax2onnx at opset :data:`ONNX_OPSET`, one self-contained file (weights inside), input
``image`` with batch dimension ``B``, outputs named as above. Before the file is written,
ONNX Runtime runs it on a fixed random batch and its results are compared with JAX's (the
probabilities or reconstruction to 1e-4, the labels wherever two classes are not within
1e-4 of each other); a mismatch, or a primitive jax2onnx cannot convert, is a ValueError
naming it, and nothing is written. The file's ``metadata_props`` record the task, the class
names, the normalisation, the checkpoint's step and the input and output layout
(``fcnjax.*`` keys). Running it needs only onnxruntime::

    import numpy as np, onnxruntime as ort
    session = ort.InferenceSession("shapes.onnx")
    (labels,) = session.run(None, {"image": np.zeros((2, 96, 96, 3), np.uint8)})

Two jax2onnx 0.17.1 failures are avoided by giving it an equivalent program: ``lax.pad``,
``lax.clamp`` and integer ``lax.rem`` whose shapes hold the symbolic batch fail to convert
(their shapes are taken for constants), and ``reduce_window_max`` (ResNet's 3x3 max pooling)
becomes a ``MaxPool`` over all four NHWC axes that ONNX Runtime refuses. The program is
traced once, and those primitives are replaced by concatenations and slices, ``max`` and
``min``, integer arithmetic, and the maximum of strided slices (:func:`_onnx_ready`).

Files are written whole or not at all (a temporary file beside ``output``, then renamed); an
existing ``output`` is refused unless ``overwrite``.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import json
import os
import re
import secrets
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from fcnjax.data.transforms import Preprocessing, normalize
from fcnjax.predict import Predictor, load

__all__ = [
    "FORMATS",
    "ONNX_OPSET",
    "PLATFORMS",
    "export",
    "input_spec",
    "parse_size",
    "serving_function",
]

FORMATS = ("stablehlo", "onnx")
PLATFORMS = ("cpu", "cuda", "rocm", "tpu")  # jax.export's platform names
# ONNX Runtime >= 1.16 and TensorRT 10 run opset 17; every operator the graphs here use
# (Conv, ConvTranspose-free convolutions, Pad, Slice, Concat, ArgMax, ...) exists there.
ONNX_OPSET = 17
_ONNX_EXTRA = 'pip install "fcnjax[onnx]"'
_CHECK_TOLERANCE = 1e-4  # ONNX Runtime against JAX: probabilities and reconstructions


def parse_size(text: str) -> tuple[int, int]:
    """``"HxW"`` (the CLI's ``--size``) -> ``(H, W)``.

    >>> parse_size("512x384"), parse_size("64X64")
    ((512, 384), (64, 64))
    """
    match = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", str(text))
    if not match or min(int(match[1]), int(match[2])) < 1:
        raise ValueError(f"--size must be HxW with positive integers, e.g. 512x512; got {text!r}.")
    return int(match[1]), int(match[2])


def _is_autoencoder(predictor: Predictor) -> bool:
    return predictor.num_classes is None


def serving_function(
    predictor: Predictor, *, probabilities: bool = False
) -> Callable[[jax.Array], Any]:
    """The exported computation: ``uint8 (B, H, W, C)`` images -> the model's answer.

    Segmentation: ``int32 (B, H, W)`` labels, or with ``probabilities`` the pair
    ``(labels, float32 (B, H, W, K) softmax)``. The autoencoder: its ``float32
    (B, H, W, C)`` reconstruction. Normalisation, parameters (closed over, so constants of
    an exported graph) and inference mode are inside; nothing outside JAX is called.

    Raises:
      ValueError: ``probabilities`` for the autoencoder.
    """
    model, variables = predictor.run.model, predictor.variables
    normalization: str | Preprocessing = predictor.run.eval_transform.normalization
    autoencoder = _is_autoencoder(predictor)
    if autoencoder and probabilities:
        raise ValueError(
            f"{predictor.workdir} holds an autoencoder: it has no classes, so no "
            "probabilities (its export gives the reconstruction)."
        )

    def serve(images: jax.Array) -> Any:
        if images.dtype != jnp.uint8:
            raise TypeError(f"the exported graph takes uint8 images; got {images.dtype}.")
        out = model.apply(variables, normalize(images, normalization), train=False)
        out = out.astype(jnp.float32)
        if autoencoder:
            return out
        if out.shape[1:3] != images.shape[1:3]:  # as Predictor: the scores at the image's size
            out = jax.image.resize(out, (*images.shape[:3], out.shape[-1]), "bilinear")
        labels = jnp.argmax(out, axis=-1).astype(jnp.int32)
        return (labels, jax.nn.softmax(out, axis=-1)) if probabilities else labels

    return serve


def input_spec(
    predictor: Predictor,
    size: Sequence[int] | None = None,
    dynamic: bool = False,
    *,
    batch: str = "b",
) -> jax.ShapeDtypeStruct:
    """``uint8 (batch, H, W, C)`` with a symbolic batch named ``batch``; ``H, W`` the run's
    example size, ``size``, or (``dynamic``) the symbolic ``h, w``."""
    channels = predictor.channels
    if dynamic:
        _size_argument(size, dynamic)  # refuses a size
        spec = f"{batch}, h, w, {channels}"
    else:
        h, w = _size(predictor, size)
        spec = f"{batch}, {h}, {w}, {channels}"
    return jax.ShapeDtypeStruct(jax.export.symbolic_shape(spec), jnp.uint8)


def _size_argument(size: Sequence[int] | str | None, dynamic: bool) -> tuple[int, int] | None:
    if size is None:
        return None
    if dynamic:
        raise ValueError("give either a fixed --size or --dynamic, not both.")
    if isinstance(size, str):
        return parse_size(size)
    values = tuple(size)
    if len(values) != 2 or not all(
        isinstance(s, (int, np.integer)) and not isinstance(s, bool) and s >= 1 for s in values
    ):
        raise ValueError(f"`size` must be (H, W), two positive ints; got {size!r}.")
    return int(values[0]), int(values[1])


def _size(predictor: Predictor, size: Sequence[int] | None) -> tuple[int, int]:
    """``size``, or the run's example size (the evaluation size)."""
    if size is None:
        return tuple(int(s) for s in predictor.run.example_shape[1:3])
    return _size_argument(size, False)


def export(
    workdir: str | os.PathLike[str],
    output: str | os.PathLike[str],
    *,
    format: str = "stablehlo",  # noqa: A002 (the CLI's --format)
    size: Sequence[int] | str | None = None,
    dynamic: bool = False,
    platforms: Sequence[str] | str = ("cpu",),
    probabilities: bool = False,
    checkpoint: str = "latest",
    overwrite: bool = False,
) -> Path:
    """Writes the model of ``workdir`` as a StableHLO or ONNX file; returns its path.

    Args:
      workdir: a training workdir (``config.json``, ``run_info.json``, checkpoints).
      output: the file to write (its folder is created).
      format: ``"stablehlo"`` (jax.export) or ``"onnx"`` (jax2onnx, checked by ONNX
        Runtime; needs the ``onnx`` extra).
      size: the images' ``(H, W)`` (or ``"HxW"``); default: the run's example size.
      dynamic: symbolic height and width, where the network allows it.
      platforms: StableHLO's target platforms (``"cpu,cuda"`` or a sequence); ONNX: unused.
      probabilities: also output the softmax probabilities (segmentation only).
      checkpoint: ``"latest"`` or ``"best"``.
      overwrite: replace an existing ``output``.

    Raises:
      ValueError: an unknown format or platform, a bad size, a network that cannot take
        the size (or symbolic sizes), probabilities of an autoencoder, a primitive without
        an ONNX form, or an ONNX file whose results differ from JAX's.
      FileExistsError: ``output`` exists and ``overwrite`` is False.
      IsADirectoryError: ``output`` is a directory.
      FileNotFoundError, CheckpointError: as :func:`fcnjax.predict.load`.
      ImportError: ``format="onnx"`` without jax2onnx or onnxruntime.
    """
    if format not in FORMATS:
        raise ValueError(f"--format must be one of {', '.join(FORMATS)}; got {format!r}.")
    targets = _platforms(platforms)
    size = _size_argument(size, dynamic)
    output = Path(output)
    _check_output(output, overwrite)  # before minutes of loading and tracing
    if format == "onnx":
        _import_onnx()
    predictor = load(workdir, checkpoint)
    fn = serving_function(predictor, probabilities=probabilities)
    if format == "stablehlo":
        spec = input_spec(predictor, size, dynamic)
        data = _stablehlo(fn, spec, predictor, targets, dynamic)
    else:
        spec = input_spec(predictor, size, dynamic, batch="B")
        data = _onnx(fn, spec, predictor, probabilities, dynamic, size)
    return _write(output, data, overwrite)


def _platforms(platforms: Sequence[str] | str) -> tuple[str, ...]:
    names = platforms.split(",") if isinstance(platforms, str) else list(platforms)
    names = [str(n).strip().lower() for n in names if str(n).strip()]
    unknown = [n for n in names if n not in PLATFORMS]
    if not names or unknown:
        raise ValueError(
            f"--platforms must name some of {', '.join(PLATFORMS)}; got {platforms!r}."
        )
    return tuple(dict.fromkeys(names))


def _check_output(output: Path, overwrite: bool) -> None:
    if output.is_dir():
        raise IsADirectoryError(errno.EISDIR, "--output is a directory, not a file", str(output))
    if os.path.lexists(output) and not overwrite:
        raise FileExistsError(
            f"--output {output} exists already; pass --overwrite (overwrite=True) to replace it."
        )


def _described(predictor: Predictor) -> str:
    return f"the {predictor.config.model.name} of {predictor.workdir}"


def _trace_errors() -> tuple[type[BaseException], ...]:
    # What a network's own checks and jax's shape arithmetic raise for sizes it cannot take.
    return (ValueError, TypeError, jax.errors.InconclusiveDimensionOperation)


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__


def _traced(fn: Callable[[], Any], predictor: Predictor, spec, dynamic: bool) -> Any:
    """``fn()``, its tracing failures as one ValueError naming the network and the size."""
    try:
        return fn()
    except _trace_errors() as e:
        _, h, w, _ = spec.shape
        if dynamic:
            raise ValueError(
                f"{_described(predictor)} cannot be exported with a symbolic height and width "
                f"({_first_line(e)}); export a fixed size instead with --size HxW (the run's "
                f"is {'x'.join(str(s) for s in predictor.run.example_shape[1:3])})."
            ) from e
        raise ValueError(
            f"{_described(predictor)} cannot take {h}x{w} images: {_first_line(e)}"
        ) from e


def _stablehlo(fn, spec, predictor: Predictor, platforms, dynamic: bool) -> bytes:
    exported = _traced(
        lambda: jax.export.export(jax.jit(fn), platforms=platforms)(spec),
        predictor,
        spec,
        dynamic,
    )
    return bytes(exported.serialize())


# ---------------------------------------------------------------------------------------
# ONNX


def _import_onnx():
    try:
        import jax2onnx
        import onnx
        import onnxruntime
    except ImportError as e:
        raise ImportError(
            f"ONNX export needs jax2onnx and onnxruntime ({e.name} is missing): "
            f"{_ONNX_EXTRA} (Python >= 3.11; jax2onnx pins orbax-checkpoint < 0.11.37)."
        ) from e
    return jax2onnx, onnx, onnxruntime


def _onnx(fn, spec, predictor: Predictor, probabilities: bool, dynamic: bool, size) -> bytes:
    jax2onnx, onnx, _ = _import_onnx()
    autoencoder = _is_autoencoder(predictor)
    names = ["reconstruction"] if autoencoder else ["labels"] + ["probabilities"] * probabilities
    ready = _traced(lambda: _onnx_ready(fn, spec), predictor, spec, dynamic)
    try:
        proto = jax2onnx.to_onnx(
            ready,
            inputs=[spec],
            model_name="fcnjax",
            opset=ONNX_OPSET,
            input_names=["image"],
            output_names=names,
        )
    except Exception as e:  # noqa: BLE001 (any converter failure: nothing is written)
        found = re.search(r"primitive '([^']+)'", str(e))
        what = f"the primitive {found[1]!r}" if found else "a step of the graph"
        raise ValueError(
            f"{_described(predictor)} cannot be exported to ONNX: jax2onnx could not convert "
            f"{what} ({type(e).__name__}: {_first_line(e)}). Export StableHLO instead "
            "(--format stablehlo)."
        ) from e
    _describe_onnx(proto, predictor, names, spec)
    onnx.checker.check_model(proto)
    data = proto.SerializeToString()
    h, w = _size(predictor, size)  # dynamic: checked at the run's size
    _check_onnx(data, predictor, (2, h, w, predictor.channels), probabilities)
    return data


def _describe_onnx(proto, predictor: Predictor, names: list[str], spec) -> None:
    normalization = predictor.run.eval_transform.normalization
    if isinstance(normalization, Preprocessing):
        normalization = json.dumps(
            {k: getattr(normalization, k) for k in ("mean", "std", "bgr", "scale")}
        )
    dims = ", ".join(str(d) for d in spec.shape)
    outputs = {
        "labels": f"int32 [{dims[: dims.rfind(',')]}]",
        "probabilities": f"float32 [{dims[: dims.rfind(',')]}, {predictor.num_classes}]",
        "reconstruction": f"float32 [{dims}]",
    }
    meta = {
        "fcnjax.task": "autoencoder" if _is_autoencoder(predictor) else "segmentation",
        "fcnjax.model": str(predictor.config.model.name),
        "fcnjax.step": str(predictor.step),
        "fcnjax.input": f"image: uint8 [{dims}], channels-last, values 0..255",
        "fcnjax.outputs": json.dumps({n: outputs[n] for n in names}),
        "fcnjax.normalization": str(normalization),
        "fcnjax.class_names": json.dumps(list(predictor.run.class_names or [])),
    }
    for key, value in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    proto.doc_string = (
        f"fcnjax {meta['fcnjax.model']} ({meta['fcnjax.task']}), step {predictor.step}: "
        f"{meta['fcnjax.input']} -> {meta['fcnjax.outputs']}"
    )


def _check_onnx(data: bytes, predictor: Predictor, shape, probabilities: bool) -> None:
    """Runs the ONNX file in ONNX Runtime on a fixed random batch; a ValueError unless it
    gives JAX's results."""
    import onnxruntime

    images = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    try:
        session = onnxruntime.InferenceSession(data, providers=["CPUExecutionProvider"])
        got = session.run(None, {"image": images})
    except Exception as e:  # noqa: BLE001 (ONNX Runtime's own error types)
        raise ValueError(
            f"ONNX Runtime cannot run the ONNX form of {_described(predictor)}: "
            f"{_first_line(e)}. Export StableHLO instead (--format stablehlo)."
        ) from e
    if _is_autoencoder(predictor):
        want = np.asarray(jax.jit(serving_function(predictor))(images))
        _close("reconstruction", got[0], want, predictor)
        return
    reference = jax.jit(serving_function(predictor, probabilities=True))
    labels, probs = map(np.asarray, reference(images))
    if probabilities:
        _close("probabilities", got[1], probs, predictor)
    top2 = np.sort(probs, axis=-1)[..., -2:] if probs.shape[-1] > 1 else None
    clear = np.ones(labels.shape, bool) if top2 is None else top2[..., 1] - top2[..., 0] > 1e-4
    wrong = int(((got[0] != labels) & clear).sum())
    if wrong:
        raise ValueError(
            f"the ONNX form of {_described(predictor)} gives other labels than JAX on "
            f"{wrong} of {labels.size} pixels of a test batch: not written."
        )


def _close(name: str, got, want, predictor: Predictor) -> None:
    error = float(np.max(np.abs(np.asarray(got, np.float64) - want))) if want.size else 0.0
    if not error <= _CHECK_TOLERANCE:  # NaN too
        raise ValueError(
            f"the ONNX form of {_described(predictor)} gives {name} {error:.3g} away from "
            f"JAX's on a test batch (tolerance {_CHECK_TOLERANCE}): not written."
        )


# The equivalent program given to jax2onnx (see the module docstring): traced once here,
# then replayed with the primitives it mistranslates replaced. Calls (jit, custom_jvp,
# custom_vjp, checkpoint) are inlined: inference needs neither their boundaries nor their
# derivative rules.
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


def _onnx_ready(fn: Callable, spec: jax.ShapeDtypeStruct) -> Callable:
    """``fn`` as a function of the same results that jax2onnx 0.17.1 converts."""
    from jax.extend import core as jcore

    closed = jax.make_jaxpr(fn)(spec)
    tree = jax.tree.structure(jax.eval_shape(fn, spec))

    def replay(jaxpr, consts, *args):
        env: dict[Any, Any] = {}
        read = lambda v: v.val if isinstance(v, jcore.Literal) else env[v]  # noqa: E731
        env.update(zip(jaxpr.constvars, consts))
        env.update(zip(jaxpr.invars, args))
        for eqn in jaxpr.eqns:
            ins = [read(v) for v in eqn.invars]
            name, params = eqn.primitive.name, eqn.params
            sub = params.get(_INLINED.get(name, ""))
            if sub is not None:
                if isinstance(sub, jcore.ClosedJaxpr):
                    outs = replay(sub.jaxpr, sub.consts, *ins)
                else:
                    outs = replay(sub, (), *ins)
            elif name in _REPLACED and _REPLACED[name](eqn) is not None:
                outs = [_REPLACED[name](eqn)(*ins)]
            else:
                outs = eqn.primitive.bind(*ins, **params)
                outs = outs if eqn.primitive.multiple_results else [outs]
            for var, value in zip(eqn.outvars, outs):
                if not isinstance(var, jcore.DropVar):
                    env[var] = value
        return [read(v) for v in jaxpr.outvars]

    def ready(images):
        return jax.tree.unflatten(tree, replay(closed.jaxpr, closed.consts, images))

    return ready


def _symbolic(eqn) -> bool:
    return any(
        jax.export.is_symbolic_dim(d) for v in eqn.outvars for d in getattr(v.aval, "shape", ())
    )


def _pad_rule(eqn):
    if not _symbolic(eqn):
        return None
    return functools.partial(_pad, config=eqn.params["padding_config"])


def _pad(x, value, config):
    """``lax.pad(x, value, config)`` from concatenations, slices and reshapes."""
    value = value.astype(x.dtype)
    fill = (
        lambda axis, n, shape: lax.broadcast_in_dim(  # noqa: E731
            value, (*shape[:axis], n, *shape[axis + 1 :]), ()
        )
    )
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
        parts = [fill(axis, lo, x.shape)] * (lo > 0) + [x] + [fill(axis, hi, x.shape)] * (hi > 0)
        if len(parts) > 1:
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
        _window_max,
        window=params["window_dimensions"],
        strides=params["window_strides"],
        padding=params["padding"],
    )


def _window_max(x, window, strides, padding):
    """``lax.reduce_window(x, -inf, lax.max, window, strides, padding)``: the maximum of
    the window's strided slices (each ``(..., out, ...)``)."""
    low = jnp.array(-jnp.inf if jnp.issubdtype(x.dtype, jnp.floating) else jnp.iinfo(x.dtype).min)
    x = _pad(x, low.astype(x.dtype), [(lo, hi, 0) for lo, hi in padding])
    out = [(n - k) // s + 1 for n, k, s in zip(x.shape, window, strides)]
    result = None
    for offsets in np.ndindex(*window):
        taps = lax.slice(
            x,
            offsets,
            [o + s * (m - 1) + 1 for o, s, m in zip(offsets, strides, out)],
            strides,
        )
        result = taps if result is None else lax.max(result, taps)
    return result


_REPLACED = {
    "pad": _pad_rule,
    "rem": _rem_rule,
    "clamp": _clamp_rule,
    "reduce_window_max": _reduce_window_max_rule,
}


def _write(output: Path, data: bytes, overwrite: bool) -> Path:
    """``data`` as ``output``, whole or not at all: a temporary file beside it, synced, then
    renamed over it (``overwrite``) or linked to its name, which fails if a file appeared
    there meanwhile."""
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(f".{output.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if overwrite:
            os.replace(tmp, output)
            return output
        try:
            os.link(tmp, output)
        except FileExistsError:
            raise FileExistsError(
                f"--output {output} appeared while exporting; it was not replaced. Pass "
                "--overwrite (overwrite=True) to replace it."
            ) from None
        except OSError as e:  # a file system without hard links: check, then rename
            if e.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EMLINK):
                raise
            _check_output(output, overwrite)
            os.replace(tmp, output)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    return output
