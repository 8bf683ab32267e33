"""FCN on a dilated ResNet, as torchvision's ``fcn_resnet50`` and ``fcn_resnet101``."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from fcnjax.layers import Conv
from fcnjax.models.encoders import RESNETS, encoder
from fcnjax.typing import Array, ArrayLike, DTypeLike

__all__ = ["FCNResNet", "fcn_head"]

_PAD1 = ((1, 1), (1, 1))


def fcn_head(
    x: Array,
    num_classes: int,
    dropout: float,
    name: str,
    train: bool,
    bn_axis_name: str | None = None,
    **kw,
) -> Array:
    """torchvision's ``FCNHead``, called inside a compact module (the layers are its):
    a 3x3 convolution to a quarter of the channels without bias (``{name}_conv``),
    BatchNorm (``{name}_bn``), ReLU, dropout and a 1x1 convolution to the classes
    (``{name}_out``). ``kw``: ``dtype``, ``param_dtype``. Also DeepLabV3's auxiliary head."""
    # fcnjax's Conv: the kernel gradient as matrix products (ops.conv), faster on CPU.
    x = Conv(x.shape[-1] // 4, 3, padding=_PAD1, use_bias=False, name=f"{name}_conv", **kw)(x)
    x = nn.BatchNorm(
        use_running_average=not train,
        momentum=0.9,
        epsilon=1e-5,
        axis_name=bn_axis_name,
        name=f"{name}_bn",
        **kw,
    )(x)
    x = nn.Dropout(dropout, deterministic=not train)(nn.relu(x))
    return Conv(num_classes, 1, name=f"{name}_out", **kw)(x)


class FCNResNet(nn.Module):
    """torchvision's FCN-ResNet: a ResNet at output stride 8 and FCN's head, upsampled.

    The encoder keeps stride 8 by dilating ``layer3`` and ``layer4`` (2 and 4). The head
    (torchvision's ``FCNHead``) is a 3x3 convolution to a quarter of its input channels
    (512 for ResNet-50), BatchNorm, ReLU, dropout and a 1x1 convolution to the classes;
    the scores are bilinearly resized (half-pixel, PyTorch's ``align_corners=False``) to
    the input. With ``aux_loss=True`` an auxiliary head on ``layer3`` is built as well,
    and in training the model returns ``{"out": logits, "aux": aux_logits}``, which
    :class:`fcnjax.training.tasks.Segmentation` turns into torchvision's recipe loss, ``out +
    0.5 * aux``; evaluation returns the logits alone. ``fcn_resnet50`` with ``aux_loss``
    and 21 classes has torchvision's 35,322,218 parameters.

    Attributes:
      num_classes: number of classes.
      backbone: ``"resnet50"`` (torchvision's ``fcn_resnet50``) or ``"resnet101"`` (any
        ResNet works).
      backbone_style: ``"torchvision"`` or ``"keras"`` (the weights file decides).
      aux_loss: also build and train the auxiliary head.
      dropout: dropout in the heads (0.1).
      width: channel multiplier of the encoder and heads.
      bn_axis_name: the mapped axis whose devices share batch statistics (pmap).
      dtype: computation dtype; param_dtype: parameter dtype.

    Returns logits ``(N, H, W, num_classes)``.

    >>> import jax, jax.numpy as jnp
    >>> model = FCNResNet(21, aux_loss=True)
    >>> x = jnp.ones((1, 97, 131, 3))
    >>> variables = jax.eval_shape(model.init, jax.random.key(0), x)
    >>> sum(a.size for a in jax.tree.leaves(variables["params"]))
    35322218
    >>> jax.eval_shape(model.apply, variables, x).shape
    (1, 97, 131, 21)
    """

    num_classes: int
    backbone: str = "resnet50"
    backbone_style: str = "torchvision"
    aux_loss: bool = False
    dropout: float = 0.1
    width: float = 1.0
    bn_axis_name: str | None = None
    dtype: DTypeLike | None = None
    param_dtype: DTypeLike = jnp.float32

    def _head(self, x: Array, name: str, train: bool) -> Array:
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        return fcn_head(x, self.num_classes, self.dropout, name, train, self.bn_axis_name, **kw)

    @nn.compact
    def __call__(self, x: ArrayLike, train: bool = False) -> Array | dict[str, Array]:
        if self.backbone not in RESNETS:
            raise ValueError(
                f"`backbone` must be a ResNet, one of {tuple(RESNETS)}; got {self.backbone!r}."
            )
        if int(self.num_classes) < 1:
            raise ValueError(f"`num_classes` must be a positive int; got {self.num_classes!r}.")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"`dropout` must be a rate in [0, 1); got {self.dropout!r}.")
        x = jnp.asarray(x)
        if x.ndim != 4:
            raise ValueError(f"FCNResNet input must be (N, H, W, C); got shape {x.shape}.")
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        taps = encoder(
            self.backbone,
            width=self.width,
            style=self.backbone_style,
            output_stride=8,
            bn_axis_name=self.bn_axis_name,
            **kw,
        )(x, train)
        size = (x.shape[0], *x.shape[1:3], self.num_classes)

        def resize(scores):
            return jax.image.resize(scores, size, "bilinear").astype(scores.dtype)

        out = resize(self._head(taps["layer4"], "classifier", train))
        if not self.aux_loss:
            return out
        aux = resize(self._head(taps["layer3"], "aux_classifier", train))
        return {"out": out, "aux": aux} if train else out
