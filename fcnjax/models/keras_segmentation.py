"""keras-segmentation's U-Net and SegNet decoders on a pretrained encoder.

keras-segmentation (Divam Gupta's ``image-segmentation-keras``) names its networks
``<encoder>_<decoder>``: ``vgg_unet``, ``resnet50_unet``, ``vgg_segnet``,
``resnet50_segnet``. Both decoders start from the encoder's stride-16 features ``f4``
and climb back to stride 2 through x2 nearest upsampling and 3x3 convolutions of 512,
256, 128 and 64 filters, each followed by BatchNorm (Keras' momentum 0.99, epsilon
1e-3); a 3x3 convolution gives the class scores at stride 2. keras-segmentation trains
on masks resized to that size; fcnjax upsamples the scores bilinearly to the input's
size instead, so that every model's logits are aligned with its input.

* U-Net (:class:`EncoderUNet`): ReLU after each convolution, and ``f3``, ``f2``, ``f1``
  concatenated after each upsampling.
* SegNet (:class:`EncoderSegNet`): no skips and no ReLU (keras-segmentation's
  ``segnet_decoder``), nearest upsampling rather than SegNet's max-unpooling
  (:class:`fcnjax.models.SegNet` unpools with switches).

keras-segmentation's ResNet-50 is the Keras 1 one, whose stride-2 features ``f1`` are
taken before the stem's BatchNorm and whose max pooling has no padding; fcnjax takes
``f1`` after the stem's ReLU and pads the pooling as torchvision and today's Keras do.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from fcnjax.layers import Conv, Upsample, crop_to, pad_to_multiple
from fcnjax.models.encoders import encoder, levels
from fcnjax.models.vgg import scaled
from fcnjax.typing import Array, ArrayLike, DTypeLike

__all__ = ["DECODER_WIDTHS", "EncoderSegNet", "EncoderUNet"]

DECODER_WIDTHS = (512, 256, 128, 64)
_glorot = nn.initializers.glorot_uniform()  # Keras' default
_PAD1 = ((1, 1), (1, 1))  # keras-segmentation's ZeroPadding2D((1, 1)) + "valid"


class _Decoder(nn.Module):
    """The shared decoder; ``unet`` adds ReLUs and skip concatenations."""

    num_classes: int
    unet: bool
    width: float
    bn_axis_name: str | None
    dtype: DTypeLike | None
    param_dtype: DTypeLike

    @nn.compact
    def __call__(self, feats: tuple[Array, ...], train: bool) -> Array:
        f1, f2, f3, f4 = feats
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        skips = (f3, f2, f1) if self.unet else (None, None, None)
        x = f4
        for i, w in enumerate(DECODER_WIDTHS):
            if i > 0:
                x = Upsample(2, "nearest", dtype=self.dtype)(x)
                skip = skips[i - 1]
                if skip is not None:
                    x = jnp.concatenate([crop_to(x, skip.shape[1:3]), skip], axis=-1)
            x = Conv(
                scaled(w, self.width),
                3,
                padding=_PAD1,
                kernel_init=_glorot,
                name=f"conv{i + 1}",
                **kw,
            )(x)
            if self.unet:
                x = nn.relu(x)
            x = nn.BatchNorm(
                use_running_average=not train,
                momentum=0.99,
                epsilon=1e-3,
                axis_name=self.bn_axis_name,
                name=f"bn{i + 1}",
                **kw,
            )(x)
        return nn.Conv(
            self.num_classes, (3, 3), padding=1, kernel_init=_glorot, name="classifier", **kw
        )(x)


class EncoderUNet(nn.Module):
    """keras-segmentation's ``vgg_unet`` / ``resnet50_unet``: a U-Net decoder on a
    pretrainable encoder (see the module docstring).

    Any input size: the input is zero-padded at the end to a multiple of 32 and the
    logits are cropped back.

    Attributes:
      num_classes: number of classes.
      backbone: an encoder of :data:`fcnjax.models.encoders.ENCODERS` (``"vgg16"``,
        ``"resnet50"``, ...), under ``params["backbone"]``.
      backbone_style: a ResNet's arithmetic, ``"torchvision"`` or ``"keras"``.
      width: channel multiplier of the encoder and the decoder.
      bn_axis_name: the mapped axis whose devices share batch statistics (pmap).
      dtype: computation dtype; param_dtype: parameter dtype.

    Returns logits ``(N, H, W, num_classes)``.

    >>> import jax, jax.numpy as jnp
    >>> model = EncoderUNet(3, backbone="resnet50", width=0.125)
    >>> x = jnp.ones((1, 97, 131, 3))
    >>> variables = jax.eval_shape(model.init, jax.random.key(0), x)
    >>> jax.eval_shape(model.apply, variables, x).shape
    (1, 97, 131, 3)
    """

    num_classes: int
    backbone: str = "vgg16"
    backbone_style: str = "torchvision"
    width: float = 1.0
    bn_axis_name: str | None = None
    dtype: DTypeLike | None = None
    param_dtype: DTypeLike = jnp.float32

    _unet = True

    @nn.compact
    def __call__(self, x: ArrayLike, train: bool = False) -> Array:
        x = jnp.asarray(x)
        if x.ndim != 4:
            raise ValueError(
                f"{type(self).__name__} input must be (N, H, W, C); got shape {x.shape}."
            )
        if int(self.num_classes) < 1:
            raise ValueError(f"`num_classes` must be a positive int; got {self.num_classes!r}.")
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        padded, size = pad_to_multiple(x, 32)
        taps = encoder(
            self.backbone,
            width=self.width,
            style=self.backbone_style,
            levels=4,
            bn_axis_name=self.bn_axis_name,
            **kw,
        )(padded, train)
        scores = _Decoder(
            self.num_classes, self._unet, self.width, self.bn_axis_name, name="decoder", **kw
        )(levels(taps), train)
        shape = (scores.shape[0], *padded.shape[1:3], scores.shape[-1])
        scores = jax.image.resize(scores, shape, "bilinear").astype(scores.dtype)
        return crop_to(scores, size)


class EncoderSegNet(EncoderUNet):
    """keras-segmentation's ``vgg_segnet`` / ``resnet50_segnet``: the SegNet decoder (no
    skips, no ReLU) on a pretrainable encoder; attributes and output as
    :class:`EncoderUNet`.

    >>> import jax, jax.numpy as jnp
    >>> model = EncoderSegNet(3, width=0.125)
    >>> variables = jax.eval_shape(model.init, jax.random.key(0), jnp.ones((1, 64, 64, 3)))
    >>> sorted(variables["params"]["decoder"])[:3]
    ['bn1', 'bn2', 'bn3']
    """

    _unet = False
