"""fcnjax.training.optim against optax run by hand: what the optimizer applies is what is logged."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

from fcnjax.training import optim


@pytest.mark.parametrize("k", [1, 3])
@pytest.mark.parametrize("schedule", ["poly", "cosine"])
def test_the_logged_learning_rate_is_the_one_applied(k, schedule):
    # Plain SGD on a constant gradient of 1: each update moves the parameter by exactly the
    # learning rate it used, so the optimizer itself says which rate it applied when.
    total = 24
    config = dict(
        name="sgd",
        momentum=0.0,
        learning_rate=0.5,
        schedule=schedule,
        warmup_steps=2,
        accumulate_steps=k,
    )
    params = {"w": jnp.zeros(())}
    tx = optim.make_optimizer(config, params, total)
    state = tx.init(params)
    logged = optim.step_schedule(config, total)
    for step in range(total):  # after `step` micro-batches; this one completes an update?
        updates, state = tx.update({"w": jnp.ones(())}, state, params)
        applied = -float(updates["w"])
        if (step + 1) % k:
            assert applied == 0.0  # accumulating
        else:
            np.testing.assert_allclose(applied, float(logged(step)), rtol=1e-6)
    # The old log (the update schedule read at micro-steps) ends the warm-up k times early.
    if k > 1:
        early = optim.make_schedule(config, -(-total // k))
        assert float(early(2)) != float(logged(2))


def test_training_logs_the_rate_each_step_applied(tmp_path):
    import json

    from fcnjax import config as config_lib
    from fcnjax import train

    c = config_lib.load_config("shapes_fcn8s:runlocal")
    c.num_steps, c.log_every_steps, c.eval_data = 8, 1, None
    c.optimizer.accumulate_steps, c.optimizer.warmup_steps = 2, 2
    c.optimizer.schedule = "poly"
    train.train_and_evaluate(c, tmp_path)
    rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    logged = {r["step"]: r["train/learning_rate"] for r in rows if "train/learning_rate" in r}
    applied = optim.step_schedule(c.optimizer.to_dict(), 8)
    assert sorted(logged) == list(range(1, 9))
    for step, lr in logged.items():  # steps 1-2 are update 0 (warm-up from 0), 3-4 update 1, ...
        np.testing.assert_allclose(lr, float(applied(step - 1)), rtol=1e-6, atol=1e-12)
    assert logged[1] == logged[2] == 0.0 and logged[3] == logged[4] > 0
