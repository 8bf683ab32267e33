"""The one trainer: every model on every source, on one CPU, a TPU v2-8 or a pod.

``train_and_evaluate(config, workdir)`` builds the model, the optimizer and the grain
loaders from a config (:mod:`fcnjax.config`), runs jitted, donated train and eval steps
with the batch sharded over a ``Mesh`` of all devices (``parallel="jit"``) or with
``jax.pmap`` (``parallel="pmap"``), and keeps orbax checkpoints (latest K, asynchronous,
and the best by a validation metric) that resume exactly, data order included.

The steps are pure functions of ``(state, batch)``; their constant collaborators (the
loss, the number of classes, the pmap axis) are keyword-only and bound with
``functools.partial`` before ``jax.jit``/``jax.pmap``, once:

>>> import jax, jax.numpy as jnp, optax
>>> from fcnjax import models
>>> model = models.get("fcn8s", num_classes=3, width=0.0625, dropout=0.0)
>>> state = create_train_state(model, optax.sgd(0.1), jnp.zeros((1, 32, 32, 3)), jax.random.key(0))
>>> batch = {"image": jnp.ones((2, 32, 32, 3)), "mask": jnp.ones((2, 32, 32), jnp.int32)}
>>> step = jax.jit(functools.partial(train_step, task=SEGMENTATION))
>>> state, metrics = step(state, batch)
>>> int(state.step), round(float(metrics["loss"]), 4)  # zero-initialised scores: log(3)
(1, 1.0986)
>>> sums = jax.jit(functools.partial(eval_step, task=SEGMENTATION))(state, batch)
>>> sums["confusion_matrix"].tolist()[1]  # row = ground truth 1: 2048 pixels, all counted
[0, 2048, 0]
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import struct
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from fcnjax import checkpoints as ckpt
from fcnjax import config as config_lib
from fcnjax import data as data_lib
from fcnjax import losses, metrics, models, ops, optim, summary, viz
from fcnjax import workdir as workdir_lib
from fcnjax.labels import IGNORE_LABEL

__all__ = [
    "AUTOENCODER",
    "SEGMENTATION",
    "NonFiniteLossError",
    "Task",
    "TrainState",
    "create_train_state",
    "eval_step",
    "initialize_distributed",
    "train_and_evaluate",
    "train_step",
]

log = logging.getLogger("fcnjax.train")
PMAP_AXIS = "batch"  # the mapped axis of parallel="pmap"


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or infinite; the message names the step."""


class TrainState(struct.PyTreeNode):
    """Everything that changes during training (and goes into a checkpoint).

    ``apply_fn`` and ``tx`` are static (not saved). ``batch_stats`` is ``{}`` for models
    without BatchNorm.
    """

    step: jax.Array
    params: Any
    opt_state: Any
    batch_stats: Any
    rng: jax.Array  # dropout key; the key of step s is fold_in(rng, s)
    apply_fn: Callable = struct.field(pytree_node=False)
    tx: optax.GradientTransformation = struct.field(pytree_node=False)

    def variables(self, params: Any = None) -> dict[str, Any]:
        v = {"params": self.params if params is None else params}
        return {**v, "batch_stats": self.batch_stats} if self.batch_stats else v


def create_train_state(
    model: nn.Module,
    tx: optax.GradientTransformation,
    example: jax.Array,
    rng: jax.Array,
    params: Any = None,
) -> TrainState:
    """Initialises ``model`` on ``example`` (a batch of inputs) and ``tx`` on its params.

    ``params`` replaces the initial parameters (e.g. with ImageNet VGG16 weights).
    """
    init_rng, dropout_rng = jax.random.split(rng)
    variables = jax.jit(model.init)(init_rng, example)  # called eagerly: one compilation
    params = variables["params"] if params is None else params
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        opt_state=tx.init(params),
        batch_stats=variables.get("batch_stats", {}),
        rng=jax.random.key_data(dropout_rng),
        apply_fn=model.apply,
        tx=tx,
    )


@dataclasses.dataclass(frozen=True)
class Task:
    """What the network is trained to do: its loss (as sums) and its evaluation sums.

    ``loss_sums(outputs, batch) -> (total, normaliser)``: the objective is
    ``total / normaliser`` summed over the *global* batch (``normaliser`` is 1 for a summed
    loss), so devices and hosts combine them exactly by summing both.
    """

    name: str
    num_classes: int = 0
    reduction: str = "mean"
    class_weights: tuple[float, ...] | None = None
    ignore_label: int = IGNORE_LABEL

    def loss_sums(self, outputs: jax.Array, batch: Mapping[str, jax.Array]):
        where = batch.get("valid")
        if self.name == "autoencoder":
            target = batch["image"]
            total = losses.mean_squared_error(outputs, target, where=where, reduction="sum")
            count = target[0].size * (
                target.shape[0] if where is None else jnp.sum(where, dtype=jnp.float32)
            )
            return total, jnp.asarray(count, jnp.float32)
        labels = batch["mask"]
        weights = None if self.class_weights is None else jnp.asarray(self.class_weights)
        total = losses.softmax_cross_entropy(
            outputs, labels, ignore_label=self.ignore_label, class_weights=weights,
            where=where, reduction="sum",
        )  # fmt: skip
        if self.reduction == "sum":
            return total, jnp.ones((), jnp.float32)
        counted = losses.pixel_weights(
            labels, self.num_classes, ignore_label=self.ignore_label, class_weights=weights,
            where=where,
        )  # fmt: skip
        return total, jnp.sum(counted)

    def eval_sums(self, outputs: jax.Array, batch: Mapping[str, jax.Array]) -> dict[str, jax.Array]:
        total, norm = self.loss_sums(outputs, batch)
        sums = {"loss_total": total, "loss_norm": norm}
        if self.name == "segmentation":
            sums["confusion_matrix"] = metrics.confusion_matrix(
                batch["mask"], jnp.argmax(outputs, -1), self.num_classes,
                ignore_label=self.ignore_label, where=batch.get("valid"),
            )  # fmt: skip
        return sums


SEGMENTATION = Task("segmentation", num_classes=3)
# Scalar validation metrics by task (`checkpoint.best_metric` chooses one).
EVAL_METRICS = {
    "segmentation": (
        "mean_iou",
        "pixel_accuracy",
        "mean_accuracy",
        "frequency_weighted_iou",
        "loss",
    ),
    "autoencoder": ("loss",),
}
AUTOENCODER = Task("autoencoder")


def _psum(x, axis_name):
    return x if axis_name is None else jax.lax.psum(x, axis_name)


def train_step(
    state: TrainState, batch: Mapping[str, jax.Array], *, task: Task, axis_name: str | None = None
) -> tuple[TrainState, dict[str, jax.Array]]:
    """One optimizer step on a batch ``{'image': f[N,H,W,C], 'mask': i32[N,H,W]}``.

    Under ``jax.jit`` with the batch sharded, the sums are global and the step equals the
    single-device one. Under ``pmap``/``shard_map`` pass ``axis_name``: the loss is
    normalised by the global count and gradients are summed over the axis (BatchNorm
    statistics are averaged); dropout keys are folded with the device index.

    Returns the new state and ``{'loss': the objective}`` (a per-pixel mean, or with
    ``reduction="sum"`` the sum over the global batch).
    """
    rng = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)
    if axis_name is not None:
        rng = jax.random.fold_in(rng, jax.lax.axis_index(axis_name))
    mutable = ["batch_stats"] if state.batch_stats else False

    def objective(params):
        out = state.apply_fn(
            state.variables(params), batch["image"], train=True, rngs={"dropout": rng},
            mutable=mutable,
        )  # fmt: skip
        outputs, updates = out if mutable else (out, {})
        total, norm = task.loss_sums(outputs, batch)
        norm = jax.lax.stop_gradient(_psum(norm, axis_name))
        return total / jnp.maximum(norm, 1e-12), (total, norm, updates)

    grads, (total, norm, updates) = jax.grad(objective, has_aux=True)(state.params)
    grads, total = _psum(grads, axis_name), _psum(total, axis_name)
    batch_stats = updates.get("batch_stats", state.batch_stats)
    if axis_name is not None and batch_stats:
        batch_stats = jax.lax.pmean(batch_stats, axis_name)
    param_updates, opt_state = state.tx.update(grads, state.opt_state, state.params)
    new_state = state.replace(
        step=state.step + 1,
        params=optax.apply_updates(state.params, param_updates),
        opt_state=opt_state,
        batch_stats=batch_stats,
    )
    loss = total / jnp.maximum(norm, 1e-12)
    return new_state, {"loss": loss}


def eval_step(
    state: TrainState, batch: Mapping[str, jax.Array], *, task: Task, axis_name: str | None = None
) -> dict[str, jax.Array]:
    """Sums over a batch (padding excluded by ``batch['valid']``): ``confusion_matrix``
    (``int32[K, K]``, rows = ground truth) for segmentation, and ``loss_total`` /
    ``loss_norm``. Accumulate them over the split; never average per-batch metrics."""
    outputs = state.apply_fn(state.variables(), batch["image"], train=False)
    sums = task.eval_sums(outputs, batch)
    return jax.tree.map(functools.partial(_psum, axis_name=axis_name), sums)


# --------------------------------------------------------------------------- the loop


def initialize_distributed(config: Mapping[str, Any] | None = None) -> None:
    """``jax.distributed.initialize`` for multi-host runs, before any other JAX call.

    ``config`` (``config.distributed``): ``initialize`` = ``"auto"`` (only when a
    coordinator address is given here or in ``JAX_COORDINATOR_ADDRESS``), ``True`` (always;
    on Cloud TPU and SLURM JAX finds the rest itself) or ``False``; and optionally
    ``coordinator_address``, ``num_processes``, ``process_id``. A no-op when already done.
    """
    config = dict(config or {})
    mode = config.get("initialize", "auto")
    if jax.distributed.is_initialized() or mode is False:
        return
    address = config.get("coordinator_address") or os.environ.get("JAX_COORDINATOR_ADDRESS")
    if mode == "auto" and not address:
        return
    jax.distributed.initialize(
        coordinator_address=address,
        num_processes=config.get("num_processes"),
        process_id=config.get("process_id"),
    )


def _as_config(config: Any) -> ml_collections.ConfigDict:
    if isinstance(config, ml_collections.ConfigDict):
        config = ml_collections.ConfigDict(config.to_dict())
    elif isinstance(config, Mapping):
        merged = config_lib.default_config()
        config_lib._merge(merged, dict(config), "")
        config = merged
    else:
        raise TypeError(
            f"`config` must be an ml_collections.ConfigDict or a dict; got {type(config)}."
        )
    config_lib.validate(config)
    return config


def _jsonable(x: Any) -> Any:
    if isinstance(x, (tuple, list)):
        return [_jsonable(v) for v in x]
    if isinstance(x, dict):
        return {k: _jsonable(v) for k, v in x.items()}
    return x


def config_json(config: ml_collections.ConfigDict) -> str:
    return json.dumps(_jsonable(config.to_dict()), indent=2, sort_keys=True)


@dataclasses.dataclass
class Run:
    """What a config builds, shared by training, evaluation and prediction."""

    config: ml_collections.ConfigDict
    task: Task
    model: nn.Module
    train_source: Any
    eval_source: Any
    train_transform: Any
    eval_transform: Any
    example_shape: tuple[int, ...]
    preprocessing: Any = None
    class_names: tuple[str, ...] | None = None

    def info(self) -> dict[str, Any]:
        """What prediction needs beyond the config, so that it never reads the data again:
        written to ``workdir/run_info.json`` by training, read by :func:`build`'s ``info``."""
        pre = self.preprocessing
        return {
            "num_classes": self.task.num_classes if self.task.name == "segmentation" else None,
            "class_names": list(self.class_names) if self.class_names else None,
            "example_shape": list(self.example_shape),
            "preprocessing": dataclasses.asdict(pre) if pre is not None else None,
        }


def _eval_data_config(config) -> dict | None:
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

    ``info`` (a training run's :meth:`Run.info`) replaces the data source where only its
    metadata is needed (prediction): nothing is read from the dataset, which may be gone.
    """
    train_source = data_lib.get_source(config.data) if with_train else None
    eval_cfg = _eval_data_config(config)
    eval_source = data_lib.get_source(eval_cfg) if with_eval and eval_cfg is not None else None
    # The training source's examples, unverified, where only its metadata is needed.
    unverified = functools.partial(data_lib.get_source, {**config.data.to_dict(), "verify": False})
    reference = train_source if train_source is not None else eval_source
    if reference is None:
        reference = _Described(info) if info is not None else unverified()
    model_kw = {k: v for k, v in config.model.to_dict().items() if k != "name"}
    model_kw = {k: tuple(v) if isinstance(v, list) else v for k, v in model_kw.items()}
    name = config.model.get("name")
    if name is None:
        raise config_lib.ConfigError(
            f"`model.name` is missing; choose one of {sorted(models.NAMES)}."
        )
    if config.task == "segmentation":
        k = model_kw.setdefault("num_classes", reference.num_classes)
        if k is None:
            raise config_lib.ConfigError(
                "set `model.num_classes`: the data source does not give it."
            )
        if reference.num_classes is not None and k != reference.num_classes:
            # Pixels of the classes beyond the model's would silently drop out of the loss.
            names = f" ({', '.join(reference.class_names)})" if reference.class_names else ""
            raise config_lib.ConfigError(
                f"`model.num_classes` is {k} but the data has {reference.num_classes} "
                f"classes{names}; leave it unset to take the data's, or make them agree."
            )
        weights = config.loss.class_weights
        if isinstance(weights, str):
            if weights != "median_frequency":
                raise config_lib.ConfigError(
                    f"`loss.class_weights` must be None, 'median_frequency' or {k} numbers; "
                    f"got {weights!r}."
                )
            if with_train or with_eval:  # (prediction needs no loss)
                # From the training masks, also when only evaluating: the loss training reported.
                source = train_source if train_source is not None else unverified()
                counts = data_lib.class_counts(source, k)
                weights = tuple(float(w) for w in data_lib.median_frequency_weights(counts))
                log.info("median frequency class weights: %s", np.round(weights, 4).tolist())
            else:
                weights = None
        elif weights is not None:
            weights = tuple(float(w) for w in weights)
            if len(weights) != k:
                raise config_lib.ConfigError(
                    f"`loss.class_weights` needs {k} weights (one per class); got {len(weights)}."
                )
        task = Task(
            "segmentation", int(k), config.loss.reduction, weights, config.loss.ignore_label
        )
    else:
        task = Task("autoencoder", reduction="mean")
    if config.dtype != "float32":
        model_kw.setdefault("dtype", jnp.dtype(config.dtype))
    if config.parallel == "pmap" and "bn_axis_name" in models.fields(name):
        # BatchNorm statistics over the global batch, as under jit.
        model_kw.setdefault("bn_axis_name", PMAP_AXIS)
    model = models.get(name, **model_kw)

    preprocessing = None
    normalization = config.input.normalization
    if normalization == "backbone":
        if not config.init.backbone_weights:
            raise config_lib.ConfigError(
                "input.normalization='backbone' needs `init.backbone_weights`."
            )
        if isinstance(reference, _Described) and reference.preprocessing is not None:
            from fcnjax import weights

            preprocessing = weights.Preprocessing(**reference.preprocessing)
        else:
            preprocessing = _vgg_weights(config)[1]
        normalization = preprocessing
    size = config.input.size
    scale = config.input.scale_range
    train_transform = data_lib.TrainTransform(
        size=size, mode=config.input.mode, scale_range=tuple(scale) if scale else None,
        flip=config.input.flip, jitter=tuple(config.input.jitter) if config.input.jitter else None,
        normalization=normalization,
    )  # fmt: skip
    eval_transform = data_lib.EvalTransform(
        size=size, mode=config.input.eval_mode, normalization=normalization
    )
    if isinstance(reference, _Described):
        example_shape = tuple(reference.example_shape)
    else:
        example_shape = (1, *eval_transform(reference[0], reference.describe(0))["image"].shape)
    names = reference.class_names
    return Run(
        config, task, model, train_source, eval_source, train_transform, eval_transform,
        example_shape, preprocessing, tuple(names) if names else None,
    )  # fmt: skip


class _Described:
    """A source known only by a training run's :meth:`Run.info` (no examples)."""

    def __init__(self, info: Mapping[str, Any]):
        missing = {"num_classes", "class_names", "example_shape", "preprocessing"} - set(info)
        if missing:
            raise ValueError(f"run info lacks {sorted(missing)}; it has {sorted(info)}.")
        self.num_classes = info["num_classes"]
        self.class_names = info["class_names"]
        self.example_shape = info["example_shape"]
        self.preprocessing = info["preprocessing"]


@functools.lru_cache(maxsize=2)
def _load_vgg(spec: str, fc: bool):
    from fcnjax import weights

    return weights.load_vgg16(None if spec == "imagenet" else spec, fc=fc)


def _vgg_weights(config):
    fc = config.model.get("skip", "score") == "score"
    return _load_vgg(str(config.init.backbone_weights), fc)


def _initial_params(config, params: Any) -> Any:
    """ImageNet VGG16 weights and/or a previous run's parameters (staged FCN training)."""
    from fcnjax import weights

    params = jax.tree.map(np.asarray, jax.device_get(params))
    if config.init.backbone_weights:
        vgg, _ = _vgg_weights(config)
        params = weights.into_backbone(params, vgg)
    if config.init.from_workdir:
        source = Path(config.init.from_workdir) / "checkpoints"
        restored, step = ckpt.restore_state(source, None)
        old = restored["params"]
        params, copied = _copy_matching(params, old)
        log.info("initialised %d arrays from %s (step %d)", copied, source, step)
        if not copied:
            raise ckpt.CheckpointError(
                f"{source} (step {step}) shares no parameter with this model."
            )
    return params


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


def _total_steps(config, train_source) -> int:
    if config.num_steps is not None:
        return int(config.num_steps)
    if config.num_epochs is None:
        raise config_lib.ConfigError("set `num_steps` or `num_epochs`.")
    return int(config.num_epochs) * data_lib.steps_per_epoch(train_source, config.batch_size)


class _Signals:
    """SIGTERM / SIGINT set a flag; the loop saves a checkpoint and returns at the next step."""

    def __init__(self):
        self.received: int | None = None
        self._old = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.received is not None:  # a second Ctrl-C: stop now
            signal.signal(signum, self._old.get(signum, signal.SIG_DFL))
            raise KeyboardInterrupt
        self.received = signum
        log.warning(
            "received %s: stopping (training saves a checkpoint first; again: stop at once)",
            signal.Signals(signum).name,
        )

    def __exit__(self, *exc):
        for sig, handler in self._old.items():
            signal.signal(sig, handler)


class Parallel:
    """The data-parallel mode: ``jit`` over a Mesh (default) or ``pmap``."""

    def __init__(self, mode: str, task: Task):
        self.mode = mode
        devices = np.array(jax.devices())
        self.mesh = Mesh(devices, ("data",))
        self.replicated = NamedSharding(self.mesh, P())
        self.data = NamedSharding(self.mesh, P("data"))
        if mode == "jit":
            self.train = jax.jit(
                functools.partial(train_step, task=task), donate_argnums=0,
                in_shardings=(self.replicated, self.data),
                out_shardings=(self.replicated, self.replicated),
            )  # fmt: skip
            self.eval = jax.jit(
                functools.partial(eval_step, task=task),
                in_shardings=(self.replicated, self.data), out_shardings=self.replicated,
            )  # fmt: skip
        else:
            self.train = jax.pmap(
                functools.partial(train_step, task=task, axis_name=PMAP_AXIS),
                axis_name=PMAP_AXIS, donate_argnums=0,
            )  # fmt: skip
            self.eval = jax.pmap(
                functools.partial(eval_step, task=task, axis_name=PMAP_AXIS), axis_name=PMAP_AXIS
            )

    def check_batch(self, batch_size: int, what: str) -> None:
        n = jax.device_count()
        if batch_size % n:
            raise config_lib.ConfigError(
                f"`{what}` ({batch_size}) must be a multiple of the {n} devices (global batch)."
            )

    def shard(self, batch: Mapping[str, np.ndarray]) -> Any:
        batch = {k: v for k, v in batch.items() if k in ("image", "mask", "valid")}
        if self.mode == "jit":
            return data_lib.global_batch(batch, self.data)
        n = jax.local_device_count()
        return {k: np.asarray(v).reshape(n, -1, *np.shape(v)[1:]) for k, v in batch.items()}

    def place(self, state: TrainState) -> TrainState:
        """A host/global state -> the layout the steps take."""
        if self.mode == "jit":
            return jax.device_put(state, self.replicated)
        n = jax.local_device_count()
        return jax.tree.map(lambda x: np.broadcast_to(x, (n, *np.shape(x))), jax.device_get(state))

    def unplace(self, state: TrainState) -> TrainState:
        """The steps' layout -> a replicated global state (what checkpoints hold)."""
        if self.mode == "jit":
            return state
        return jax.device_put(jax.tree.map(lambda x: np.asarray(x[0]), state), self.replicated)

    def fetch(self, tree: Any) -> Any:
        """Replicated outputs -> NumPy on every host."""
        if self.mode == "pmap":
            tree = jax.tree.map(lambda x: x[0], tree)
        return jax.tree.map(lambda x: np.asarray(x.addressable_data(0)), tree)


def _state_target(state: TrainState) -> Any:
    return jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), state
    )


def evaluate(run: Run, par: Parallel, state: TrainState) -> dict[str, Any]:
    """Sums ``eval_step`` over the whole evaluation source -> metrics (FCN's four + loss)."""
    config = run.config
    batch_size = config.eval_batch_size or config.batch_size
    loader = data_lib.eval_loader(
        run.eval_source, batch_size, run.eval_transform,
        workers=config.input.workers, threads=config.input.threads, prefetch=config.input.prefetch,
    )  # fmt: skip
    total = None
    for batch in loader:
        sums = par.fetch(par.eval(state, par.shard(batch)))
        sums = jax.tree.map(lambda x: np.asarray(x, np.float64), sums)
        total = sums if total is None else jax.tree.map(np.add, total, sums)
    results = {"loss": float(total["loss_total"] / max(total["loss_norm"], 1e-12))}
    if run.task.name == "segmentation":
        names = getattr(run.eval_source, "class_names", None)
        names = list(names) if names is not None and len(names) == run.task.num_classes else None
        results.update(metrics.segmentation_metrics(total["confusion_matrix"], names))
        results["confusion_matrix"] = total["confusion_matrix"].astype(np.int64).tolist()
    return results


def train_and_evaluate(config: Any, workdir: str | os.PathLike[str]) -> dict[str, Any]:
    """Trains (resuming from ``workdir`` when it holds a checkpoint) and evaluates.

    Writes to ``workdir``: ``config.json``, ``run_info.json`` (the classes, input shape and
    normalisation, so that prediction needs no data), ``checkpoints/`` (latest K) and ``best/``,
    ``metrics.jsonl`` and TensorBoard events in ``tensorboard/``, ``final_metrics.json``,
    and pictures: ``predictions.png`` (validation inputs | ground truth | prediction) or,
    for the autoencoder, ``reconstructions.png``, ``latent.png`` and ``decoded.png``.

    Returns a dict with ``step``, ``train_loss``, ``eval`` (the last validation metrics:
    ``pixel_accuracy``, ``mean_accuracy``, ``mean_iou``, ``frequency_weighted_iou``,
    ``per_class_iou``, ``loss``, ...), ``eval_step`` (the step they are of; a stopped run's
    may be older than ``step``), ``interrupted`` (a signal name or None), ``seconds``.

    Raises:
      NonFiniteLossError: the loss became NaN/inf (the step is in the message); the last
        checkpoint before it is kept.
      CheckpointError: a checkpoint in ``workdir`` (or ``init.from_workdir``) is unreadable.
      ConfigError: an invalid config, or a model whose classes are not the data's.
      WorkdirBusyError: another run holds ``workdir`` (:func:`fcnjax.workdir.claim`).
      WorkdirError: ``workdir`` is a file or not writable.
    """
    config = _as_config(config)
    initialize_distributed(config.distributed)
    workdir = Path(workdir)
    primary = jax.process_index() == 0
    # Signals are caught from here on: a Ctrl-C while building or compiling (long calls
    # into XLA, during which Python's KeyboardInterrupt can even be swallowed by a garbage
    # collection callback) stops the run before its first step.
    with workdir_lib.claim(workdir) if primary else contextlib.nullcontext(), _Signals() as sig:
        return _train_and_evaluate(config, workdir, primary, sig)


def _train_and_evaluate(config, workdir: Path, primary: bool, signals: _Signals) -> dict:
    start_time = time.perf_counter()
    run = build(config)  # reads (and verifies) the data before the workdir says "started"
    if primary:
        kept = workdir_lib.keep_config(workdir, config_json(config))
        if kept is not None:
            log.warning("the config differs from the workdir's; the old one is kept as %s", kept)
        (workdir / "run_info.json").write_text(json.dumps(run.info(), indent=2))
    task, model = run.task, run.model
    choices = EVAL_METRICS[task.name]
    if run.eval_source is not None and config.checkpoint.best_metric not in choices:
        raise config_lib.ConfigError(
            f"`checkpoint.best_metric` must be one of {choices} for task {task.name!r}; "
            f"got {config.checkpoint.best_metric!r}."
        )
    total_steps = _total_steps(config, run.train_source)
    par = Parallel(config.parallel, task)
    par.check_batch(config.batch_size, "batch_size")
    if run.eval_source is not None:
        par.check_batch(config.eval_batch_size or config.batch_size, "eval_batch_size")

    rng = jax.random.key(config.seed)
    example = jnp.zeros(run.example_shape, jnp.float32)
    abstract = jax.eval_shape(model.init, rng, example)["params"]
    tx = optim.make_optimizer(config.optimizer.to_dict(), abstract, total_steps)
    create = functools.partial(create_train_state, model, tx, example)
    state = jax.jit(create, out_shardings=par.replicated)(rng)
    if config.init.backbone_weights or config.init.from_workdir:
        params = _initial_params(config, state.params)
        state = jax.jit(lambda r, p: create(r, params=p), out_shardings=par.replicated)(rng, params)

    loader = data_lib.train_loader(
        run.train_source, config.batch_size, run.train_transform, seed=config.seed,
        workers=config.input.workers, threads=config.input.threads, prefetch=config.input.prefetch,
    )  # fmt: skip
    iterator = iter(loader)
    checkpointer = ckpt.Checkpointer(
        workdir, keep=config.checkpoint.keep, asynchronous=config.checkpoint.asynchronous,
        best_mode=config.checkpoint.best_mode,
    )  # fmt: skip
    best = None
    start = checkpointer.latest_step()
    if start is not None:
        state, meta = checkpointer.restore(start, _state_target(state), iterator)
        best = meta.get("best")
        log.info("resumed from %s at step %d", checkpointer.dir / str(start), start)
    start = int(jax.device_get(state.step.addressable_data(0)))
    state = par.place(state)

    writer = summary.MetricWriter(workdir, enabled=primary)
    eval_every = config.eval_every_steps or config.checkpoint.every_steps
    best_sign = 1.0 if config.checkpoint.best_mode == "max" else -1.0
    pending: list[tuple[int, jax.Array]] = []
    last_saved = start if start else None
    last_loss = float("nan")
    eval_results: dict[str, Any] = {}
    eval_step = None
    schedule = optim.step_schedule(config.optimizer.to_dict(), total_steps)  # what it applies

    def check_losses() -> float:
        nonlocal pending
        values = par.fetch([loss for _, loss in pending])
        for (s, _), v in zip(pending, values):
            if not np.isfinite(v):
                checkpointer.wait()
                kept = f"step {last_saved} in {checkpointer.dir}" if last_saved else "none yet"
                raise NonFiniteLossError(
                    f"the training loss became {float(v)} at step {s} (of {total_steps}); "
                    f"stopped. Last good checkpoint: {kept}. Lower `optimizer.learning_rate`, "
                    f"set `optimizer.grad_clip_norm`, or check the data."
                )
        mean = float(np.mean(values)) if values else float("nan")
        pending = []
        return mean

    def save(step: int) -> None:
        nonlocal last_saved
        if last_saved == step:
            return
        checkpointer.save(step, par.unplace(state), iterator, {"step": step, "best": best})
        last_saved = step

    def run_eval(step: int) -> None:
        nonlocal best, eval_results, eval_step
        if run.eval_source is None:
            return
        eval_results, eval_step = evaluate(run, par, state), step
        writer.write(step, eval_results, "eval")
        progress.write(_eval_line(step, eval_results))
        value = eval_results[config.checkpoint.best_metric]
        if np.isfinite(value) and (best is None or best_sign * (value - best["value"]) > 0):
            best = {"step": step, "value": float(value), "metric": config.checkpoint.best_metric}
            checkpointer.save_best(step, par.unplace(state), {"step": step, "best": best})

    interrupted = None
    # Steps are dispatched asynchronously and the host waits at log steps: the rate's
    # window spans two of them.
    progress = summary.Progress(
        total_steps, start_step=start, window=max(20, 2 * config.log_every_steps),
        stream=sys.stderr if primary else open(os.devnull, "w"),
    )  # fmt: skip
    step = start
    if _stop_requested(signals, 0, 1):  # during start-up: nothing trained, nothing to save
        interrupted = signal.Signals(signals.received or signal.SIGTERM).name
    with progress:
        while step < total_steps and interrupted is None:
            batch = next(iterator)
            state, out = par.train(state, par.shard(batch))
            step += 1
            pending.append((step, out["loss"]))
            if step % config.log_every_steps == 0 or step == total_steps:
                last_loss = check_losses()
                lr = float(schedule(step - 1))  # what step `step` (1-based) applied
                writer.write(step, {"loss": last_loss, "learning_rate": lr})
            progress.update(
                step, config.batch_size, **({} if np.isnan(last_loss) else {"loss": last_loss})
            )
            if step % eval_every == 0 and step < total_steps:
                check_losses()
                run_eval(step)
            if step % config.checkpoint.every_steps == 0 or step == total_steps:
                check_losses()
                save(step)
            if _stop_requested(signals, step, config.log_every_steps):
                check_losses()
                save(step)
                interrupted = signal.Signals(signals.received or signal.SIGTERM).name
                break
    if interrupted is None:
        run_eval(step)
    checkpointer.wait()
    checkpointer.close()
    result = {
        "step": step,
        "train_loss": last_loss,
        "eval": eval_results,
        "eval_step": eval_step,
        "best": best,
        "interrupted": interrupted,
        "seconds": time.perf_counter() - start_time,
        "workdir": str(workdir),
    }
    if primary:
        if interrupted is None:
            _write_outputs(run, par, state, workdir)
            writer.close()
        (workdir / "final_metrics.json").write_text(json.dumps(_jsonable(result), indent=2))
    if interrupted and last_saved == step:
        log.warning("stopped by %s at step %d; checkpoint saved in %s; run again to resume",
                    interrupted, step, checkpointer.dir)  # fmt: skip
    elif interrupted:
        log.warning("stopped by %s before training began; nothing was saved", interrupted)
    return result


def _stop_requested(signals: _Signals, step: int, every: int) -> bool:
    """A signal arrived (on any host: hosts agree at log steps, so they save together)."""
    if jax.process_count() == 1:
        return signals.received is not None
    if step % every:
        return False
    from jax.experimental import multihost_utils

    flags = multihost_utils.process_allgather(np.int32(signals.received is not None))
    return bool(np.any(flags))


def _eval_line(step: int, results: Mapping[str, Any]) -> str:
    keys = ("mean_iou", "pixel_accuracy", "mean_accuracy", "frequency_weighted_iou", "loss")
    parts = [f"{k} {results[k]:.4f}" for k in keys if k in results]
    return f"eval @ step {step}: " + ", ".join(parts)


def _write_outputs(run: Run, par: Parallel, state: TrainState, workdir: Path) -> None:
    """Pictures of the trained model on the first validation examples."""
    source = run.eval_source if run.eval_source is not None else run.train_source
    n = min(run.config.outputs.num_examples, len(source))
    variables = par.fetch(state.variables())
    raws = [source[i] for i in range(n)]
    examples = [run.eval_transform(raw, source.describe(i)) for i, raw in enumerate(raws)]
    images = np.stack([e["image"] for e in examples])
    apply = jax.jit(functools.partial(run.model.apply, train=False))
    outputs = np.asarray(apply(variables, images))
    if run.task.name == "segmentation":
        preds = []
        for raw, out in zip(raws, outputs):
            h, w = raw["image"].shape[:2]
            if run.eval_transform.mode == "resize":
                out = ops.resize_logits(out, (h, w))
            preds.append(out.argmax(-1)[:h, :w])
        truths = [raw["mask"] for raw in raws] if all("mask" in r for r in raws) else None
        small = max(r["image"].shape[0] for r in raws) <= 128
        figure = viz.segmentation_figure(
            [raw["image"] for raw in raws], preds, truths,
            class_names=source.class_names, scale=2 if small else 1,
        )  # fmt: skip
        viz.save_png(workdir / "predictions.png", figure)
        return
    rows = [[viz.to_uint8(ex["image"]), viz.to_uint8(out)] for ex, out in zip(examples, outputs)]
    viz.save_png(workdir / "reconstructions.png", viz.grid(rows))
    m = min(run.config.outputs.latent_points, len(source))
    latent, labels = [], []
    encode = jax.jit(functools.partial(run.model.apply, method="encode"))
    for i in range(0, m, 256):
        idx = range(i, min(m, i + 256))
        exs = [run.eval_transform(source[j], source.describe(j)) for j in idx]
        latent.append(np.asarray(encode(variables, np.stack([e["image"] for e in exs]))))
        labels += [int(e.get("label", 0)) for e in exs]
    latent = np.concatenate(latent).reshape(m, -1)
    point = tuple(run.config.outputs.decode_point)
    np.savez(workdir / "latent.npz", latent=latent, label=np.asarray(labels), decode_point=point)
    if latent.shape[1] == 2:
        viz.save_png(
            workdir / "latent.png", viz.scatter(latent, np.asarray(labels), highlight=point)
        )
    decode = jax.jit(functools.partial(run.model.apply, method="decode"))
    if len(point) == latent.shape[1]:
        decoded = np.asarray(decode(variables, np.asarray([point], np.float32)))[0]
        big = np.kron(viz.to_uint8(decoded), np.ones((8, 8, 1), np.uint8))
        viz.save_png(workdir / "decoded.png", big)
    if latent.shape[1] == 2:  # the decoder's view of the plane the scatter shows
        lo, hi = latent.min(0), latent.max(0)
        tiles = viz.latent_grid(lambda z: np.asarray(decode(variables, z)), lo, hi, n=12)
        viz.save_png(workdir / "latent_grid.png", tiles)
