"""VGG16 (Simonyan & Zisserman, 2015) as FCN's backbone, channels-last, Keras layer names."""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from fcnjax import ops
from fcnjax.layers import Conv
from fcnjax.typing import Array, ArrayLike, DTypeLike

__all__ = ["VGG16", "VGG16_BLOCKS", "VGG16_CONVS", "scaled"]

# Output channels of the 13 3x3 convolutions, block by block (Keras / torchvision order).
VGG16_BLOCKS = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))
# Their names, as in keras.applications.VGG16: block1_conv1 ... block5_conv3.
VGG16_CONVS = tuple(
    f"block{b}_conv{c}"
    for b, widths in enumerate(VGG16_BLOCKS, 1)
    for c in range(1, len(widths) + 1)
)
# He (Kaiming) normal: VGG trained from scratch with ReLU (torchvision's choice, fan-in).
he_normal = nn.initializers.variance_scaling(2.0, "fan_in", "normal")


def scaled(channels: int, width: float) -> int:
    """``round(channels * width)``, at least 1: the channel count of a ``width``-scaled VGG.

    A ``width`` that is not positive is a ValueError: it would make every layer one channel.
    """
    if not width > 0:
        raise ValueError(f"`width` must be a positive number; got {width!r}.")
    return max(1, round(channels * width))


class VGG16(nn.Module):
    """VGG16's 13 convolutions, returning the taps FCN needs.

    Every 3x3 convolution is SAME-padded and followed by ReLU; every block ends with 2x2
    max pooling. With ``fc=True`` the classifier's fc1/fc2 come "convolutionalised" (Long
    et al.): ``fc6`` is a 7x7 convolution with 4096 filters and ``fc7`` a 1x1 convolution
    with 4096 filters, each with ReLU and dropout in training. On a 224x224 input the
    centre of ``fc7`` equals the dense ``fc2`` of the classifier (SAME padding keeps the
    7x7 map, so FCN's skips stay aligned for any input size).

    Attributes:
      width: channel multiplier (``0.125`` gives a fast model for tests and demos).
      fc: also compute ``fc6`` and ``fc7``.
      fc_dropout: dropout rate after fc6 and fc7 in training (0.5, as VGG and FCN).
      batch_norm: BatchNorm after each of the 13 convolutions (torchvision's
        ``vgg16_bn``): much faster to train from scratch. Its statistics live in the
        ``batch_stats`` collection (``mutable=["batch_stats"]`` with ``train=True``).
      bn_axis_name: the mapped (``pmap``) axis whose devices share batch statistics.
      blocks: how many of the five blocks to compute (a decoder that stops at ``pool4``
        needs 4; ``fc=True`` needs 5).
      pool_padding: ``"SAME"`` (ceil: any input size, pixels at the end are pooled in
        smaller windows) or ``"VALID"`` (floor, Keras' VGG16; equal for multiples of 32).
      dtype: computation dtype; param_dtype: parameter dtype.

    Returns a dict of ``(N, h, w, C)`` arrays: ``pool1`` ... ``pool5`` (strides 2 ... 32)
    and, with ``fc=True``, ``fc7`` (stride 32, ``4096 * width`` channels).

    >>> import jax, jax.numpy as jnp
    >>> taps = jax.eval_shape(lambda x: VGG16(fc=True).init_with_output(
    ...     jax.random.key(0), x)[0], jnp.ones((1, 97, 131, 3)))
    >>> taps["pool3"].shape, taps["pool4"].shape, taps["fc7"].shape
    ((1, 13, 17, 256), (1, 7, 9, 512), (1, 4, 5, 4096))
    """

    width: float = 1.0
    fc: bool = False
    fc_dropout: float = 0.5
    batch_norm: bool = False
    bn_axis_name: str | None = None
    pool_padding: str = "SAME"
    blocks: int = 5
    dtype: DTypeLike | None = None
    param_dtype: DTypeLike = jnp.float32

    @nn.compact
    def __call__(self, x: ArrayLike, train: bool = False) -> dict[str, Array]:
        x = jnp.asarray(x)
        if x.ndim != 4:
            raise ValueError(f"VGG16 input must be (N, H, W, C); got shape {x.shape}.")
        if self.pool_padding not in ("SAME", "VALID"):
            raise ValueError(
                f"`pool_padding` must be 'SAME' or 'VALID'; got {self.pool_padding!r}."
            )
        if self.blocks not in range(1, 6) or (self.fc and self.blocks != 5):
            raise ValueError(f"`blocks` must be 1 ... 5 (5 with fc=True); got {self.blocks!r}.")
        conv = lambda c, k, name: Conv(  # noqa: E731
            scaled(c, self.width),
            (k, k),
            padding="SAME",
            kernel_init=he_normal,
            name=name,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
        )
        taps = {}
        for b, widths in enumerate(VGG16_BLOCKS[: self.blocks], 1):
            for c, w in enumerate(widths, 1):
                x = conv(w, 3, f"block{b}_conv{c}")(x)
                if self.batch_norm:
                    x = nn.BatchNorm(
                        use_running_average=not train,
                        momentum=0.9,
                        epsilon=1e-5,
                        axis_name=self.bn_axis_name,
                        dtype=self.dtype,
                        param_dtype=self.param_dtype,
                        name=f"block{b}_bn{c}",
                    )(x)
                x = nn.relu(x)
            x = ops.max_pool(x, 2, self.pool_padding)  # = nn.max_pool, faster on CPU
            taps[f"pool{b}"] = x
        if self.fc:
            for name, k in (("fc6", 7), ("fc7", 1)):
                x = nn.relu(conv(4096, k, name)(x))
                x = nn.Dropout(self.fc_dropout, deterministic=not train)(x)
            taps["fc7"] = x
        return taps
