"""What a config builds: the sources, transforms, task and model of a run (:class:`Run`),
its initial parameters, and the record (``run_info.json``) that lets evaluation and
prediction work from the workdir alone.

Shared by training (:mod:`fcnjax.train`), evaluation and prediction (:mod:`fcnjax.predict`).
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
import ml_collections
import numpy as np

from fcnjax import checkpoints as ckpt
from fcnjax import config as config_lib
from fcnjax import data as data_lib
from fcnjax import evaluate, models, parallel, tasks, weights

__all__ = [
    "Run",
    "build",
    "config_json",
    "eval_data_config",
    "initial_params",
    "loader_options",
    "total_steps",
]

log = logging.getLogger("fcnjax.experiment")
_REQUIRED_INFO = ("num_classes", "class_names", "example_shape", "preprocessing")


@dataclasses.dataclass
class Run:
    """What a config builds, shared by training, evaluation and prediction."""

    config: ml_collections.ConfigDict
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


def eval_data_config(config: ml_collections.ConfigDict) -> dict[str, Any] | None:
    """The evaluation source's config: ``config.data`` updated by ``config.eval_data``."""
    if config.eval_data is None:
        return None
    return {**config.data.to_dict(), **config.eval_data.to_dict()}


def build(
    config: ml_collections.ConfigDict,
    *,
    with_train: bool = True,
    with_eval: bool = True,
    info: Mapping[str, Any] | None = None,
) -> Run:
    """Sources, transforms, task and model from a (validated) config.

    ``info`` (a training run's :meth:`Run.info`, from ``run_info.json``) gives the class
    weights and the input normalisation, so that the training masks and the backbone's
    weights are not read again; and where no source is built (prediction), the classes
    and the input shape, so that nothing is read from the dataset, which may be gone.

    Raises:
      ConfigError: no model name, or classes or class weights that do not agree.
      DataError: bad data, or examples that evaluation cannot take
        (:func:`fcnjax.evaluate.check_sizes`).
      ValueError: ``info`` lacks a key training writes.
    """
    if info is not None:
        missing = sorted(set(_REQUIRED_INFO) - set(info))
        if missing:
            raise ValueError(f"run info lacks {missing}; it has {sorted(info)}.")
    train_source = data_lib.get_source(config.data) if with_train else None
    eval_cfg = eval_data_config(config)
    eval_source = data_lib.get_source(eval_cfg) if with_eval and eval_cfg is not None else None
    reference = train_source if train_source is not None else eval_source
    if reference is None and info is None:
        reference = _unverified_train_source(config)
    described = reference if reference is not None else info
    task = _task(config, described, train_source, info, with_train or with_eval)
    model = _model(config, task)
    preprocessing = _preprocessing(config, info)
    if with_train and info is None and config.init.backbone_weights:
        _backbone_weights(config)  # a bad file stops the run before anything compiles (cached)
    train_transform, eval_transform = _transforms(config, preprocessing)
    _check_eval_sizes(config, train_source, eval_source, eval_transform, with_train)
    if reference is None:
        example_shape = tuple(info["example_shape"])
        names = info["class_names"]
    else:
        example = eval_transform(reference[0], reference.describe(0))
        example_shape = (1, *example["image"].shape)
        names = reference.class_names
    return Run(
        config,
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


def _unverified_train_source(config: ml_collections.ConfigDict) -> Any:
    """The training source's examples, unverified, where only its metadata is needed."""
    return data_lib.get_source({**config.data.to_dict(), "verify": False})


def _describe(reference: Any) -> tuple[int | None, list[str] | None]:
    if isinstance(reference, Mapping):  # a run info
        return reference["num_classes"], reference["class_names"]
    return reference.num_classes, reference.class_names


def _task(config, reference, train_source, info, needs_loss: bool) -> tasks.Task:
    """The task, its classes checked against the data's and its class weights resolved."""
    if config.task == "autoencoder":
        return tasks.Autoencoder()
    data_k, names = _describe(reference)
    k = config.model.num_classes if "num_classes" in config.model else data_k
    if k is None:
        raise config_lib.ConfigError("set `model.num_classes`: the data source does not give it.")
    if data_k is not None and k != data_k:
        # Pixels of the classes beyond the model's would silently drop out of the loss.
        named = f" ({', '.join(names)})" if names else ""
        raise config_lib.ConfigError(
            f"`model.num_classes` is {k} but the data has {data_k} classes{named}; "
            "leave it unset to take the data's, or make them agree."
        )
    weights_ = _class_weights(config, int(k), train_source, info, needs_loss)
    try:
        return tasks.Segmentation(int(k), config.loss.reduction, weights_, config.loss.ignore_label)
    except ValueError as e:
        raise config_lib.ConfigError(f"`loss`: {e}") from None


def _class_weights(
    config, k: int, train_source, info, needs_loss: bool
) -> tuple[float, ...] | None:
    weights_ = config.loss.class_weights
    if weights_ is None:
        return None
    if not isinstance(weights_, str):
        if len(weights_) != k:
            raise config_lib.ConfigError(
                f"`loss.class_weights` needs {k} weights (one per class); got {len(weights_)}."
            )
        return tuple(float(w) for w in weights_)
    if weights_ != "median_frequency":
        raise config_lib.ConfigError(
            f"`loss.class_weights` must be None, 'median_frequency' or {k} numbers; "
            f"got {weights_!r}."
        )
    if info is not None and info.get("class_weights") is not None:
        return tuple(float(w) for w in info["class_weights"])  # what training computed
    if not needs_loss:
        return None  # prediction
    if info is not None:
        log.info("the run info predates recorded class weights: computing them again")
    source = train_source if train_source is not None else _unverified_train_source(config)
    counts = data_lib.class_counts(source, k)
    weights_ = tuple(float(w) for w in data_lib.median_frequency_weights(counts))
    log.info("median frequency class weights: %s", np.round(weights_, 4).tolist())
    return weights_


def _model(config, task: tasks.Task) -> nn.Module:
    name = config.model.get("name")
    if name is None:
        raise config_lib.ConfigError(
            f"`model.name` is missing; choose one of {sorted(models.NAMES)}."
        )
    kw = {k: tuple(v) if isinstance(v, list) else v for k, v in config.model.to_dict().items()}
    del kw["name"]
    if task.num_classes is not None:
        kw["num_classes"] = task.num_classes
    if config.dtype != "float32":
        kw.setdefault("dtype", jnp.dtype(config.dtype))
    if config.parallel == "pmap" and "bn_axis_name" in models.fields(name):
        kw.setdefault("bn_axis_name", parallel.PMAP_AXIS)  # statistics over the global batch
    return models.get(name, **kw)


def _preprocessing(config, info) -> weights.Preprocessing | None:
    """The backbone's input normalisation (``input.normalization='backbone'``), from the
    run info when given, else from the weights file."""
    if config.input.normalization != "backbone":
        return None
    if not config.init.backbone_weights:
        raise config_lib.ConfigError(
            "input.normalization='backbone' needs `init.backbone_weights`."
        )
    if info is not None and info["preprocessing"] is not None:
        return weights.Preprocessing(**info["preprocessing"])
    return _backbone_weights(config)[1]


def _transforms(config, preprocessing):
    normalization = preprocessing if preprocessing is not None else config.input.normalization
    inp = config.input
    train = data_lib.TrainTransform(
        size=inp.size,
        mode=inp.mode,
        scale_range=tuple(inp.scale_range) if inp.scale_range else None,
        flip=inp.flip,
        jitter=tuple(inp.jitter) if inp.jitter else None,
        normalization=normalization,
    )
    evaluation = data_lib.EvalTransform(
        size=inp.eval_size or inp.size, mode=inp.eval_mode, normalization=normalization
    )
    return train, evaluation


def _check_eval_sizes(config, train_source, eval_source, transform, training: bool) -> None:
    """Before a run trains: evaluation can take every validation example (in
    ``eval_batch_size`` batches when training; the evaluate command sets its own), and the
    pictures the first training examples when there is no validation source."""
    settings = dict(size="input.eval_size", mode="input.eval_mode", batch_size="eval_batch_size")
    if eval_source is not None:
        batch_size = (config.eval_batch_size or config.batch_size) if training else 1
        evaluate.check_sizes(eval_source, transform, batch_size, settings=settings)
    elif train_source is not None:
        count = config.outputs.num_examples
        evaluate.check_sizes(train_source, transform, count=count, settings=settings)


@functools.lru_cache(maxsize=2)
def _load_backbone(backbone: str, spec: str, fc: bool, style: str) -> tuple[dict, str | None, Any]:
    """``(variables, style, preprocessing)`` of a backbone's weights file (cached).

    ``"imagenet"`` is torchvision's ResNet file, or Keras' for ``style="keras"``."""
    path = None if spec == "imagenet" else spec
    if backbone in models.encoders.RESNETS:
        depth = models.encoders.RESNETS[backbone]
        if path is None and style == "keras":
            if depth not in weights.KERAS_RESNET_URLS:
                raise config_lib.ConfigError(
                    f"Keras publishes no ImageNet ResNet-{depth}; use "
                    f"model.backbone_style='torchvision' or a file of your own."
                )
            path = weights.KERAS_RESNET_URLS[depth]
        return weights.load_resnet(path, depth=depth)
    params, preprocessing = weights.load_vgg16(path, fc=fc)
    return {"params": params}, None, preprocessing


def _backbone_weights(config) -> tuple[dict, Any]:
    """The loaded ``init.backbone_weights`` of the config's model: ``(variables,
    preprocessing)``, checked against the model's backbone and its ``backbone_style``."""
    model_kw = config.model.to_dict()
    name = model_kw.pop("name", None)
    backbone = models.backbone_of(name, **model_kw)
    if backbone is None:
        raise config_lib.ConfigError(
            f"`init.backbone_weights` needs a model with a pretrainable backbone; "
            f"{name!r} has none (choose e.g. fcn8s, fcn_resnet50, vgg_unet, resnet50_unet)."
        )
    # FCN's convolutionalised fc6/fc7 come from VGG16's classifier.
    fc = models.field_value(name, "skip", **model_kw) == "score" and backbone.startswith("vgg")
    spec = str(config.init.backbone_weights)
    wanted = models.field_value(name, "backbone_style", **model_kw)
    variables, style, preprocessing = _load_backbone(backbone, spec, fc, wanted)
    if style is not None and style != wanted:
        raise config_lib.ConfigError(
            f"`init.backbone_weights` {spec!r} holds a {style}-style ResNet but the model's "
            f"`backbone_style` is {wanted!r}: set model.backbone_style={style!r}."
        )
    return variables, preprocessing


def initial_params(
    config: ml_collections.ConfigDict, params: Any, batch_stats: Any = None
) -> tuple[Any, Any]:
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
    if config.init.backbone_weights:
        loaded, _ = _backbone_weights(config)
        # keras-segmentation's decoders read four levels: their encoders have no
        # block5 or layer4, which the file has.
        params = weights.into_backbone(params, loaded["params"], skip_unbuilt=True)
        if loaded.get("batch_stats"):
            batch_stats = weights.into_backbone(
                batch_stats, loaded["batch_stats"], collection="batch_stats", skip_unbuilt=True
            )
    if config.init.from_workdir:
        source = Path(config.init.from_workdir) / "checkpoints"
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


def loader_options(config: ml_collections.ConfigDict) -> dict[str, int]:
    """The grain loaders' ``workers``, ``threads`` and ``prefetch`` from ``config.input``."""
    return {k: config.input[k] for k in ("workers", "threads", "prefetch")}


def total_steps(config: ml_collections.ConfigDict, train_source: Any) -> int:
    """``num_steps``, or ``num_epochs`` times the global batches per epoch."""
    if config.num_steps is not None:
        return int(config.num_steps)
    if config.num_epochs is None:
        raise config_lib.ConfigError("set `num_steps` or `num_epochs`.")
    return int(config.num_epochs) * data_lib.steps_per_epoch(train_source, config.batch_size)


def jsonable(x: Any) -> Any:
    """Tuples as lists, recursively (what JSON writes)."""
    if isinstance(x, (tuple, list)):
        return [jsonable(v) for v in x]
    if isinstance(x, dict):
        return {k: jsonable(v) for k, v in x.items()}
    return x


def config_json(config: ml_collections.ConfigDict) -> str:
    """The config as ``workdir/config.json`` holds it."""
    return json.dumps(jsonable(config.to_dict()), indent=2, sort_keys=True)
