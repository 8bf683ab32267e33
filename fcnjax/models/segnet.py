"""SegNet (Badrinarayanan et al., 2017): a decoder that unpools with the encoder's switches."""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax.numpy as jnp

from fcnjax import ops
from fcnjax.layers import Conv, crop_to, pad_to_multiple
from fcnjax.typing import Array, ArrayLike, DTypeLike

__all__ = ["SegNet"]


class SegNet(nn.Module):
    """SegNet-Basic (Badrinarayanan et al., 2017) by default: max-pooling switches carried
    to max-unpooling.

    Encoder level ``i``: Conv(widths[i], k x k) -> BatchNorm -> ReLU -> 2x2 max pooling
    that keeps its switches (the argmax positions). Decoder, deepest level first:
    max-unpooling with that level's switches (each value goes back where its max came
    from, zeros elsewhere) -> Conv(k x k) -> BatchNorm (SegNet-Basic has no ReLU in the
    decoder); a 1x1 convolution gives the logits.

    Any input size: the input is padded at the end to a multiple of ``2 ** len(widths)``
    and the logits are cropped back.

    Attributes:
      num_classes: number of classes (CamVid: 11).
      widths: encoder channels per level (SegNet-Basic: four levels of 64).
      kernel_size: convolution size (SegNet-Basic: 7).
      bn_momentum: BatchNorm running-average momentum.
      bn_axis_name: the mapped axis to average batch statistics over (data parallel).
      dtype: computation dtype; param_dtype: parameter dtype.

    Returns logits ``(N, H, W, num_classes)``. Batch statistics are in the
    ``batch_stats`` collection: pass ``mutable=["batch_stats"]`` with ``train=True``.

    >>> import jax, jax.numpy as jnp
    >>> model = SegNet(11, widths=(8, 8), kernel_size=3)
    >>> x = jnp.ones((2, 30, 45, 3))
    >>> variables = jax.jit(model.init)(jax.random.key(0), x)
    >>> jax.jit(model.apply)(variables, x).shape
    (2, 30, 45, 11)
    """

    num_classes: int
    widths: Sequence[int] = (64, 64, 64, 64)
    kernel_size: int = 7
    bn_momentum: float = 0.9
    bn_axis_name: str | None = None
    dtype: DTypeLike | None = None
    param_dtype: DTypeLike = jnp.float32

    @nn.compact
    def __call__(self, x: ArrayLike, train: bool = False) -> Array:
        x = jnp.asarray(x)
        if x.ndim != 4:
            raise ValueError(f"SegNet input must be (N, H, W, C); got shape {x.shape}.")
        if len(self.widths) < 1 or any(int(w) < 1 for w in self.widths):
            raise ValueError(f"`widths` must be positive ints; got {self.widths!r}.")
        if int(self.num_classes) < 1:
            raise ValueError(f"`num_classes` must be a positive int; got {self.num_classes!r}.")
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        k = (self.kernel_size, self.kernel_size)
        x, size = pad_to_multiple(x, 2 ** len(self.widths))

        def conv_bn(h, w, name):
            # fcnjax's Conv: the 7x7 kernel gradient as matrix products (ops.conv), 2.7x
            # faster than XLA:CPU's; parameters as flax's nn.Conv.
            h = Conv(w, k, padding="SAME", name=f"{name}_conv", **kw)(h)
            return nn.BatchNorm(
                use_running_average=not train,
                momentum=self.bn_momentum,
                epsilon=1e-5,
                axis_name=self.bn_axis_name,
                name=f"{name}_bn",
                **kw,
            )(h)

        switches = []
        for i, w in enumerate(self.widths):
            x = nn.relu(conv_bn(x, w, f"enc{i}"))
            shape = x.shape[1:3]
            x, idx = ops.max_pool_with_argmax(x, 2)
            switches.append((idx, shape))
        for i in reversed(range(len(self.widths))):
            idx, shape = switches[i]
            x = ops.max_unpool(x, idx, shape, window=2)  # dense: no scatter
            x = conv_bn(x, self.widths[max(i - 1, 0)], f"dec{i}")
        x = nn.Conv(self.num_classes, (1, 1), name="classifier", **kw)(x)
        return crop_to(x, size)
