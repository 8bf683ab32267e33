"""keras-segmentation's vanilla encoder (``vanilla_encoder`` in its ``basic_models.py``).

Five blocks, each a 3x3 convolution (zero padding 1, ``"valid"``: SAME; with a bias,
Keras' default), BatchNorm (Keras' momentum 0.99, epsilon 1e-3), ReLU and 2x2 max
pooling (floor, as Keras' ``MaxPooling2D``); 64, 128, 256, 256 and 256 filters. The
pooled outputs are keras-segmentation's ``levels`` ``f1`` ... ``f5`` at strides 2 ... 32.
keras-segmentation builds its ``unet``, ``segnet``, ``fcn_8``, ``fcn_32`` and ``pspnet``
on it. No pretrained weights exist for it: it always trains from scratch.
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from fcnjax import ops
from fcnjax.layers import Conv
from fcnjax.models.vgg import scaled
from fcnjax.typing import Array, ArrayLike, DTypeLike

__all__ = ["VANILLA_WIDTHS", "VanillaEncoder"]

VANILLA_WIDTHS = (64, 128, 256, 256, 256)
_glorot = nn.initializers.glorot_uniform()  # Keras' default


class VanillaEncoder(nn.Module):
    """keras-segmentation's vanilla encoder, channels-last.

    Attributes:
      width: channel multiplier.
      blocks: how many of the five blocks to compute (a decoder that reads ``f4`` needs
        4: keras-segmentation's U-Net and SegNet have no fifth block).
      bn_axis_name: the mapped (``pmap``) axis whose devices share batch statistics.
      dtype: computation dtype; param_dtype: parameter dtype.

    Returns a dict of ``(N, h, w, C)`` arrays ``pool1`` ... ``pool<blocks>`` (strides 2 ...
    32; each pooling floors an odd size, as Keras does). Layers ``block<b>_conv`` and
    ``block<b>_bn``.

    >>> import jax, jax.numpy as jnp
    >>> taps = jax.eval_shape(lambda x: VanillaEncoder().init_with_output(
    ...     jax.random.key(0), x)[0], jnp.ones((1, 64, 97, 3)))
    >>> taps["pool1"].shape, taps["pool5"].shape
    ((1, 32, 48, 64), (1, 2, 3, 256))
    """

    width: float = 1.0
    blocks: int = 5
    bn_axis_name: str | None = None
    dtype: DTypeLike | None = None
    param_dtype: DTypeLike = jnp.float32

    @nn.compact
    def __call__(self, x: ArrayLike, train: bool = False) -> dict[str, Array]:
        if self.blocks not in range(1, 6):
            raise ValueError(f"`blocks` must be 1 ... 5; got {self.blocks!r}.")
        x = jnp.asarray(x)
        if x.ndim != 4:
            raise ValueError(f"VanillaEncoder input must be (N, H, W, C); got shape {x.shape}.")
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        taps = {}
        for b, w in enumerate(VANILLA_WIDTHS[: self.blocks], 1):
            x = Conv(
                scaled(w, self.width),
                3,
                padding=((1, 1), (1, 1)),  # ZeroPadding2D((1, 1)) + "valid"
                kernel_init=_glorot,
                name=f"block{b}_conv",
                **kw,
            )(x)
            x = nn.BatchNorm(
                use_running_average=not train,
                momentum=0.99,
                epsilon=1e-3,
                axis_name=self.bn_axis_name,
                name=f"block{b}_bn",
                **kw,
            )(x)
            x = ops.max_pool(nn.relu(x), 2)  # = MaxPooling2D((2, 2)): floor
            taps[f"pool{b}"] = x
        return taps
