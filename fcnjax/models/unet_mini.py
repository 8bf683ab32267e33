"""keras-segmentation's ``unet_mini``: a small U-Net (Ronneberger et al., 2015)."""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax.numpy as jnp

from fcnjax import ops
from fcnjax.layers import UPSAMPLE_METHODS, ConvTranspose, Upsample, crop_to, pad_to_multiple
from fcnjax.typing import Array, ArrayLike, DTypeLike

__all__ = ["UNetMini"]

_glorot = nn.initializers.glorot_uniform()  # Keras' default, as keras-segmentation


class UNetMini(nn.Module):
    """keras-segmentation's ``unet_mini``: Conv-Dropout-Conv blocks, max pooling, upsample + concat.

    For ``widths=(32, 64, 128)`` (the default): two blocks each followed by 2x2 max pooling,
    a bottom block, then per level an x2 upsampling concatenated with the skip (upsampled
    first, as keras-segmentation's ``concatenate([UpSampling2D(...)(x), skip])``) and a block; a
    1x1 convolution gives the logits. A block is Conv(w, 3x3, SAME, ReLU) -> Dropout ->
    Conv(w, 3x3, SAME, ReLU). Deeper variants: longer ``widths``.

    Any input size: the input is zero-padded at the end to a multiple of
    ``2 ** (len(widths) - 1)`` and the logits are cropped back.

    Attributes:
      num_classes: number of classes.
      widths: channels per level, the last one the bottom.
      dropout: dropout rate inside each block (training only).
      upsample: ``"nearest"`` (keras-segmentation's UpSampling2D), ``"bilinear"`` or
        ``"transposed"`` (a learnable 2x2 / stride 2 transposed convolution to the level's
        width, the original U-Net's up-convolution).
      dtype: computation dtype; param_dtype: parameter dtype.

    Returns logits ``(N, H, W, num_classes)``.

    >>> import jax, jax.numpy as jnp
    >>> model = UNetMini(2)
    >>> x = jnp.ones((1, 97, 131, 3))
    >>> params = jax.eval_shape(model.init, jax.random.key(0), x)
    >>> jax.eval_shape(model.apply, params, x).shape
    (1, 97, 131, 2)
    """

    num_classes: int
    widths: Sequence[int] = (32, 64, 128)
    dropout: float = 0.2
    upsample: str = "nearest"
    dtype: DTypeLike | None = None
    param_dtype: DTypeLike = jnp.float32

    @nn.compact
    def __call__(self, x: ArrayLike, train: bool = False) -> Array:
        if self.upsample not in UPSAMPLE_METHODS:
            raise ValueError(
                f"`upsample` must be one of {UPSAMPLE_METHODS}; got {self.upsample!r}."
            )
        if len(self.widths) < 1 or any(int(w) < 1 for w in self.widths):
            raise ValueError(f"`widths` must be positive ints; got {self.widths!r}.")
        if int(self.num_classes) < 1:
            raise ValueError(f"`num_classes` must be a positive int; got {self.num_classes!r}.")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"`dropout` must be a rate in [0, 1); got {self.dropout!r}.")
        x = jnp.asarray(x)
        if x.ndim != 4:
            raise ValueError(f"UNetMini input must be (N, H, W, C); got shape {x.shape}.")
        kw = dict(kernel_init=_glorot, dtype=self.dtype, param_dtype=self.param_dtype)
        depth = len(self.widths) - 1
        x, size = pad_to_multiple(x, 2**depth)

        def block(h, w, name):
            h = nn.relu(nn.Conv(w, (3, 3), padding="SAME", name=f"{name}_conv1", **kw)(h))
            h = nn.Dropout(self.dropout, deterministic=not train)(h)
            return nn.relu(nn.Conv(w, (3, 3), padding="SAME", name=f"{name}_conv2", **kw)(h))

        skips = []
        for i, w in enumerate(self.widths[:-1]):
            x = block(x, w, f"down{i}")
            skips.append(x)
            x = ops.max_pool(x, 2)  # = nn.max_pool(x, (2, 2), (2, 2)), faster on CPU
        x = block(x, self.widths[-1], "bottom")
        for i in reversed(range(depth)):
            w = self.widths[i]
            if self.upsample == "transposed":
                x = ConvTranspose(w, 2, 2, name=f"up{i}", **kw)(x)
            else:
                x = Upsample(2, self.upsample, dtype=self.dtype)(x)
            x = jnp.concatenate([x, skips[i]], axis=-1)
            x = block(x, w, f"up{i}")
        x = nn.Conv(self.num_classes, (1, 1), name="head", **kw)(x)
        return crop_to(x, size)
