"""The training loop: an :class:`~fcnjax.training.experiment.Experiment` trained in a
workdir, on one CPU, a TPU chip or a pod.

:func:`train` places the run on the devices (:mod:`fcnjax.training.parallel`: ``jit`` over
a Mesh of every device, or ``pmap``), runs the jitted, donated steps of
:mod:`fcnjax.training.steps`, evaluates (:mod:`fcnjax.training.evaluate`), and keeps orbax
checkpoints (latest K, asynchronous, and the best by a validation metric) that resume
exactly, data order included. The loop itself is :class:`_Loop`: a step, then what is due
at that step (log, evaluate, save, stop), in that order. :func:`fcnjax.train.train_and_evaluate`
is the face: a config in, this loop run.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import os
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from fcnjax import data as data_lib
from fcnjax import models
from fcnjax.training import checkpoints as ckpt
from fcnjax.training import optim, parallel, progress, summary
from fcnjax.training import workdir as workdir_lib
from fcnjax.training.evaluate import Evaluator
from fcnjax.training.experiment import Experiment, initial_params
from fcnjax.training.runtime import Signals, signal_name, stop_requested
from fcnjax.training.settings import ConfigError
from fcnjax.training.steps import TrainState, create_train_state, train_step

__all__ = ["NonFiniteLossError", "train"]

log = logging.getLogger("fcnjax.train")  # (the name users filter by)


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or infinite; the message names the step."""


def train(
    experiment: Experiment,
    workdir: Path,
    signals: Signals,
    *,
    overwrite: bool = False,
    start_time: float | None = None,
) -> dict[str, Any]:
    """Trains ``experiment`` in ``workdir`` (claimed by the caller), resuming from its
    checkpoint; see :func:`fcnjax.train.train_and_evaluate` for what it writes, returns
    and raises."""
    start_time = time.perf_counter() if start_time is None else start_time
    run, schedule = experiment.run, experiment.schedule
    primary = jax.process_index() == 0
    if primary:
        workdir_lib.check_no_foreign_files(workdir, overwrite)
    task, best_metric = run.task, schedule.checkpoint.best_metric
    if run.eval_source is not None and best_metric not in task.metric_names:
        raise ConfigError(
            f"`checkpoint.best_metric` must be one of {task.metric_names} for task "
            f"{task.name!r}; got {best_metric!r}."
        )
    placement = parallel.get(schedule.parallel)
    placement.check_batch(schedule.batch_size, "batch_size")
    evaluator = None
    if run.eval_source is not None:
        evaluator = Evaluator(
            run.model,
            run.eval_source,
            run.eval_transform,
            task,
            schedule.eval_batch_size,
            placement,
            schedule.loader.kwargs(),
            experiment.inference,
        )
    state = _initial_state(experiment, placement)
    _check_resumable(experiment, workdir, state)
    loop = _Loop(experiment, placement, evaluator, workdir, primary)
    try:
        loop.start(state)
        if primary:  # the run is accepted: the restore worked, or it starts afresh
            _record(experiment, workdir)
        loop.train_until_done(signals)
        result = loop.finish(start_time)
    finally:
        loop.writer.close()  # also on an error: the events so far are kept
    if primary:
        if result["interrupted"] is None:
            variables = placement.fetch(loop.state.variables())
            source = run.eval_source if run.eval_source is not None else run.train_source
            written = task.write_pictures(
                run.model, variables, source, run.eval_transform, workdir, experiment.outputs
            )
            workdir_lib.record(workdir, written)
        workdir_lib.write_text(workdir, "final_metrics.json", json.dumps(result, indent=2))
    return result


def _record(experiment: Experiment, workdir: Path) -> None:
    """``config.json`` (an older, different one kept aside), ``run_info.json``, and the
    logs and checkpoint directories as fcnjax's (:func:`fcnjax.training.workdir.record`)."""
    kept = workdir_lib.keep_config(workdir, experiment.config_json)
    if kept is not None:
        log.warning("the config differs from the workdir's; the old one is kept as %s", kept)
    info = json.dumps(experiment.run.info(), indent=2)
    workdir_lib.write_text(workdir, "run_info.json", info)
    workdir_lib.record(workdir, ["checkpoints", "best", "metrics.jsonl", "tensorboard"])


def _check_resumable(experiment: Experiment, workdir: Path, state: TrainState) -> None:
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
    note = models.renamed(experiment.model_name)  # a name that changed meaning
    raise ckpt.CheckpointMismatchError(
        f"cannot resume from {directory / str(step)}: it holds another network or optimizer "
        f"than this config builds ({'; '.join(_changes(experiment, workdir) + problems)}). "
        f"The checkpoint is intact and nothing in {workdir} was changed: train this config in "
        f"another --workdir, or resume with the workdir's own config ({workdir / 'config.json'})."
        + (f" {note}" if note else "")
    )


def _changes(experiment: Experiment, workdir: Path) -> list[str]:
    """``key: old -> new`` for the model's and optimizer's settings and the classes that
    differ from the workdir's ``config.json`` and ``run_info.json``."""
    try:
        old = json.loads((workdir / "config.json").read_text())
        old_info = json.loads((workdir / "run_info.json").read_text())
    except (OSError, ValueError):
        return []
    new = json.loads(experiment.config_json)
    out = []
    for section in ("model", "optimizer"):
        before, after = old.get(section) or {}, new.get(section) or {}
        for key in sorted(set(before) | set(after)):
            if before.get(key) != after.get(key):
                out.append(f"{section}.{key}: {before.get(key)!r} -> {after.get(key)!r}")
    was, now = old_info.get("num_classes"), experiment.run.info().get("num_classes")
    if was != now:
        out.append(f"classes: {was} -> {now}")
    return out


def _initial_state(experiment: Experiment, placement) -> TrainState:
    """A fresh state, replicated, with the backbone's / a previous run's weights put in."""
    run, init = experiment.run, experiment.init
    rng = jax.random.key(experiment.schedule.seed)
    example = jnp.zeros(run.example_shape, jnp.float32)
    abstract = jax.eval_shape(run.model.init, rng, example)["params"]
    total = experiment.schedule.total_steps
    tx = optim.make_optimizer(experiment.optimizer, abstract, total)

    def create(rng, params=None, batch_stats=None):
        return create_train_state(run.model, tx, example, rng, params, batch_stats)

    state = jax.jit(create, out_shardings=placement.replicated)(rng)
    if init.backbone_weights or init.from_workdir:
        params, batch_stats = initial_params(init, state.params, state.batch_stats)
        state = jax.jit(create, out_shardings=placement.replicated)(rng, params, batch_stats)
    return state


def _state_target(state: TrainState) -> Any:
    return jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), state
    )


@dataclasses.dataclass
class _Loop:
    """The training loop's state between steps: what is trained, saved, logged and best."""

    experiment: Experiment
    placement: Any
    evaluator: Evaluator | None
    workdir: Path
    primary: bool

    def __post_init__(self):
        run, schedule = self.experiment.run, self.experiment.schedule
        self.plan, self.total = schedule, schedule.total_steps
        self.train = self.placement.compile(
            functools.partial(train_step, task=run.task), donate=True
        )
        loader = data_lib.train_loader(
            run.train_source,
            schedule.batch_size,
            run.train_transform,
            seed=schedule.seed,
            **schedule.loader.kwargs(),
        )
        self.iterator = iter(loader)
        policy = schedule.checkpoint
        self.checkpointer = ckpt.Checkpointer(
            self.workdir,
            keep=policy.keep,
            asynchronous=policy.asynchronous,
            best_mode=policy.best_mode,
        )
        # Opened by start(), once the step the run continues from is known.
        self.writer = summary.MetricWriter(self.workdir, enabled=False)
        self.learning_rate = optim.step_schedule(self.experiment.optimizer, self.total)
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

    def train_until_done(self, signals: Signals) -> None:
        """Steps until ``total`` or a signal; the step is dispatched, the host waits only
        where something is due (log, evaluate, save, stop)."""
        plan = self.plan
        if stop_requested(signals, 0, 1):  # during start-up: nothing trained, nothing to save
            self.interrupted = signal_name(signals)
            return
        # The rate's window spans two log steps: the host waits only there.
        window = max(20, 2 * plan.log_every_steps)
        stream = sys.stderr if self.primary else open(os.devnull, "w")
        bar = progress.Progress(self.total, start_step=self.step, window=window, stream=stream)
        with bar as self.progress:
            while self.step < self.total:
                self.state, out = self.train(self.state, self.placement.shard(next(self.iterator)))
                self.step += 1
                self.pending.append((self.step, out["loss"]))
                if self._due(plan.log_every_steps):
                    self._log()
                loss = {} if np.isnan(self.last_loss) else {"loss": self.last_loss}
                self.progress.update(self.step, plan.batch_size, **loss)
                if self.step % plan.eval_every_steps == 0:
                    if self.step < self.total:
                        self._evaluate()
                if self._due(plan.checkpoint.every_steps):
                    self._save()
                if stop_requested(signals, self.step, plan.log_every_steps):
                    self._save()
                    self.interrupted = signal_name(signals)
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
        lr = float(self.learning_rate(self.step - 1))  # what step `step` (1-based) applied
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
        metric = self.plan.checkpoint.best_metric
        value, best = results[metric], self.best
        sign = 1.0 if self.plan.checkpoint.best_mode == "max" else -1.0
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


def _eval_line(step: int, results: Mapping[str, Any]) -> str:
    keys = ("mean_iou", "pixel_accuracy", "mean_accuracy", "frequency_weighted_iou", "loss")
    parts = [f"{k} {results[k]:.4f}" for k in keys if k in results]
    return f"eval @ step {step}: " + ", ".join(parts)
