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
  ``probabilities``, ``float32 (B, H, W, K)``, the softmax of the logits. A network with one
  output (binary segmentation): ``labels`` 1 where the sigmoid of its score exceeds the
  run's ``inference.threshold`` (or ``threshold=``), baked into the graph, else 0; and
  ``probabilities``, ``float32 (B, H, W, 1)``, the sigmoid: the foreground's probability
  (:func:`fcnjax.inference.labels_from_scores`, :func:`~fcnjax.inference.probabilities`);
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
any of ``cpu``, ``cuda``, ``rocm``, ``tpu``: one file for several; fcnjax's operations
take the forms tuned for the backend that traces them, so a file for GPUs is fastest exported
on one). Running it needs only jax (the same or a newer version, within jax.export's
compatibility window)::

    import numpy as np
    from jax import export  # jax.export without this line only from jax 0.8
    exported = export.deserialize(open("shapes.stablehlo", "rb").read())
    labels = exported.call(np.zeros((2, 96, 96, 3), np.uint8))   # int32 (2, 96, 96)

ONNX (``format="onnx"``, needs ``pip install "fcnjax[onnx]"`` and jax >= 0.8.1): converted
by jax2onnx at opset 17 (:data:`fcnjax.export_onnx.ONNX_OPSET`), one self-contained file
(weights inside), input ``image`` with batch dimension ``B``, outputs named as above.
Before the file is written, ONNX Runtime runs it on a fixed random batch and its results
are compared with JAX's (the probabilities or reconstruction to 1e-4, the labels wherever
two classes, or a one-output network's probability and its threshold, are not within
1e-4); a mismatch, or a primitive jax2onnx cannot convert, is a ValueError naming it, and
nothing is written. The file's ``metadata_props`` record the task, the class names, the
normalisation, the checkpoint's step, the input and output layout and a one-output
network's threshold (``fcnjax.*`` keys). Running it needs only onnxruntime::

    import numpy as np, onnxruntime as ort
    session = ort.InferenceSession("shapes.onnx")
    (labels,) = session.run(None, {"image": np.zeros((2, 96, 96, 3), np.uint8)})

jax2onnx mistranslates a few primitives fcnjax's networks hold; :mod:`fcnjax.export_onnx`
gives it an equivalent program instead (its docstring lists them). The graph is the network on whole
images: the config's ``inference`` section (sliding windows, test-time augmentation), which
:class:`~fcnjax.predict.Predictor` applies, is not in it (a warning says so).

Files are written whole or not at all (:func:`fcnjax.training.workdir.write_new`: a synced temporary
file beside ``output``, then linked to its name); an existing ``output`` is refused unless
``overwrite``.
"""

from __future__ import annotations

import dataclasses
import errno
import json
import logging
import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.export  # a submodule jax < 0.8 does not import by itself
import jax.numpy as jnp
import numpy as np

from fcnjax import export_onnx
from fcnjax import inference as inference_lib
from fcnjax.data.transforms import Preprocessing, normalize
from fcnjax.predict import Predictor, load
from fcnjax.training import workdir as workdir_lib

log = logging.getLogger("fcnjax.export")

__all__ = [
    "FORMATS",
    "PLATFORMS",
    "export",
    "input_spec",
    "parse_size",
    "serving_function",
]

FORMATS = ("stablehlo", "onnx")
PLATFORMS = ("cpu", "cuda", "rocm", "tpu")  # jax.export's platform names


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
    ``(labels, float32 (B, H, W, K) softmax)``; a one-output network's labels are 0/1 by
    ``predictor.inference["threshold"]`` (a constant of the graph) and its probabilities
    the sigmoid, ``(B, H, W, 1)``. The autoencoder: its ``float32 (B, H, W, C)``
    reconstruction. Normalisation, parameters (closed over, so constants of an exported
    graph) and inference mode are inside; nothing outside JAX is called.

    Raises:
      ValueError: ``probabilities`` for the autoencoder.
    """
    model, variables = predictor.run.model, predictor.variables
    normalization: str | Preprocessing = predictor.run.eval_transform.normalization
    autoencoder = _is_autoencoder(predictor)
    threshold = predictor.inference["threshold"]
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
        labels = inference_lib.labels_from_scores(out, threshold)
        return (labels, inference_lib.probabilities(out)) if probabilities else labels

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
    threshold: float | None = None,
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
      probabilities: also output the probabilities (segmentation only): the softmax, or a
        one-output network's sigmoid.
      threshold: a one-output network's labels are 1 where its sigmoid exceeds it, in
        ``(0, 1)``; default: the run's ``inference.threshold``. Unused by other networks.
      checkpoint: ``"latest"`` or ``"best"``.
      overwrite: replace an existing ``output``.

    Raises:
      ValueError: an unknown format or platform, a bad size or threshold, a network that
        cannot take the size (or symbolic sizes), probabilities of an autoencoder, a
        primitive without an ONNX form, or an ONNX file whose results differ from JAX's.
      FileExistsError: ``output`` exists and ``overwrite`` is False.
      IsADirectoryError: ``output`` is a directory.
      FileNotFoundError, CheckpointError: as :func:`fcnjax.predict.load`.
      ImportError: ``format="onnx"`` without jax2onnx or onnxruntime.
    """
    if format not in FORMATS:
        raise ValueError(f"--format must be one of {', '.join(FORMATS)}; got {format!r}.")
    targets = _platforms(platforms)
    size = _size_argument(size, dynamic)
    chosen = {} if threshold is None else {"threshold": threshold}
    inference_lib.check_options(chosen)  # names `inference.threshold`, before loading
    output = Path(output)
    _check_output(output, overwrite)  # before minutes of loading and tracing
    if format == "onnx":
        export_onnx.import_onnx()  # before loading: the missing extra named at once
    predictor = load(workdir, checkpoint, inference=chosen)
    defaults = inference_lib.DEFAULTS
    if {**predictor.inference, "threshold": defaults["threshold"]} != defaults:
        log.warning(
            "%s: the exported graph scores whole images; the config's inference options "
            "(sliding windows, test-time augmentation) are not in it.",
            workdir,
        )
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
    inconclusive = getattr(jax.errors, "InconclusiveDimensionOperation", None)
    if inconclusive is None:  # jax < 0.8 (Colab's 0.7.2) has it only in its private core
        from jax._src.core import InconclusiveDimensionOperation as inconclusive
    return (ValueError, TypeError, inconclusive)


def _traced(fn: Callable[[], Any], predictor: Predictor, spec, dynamic: bool) -> Any:
    """``fn()``, its tracing failures as one ValueError naming the network and the size."""
    try:
        return fn()
    except _trace_errors() as e:
        _, h, w, _ = spec.shape
        why = export_onnx.first_line(e, 160)  # symbolic shapes make long lines
        if dynamic:
            raise ValueError(
                f"{_described(predictor)} cannot be exported with a symbolic height and width "
                f"({why}); export a fixed size instead with --size HxW (the run's "
                f"is {'x'.join(str(s) for s in predictor.run.example_shape[1:3])})."
            ) from e
        raise ValueError(f"{_described(predictor)} cannot take {h}x{w} images: {why}") from e


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


def _onnx(fn, spec, predictor: Predictor, probabilities: bool, dynamic: bool, size) -> bytes:
    autoencoder = _is_autoencoder(predictor)
    names = ["reconstruction"] if autoencoder else ["labels"] + ["probabilities"] * probabilities
    what = _described(predictor)
    ready = _traced(lambda: export_onnx.onnx_ready(fn, spec), predictor, spec, dynamic)
    data = export_onnx.convert(ready, spec, names, _metadata(predictor, names, spec), what)
    # Checked by ONNX Runtime against JAX on a fixed random batch (dynamic: the run's size).
    h, w = _size(predictor, size)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (2, h, w, predictor.channels), dtype=np.uint8)
    got = export_onnx.run(data, images, what)
    if autoencoder:
        export_onnx.check_close("reconstruction", got[0], jax.jit(fn)(images), what)
        return data
    labels, probs = map(
        np.asarray, jax.jit(serving_function(predictor, probabilities=True))(images)
    )
    if probabilities:
        export_onnx.check_close("probabilities", got[1], probs, what)
    export_onnx.check_labels(got[0], labels, probs, predictor.inference["threshold"], what)
    return data


def _metadata(predictor: Predictor, names: list[str], spec) -> dict[str, str]:
    """The ONNX file's ``metadata_props``: what a user needs to feed it and read it."""
    normalization = predictor.run.eval_transform.normalization
    if isinstance(normalization, Preprocessing):
        normalization = json.dumps(dataclasses.asdict(normalization))
    dims, k = [str(d) for d in spec.shape], predictor.num_classes
    pixels, threshold = ", ".join(dims[:3]), predictor.inference["threshold"]
    outputs = {  # a one-output network's: 0/1 by the threshold, the foreground's sigmoid
        "labels": f"int32 [{pixels}]" + f", 1 where sigmoid > {threshold!r}" * (k == 1),
        "probabilities": f"float32 [{pixels}, {k}], " + ("sigmoid" if k == 1 else "softmax"),
        "reconstruction": f"float32 [{', '.join(dims)}]",
    }
    binary = {"fcnjax.threshold": repr(threshold)} if k == 1 else {}
    return {
        "fcnjax.task": "autoencoder" if _is_autoencoder(predictor) else "segmentation",
        "fcnjax.model": str(predictor.config.model.name),
        "fcnjax.step": str(predictor.step),
        "fcnjax.input": f"image: uint8 [{', '.join(dims)}], channels-last, values 0..255",
        "fcnjax.outputs": json.dumps({n: outputs[n] for n in names}),
        "fcnjax.normalization": str(normalization),
        "fcnjax.class_names": json.dumps(list(predictor.run.class_names or [])),
        **binary,
    }


def _write(output: Path, data: bytes, overwrite: bool) -> Path:
    """``data`` as ``output``, whole or not at all (:func:`fcnjax.training.workdir.write_new`)."""
    output.parent.mkdir(parents=True, exist_ok=True)
    try:
        return workdir_lib.write_new(output, data, replace=overwrite)
    except FileExistsError:
        raise FileExistsError(
            f"--output {output} appeared while exporting; it was not replaced. Pass "
            "--overwrite (overwrite=True) to replace it."
        ) from None
