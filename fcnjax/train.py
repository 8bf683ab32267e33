"""Training, the face: ``train_and_evaluate(config, workdir)`` trains every model on every
source, on one CPU, a TPU chip or a pod, and evaluates.

The config is read once, into the typed parts of an
:class:`~fcnjax.training.experiment.Experiment`; the loop, steps, placement, evaluation,
checkpoints and logs that run it are :mod:`fcnjax.training`. The pure pieces are
re-exported here: :class:`~fcnjax.training.steps.TrainState`,
:func:`~fcnjax.training.steps.create_train_state`, :func:`~fcnjax.training.steps.train_step`
and :func:`~fcnjax.training.steps.eval_step`.
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path
from typing import Any

import jax

from fcnjax import config as config_lib
from fcnjax.training import experiment, loop, runtime
from fcnjax.training import workdir as workdir_lib
from fcnjax.training.loop import NonFiniteLossError
from fcnjax.training.runtime import initialize_distributed
from fcnjax.training.steps import TrainState, create_train_state, eval_step, train_step

__all__ = [
    "NonFiniteLossError",
    "TrainState",
    "create_train_state",
    "eval_step",
    "initialize_distributed",
    "train_and_evaluate",
    "train_step",
]


def train_and_evaluate(
    config: Any, workdir: str | os.PathLike[str], *, overwrite: bool = False
) -> dict[str, Any]:
    """Trains (resuming from ``workdir`` when it holds a checkpoint) and evaluates.

    Writes to ``workdir``: ``config.json``, ``run_info.json`` (the task, classes, class
    weights, input shape and normalisation, so that evaluation and prediction need neither
    the training data nor the backbone's weights), ``checkpoints/`` (latest K) and
    ``best/``, ``metrics.jsonl`` and TensorBoard events in ``tensorboard/``,
    ``final_metrics.json``, and the task's pictures (:mod:`fcnjax.training.tasks`); it
    records them in ``.fcnjax_written.json`` (:mod:`fcnjax.training.workdir`). Files of those
    names that fcnjax did not write there are replaced only with ``overwrite``. Nothing is
    written before the run is accepted: the data read, the config valid, and the checkpoint
    it resumes from (if any) of the same network and optimizer.

    Args:
      config: an ``ml_collections.ConfigDict`` or a mapping over the defaults
        (:func:`fcnjax.config.as_config`; the caller's is never changed).
      workdir: the run's folder (created; a run there before is resumed).
      overwrite: replace files of the run's output names that fcnjax did not write.

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
      WorkdirBusyError: another run holds ``workdir`` (:func:`fcnjax.training.workdir.claim`).
      WorkdirError: ``workdir`` is a file or not writable.
    """
    config = config_lib.as_config(config)
    runtime.keep_freed_memory()  # no fresh pages for every step's buffers
    initialize_distributed(config.distributed)
    workdir = Path(workdir)
    primary = jax.process_index() == 0
    # Signals are caught from here on: a Ctrl-C while building or compiling (long calls
    # into XLA, during which Python's KeyboardInterrupt can even be swallowed by a garbage
    # collection callback) stops the run before its first step.
    claim = workdir_lib.claim(workdir) if primary else contextlib.nullcontext()
    with claim, runtime.Signals() as signals:
        start = time.perf_counter()
        built = experiment.build(config)  # reads (and verifies) the data; writes nothing
        return loop.train(built, workdir, signals, overwrite=overwrite, start_time=start)
