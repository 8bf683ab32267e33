"""Shared test set-up: Keras runs on its JAX backend; torch stays on one thread."""

import os

os.environ["KERAS_BACKEND"] = "jax"  # must precede any keras import

import jax
import numpy as np
import pytest

# XLA:CPU compiles the partitionable threefry PRNG slowly: jit(UNet(widths=(4, 8, 16)).init)
# took 11.9 s with it and 1.9 s without (jax 0.10.2, 2 cores). Tests only need some random
# initial values, so they use the classic (non-partitionable) threefry stream.
jax.config.update("jax_threefry_partitionable", False)


@pytest.fixture
def rng():
    return np.random.default_rng(0)
