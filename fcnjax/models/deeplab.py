"""DeepLabV3 as torchvision ships it (``deeplabv3_resnet50``, ``deeplabv3_resnet101``) and
DeepLabV3+ as segmentation_models_pytorch builds it (``smp.DeepLabV3Plus``), on ResNets.

References:
  Chen, Papandreou, Schroff & Adam, "Rethinking Atrous Convolution for Semantic Image
  Segmentation", 2017 (DeepLabV3); Chen, Zhu, Papandreou, Schroff & Adam,
  "Encoder-Decoder with Atrous Separable Convolution for Semantic Image Segmentation",
  ECCV 2018 (DeepLabV3+). torchvision's ``models/segmentation/deeplabv3.py`` (commit
  0289e3f); segmentation_models.pytorch's ``decoders/deeplabv3/{decoder,model}.py``,
  ``base/heads.py`` and ``encoders/_base.py`` (0.5.1.dev0, commit 5006616).
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from fcnjax import ops
from fcnjax.layers import Conv, crop_to, pad_to_multiple
from fcnjax.models.aspp import ASPP, ATROUS_RATES, SeparableConv, batch_norm
from fcnjax.models.encoders import RESNETS, encoder, levels
from fcnjax.models.fcn_resnet import fcn_head
from fcnjax.models.vgg import scaled
from fcnjax.typing import Array, ArrayLike, DTypeLike

__all__ = ["DeepLabV3", "DeepLabV3Plus"]

# smp's initialize_decoder (Kaiming uniform, fan in) and initialize_head (Xavier uniform).
_kaiming_uniform = nn.initializers.variance_scaling(2.0, "fan_in", "uniform")
_xavier_uniform = nn.initializers.glorot_uniform()


# torchvision's DeepLabV3 on a MobileNetV3 (``_deeplabv3_mobilenetv3``): the dilated
# encoder (output stride 16), the head on its last, 960-channel features and the auxiliary
# head on the 40-channel stride-8 ones; on a ResNet stride 8, ``layer4`` and ``layer3``.
_TAPS = {"mobilenet_v3_large": (16, "high", "low")}


def _check(model: nn.Module, x: ArrayLike) -> Array:
    if not isinstance(model.num_classes, int) or model.num_classes < 1:
        raise ValueError(f"`num_classes` must be a positive int; got {model.num_classes!r}.")
    for field in ("dropout", "aspp_dropout"):
        rate = getattr(model, field, 0.0)
        if not 0 <= rate < 1:
            raise ValueError(f"`{field}` must be a rate in [0, 1); got {rate!r}.")
    x = jnp.asarray(x)
    if x.ndim != 4:
        raise ValueError(f"{type(model).__name__} input must be (N, H, W, C); got {x.shape}.")
    return x


class DeepLabV3(nn.Module):
    """torchvision's DeepLabV3: a ResNet at output stride 8 (or a MobileNetV3-Large at
    16), ``DeepLabHead``, upsampled.

    The encoder keeps stride 8 by dilating ``layer3`` and ``layer4`` (2 and 4;
    torchvision's ``replace_stride_with_dilation=[False, True, True]``). The head
    (``DeepLabHead``) is :class:`~fcnjax.models.aspp.ASPP` on ``layer4`` (rates 12, 24, 36,
    256 features, dropout 0.5; ``aspp``), a 3x3 convolution of 256 without bias
    (``classifier_conv``), BatchNorm (``classifier_bn``), ReLU and a 1x1 convolution to
    the classes (``classifier_out``); the scores are bilinearly resized (half-pixel,
    PyTorch's ``align_corners=False``) to the input, of any size. With ``aux_loss=True``
    an auxiliary ``FCNHead`` on ``layer3`` is built as in :class:`FCNResNet`
    (``aux_classifier_*``), and in training the model returns ``{"out": logits, "aux":
    aux_logits}`` (torchvision's recipe loss ``out + 0.5 * aux``); evaluation returns the
    logits alone. With 21 classes and the auxiliary head, ``deeplabv3_resnet50`` has
    torchvision's 42,004,074 parameters and ``deeplabv3_resnet101`` 60,996,202.
    ``deeplabv3_mobilenet_v3_large`` (``backbone="mobilenet_v3_large"``) reads the dilated
    MobileNetV3-Large's last features (960 channels, stride 16) and puts the auxiliary head
    on its 40-channel stride-8 ones (torchvision's ``low``): 11,029,328 parameters.

    Attributes:
      num_classes: number of classes.
      backbone: ``"resnet50"``, ``"resnet101"`` or ``"mobilenet_v3_large"`` (torchvision's;
        any ResNet works).
      backbone_style: ``"torchvision"`` or ``"keras"`` (the weights file decides).
      aux_loss: also build and train the auxiliary head.
      dropout: the auxiliary head's dropout (0.1), as :class:`FCNResNet`'s.
      aspp_dropout: ASPP's dropout (0.5).
      atrous_rates: ASPP's rates.
      width: channel multiplier of the encoder and the heads.
      bn_axis_name: the mapped axis whose devices share batch statistics (pmap).
      dtype: computation dtype; param_dtype: parameter dtype.

    Returns logits ``(N, H, W, num_classes)``.

    >>> import jax, jax.numpy as jnp
    >>> model = DeepLabV3(21, aux_loss=True)
    >>> x = jnp.ones((1, 97, 131, 3))
    >>> variables = jax.eval_shape(model.init, jax.random.key(0), x)
    >>> sum(a.size for a in jax.tree.leaves(variables["params"]))
    42004074
    >>> jax.eval_shape(model.apply, variables, x).shape
    (1, 97, 131, 21)
    """

    num_classes: int
    backbone: str = "resnet50"
    backbone_style: str = "torchvision"
    aux_loss: bool = False
    dropout: float = 0.1
    aspp_dropout: float = 0.5
    atrous_rates: Sequence[int] = ATROUS_RATES
    width: float = 1.0
    bn_axis_name: str | None = None
    dtype: DTypeLike | None = None
    param_dtype: DTypeLike = jnp.float32

    @nn.compact
    def __call__(self, x: ArrayLike, train: bool = False) -> Array | dict[str, Array]:
        if self.backbone not in _TAPS and self.backbone not in RESNETS:
            raise ValueError(
                f"`backbone` must be a ResNet, one of {tuple(RESNETS)}, or one of "
                f"{tuple(_TAPS)}; got {self.backbone!r}."
            )
        x = _check(self, x)
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        stride, tap, aux_tap = _TAPS.get(self.backbone, (8, "layer4", "layer3"))
        taps = encoder(
            self.backbone,
            width=self.width,
            style=self.backbone_style,
            output_stride=stride,
            bn_axis_name=self.bn_axis_name,
            **kw,
        )(x, train)
        features = scaled(256, self.width)
        h = ASPP(
            features,
            tuple(self.atrous_rates),
            dropout=self.aspp_dropout,
            bn_axis_name=self.bn_axis_name,
            name="aspp",
            **kw,
        )(taps[tap], train)
        pad1 = ((1, 1), (1, 1))
        h = Conv(features, 3, padding=pad1, use_bias=False, name="classifier_conv", **kw)(h)
        h = nn.relu(batch_norm(train, self.bn_axis_name, "classifier_bn", **kw)(h))
        h = Conv(self.num_classes, 1, name="classifier_out", **kw)(h)
        size = (x.shape[0], *x.shape[1:3], self.num_classes)

        def resize(scores):
            return jax.image.resize(scores, size, "bilinear").astype(scores.dtype)

        out = resize(h)
        if not self.aux_loss:
            return out
        aux = fcn_head(
            taps[aux_tap],
            self.num_classes,
            self.dropout,
            "aux_classifier",
            train,
            self.bn_axis_name,
            **kw,
        )
        return {"out": out, "aux": resize(aux)} if train else out


class DeepLabV3Plus(nn.Module):
    """segmentation_models_pytorch's ``DeepLabV3Plus`` (its defaults): ASPP on stride-16
    features, fused with stride-4 features.

    The encoder's ``f5`` is kept at ``output_stride`` 16 (or 8): a ResNet dilates
    ``layer4`` by 2 (and ``layer3`` by 2, ``layer4`` by 4 at 8), every convolution of the
    stage, its first block's too (smp's ``make_dilated``, not torchvision's rule). The
    decoder (smp's ``DeepLabV3PlusDecoder``): separable :class:`~fcnjax.models.aspp.ASPP`
    (rates 12, 24, 36, 256 features, dropout 0.5; ``aspp``), a 3x3
    :class:`~fcnjax.models.aspp.SeparableConv` (``aspp_conv``), BatchNorm (``aspp_bn``),
    ReLU, bilinear upsampling to ``f2``'s size (x4 at output stride 16); ``f2`` (stride 4)
    projected to 48 channels (1x1 without bias, ``block1_conv``, ``block1_bn``, ReLU);
    the two concatenated, a 3x3 separable convolution to 256 (``block2_conv``,
    ``block2_bn``, ReLU). smp's ``SegmentationHead``: a 1x1 convolution to the classes
    with bias (``segmentation_head``) and bilinear x4 upsampling. smp's upsamplings align
    corners (``nn.Upsample(..., align_corners=True)``; :func:`fcnjax.ops.resize_align_corners`),
    its pooling branch does not. Initialisation as smp's: decoder convolutions Kaiming
    uniform (fan in), the head Xavier uniform.

    Sizes: smp refuses heights and widths that are not multiples of the output stride.
    fcnjax takes any size: the input is zero-padded at the end to a multiple of
    ``output_stride`` and the logits cropped back, so at smp's sizes the numbers are its.

    Encoders: any of :data:`fcnjax.models.encoders.ENCODERS` with levels ``f2`` (stride
    4) and ``f5`` that can run at ``output_stride`` (today the ResNets; VGG16 and the
    vanilla encoder only have stride 32, which is an error here).

    Attributes:
      num_classes: number of classes.
      backbone: the encoder, ``"resnet50"`` (``deeplabv3plus_resnet50``), ``"resnet101"``,
        ... under ``params["backbone"]``.
      backbone_style: a ResNet's arithmetic, ``"torchvision"`` (smp's ResNets) or
        ``"keras"``.
      output_stride: 16 (smp's default) or 8: the stride of ``f5``.
      aspp_dropout: ASPP's dropout (0.5; smp's ``decoder_aspp_dropout``).
      atrous_rates: ASPP's rates (smp's ``decoder_atrous_rates``).
      width: channel multiplier of the encoder and the decoder.
      bn_axis_name: the mapped axis whose devices share batch statistics (pmap).
      dtype: computation dtype; param_dtype: parameter dtype.

    Returns logits ``(N, H, W, num_classes)``.

    >>> import jax, jax.numpy as jnp
    >>> model = DeepLabV3Plus(21)
    >>> x = jnp.ones((1, 97, 131, 3))
    >>> variables = jax.eval_shape(model.init, jax.random.key(0), x)
    >>> sum(a.size for a in jax.tree.leaves(variables["params"]))
    26682725
    >>> jax.eval_shape(model.apply, variables, x).shape
    (1, 97, 131, 21)
    """

    num_classes: int
    backbone: str = "resnet50"
    backbone_style: str = "torchvision"
    output_stride: int = 16
    aspp_dropout: float = 0.5
    atrous_rates: Sequence[int] = ATROUS_RATES
    width: float = 1.0
    bn_axis_name: str | None = None
    dtype: DTypeLike | None = None
    param_dtype: DTypeLike = jnp.float32

    def _encoder(self) -> nn.Module:
        if self.output_stride not in (8, 16):
            raise ValueError(f"`output_stride` must be 8 or 16; got {self.output_stride!r}.")
        # smp's make_dilated dilates every convolution of a stage, the first block's too.
        extra = {"dilate_first_block": True} if self.backbone in RESNETS else {}
        try:
            return encoder(
                self.backbone,
                width=self.width,
                style=self.backbone_style,
                output_stride=self.output_stride,
                bn_axis_name=self.bn_axis_name,
                dtype=self.dtype,
                param_dtype=self.param_dtype,
                **extra,
            )
        except ValueError as error:
            raise ValueError(
                f"DeepLabV3Plus needs an encoder that keeps stride {self.output_stride} "
                f"(`output_stride`): {error}"
            ) from error

    @nn.compact
    def __call__(self, x: ArrayLike, train: bool = False) -> Array:
        x = _check(self, x)
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        dec = dict(kernel_init=_kaiming_uniform, **kw)
        padded, size = pad_to_multiple(x, self.output_stride)
        f = levels(self._encoder()(padded, train))
        if len(f) < 5:
            raise ValueError(f"DeepLabV3Plus needs the encoder's f2 and f5; got {len(f)} levels.")
        f2, f5 = f[1], f[4]

        def bn_relu(h, name):
            return nn.relu(batch_norm(train, self.bn_axis_name, name, **kw)(h))

        features = scaled(256, self.width)
        h = ASPP(
            features,
            tuple(self.atrous_rates),
            separable=True,
            dropout=self.aspp_dropout,
            bn_axis_name=self.bn_axis_name,
            name="aspp",
            **dec,
        )(f5, train)
        h = bn_relu(SeparableConv(features, name="aspp_conv", **dec)(h), "aspp_bn")
        h = ops.resize_align_corners(h, f2.shape[1:3])
        low = Conv(scaled(48, self.width), 1, use_bias=False, name="block1_conv", **dec)(f2)
        h = jnp.concatenate([h, bn_relu(low, "block1_bn")], axis=-1)
        h = bn_relu(SeparableConv(features, name="block2_conv", **dec)(h), "block2_bn")
        h = Conv(self.num_classes, 1, kernel_init=_xavier_uniform, name="segmentation_head", **kw)(
            h
        )
        return crop_to(ops.resize_align_corners(h, padded.shape[1:3]), size)
