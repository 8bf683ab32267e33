"""keras-segmentation's decoders on an encoder: U-Net, SegNet and FCN-8 / FCN-32.

keras-segmentation (Divam Gupta's ``image-segmentation-keras``) names its networks
``<encoder>_<decoder>``: ``vgg_unet``, ``resnet50_unet``, ``vgg_segnet``,
``resnet50_segnet``, on its MobileNet (:class:`fcnjax.models.MobileNet`)
``mobilenet_unet``, ``mobilenet_segnet``, ``fcn_8_mobilenet``, ``fcn_32_mobilenet``, and,
on its vanilla encoder (:class:`fcnjax.models.VanillaEncoder`), ``unet``, ``segnet``,
``fcn_8``, ``fcn_32``. The U-Net and SegNet decoders start from the encoder's stride-16
features ``f4`` and climb back to stride 2 through x2 nearest
upsampling and 3x3 convolutions of 512, 256, 128 and 64 filters, each followed by
BatchNorm (Keras' momentum 0.99, epsilon 1e-3); a 3x3 convolution gives the class scores
at stride 2. keras-segmentation trains on masks resized to that size; fcnjax upsamples the
scores bilinearly to the input's size instead, so that every model's logits are aligned
with its input.

* U-Net (:class:`EncoderUNet`): ReLU after each convolution, and ``f3``, ``f2``, ``f1``
  concatenated after each upsampling.
* SegNet (:class:`EncoderSegNet`): no skips and no ReLU (keras-segmentation's
  ``segnet_decoder``), nearest upsampling rather than SegNet's max-unpooling
  (:class:`fcnjax.models.SegNet` unpools with switches).
* FCN (:class:`EncoderFCN`): keras-segmentation's ``fcn_8`` / ``fcn_32`` head, which is
  not the FCN paper's (:class:`fcnjax.models.FCN`); see its docstring.

Sizes: keras-segmentation's VGG16, ResNet-50 and MobileNet encoders assert multiples of 32
(its MobileNet networks default to 224x224); on the vanilla encoder its U-Net's
concatenations need multiples of 16. fcnjax zero-pads any
input at the end to that multiple (32 for the FCN head) and crops the logits back: at the
sizes keras-segmentation takes, the same numbers as its network.

keras-segmentation's ResNet-50 is the Keras 1 one, whose stride-2 features ``f1`` are
taken before the stem's BatchNorm and whose max pooling has no padding; fcnjax takes
``f1`` after the stem's ReLU and pads the pooling as torchvision and today's Keras do.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from fcnjax.layers import Conv, ConvTranspose, Upsample, crop_to, pad_to_multiple
from fcnjax.models.encoders import encoder, levels
from fcnjax.models.vgg import scaled
from fcnjax.typing import Array, ArrayLike, DTypeLike

__all__ = ["DECODER_WIDTHS", "EncoderFCN", "EncoderSegNet", "EncoderUNet", "input_multiple"]

DECODER_WIDTHS = (512, 256, 128, 64)
_glorot = nn.initializers.glorot_uniform()  # Keras' default
_PAD1 = ((1, 1), (1, 1))  # keras-segmentation's ZeroPadding2D((1, 1)) + "valid"


def input_multiple(backbone: str, levels: int) -> int:
    """What an input's height and width are padded to a multiple of: 32 (the encoders'
    stride of ``f5``, and keras-segmentation's assertion for VGG16 and ResNet-50), or 16
    for a decoder reading the vanilla encoder's ``f1`` ... ``f4``."""
    return 16 if backbone == "vanilla" and levels == 4 else 32


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
    """keras-segmentation's ``unet`` (``backbone="vanilla"``), ``vgg_unet``,
    ``resnet50_unet``, ``mobilenet_unet``: a U-Net decoder on an encoder (see the module
    docstring).

    Any input size: the input is zero-padded at the end to a multiple of 32 (16 on the
    vanilla encoder) and the logits are cropped back.

    Attributes:
      num_classes: number of classes.
      backbone: an encoder of :data:`fcnjax.models.encoders.ENCODERS` (``"vgg16"``,
        ``"resnet50"``, ``"vanilla"``, ...), under ``params["backbone"]``.
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
        padded, size = pad_to_multiple(x, input_multiple(self.backbone, 4))
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
    """keras-segmentation's ``segnet`` (``backbone="vanilla"``; SegNet-Basic is
    ``segnet_basic``), ``vgg_segnet``, ``resnet50_segnet``, ``mobilenet_segnet``: the SegNet
    decoder (no skips, no ReLU) on an encoder; attributes and output as :class:`EncoderUNet`.

    >>> import jax, jax.numpy as jnp
    >>> model = EncoderSegNet(3, width=0.125)
    >>> variables = jax.eval_shape(model.init, jax.random.key(0), jnp.ones((1, 64, 64, 3)))
    >>> sorted(variables["params"]["decoder"])[:3]
    ['bn1', 'bn2', 'bn3']
    """

    _unet = False


def _crop_both(a: Array, b: Array) -> tuple[Array, Array]:
    """keras-segmentation's ``crop``: the larger of two maps cropped at its end to the other's
    height and width (each dimension on its own)."""
    size = tuple(min(p, q) for p, q in zip(a.shape[1:3], b.shape[1:3]))
    return crop_to(a, size), crop_to(b, size)


class EncoderFCN(nn.Module):
    """keras-segmentation's ``fcn_8`` / ``fcn_32`` (``fcn.py``) on an encoder, by default
    its vanilla encoder (as its ``fcn_8`` and ``fcn_32``; ``fcn_8_mobilenet`` and
    ``fcn_32_mobilenet`` on its MobileNet).

    On ``f5``: a 7x7 convolution with 4096 filters and a 1x1 one with 4096 (``conv6``,
    ``conv7``; ReLU, dropout 0.5 in training), a 1x1 score layer (``score_fr``; He
    normal, with a bias). ``"8s"``: a x2 transposed convolution (kernel 4, ``"valid"``, no
    bias, learnable: ``upscore2``) is added to a 1x1 score layer on ``f4``
    (``score_pool4``), another (``upscore_pool4``) to one on ``f3`` (``score_pool3``),
    each pair first cropped at its end to the smaller's size, as keras-segmentation's
    ``crop``; then a learnable x8 transposed convolution (kernel 16, ``"valid"``, no bias:
    ``upscore8``). ``"32s"``: a learnable x32 one (kernel 64: ``upscore32``) on the scores.
    Unlike the FCN paper's network (:class:`fcnjax.models.FCN`), every upsampler is
    learnt, from Keras' default (Glorot uniform) initialisation.

    keras-segmentation's output is ``8 * (H / 8) + 8`` (``32 * (H / 32) + 32``) pixels
    high, the last transposed convolution's "valid" output, and is trained on masks
    resized to it; its pixel ``f / 2 + i`` is centred on the input's pixel ``i`` (``f``
    the final stride), so fcnjax crops it there: the logits are keras-segmentation's
    output without ``f / 2`` pixels on each side. Any input size: zero-padded at the end
    to a multiple of 32, the logits cropped back (keras-segmentation asserts multiples of
    32 for VGG16, ResNet-50 and MobileNet; the same numbers there).

    Attributes:
      num_classes: number of classes.
      variant: ``"8s"`` (``fcn_8``) or ``"32s"`` (``fcn_32``).
      backbone: an encoder of :data:`fcnjax.models.encoders.ENCODERS` (``"vanilla"``,
        ``"vgg16"``, ``"resnet50"``, ...), under ``params["backbone"]``.
      backbone_style: a ResNet's arithmetic, ``"torchvision"`` or ``"keras"``.
      width: channel multiplier of the encoder and of conv6 / conv7.
      dropout: dropout rate after conv6 and conv7 in training.
      bn_axis_name: the mapped axis whose devices share batch statistics (pmap).
      dtype: computation dtype; param_dtype: parameter dtype.

    Returns logits ``(N, H, W, num_classes)``.

    >>> import jax, jax.numpy as jnp
    >>> model = EncoderFCN(3, width=0.0625)
    >>> x = jnp.ones((1, 97, 131, 3))
    >>> variables = jax.eval_shape(model.init, jax.random.key(0), x)
    >>> jax.eval_shape(model.apply, variables, x).shape
    (1, 97, 131, 3)
    >>> variables["params"]["upscore8"]["kernel"].shape
    (16, 16, 3, 3)
    """

    num_classes: int
    variant: str = "8s"
    backbone: str = "vanilla"
    backbone_style: str = "torchvision"
    width: float = 1.0
    dropout: float = 0.5
    bn_axis_name: str | None = None
    dtype: DTypeLike | None = None
    param_dtype: DTypeLike = jnp.float32

    @nn.compact
    def __call__(self, x: ArrayLike, train: bool = False) -> Array:
        x = jnp.asarray(x)
        if x.ndim != 4:
            raise ValueError(f"EncoderFCN input must be (N, H, W, C); got shape {x.shape}.")
        if not isinstance(self.num_classes, int) or self.num_classes < 1:
            raise ValueError(f"`num_classes` must be a positive int; got {self.num_classes!r}.")
        if self.variant not in ("8s", "32s"):
            raise ValueError(f"`variant` must be '8s' or '32s'; got {self.variant!r}.")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"`dropout` must be a rate in [0, 1); got {self.dropout!r}.")
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        k, he = self.num_classes, nn.initializers.he_normal()  # Keras' he_normal
        padded, size = pad_to_multiple(x, input_multiple(self.backbone, 5))
        f = levels(
            encoder(
                self.backbone,
                width=self.width,
                style=self.backbone_style,
                bn_axis_name=self.bn_axis_name,
                **kw,
            )(padded, train)
        )
        o = f[4]
        for name, window in (("conv6", 7), ("conv7", 1)):
            o = Conv(scaled(4096, self.width), window, kernel_init=_glorot, name=name, **kw)(o)
            o = nn.Dropout(self.dropout, deterministic=not train)(nn.relu(o))
        o = Conv(k, 1, kernel_init=he, name="score_fr", **kw)(o)
        up = dict(padding="VALID", use_bias=False, kernel_init=_glorot, **kw)
        if self.variant == "8s":
            for skip, tap, upscore in (
                (f[3], "pool4", "upscore2"),
                (f[2], "pool3", "upscore_pool4"),
            ):
                o = ConvTranspose(k, 4, 2, name=upscore, **up)(o)
                side = Conv(k, 1, kernel_init=he, name=f"score_{tap}", **kw)(skip)
                o, side = _crop_both(o, side)
                o = o + side
        factor = 8 if self.variant == "8s" else 32
        o = ConvTranspose(k, 2 * factor, factor, name=f"upscore{factor}", **up)(o)
        return crop_to(o, size, factor // 2)
