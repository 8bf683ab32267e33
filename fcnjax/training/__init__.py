"""What runs a training: a config read once into typed parts, then the loop over them.

Followed from :func:`fcnjax.train.train_and_evaluate`:

- :mod:`~fcnjax.training.experiment` reads the config, once, into an ``Experiment``: the
  run (sources, transforms, task, model, normalisation), a
  :class:`~fcnjax.training.settings.Schedule`, the optimizer's
  :class:`~fcnjax.training.optim.Settings` and the initialisation;
- :mod:`~fcnjax.training.loop` trains it: :mod:`~fcnjax.training.steps` (the pure train
  and eval steps), :mod:`~fcnjax.training.parallel` (where arrays live),
  :mod:`~fcnjax.training.evaluate`, :mod:`~fcnjax.training.checkpoints` (orbax),
  :mod:`~fcnjax.training.workdir` (the claim on a workdir and what fcnjax wrote there),
  :mod:`~fcnjax.training.summary` and :mod:`~fcnjax.training.progress` (logs),
  :mod:`~fcnjax.training.runtime`;
- :mod:`~fcnjax.training.tasks`: one module per task (its loss, metrics, pictures).

Nothing here reads a ``ConfigDict`` but :func:`~fcnjax.training.experiment.build`.
"""
