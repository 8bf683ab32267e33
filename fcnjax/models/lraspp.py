"""Lite R-ASPP (Howard et al., 2019, "Searching for MobileNetV3") on MobileNetV3-Large, as
torchvision's ``lraspp_mobilenet_v3_large``."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from fcnjax.layers import Conv
from fcnjax.models.encoders import encoder
from fcnjax.typing import Array, ArrayLike, DTypeLike

__all__ = ["LRASPP", "LRASPPHead"]


def _resize(x: Array, size: tuple[int, int]) -> Array:
    """Bilinear resizing to ``size`` (half-pixel, PyTorch's ``align_corners=False``;
    LR-ASPP only ever enlarges, where ``jax.image.resize`` does not antialias)."""
    shape = (x.shape[0], *size, x.shape[-1])
    return jax.image.resize(x, shape, "bilinear").astype(x.dtype)


class LRASPPHead(nn.Module):
    """torchvision's ``LRASPPHead``: class scores at the ``low`` features' resolution.

    ``cbr`` (a 1x1 convolution without bias to ``inter_channels``, BatchNorm, ReLU) of the
    ``high`` features, times ``scale`` (their global average, a 1x1 convolution without
    bias, sigmoid), bilinearly resized to the ``low`` features' size and scored by
    ``high_classifier`` (1x1, bias), plus ``low_classifier`` (1x1, bias) of the ``low``
    features. Parameters: ``cbr_conv``, ``cbr_bn``, ``scale_conv``, ``low_classifier``,
    ``high_classifier`` (torch's ``cbr.0``, ``cbr.1``, ``scale.1``, ...).

    Attributes:
      num_classes: number of classes.
      inter_channels: torchvision's 128.
      bn_axis_name: the mapped axis whose devices share batch statistics (pmap).
      dtype: computation dtype; param_dtype: parameter dtype.

    Called on ``low`` ``(N, h, w, C_low)`` and ``high`` ``(N, h', w', C_high)``, returns
    ``(N, h, w, num_classes)``.
    """

    num_classes: int
    inter_channels: int = 128
    bn_axis_name: str | None = None
    dtype: DTypeLike | None = None
    param_dtype: DTypeLike = jnp.float32

    @nn.compact
    def __call__(self, low: Array, high: Array, train: bool = False) -> Array:
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        x = Conv(self.inter_channels, 1, use_bias=False, name="cbr_conv", **kw)(high)
        x = nn.BatchNorm(
            use_running_average=not train,
            momentum=0.9,  # torch's default 0.1
            epsilon=1e-5,
            axis_name=self.bn_axis_name,
            name="cbr_bn",
            **kw,
        )(x)
        pooled = jnp.mean(high, axis=(1, 2), keepdims=True)
        s = Conv(self.inter_channels, 1, use_bias=False, name="scale_conv", **kw)(pooled)
        x = _resize(nn.relu(x) * nn.sigmoid(s), low.shape[1:3])
        scores = Conv(self.num_classes, 1, name="low_classifier", **kw)(low)
        return scores + Conv(self.num_classes, 1, name="high_classifier", **kw)(x)


class LRASPP(nn.Module):
    """torchvision's ``lraspp_mobilenet_v3_large``: :class:`LRASPPHead` on a dilated
    MobileNetV3-Large (output stride 16; its ``low`` stride-8, 40-channel and ``high``
    stride-16, 960-channel taps), scores resized bilinearly (``align_corners=False``) to
    the input. With 21 classes it has torchvision's 3,221,538 parameters. torchvision's
    ``aux_loss`` is refused by torchvision itself for this network: there is none.

    Attributes:
      num_classes: number of classes.
      backbone: ``"mobilenet_v3_large"`` (the only encoder with ``low`` and ``high``).
      inter_channels: the head's width (torchvision's 128; not scaled by ``width``).
      width: the encoder's ``width_mult``.
      bn_axis_name: the mapped axis whose devices share batch statistics (pmap).
      dtype: computation dtype; param_dtype: parameter dtype.

    Returns logits ``(N, H, W, num_classes)`` for an input ``(N, H, W, 3)``, any ``H, W``.

    >>> import jax, jax.numpy as jnp
    >>> model = LRASPP(21)
    >>> x = jnp.ones((1, 65, 71, 3))
    >>> variables = jax.eval_shape(model.init, jax.random.key(0), x)
    >>> sum(a.size for a in jax.tree.leaves(variables["params"]))
    3221538
    >>> jax.eval_shape(model.apply, variables, x).shape
    (1, 65, 71, 21)
    """

    num_classes: int
    backbone: str = "mobilenet_v3_large"
    inter_channels: int = 128
    width: float = 1.0
    bn_axis_name: str | None = None
    dtype: DTypeLike | None = None
    param_dtype: DTypeLike = jnp.float32

    @nn.compact
    def __call__(self, x: ArrayLike, train: bool = False) -> Array:
        if self.backbone != "mobilenet_v3_large":
            raise ValueError(
                f"`backbone` must be 'mobilenet_v3_large' (LR-ASPP reads its 'low' and 'high' "
                f"taps); got {self.backbone!r}."
            )
        if int(self.num_classes) < 1:
            raise ValueError(f"`num_classes` must be a positive int; got {self.num_classes!r}.")
        if int(self.inter_channels) < 1:
            raise ValueError(
                f"`inter_channels` must be a positive int; got {self.inter_channels!r}."
            )
        x = jnp.asarray(x)
        if x.ndim != 4:
            raise ValueError(f"LRASPP input must be (N, H, W, C); got shape {x.shape}.")
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        taps = encoder(
            self.backbone,
            width=self.width,
            output_stride=16,
            bn_axis_name=self.bn_axis_name,
            **kw,
        )(x, train)
        head = LRASPPHead(
            self.num_classes,
            self.inter_channels,
            self.bn_axis_name,
            name="classifier",
            **kw,
        )
        return _resize(head(taps["low"], taps["high"], train), x.shape[1:3])
