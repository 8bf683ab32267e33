"""Atrous spatial pyramid pooling (ASPP; Chen et al., DeepLabV3 and DeepLabV3+), shared by
:class:`fcnjax.models.DeepLabV3` (torchvision's) and :class:`fcnjax.models.DeepLabV3Plus`
(segmentation_models_pytorch's), and the depthwise-separable convolution of DeepLabV3+.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import flax.linen as nn
import jax.numpy as jnp

from fcnjax.layers import Conv
from fcnjax.typing import Array, DTypeLike

__all__ = ["ASPP", "ATROUS_RATES", "SeparableConv"]

# torchvision's DeepLabHead and smp's DeepLabV3/V3+ default (for output stride 8 and 16).
ATROUS_RATES = (12, 24, 36)
Initializer = Callable[..., Array]


def _pads(d: int) -> tuple[tuple[int, int], tuple[int, int]]:
    return ((d, d), (d, d))


class SeparableConv(nn.Module):
    """smp's ``SeparableConv2d``: a depthwise ``k x k`` convolution (one filter per input
    channel, dilated, padding ``dilation * (k // 2)``, no bias; ``depthwise``), then a 1x1
    convolution to ``features`` (``pointwise``). ``(N, H, W, C) -> (N, H, W, features)``.

    >>> import jax, jax.numpy as jnp
    >>> layer = SeparableConv(8, dilation=2)
    >>> v = layer.init(jax.random.key(0), jnp.ones((1, 9, 9, 4)))
    >>> jax.tree.map(jnp.shape, v["params"])["depthwise"]["kernel"], layer.apply(
    ...     v, jnp.ones((1, 9, 9, 4))).shape
    ((3, 3, 1, 4), (1, 9, 9, 8))
    """

    features: int
    kernel_size: int = 3
    dilation: int = 1
    use_bias: bool = False
    kernel_init: Initializer = nn.initializers.lecun_normal()
    dtype: DTypeLike | None = None
    param_dtype: DTypeLike = jnp.float32

    @nn.compact
    def __call__(self, x: Array) -> Array:
        kw = dict(kernel_init=self.kernel_init, dtype=self.dtype, param_dtype=self.param_dtype)
        c = x.shape[-1]
        x = nn.Conv(
            c,
            (self.kernel_size, self.kernel_size),
            padding=_pads(self.dilation * (self.kernel_size // 2)),
            kernel_dilation=self.dilation,
            feature_group_count=c,
            use_bias=False,
            name="depthwise",
            **kw,
        )(x)
        return Conv(self.features, 1, use_bias=self.use_bias, name="pointwise", **kw)(x)


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling: torchvision's ``ASPP`` and smp's (``separable``).

    Five branches on the same features, each ending in BatchNorm and ReLU: a 1x1
    convolution (``conv0``, ``bn0``); one 3x3 convolution per atrous rate ``r``, dilated
    by ``r`` with padding ``r`` (``conv1`` ... ``conv3``, ``bn1`` ... ``bn3``; with
    ``separable``, smp's ``ASPPSeparableConv``: a :class:`SeparableConv`); image pooling
    (global average, 1x1 convolution ``pool_conv``, ``pool_bn``, then bilinearly resized
    back, which from one sample is a broadcast). Concatenated, projected by a 1x1
    convolution (``project_conv``, ``project_bn``, ReLU) and dropped out. Convolutions
    have no bias; BatchNorm is PyTorch's (momentum 0.1, epsilon 1e-5).

    torchvision's ``DeepLabHead`` uses ``ASPP(2048, [12, 24, 36])`` (256 features,
    dropout 0.5); smp's ``DeepLabV3PlusDecoder`` the separable one with the same rates.

    Attributes:
      features: every branch's and the output's channels (256).
      rates: the atrous rates of the 3x3 branches.
      separable: depthwise-separable 3x3 branches (smp's ``decoder_aspp_separable``).
      dropout: the rate after the projection (0.5).
      kernel_init: the convolutions' initialiser.
      bn_axis_name: the mapped axis whose devices share batch statistics (pmap).
      dtype: computation dtype; param_dtype: parameter dtype.

    ``(N, h, w, C) -> (N, h, w, features)``.

    >>> import jax, jax.numpy as jnp
    >>> x = jnp.ones((2, 5, 7, 16))
    >>> v = jax.eval_shape(ASPP(8).init, jax.random.key(0), x)
    >>> sorted(v["params"]), jax.eval_shape(ASPP(8).apply, v, x).shape
    (['bn0', 'bn1', 'bn2', 'bn3', 'conv0', 'conv1', 'conv2', 'conv3', 'pool_bn', 'pool_conv', \
'project_bn', 'project_conv'], (2, 5, 7, 8))
    """

    features: int = 256
    rates: Sequence[int] = ATROUS_RATES
    separable: bool = False
    dropout: float = 0.5
    kernel_init: Initializer = nn.initializers.lecun_normal()
    bn_axis_name: str | None = None
    dtype: DTypeLike | None = None
    param_dtype: DTypeLike = jnp.float32

    @nn.compact
    def __call__(self, x: Array, train: bool = False) -> Array:
        if not 0 <= self.dropout < 1:
            raise ValueError(f"ASPP's `dropout` must be a rate in [0, 1); got {self.dropout!r}.")
        f = self.features
        kw = dict(kernel_init=self.kernel_init, dtype=self.dtype, param_dtype=self.param_dtype)

        def bn_relu(h: Array, name: str) -> Array:
            return nn.relu(
                batch_norm(train, self.bn_axis_name, name, self.dtype, self.param_dtype)(h)
            )

        branches = [bn_relu(Conv(f, 1, use_bias=False, name="conv0", **kw)(x), "bn0")]
        for i, rate in enumerate(self.rates, 1):
            if self.separable:
                conv = SeparableConv(f, 3, rate, name=f"conv{i}", **kw)
            else:
                conv = Conv(
                    f,
                    3,
                    padding=_pads(rate),
                    kernel_dilation=rate,
                    use_bias=False,
                    name=f"conv{i}",
                    **kw,
                )
            branches.append(bn_relu(conv(x), f"bn{i}"))
        pooled = jnp.mean(x, axis=(1, 2), keepdims=True)
        pooled = bn_relu(Conv(f, 1, use_bias=False, name="pool_conv", **kw)(pooled), "pool_bn")
        branches.append(jnp.broadcast_to(pooled, (*x.shape[:3], f)))
        h = jnp.concatenate(branches, axis=-1)
        h = bn_relu(Conv(f, 1, use_bias=False, name="project_conv", **kw)(h), "project_bn")
        return nn.Dropout(self.dropout, deterministic=not train)(h)


def batch_norm(
    train: bool,
    axis_name: str | None,
    name: str,
    dtype: DTypeLike | None = None,
    param_dtype: DTypeLike = jnp.float32,
) -> nn.BatchNorm:
    """PyTorch's ``BatchNorm2d`` defaults (momentum 0.1, epsilon 1e-5) as Flax's."""
    return nn.BatchNorm(
        use_running_average=not train,
        momentum=0.9,
        epsilon=1e-5,
        axis_name=axis_name,
        name=name,
        dtype=dtype,
        param_dtype=param_dtype,
    )
