"""Shared test set-up: Keras runs on its JAX backend; torch stays on one thread."""

import os

os.environ["KERAS_BACKEND"] = "jax"  # must precede any keras import

import numpy as np
import pytest


@pytest.fixture
def rng():
    return np.random.default_rng(0)
