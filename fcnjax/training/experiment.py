"""What a config builds, read once: the run (sources, transforms, task, model, input
normalisation: :class:`Run`), its schedule, optimizer settings and initialisation
(:class:`Experiment`), and the record (``run_info.json``) that lets evaluation and
prediction work from the workdir alone.

:func:`build` is the only reader of a config below :mod:`fcnjax.config`: everything it
hands on is a typed, frozen part (:mod:`fcnjax.training.settings`,
:class:`fcnjax.training.optim.Settings`). Shared by training (:mod:`fcnjax.train`),
evaluation and prediction (:mod:`fcnjax.predict`).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from fcnjax import data as data_lib
from fcnjax import models, weights
from fcnjax.training import checkpoints as ckpt
from fcnjax.training import evaluate, optim, parallel, tasks
from fcnjax.training.settings import ConfigError, Init, Schedule

__all__ = ["Experiment", "Run", "build", "eval_data_config", "initial_params"]

log = logging.getLogger("fcnjax.training.experiment")
_REQUIRED_INFO = ("num_classes", "class_names", "example_shape", "preprocessing")


@dataclasses.dataclass(frozen=True)
class Run:
    """What a config builds, shared by training, evaluation and prediction."""

    task: tasks.Task
    model: nn.Module
    train_source: Any
    eval_source: Any
    train_transform: data_lib.TrainTransform
    eval_transform: data_lib.EvalTransform
    example_shape: tuple[int, ...]
    preprocessing: weights.Preprocessing | None = None
    class_names: tuple[str, ...] | None = None

    def info(self) -> dict[str, Any]:
        """What evaluation and prediction need beyond the config, so that they never read
        the training data or the backbone's weights again: written to
        ``workdir/run_info.json`` by training and given back to :func:`build` as ``info``.
        """
        pre = self.preprocessing
        return {
            **self.task.info(),
            "class_names": list(self.class_names) if self.class_names else None,
            "example_shape": list(self.example_shape),
            "preprocessing": dataclasses.asdict(pre) if pre is not None else None,
        }


@dataclasses.dataclass(frozen=True)
class Experiment:
    """A config, read: the run and how to train it.

    Attributes:
      run: sources, transforms, task, model, normalisation.
      schedule: steps, cadences, batch sizes, loaders, checkpoints (None without a
        training source: evaluation, prediction).
      optimizer: the optimizer's settings.
      init: the backbone's weights and a previous stage's run.
      inference: sliding windows and test-time augmentation (:mod:`fcnjax.inference`).
      outputs: what the task's pictures show (``config.outputs``).
      model_name: the network's name (``models.NAMES``).
      config_json: the config as ``workdir/config.json`` holds it.
    """

    run: Run
    schedule: Schedule | None
    optimizer: optim.Settings
    init: Init
    inference: Mapping[str, Any]
    outputs: Mapping[str, Any]
    model_name: str
    config_json: str


def eval_data_config(config: Mapping[str, Any]) -> dict[str, Any] | None:
    """The evaluation source's config: ``config.data`` updated by ``config.eval_data``."""
    if config["eval_data"] is None:
        return None
    return {**dict(config["data"]), **dict(config["eval_data"])}


def build(
    config: Any,
    *,
    with_train: bool = True,
    with_eval: bool = True,
    info: Mapping[str, Any] | None = None,
) -> Experiment:
    """The experiment of a validated config (:func:`fcnjax.config.as_config`).

    ``info`` (a training run's :meth:`Run.info`, from ``run_info.json``) gives the class
    weights and the input normalisation, so that the training masks and the backbone's
    weights are not read again; and where no source is built (prediction), the classes
    and the input shape, so that nothing is read from the dataset, which may be gone.

    Raises:
      ConfigError: no model name, or classes or class weights that do not agree.
      DataError: bad data, or examples that evaluation cannot take
        (:func:`fcnjax.training.evaluate.check_sizes`).
      ValueError: ``info`` lacks a key training writes.
    """
    c = config.to_dict() if hasattr(config, "to_dict") else dict(config)
    if info is not None:
        missing = sorted(set(_REQUIRED_INFO) - set(info))
        if missing:
            raise ValueError(f"run info lacks {missing}; it has {sorted(info)}.")
    train_source = data_lib.get_source(c["data"]) if with_train else None
    eval_cfg = eval_data_config(c)
    eval_source = data_lib.get_source(eval_cfg) if with_eval and eval_cfg is not None else None
    reference = train_source if train_source is not None else eval_source
    if reference is None and info is None:
        reference = _unverified_train_source(c)
    task = _task(c, reference, train_source, info, with_train or with_eval)
    model = _model(c, task)
    init = _init(c)
    preprocessing = _preprocessing(c, init, info)
    if with_train and info is None and init.backbone_weights:
        _backbone_weights(init)  # a bad file stops the run before anything compiles (cached)
    train_transform, eval_transform = _transforms(c["input"], preprocessing)
    schedule = None
    if train_source is not None:
        schedule = Schedule.from_config(c, _total_steps(c, train_source))
    _check_eval_sizes(c, schedule, train_source, eval_source, eval_transform)
    if reference is None:
        example_shape, names = tuple(info["example_shape"]), info["class_names"]
    else:
        example = eval_transform(reference[0], reference.describe(0))
        example_shape, names = (1, *example["image"].shape), reference.class_names
    run = Run(
        task,
        model,
        train_source,
        eval_source,
        train_transform,
        eval_transform,
        example_shape,
        preprocessing,
        tuple(names) if names else None,
    )
    return Experiment(
        run,
        schedule,
        optim.Settings.of(c["optimizer"]),
        init,
        dict(c["inference"]),
        dict(c["outputs"]),
        c["model"]["name"],
        json.dumps(c, indent=2, sort_keys=True),  # (tuples as lists)
    )


def _unverified_train_source(c: Mapping[str, Any]) -> Any:
    """The training source's examples, unverified, where only its metadata is needed."""
    return data_lib.get_source({**c["data"], "verify": False})


def _task(c, reference, train_source, info, needs_loss: bool) -> tasks.Task:
    """The task of ``c["task"]`` (:mod:`fcnjax.training.tasks`), told about the data."""
    if reference is None:  # no source built: the run info describes the data
        data_k, names = info["num_classes"], info["class_names"]
        data_k = 2 if data_k == 1 else data_k  # a binary network's labels: 0 and 1
    else:
        data_k, names = reference.num_classes, reference.class_names
    context = tasks.Context(
        num_classes=c["model"].get("num_classes"),
        data_classes=data_k,
        class_names=tuple(names) if names else None,
        info=info,
        needs_loss=needs_loss,
        train_source=lambda: (
            train_source if train_source is not None else _unverified_train_source(c)
        ),
        threshold=c["inference"].get("threshold", 0.5),
    )
    return tasks.make(c["task"], c["loss"], context)


def _model(c, task: tasks.Task) -> nn.Module:
    name = c["model"].get("name")
    if name is None:
        raise ConfigError(f"`model.name` is missing; choose one of {sorted(models.NAMES)}.")
    kw = {k: tuple(v) if isinstance(v, list) else v for k, v in c["model"].items()}
    del kw["name"]
    if task.num_classes is not None:
        kw["num_classes"] = task.num_classes
    if c["dtype"] != "float32":
        kw.setdefault("dtype", jnp.dtype(c["dtype"]))
    if c["parallel"] == "pmap" and "bn_axis_name" in models.fields(name):
        kw.setdefault("bn_axis_name", parallel.PMAP_AXIS)  # statistics over the global batch
    return models.get(name, **kw)


def _init(c) -> Init:
    """``config.init``, with the model's pretrainable backbone resolved when weights are set."""
    spec, previous = c["init"]["backbone_weights"], c["init"]["from_workdir"]
    if not spec:
        return Init(from_workdir=previous or None)
    model_kw = dict(c["model"])
    name = model_kw.pop("name", None)
    backbone = models.backbone_of(name, **model_kw)
    if backbone is None:
        raise ConfigError(
            f"`init.backbone_weights` needs a model with a pretrainable backbone; "
            f"{name!r} has none (choose e.g. fcn8s, fcn_resnet50, vgg_unet, resnet50_unet)."
        )
    # FCN's convolutionalised fc6/fc7 come from VGG16's classifier.
    fc = models.field_value(name, "skip", **model_kw) == "score" and backbone.startswith("vgg")
    style = models.field_value(name, "backbone_style", **model_kw)
    return Init(str(spec), previous or None, backbone, style, bool(fc))


def _preprocessing(c, init: Init, info) -> weights.Preprocessing | None:
    """The backbone's input normalisation (``input.normalization='backbone'``), from the
    run info when given, else from the weights file."""
    if c["input"]["normalization"] != "backbone":
        return None
    if not init.backbone_weights:
        raise ConfigError("input.normalization='backbone' needs `init.backbone_weights`.")
    if info is not None and info["preprocessing"] is not None:
        return weights.Preprocessing(**info["preprocessing"])
    return _backbone_weights(init)[1]


def _transforms(inp: Mapping[str, Any], preprocessing):
    normalization = preprocessing if preprocessing is not None else inp["normalization"]
    train = data_lib.TrainTransform(
        size=inp["size"],
        mode=inp["mode"],
        scale_range=tuple(inp["scale_range"]) if inp["scale_range"] else None,
        flip=inp["flip"],
        jitter=tuple(inp["jitter"]) if inp["jitter"] else None,
        normalization=normalization,
    )
    evaluation = data_lib.EvalTransform(
        size=inp["eval_size"] or inp["size"], mode=inp["eval_mode"], normalization=normalization
    )
    return train, evaluation


def _check_eval_sizes(c, schedule, train_source, eval_source, transform) -> None:
    """Before a run trains: evaluation can take every validation example (in
    ``eval_batch_size`` batches when training; the evaluate command sets its own), and the
    pictures the first training examples when there is no validation source."""
    settings = dict(size="input.eval_size", mode="input.eval_mode", batch_size="eval_batch_size")
    if eval_source is not None:
        batch_size = schedule.eval_batch_size if schedule is not None else 1
        evaluate.check_sizes(eval_source, transform, batch_size, settings=settings)
    elif train_source is not None:
        count = c["outputs"]["num_examples"]
        evaluate.check_sizes(train_source, transform, count=count, settings=settings)


def _total_steps(c, train_source: Any) -> int:
    """``num_steps``, or ``num_epochs`` times the global batches per epoch."""
    if c["num_steps"] is not None:
        return int(c["num_steps"])
    if c["num_epochs"] is None:
        raise ConfigError("set `num_steps` or `num_epochs`.")
    return int(c["num_epochs"]) * data_lib.steps_per_epoch(train_source, c["batch_size"])


@functools.lru_cache(maxsize=2)
def _load_backbone(backbone: str, spec: str, fc: bool, style: str) -> tuple[dict, str | None, Any]:
    """``(variables, style, preprocessing)`` of a backbone's weights file (cached).

    ``"imagenet"`` is torchvision's ResNet or MobileNetV2 file, or Keras' for
    ``style="keras"``; Keras' for MobileNet v1 (keras-segmentation's); torchvision's for
    MobileNetV3-Large."""
    path = None if spec == "imagenet" else spec
    if backbone == "mobilenet_v3_large":
        variables, preprocessing = weights.load_mobilenet_v3(path)
        return variables, None, preprocessing
    if backbone == "mobilenet":  # keras-segmentation's: Keras' file
        variables, preprocessing = weights.load_mobilenet(path)
        return variables, None, preprocessing
    if backbone == "mobilenet_v2":
        keras = path is None and style == "keras"
        return weights.load_mobilenet_v2(weights.KERAS_MOBILENET_V2_URL if keras else path)
    if backbone in models.encoders.RESNETS:
        depth = models.encoders.RESNETS[backbone]
        if path is None and style == "keras":
            if depth not in weights.KERAS_RESNET_URLS:
                raise ConfigError(
                    f"Keras publishes no ImageNet ResNet-{depth}; use "
                    f"model.backbone_style='torchvision' or a file of your own."
                )
            path = weights.KERAS_RESNET_URLS[depth]
        return weights.load_resnet(path, depth=depth)
    params, preprocessing = weights.load_vgg16(path, fc=fc)
    return {"params": params}, None, preprocessing


def _backbone_weights(init: Init) -> tuple[dict, Any]:
    """The loaded ``init.backbone_weights``: ``(variables, preprocessing)``, checked
    against the model's backbone and its ``backbone_style``."""
    spec, wanted = init.backbone_weights, init.style
    variables, style, preprocessing = _load_backbone(init.backbone, spec, init.fc, wanted)
    if style is not None and style != wanted:
        raise ConfigError(
            f"`init.backbone_weights` {spec!r} holds a {style}-style {init.backbone} but the "
            f"model's `backbone_style` is {wanted!r}: set model.backbone_style={style!r}."
        )
    return variables, preprocessing


def initial_params(init: Init, params: Any, batch_stats: Any = None) -> tuple[Any, Any]:
    """``(params, batch_stats)`` with the backbone's ImageNet weights
    (``init.backbone_weights``: VGG16's, or a ResNet's with its BatchNorm statistics)
    and/or a previous run's parameters of the same path and shape (``init.from_workdir``:
    FCN's staged training, 32s -> 16s -> 8s) put in.

    Raises:
      CheckpointError: the previous run's checkpoint is unreadable or shares nothing.
      ConfigError: weights for a model without a backbone, or of another ResNet style.
    """
    params = jax.tree.map(np.asarray, jax.device_get(params))
    batch_stats = jax.tree.map(np.asarray, jax.device_get(batch_stats or {}))
    if init.backbone_weights:
        loaded, _ = _backbone_weights(init)
        # keras-segmentation's decoders read four levels: their encoders have no
        # block5 or layer4, which the file has.
        params = weights.into_backbone(params, loaded["params"], skip_unbuilt=True)
        if loaded.get("batch_stats"):
            batch_stats = weights.into_backbone(
                batch_stats, loaded["batch_stats"], collection="batch_stats", skip_unbuilt=True
            )
    if init.from_workdir:
        source = Path(init.from_workdir) / "checkpoints"
        restored, step = ckpt.restore_state(source, None)
        params, copied = _copy_matching(params, restored["params"])
        batch_stats, _ = _copy_matching(batch_stats, restored.get("batch_stats") or {})
        log.info("initialised %d arrays from %s (step %d)", copied, source, step)
        if not copied:
            raise ckpt.CheckpointError(
                f"{source} (step {step}) shares no parameter with this model."
            )
    return params, batch_stats


def _copy_matching(new: Any, old: Any, path: str = "") -> tuple[Any, int]:
    """``new`` with every leaf that ``old`` has at the same path and shape taken from ``old``."""
    if isinstance(new, Mapping):
        out, n = {}, 0
        for k, v in new.items():
            if isinstance(old, Mapping) and k in old:
                out[k], c = _copy_matching(v, old[k], f"{path}/{k}")
                n += c
            else:
                out[k] = v
        return out, n
    if np.shape(old) == np.shape(new):
        return np.asarray(old, np.asarray(new).dtype), 1
    log.warning("not initialising %s: shape %s != %s", path, np.shape(old), np.shape(new))
    return new, 0
