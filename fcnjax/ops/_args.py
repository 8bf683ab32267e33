"""Per-dimension argument normalisation, shared by every op and layer."""

from __future__ import annotations

import numpy as np

__all__ = ["is_int", "per_dim"]


def is_int(v) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def per_dim(name: str, value, n: int, minimum: int) -> tuple[int, ...]:
    """An int or a length-``n`` sequence of ints, each ``>= minimum``."""
    if is_int(value):
        values = (int(value),) * n
    else:
        try:
            values = tuple(value)
        except TypeError:
            values = None
        if values is None or len(values) != n or not all(is_int(v) for v in values):
            raise ValueError(
                f"`{name}` must be an int or a sequence of {n} ints (one per spatial "
                f"dimension), got {value!r}."
            )
        values = tuple(int(v) for v in values)
    if any(v < minimum for v in values):
        raise ValueError(f"`{name}` must be >= {minimum} in every dimension, got {value!r}.")
    return values
