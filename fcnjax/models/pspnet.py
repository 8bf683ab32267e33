"""keras-segmentation's PSPNet (``pspnet.py``'s ``_pspnet``): pyramid pooling (Zhao et
al., 2017) on an encoder's stride-32 features.

keras-segmentation names it ``pspnet`` (its vanilla encoder), ``vgg_pspnet`` and
``resnet50_pspnet``. Its ``pspnet_50`` / ``pspnet_101`` (``_pspnet_2.py``, the original
dilated networks) are other networks: :mod:`fcnjax.models.pspnet_caffe`.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from fcnjax import ops
from fcnjax.layers import Conv, crop_to, pad_to_multiple
from fcnjax.models.encoders import encoder, levels
from fcnjax.models.vgg import scaled
from fcnjax.typing import Array, ArrayLike, DTypeLike

__all__ = ["BINS", "PSPNet"]

BINS = (1, 2, 3, 6)  # keras-segmentation's pool_factors
_glorot = nn.initializers.glorot_uniform()  # Keras' default


def _resize(x: Array, size: tuple[int, int]) -> Array:
    """Bilinear, half-pixel centres: TF 2's ``resize_images``, which keras-segmentation's
    ``resize_image`` calls (through Keras' ``K.resize_images``)."""
    return jax.image.resize(x, (x.shape[0], *size, x.shape[-1]), "bilinear").astype(x.dtype)


class PSPNet(nn.Module):
    """keras-segmentation's ``pspnet`` (``backbone="vanilla"``), ``vgg_pspnet``,
    ``resnet50_pspnet``.

    On ``f5`` (stride 32), for each of ``p`` = 1, 2, 3, 6: average pooling into ``p x p``
    bins, a 1x1 convolution of 512 filters without bias, BatchNorm (Keras' momentum 0.99,
    epsilon 1e-3), ReLU, and bilinear resizing back to ``f5``'s size (``psp<p>_conv``,
    ``psp<p>_bn``); ``f5`` and the four concatenated, a 1x1 convolution of 512 without bias,
    BatchNorm, ReLU (``seg_feats_conv``, ``seg_feats_bn``), a 3x3 convolution to the classes
    (``classifier``) and bilinear x8 resizing: keras-segmentation's scores, at stride 4,
    which it trains on masks resized to; fcnjax resizes them bilinearly to the input's
    size, as its other networks.

    Sizes: keras-segmentation asserts heights and widths that are multiples of 192, where
    ``f5``'s ``6m`` samples split exactly into its pooling windows (window = stride =
    ``round(h / p)``). fcnjax takes any size: the input is zero-padded at the end to a
    multiple of 32 and the logits cropped back, and ``f5`` is pooled into ``p`` bins of
    :func:`fcnjax.ops.adaptive_avg_pool` (the PSPNet paper's pooling), which are
    keras-segmentation's windows at its sizes: there, the same numbers.

    Attributes:
      num_classes: number of classes.
      backbone: an encoder of :data:`fcnjax.models.encoders.ENCODERS` (``"vanilla"``,
        ``"vgg16"``, ``"resnet50"``, ...), under ``params["backbone"]``.
      backbone_style: a ResNet's arithmetic, ``"torchvision"`` or ``"keras"``.
      width: channel multiplier of the encoder and of the 512-filter convolutions.
      bn_axis_name: the mapped axis whose devices share batch statistics (pmap).
      dtype: computation dtype; param_dtype: parameter dtype.

    Returns logits ``(N, H, W, num_classes)``.

    >>> import jax, jax.numpy as jnp
    >>> model = PSPNet(3, width=0.0625)
    >>> x = jnp.ones((1, 97, 131, 3))
    >>> variables = jax.eval_shape(model.init, jax.random.key(0), x)
    >>> jax.eval_shape(model.apply, variables, x).shape
    (1, 97, 131, 3)
    """

    num_classes: int
    backbone: str = "vanilla"
    backbone_style: str = "torchvision"
    width: float = 1.0
    bn_axis_name: str | None = None
    dtype: DTypeLike | None = None
    param_dtype: DTypeLike = jnp.float32

    @nn.compact
    def __call__(self, x: ArrayLike, train: bool = False) -> Array:
        x = jnp.asarray(x)
        if x.ndim != 4:
            raise ValueError(f"PSPNet input must be (N, H, W, C); got shape {x.shape}.")
        if not isinstance(self.num_classes, int) or self.num_classes < 1:
            raise ValueError(f"`num_classes` must be a positive int; got {self.num_classes!r}.")
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        padded, size = pad_to_multiple(x, 32)
        f5 = levels(
            encoder(
                self.backbone,
                width=self.width,
                style=self.backbone_style,
                bn_axis_name=self.bn_axis_name,
                **kw,
            )(padded, train)
        )[4]

        def conv_bn_relu(h, name):
            w = scaled(512, self.width)
            h = Conv(w, 1, use_bias=False, kernel_init=_glorot, name=f"{name}_conv", **kw)(h)
            h = nn.BatchNorm(
                use_running_average=not train,
                momentum=0.99,
                epsilon=1e-3,
                axis_name=self.bn_axis_name,
                name=f"{name}_bn",
                **kw,
            )(h)
            return nn.relu(h)

        outs = [f5]
        for p in BINS:
            pooled = conv_bn_relu(ops.adaptive_avg_pool(f5, p), f"psp{p}")
            outs.append(_resize(pooled, f5.shape[1:3]))
        o = conv_bn_relu(jnp.concatenate(outs, axis=-1), "seg_feats")
        o = Conv(self.num_classes, 3, kernel_init=_glorot, name="classifier", **kw)(o)
        o = _resize(o, (8 * o.shape[1], 8 * o.shape[2]))  # keras-segmentation's output
        return crop_to(_resize(o, padded.shape[1:3]), size)
