"""Type aliases shared across fcnjax's public API."""

from collections.abc import Sequence

import jax
from jax.typing import ArrayLike, DTypeLike

__all__ = ["Array", "ArrayLike", "DTypeLike", "IntOrSeq", "PaddingLike", "PrecisionLike"]

Array = jax.Array
# An int applied to every spatial dimension, or one int per spatial dimension.
IntOrSeq = int | Sequence[int]
# "SAME" / "VALID" (Keras rules), or PyTorch-style crops: an int, one int per
# spatial dimension, or one (low, high) pair per spatial dimension.
PaddingLike = str | int | Sequence[int] | Sequence[tuple[int, int]]
PrecisionLike = None | str | jax.lax.Precision | tuple
