"""The one trainer: every model on every source, on one CPU, a TPU v2-8 or a pod.

``train_and_evaluate(config, workdir)`` builds the run from a config
(:func:`fcnjax.experiment.build`), places it on the devices (:mod:`fcnjax.parallel`: ``jit``
over a Mesh of every device, or ``pmap``), runs the jitted, donated steps of
:mod:`fcnjax.steps`, evaluates (:mod:`fcnjax.evaluate`), and keeps orbax checkpoints
(latest K, asynchronous, and the best by a validation metric) that resume exactly, data
order included. The loop itself is :class:`_Loop`: a step, then what is due at that step
(log, evaluate, save, stop), in that order.

The pure pieces are re-exported here: :class:`~fcnjax.steps.TrainState`,
:func:`~fcnjax.steps.create_train_state`, :func:`~fcnjax.steps.train_step` and
:func:`~fcnjax.steps.eval_step`.
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
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from fcnjax import checkpoints as ckpt
from fcnjax import config as config_lib
from fcnjax import data as data_lib
from fcnjax import experiment, optim, parallel, runtime, summary
from fcnjax import workdir as workdir_lib
from fcnjax.evaluate import Evaluator
from fcnjax.steps import TrainState, create_train_state, eval_step, train_step

__all__ = [
    "NonFiniteLossError",
    "TrainState",
    "create_train_state",
    "eval_step",
    "initialize_distributed",
    "train_and_evaluate",
    "train_step",
]

log = logging.getLogger("fcnjax.train")


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or infinite; the message names the step."""


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


def train_and_evaluate(
    config: Any, workdir: str | os.PathLike[str], *, overwrite: bool = False
) -> dict[str, Any]:
    """Trains (resuming from ``workdir`` when it holds a checkpoint) and evaluates.

    Writes to ``workdir``: ``config.json``, ``run_info.json`` (the task, classes, class
    weights, input shape and normalisation, so that evaluation and prediction need neither
    the training data nor the backbone's weights), ``checkpoints/`` (latest K) and
    ``best/``, ``metrics.jsonl`` and TensorBoard events in ``tensorboard/``,
    ``final_metrics.json``, and the task's pictures (:mod:`fcnjax.pictures`); it records
    them in ``.fcnjax_written.json`` (:mod:`fcnjax.workdir`). Files of those names that
    fcnjax did not write there are replaced only with ``overwrite``. Nothing is written
    before the run is accepted: the data read, the config valid, and the checkpoint it
    resumes from (if any) of the same network and optimizer.

    Returns a dict with ``step``, ``train_loss``, ``eval`` (the last validation metrics:
    ``pixel_accuracy``, ``mean_accuracy``, ``mean_iou``, ``frequency_weighted_iou``,
    ``per_class_iou``, ``loss``, ...), ``eval_step`` (the step they are of; a stopped run's
    may be older than ``step``), ``best``, ``interrupted`` (a signal name or None),
    ``seconds`` and ``workdir``.

    Raises:
      NonFiniteLossError: the loss became NaN/inf (the step is in the message); the last
        checkpoint before it is kept.
      CheckpointError: a checkpoint in ``workdir`` (or ``init.from_workdir``) is unreadable.
      CheckpointMismatchError: ``workdir``'s checkpoint holds another network or optimizer
        than ``config`` builds (the message names the config's changes and the arrays).
      ForeignFilesError: ``workdir`` holds outputs' names fcnjax did not write there.
      ConfigError: an invalid config, or a model whose classes are not the data's.
      WorkdirBusyError: another run holds ``workdir`` (:func:`fcnjax.workdir.claim`).
      WorkdirError: ``workdir`` is a file or not writable.
    """
    config = config_lib.as_config(config)
    runtime.keep_freed_memory()  # no fresh pages for every step's buffers (fcnjax.runtime)
    initialize_distributed(config.distributed)
    workdir = Path(workdir)
    primary = jax.process_index() == 0
    # Signals are caught from here on: a Ctrl-C while building or compiling (long calls
    # into XLA, during which Python's KeyboardInterrupt can even be swallowed by a garbage
    # collection callback) stops the run before its first step.
    with workdir_lib.claim(workdir) if primary else contextlib.nullcontext(), _Signals() as sig:
        return _train_and_evaluate(config, workdir, primary, sig, overwrite)


def _train_and_evaluate(
    config, workdir: Path, primary: bool, signals: _Signals, overwrite: bool
) -> dict:
    start_time = time.perf_counter()
    run = experiment.build(config)  # reads (and verifies) the data before the workdir changes
    if primary:
        workdir_lib.check_no_foreign_files(workdir, overwrite)
    task = run.task
    if run.eval_source is not None and config.checkpoint.best_metric not in task.metric_names:
        raise config_lib.ConfigError(
            f"`checkpoint.best_metric` must be one of {task.metric_names} for task "
            f"{task.name!r}; got {config.checkpoint.best_metric!r}."
        )
    placement = parallel.get(config.parallel)
    placement.check_batch(config.batch_size, "batch_size")
    evaluator = None
    if run.eval_source is not None:
        batch_size = config.eval_batch_size or config.batch_size
        evaluator = Evaluator(
            run.model,
            run.eval_source,
            run.eval_transform,
            task,
            batch_size,
            placement,
            experiment.loader_options(config),
            config.inference.to_dict(),
        )
    total = experiment.total_steps(config, run.train_source)
    state = _initial_state(config, run, placement, total)
    _check_resumable(config, run, workdir, state)
    loop = _Loop(config, run, placement, evaluator, total, workdir, primary)
    try:
        loop.start(state)
        if primary:  # the run is accepted: the restore worked, or it starts afresh
            _record(config, run, workdir)
        loop.train_until_done(signals)
        result = loop.finish(start_time)
    finally:
        loop.writer.close()  # also on an error: the events so far are kept
    if primary:
        if result["interrupted"] is None:
            variables = placement.fetch(loop.state.variables())
            source = run.eval_source if run.eval_source is not None else run.train_source
            outputs = config.outputs.to_dict()
            written = task.write_pictures(
                run.model, variables, source, run.eval_transform, workdir, outputs
            )
            workdir_lib.record(workdir, written)
        text = json.dumps(experiment.jsonable(result), indent=2)
        workdir_lib.write_text(workdir, "final_metrics.json", text)
    return result


def _record(config: ml_collections.ConfigDict, run: experiment.Run, workdir: Path) -> None:
    """``config.json`` (an older, different one kept aside), ``run_info.json``, and the
    logs and checkpoint directories as fcnjax's (:func:`fcnjax.workdir.record`)."""
    kept = workdir_lib.keep_config(workdir, experiment.config_json(config))
    if kept is not None:
        log.warning("the config differs from the workdir's; the old one is kept as %s", kept)
    workdir_lib.write_text(workdir, "run_info.json", json.dumps(run.info(), indent=2))
    workdir_lib.record(workdir, ["checkpoints", "best", "metrics.jsonl", "tensorboard"])


def _check_resumable(config, run: experiment.Run, workdir: Path, state: TrainState) -> None:
    """Raises CheckpointMismatchError, before anything is written, when the checkpoint the
    run would resume from holds another network or optimizer than ``config`` builds: its
    metadata against the fresh state, array by array, plus what changed in the config."""
    directory = workdir / "checkpoints"
    step = ckpt.latest_step(directory)
    if step is None:
        return
    saved = ckpt.saved_shapes(directory, step)
    network = ("params", "batch_stats")  # named first: the optimizer's moments mirror them
    problems = ckpt.mismatches(
        {k: getattr(state, k) for k in network}, {k: saved.get(k) for k in network}
    ) or ckpt.mismatches(state, saved)
    if not problems:
        return
    raise ckpt.CheckpointMismatchError(
        f"cannot resume from {directory / str(step)}: it holds another network or optimizer "
        f"than this config builds ({'; '.join(_changes(config, run, workdir) + problems)}). "
        f"The checkpoint is intact and nothing in {workdir} was changed: train this config in "
        f"another --workdir, or resume with the workdir's own config ({workdir / 'config.json'})."
    )


def _changes(config, run: experiment.Run, workdir: Path) -> list[str]:
    """``key: old -> new`` for the model's and optimizer's settings and the classes that
    differ from the workdir's ``config.json`` and ``run_info.json``."""
    try:
        old = json.loads((workdir / "config.json").read_text())
        old_info = json.loads((workdir / "run_info.json").read_text())
    except (OSError, ValueError):
        return []
    new = json.loads(experiment.config_json(config))
    out = []
    for section in ("model", "optimizer"):
        before, after = old.get(section) or {}, new.get(section) or {}
        for key in sorted(set(before) | set(after)):
            if before.get(key) != after.get(key):
                out.append(f"{section}.{key}: {before.get(key)!r} -> {after.get(key)!r}")
    was, now = old_info.get("num_classes"), run.info().get("num_classes")
    if was != now:
        out.append(f"classes: {was} -> {now}")
    return out


def _initial_state(config, run: experiment.Run, placement, total: int) -> TrainState:
    """A fresh state, replicated, with the backbone's / a previous run's weights put in."""
    rng = jax.random.key(config.seed)
    example = jnp.zeros(run.example_shape, jnp.float32)
    abstract = jax.eval_shape(run.model.init, rng, example)["params"]
    tx = optim.make_optimizer(config.optimizer.to_dict(), abstract, total)

    def create(rng, params=None, batch_stats=None):
        return create_train_state(run.model, tx, example, rng, params, batch_stats)

    state = jax.jit(create, out_shardings=placement.replicated)(rng)
    if config.init.backbone_weights or config.init.from_workdir:
        params, batch_stats = experiment.initial_params(config, state.params, state.batch_stats)
        state = jax.jit(create, out_shardings=placement.replicated)(rng, params, batch_stats)
    return state


def _state_target(state: TrainState) -> Any:
    return jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), state
    )


@dataclasses.dataclass
class _Loop:
    """The training loop's state between steps: what is trained, saved, logged and best."""

    config: ml_collections.ConfigDict
    run: experiment.Run
    placement: Any
    evaluator: Evaluator | None
    total: int
    workdir: Path
    primary: bool

    def __post_init__(self):
        config = self.config
        self.train = self.placement.compile(
            functools.partial(train_step, task=self.run.task), donate=True
        )
        loader = data_lib.train_loader(
            self.run.train_source,
            config.batch_size,
            self.run.train_transform,
            seed=config.seed,
            **experiment.loader_options(config),
        )
        self.iterator = iter(loader)
        self.checkpointer = ckpt.Checkpointer(
            self.workdir,
            keep=config.checkpoint.keep,
            asynchronous=config.checkpoint.asynchronous,
            best_mode=config.checkpoint.best_mode,
        )
        # Opened by start(), once the step the run continues from is known.
        self.writer = summary.MetricWriter(self.workdir, enabled=False)
        self.schedule = optim.step_schedule(config.optimizer.to_dict(), self.total)
        self.state: Any = None
        self.step = 0
        self.best: dict[str, Any] | None = None
        self.last_saved: int | None = None
        self.pending: list[tuple[int, jax.Array]] = []  # (step, loss) not yet fetched
        self.last_loss = float("nan")
        self.eval_results: dict[str, Any] = {}
        self.eval_step: int | None = None
        self.interrupted: str | None = None

    def start(self, state: TrainState) -> None:
        """Resumes from the newest checkpoint (state, data position, best) if there is one."""
        latest = self.checkpointer.latest_step()
        if latest is not None:
            target = _state_target(state)
            state, meta = self.checkpointer.restore(latest, target, self.iterator)
            self.best = meta.get("best")
            log.info("resumed from %s at step %d", self.checkpointer.dir / str(latest), latest)
        self.step = int(jax.device_get(state.step.addressable_data(0)))
        self.last_saved = self.step or None
        self.state = self.placement.place(state)
        # What a killed run logged after its last checkpoint is logged again from here.
        self.writer = summary.MetricWriter(
            self.workdir, enabled=self.primary, resume_step=self.step
        )

    def train_until_done(self, signals: _Signals) -> None:
        """Steps until ``total`` or a signal; the step is dispatched, the host waits only
        where something is due (log, evaluate, save, stop)."""
        config = self.config
        if _stop_requested(signals, 0, 1):  # during start-up: nothing trained, nothing to save
            self.interrupted = _signal_name(signals)
            return
        # The rate's window spans two log steps: the host waits only there.
        window = max(20, 2 * config.log_every_steps)
        stream = sys.stderr if self.primary else open(os.devnull, "w")
        progress = summary.Progress(self.total, start_step=self.step, window=window, stream=stream)
        with progress as self.progress:
            while self.step < self.total:
                self.state, out = self.train(self.state, self.placement.shard(next(self.iterator)))
                self.step += 1
                self.pending.append((self.step, out["loss"]))
                if self._due(config.log_every_steps):
                    self._log()
                loss = {} if np.isnan(self.last_loss) else {"loss": self.last_loss}
                self.progress.update(self.step, config.batch_size, **loss)
                if self.step % (config.eval_every_steps or config.checkpoint.every_steps) == 0:
                    if self.step < self.total:
                        self._evaluate()
                if self._due(config.checkpoint.every_steps):
                    self._save()
                if _stop_requested(signals, self.step, config.log_every_steps):
                    self._save()
                    self.interrupted = _signal_name(signals)
                    return
            self._evaluate()

    def _due(self, every: int) -> bool:
        return self.step % every == 0 or self.step == self.total

    def _check_losses(self) -> float:
        """Fetches the pending losses; raises NonFiniteLossError at the first bad one."""
        values = self.placement.fetch([loss for _, loss in self.pending])
        for (s, _), v in zip(self.pending, values):
            if not np.isfinite(v):
                self.checkpointer.wait()
                saved = self.last_saved
                kept = f"step {saved} in {self.checkpointer.dir}" if saved else "none yet"
                raise NonFiniteLossError(
                    f"the training loss became {float(v)} at step {s} (of {self.total}); "
                    f"stopped. Last good checkpoint: {kept}. Lower `optimizer.learning_rate`, "
                    f"set `optimizer.grad_clip_norm`, or check the data."
                )
        self.pending = []
        return float(np.mean(values)) if values else float("nan")

    def _log(self) -> None:
        self.last_loss = self._check_losses()
        lr = float(self.schedule(self.step - 1))  # what step `step` (1-based) applied
        self.writer.write(self.step, {"loss": self.last_loss, "learning_rate": lr})

    def _save(self) -> None:
        self._check_losses()
        if self.last_saved == self.step:
            return
        meta = {"step": self.step, "best": self.best}
        self.checkpointer.save(self.step, self.placement.unplace(self.state), self.iterator, meta)
        self.last_saved = self.step

    def _evaluate(self) -> None:
        """Validation metrics (logged and shown), and the best checkpoint if they improved."""
        if self.evaluator is None:
            return
        self._check_losses()
        results = self.evaluator(self.state.variables())
        self.eval_results, self.eval_step = results, self.step
        if self.step != self.last_saved or not self._eval_logged():
            self.writer.write(self.step, results, "eval")
        self.progress.write(_eval_line(self.step, results))
        metric = self.config.checkpoint.best_metric
        value, best = results[metric], self.best
        sign = 1.0 if self.config.checkpoint.best_mode == "max" else -1.0
        if np.isfinite(value) and (best is None or sign * (value - best["value"]) > 0):
            self.best = {"step": self.step, "value": float(value), "metric": metric}
            meta = {"step": self.step, "best": self.best}
            self.checkpointer.save_best(self.step, self.placement.unplace(self.state), meta)

    def _eval_logged(self) -> bool:
        """Whether ``metrics.jsonl`` holds an evaluation of this step already: a finished
        run, run again, evaluates its last step again (logged once, unless the run that
        saved it was killed before evaluating it)."""
        path = self.workdir / "metrics.jsonl"
        records = summary.read_jsonl(path) if path.is_file() else []
        return any(
            r["step"] == self.step and any(k.startswith("eval/") for k in r) for r in records
        )

    def finish(self, start_time: float) -> dict[str, Any]:
        """Waits for the checkpoints; the run's result (see :func:`train_and_evaluate`)."""
        self.checkpointer.wait()
        self.checkpointer.close()
        if self.interrupted and self.last_saved == self.step:
            log.warning(
                "stopped by %s at step %d; checkpoint saved in %s; run again to resume",
                self.interrupted,
                self.step,
                self.checkpointer.dir,
            )
        elif self.interrupted:
            log.warning("stopped by %s before training began; nothing was saved", self.interrupted)
        return {
            "step": self.step,
            "train_loss": self.last_loss,
            "eval": self.eval_results,
            "eval_step": self.eval_step,
            "best": self.best,
            "interrupted": self.interrupted,
            "seconds": time.perf_counter() - start_time,
            "workdir": str(self.workdir),
        }


def _signal_name(signals: _Signals) -> str:
    return signal.Signals(signals.received or signal.SIGTERM).name


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
