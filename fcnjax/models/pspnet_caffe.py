"""keras-segmentation's ``pspnet_50`` and ``pspnet_101`` (``_pspnet_2.py``'s
``_build_pspnet``): the original PSPNet (Zhao et al., 2017, "Pyramid Scene Parsing
Network"), its Caffe network as Vladkryvoruchko's Keras port writes it.

Not :class:`fcnjax.models.PSPNet` (keras-segmentation's ``pspnet``, ``vgg_pspnet``,
``resnet50_pspnet``: pyramid pooling on an encoder's stride-32 features): here a dilated
ResNet-50/101 of Caffe's own layout keeps stride 8, and the layers carry the Caffe
model's names, so that keras-segmentation's pretrained files
(:func:`fcnjax.weights.load_pspnet_caffe`) load by name.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from fcnjax import ops
from fcnjax.layers import Conv
from fcnjax.models.vgg import scaled
from fcnjax.typing import Array, ArrayLike, DTypeLike

__all__ = ["BLOCKS", "PSPNetCaffe", "POOL_WINDOWS", "PYRAMID", "layer_names"]

# Residual blocks of stages 2 ... 5 (Caffe's conv2_x ... conv5_x).
BLOCKS = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}
# Stage -> (width multiple of 64 / 256, first block's stride, dilation of its 3x3s).
_STAGES = {2: (1, 1, 1), 3: (2, 2, 1), 4: (4, 1, 2), 5: (8, 1, 4)}
PYRAMID = (1, 2, 3, 6)  # pyramid levels (bins per side)
# keras-segmentation's interp_block: the only input sizes it builds, and its pooling
# window (= stride) per level: the stride-8 feature's size over the level's bins.
POOL_WINDOWS = {(473, 473): {1: 60, 2: 30, 3: 20, 6: 10}, (713, 713): {1: 90, 2: 45, 3: 30, 6: 15}}
_STEM = (("conv1_1_3x3_s2", 64, 2), ("conv1_2_3x3", 64, 1), ("conv1_3_3x3", 128, 1))
_glorot = nn.initializers.glorot_uniform()  # Keras' default, which _pspnet_2.py keeps


def _block_names(stage: int, block: int) -> tuple[str, ...]:
    base = f"conv{stage}_{block}_"
    convs = ("1x1_reduce", "3x3", "1x1_increase") + (("1x1_proj",) if block == 1 else ())
    return tuple(base + c for c in convs)


def layer_names(depth: int) -> tuple[str, ...]:
    """The convolutions of ``pspnet_<depth>`` in the order keras-segmentation builds them;
    each but ``conv6`` is followed by a BatchNorm named ``<convolution>_bn``.

    >>> names = layer_names(50)
    >>> names[:4]
    ('conv1_1_3x3_s2', 'conv1_2_3x3', 'conv1_3_3x3', 'conv2_1_1x1_reduce')
    >>> names[-3:], len(names), len(layer_names(101))
    (('conv5_3_pool6_conv', 'conv5_4', 'conv6'), 61, 112)
    """
    if depth not in BLOCKS:
        raise ValueError(f"`depth` must be 50 or 101; got {depth!r}.")
    out = [name for name, _, _ in _STEM]
    for stage, blocks in zip(_STAGES, BLOCKS[depth]):
        for b in range(1, blocks + 1):
            out += _block_names(stage, b)
    out += [f"conv5_3_pool{p}_conv" for p in PYRAMID]
    return (*out, "conv5_4", "conv6")


def _resize(x: Array, size: tuple[int, int]) -> Array:
    """Bilinear, half-pixel centres: TF 2's ``tf.image.resize``, which keras-segmentation's
    ``Interp`` layer calls."""
    return jax.image.resize(x, (x.shape[0], *size, x.shape[-1]), "bilinear").astype(x.dtype)


class PSPNetCaffe(nn.Module):
    """keras-segmentation's ``pspnet_50`` (``depth=50``) and ``pspnet_101`` (``depth=101``).

    * Stem: three 3x3 convolutions without bias (``conv1_1_3x3_s2`` of 64 filters at
      stride 2, ``conv1_2_3x3`` of 64, ``conv1_3_3x3`` of 128; TF "same" padding), each
      with BatchNorm and ReLU, and 3x3 max pooling at stride 2 ("same").
    * A ResNet-50/101 (3, 4, 6 or 23, 3 bottleneck blocks; Caffe's ResNet v1: a block's
      stride on its first 1x1 convolution, no biases): ``conv{s}_{b}_1x1_reduce``,
      ``_3x3``, ``_1x1_increase`` and, in a stage's first block, the shortcut
      ``_1x1_proj``. Stage 3 halves the size; stages 4 and 5 keep stride 8 and dilate
      their 3x3 convolutions by 2 and 4. The features: ``ceil(H / 8) x ceil(W / 8)``,
      2048 channels.
    * Pyramid pooling: for ``p`` = 1, 2, 3, 6 the features are average-pooled into
      ``p x p`` bins, convolved (1x1, 512, no bias: ``conv5_3_pool<p>_conv``), normalised
      and resized back (bilinear); concatenated after the features in the order 6, 3, 2, 1.
    * ``conv5_4`` (3x3, 512, no bias), BatchNorm, ReLU, dropout 0.1 in training, ``conv6``
      (1x1 to the classes, with bias) and a bilinear resize to the input's size.

    Every BatchNorm (``<conv>_bn``) has momentum 0.95 and epsilon 1e-5 (Caffe's).

    Sizes: keras-segmentation builds only 473x473 inputs (feature 60x60: pooling windows
    60, 30, 20, 10) and 713x713 (90x90: 90, 45, 30, 15), :data:`POOL_WINDOWS`; elsewhere it
    exits. There the windows divide the feature into exactly ``p`` bins, which are the
    bins of :func:`fcnjax.ops.adaptive_avg_pool` (PyTorch's ``AdaptiveAvgPool2d``, which
    the PSPNet authors' PyTorch code uses). fcnjax pools with it at every size: at
    keras-segmentation's sizes the same numbers, at any other (odd, small, non-square)
    ``p`` bins that cover the feature, neighbouring ones sharing a sample where ``p`` does
    not divide it.

    Resizing is TF 2's bilinear with half-pixel centres, as keras-segmentation's ``Interp``
    runs under TF 2 (Caffe's ``Interp`` and the Keras port's TF 1 code align corners).

    Attributes:
      num_classes: number of classes (keras-segmentation's pretrained files: 150 for
        ADE20K at 473, 19 for Cityscapes at 713, 21 for VOC 2012 at 473).
      depth: 50 or 101.
      dropout: dropout rate before ``conv6`` in training (0.1).
      width: channel multiplier of every convolution but ``conv6`` (tests).
      bn_axis_name: the mapped axis whose devices share batch statistics (pmap).
      dtype: computation dtype; param_dtype: parameter dtype.

    Returns logits ``(N, H, W, num_classes)`` (keras-segmentation's softmax omitted).

    >>> import jax, jax.numpy as jnp
    >>> model = PSPNetCaffe(150, width=0.0625)
    >>> x = jnp.ones((1, 97, 131, 3))
    >>> variables = jax.eval_shape(model.init, jax.random.key(0), x)
    >>> jax.eval_shape(model.apply, variables, x).shape
    (1, 97, 131, 150)
    >>> variables["params"]["conv5_4"]["kernel"].shape  # 2048 + 4 * 512 channels, scaled
    (3, 3, 256, 32)
    """

    num_classes: int
    depth: int = 50
    dropout: float = 0.1
    width: float = 1.0
    bn_axis_name: str | None = None
    dtype: DTypeLike | None = None
    param_dtype: DTypeLike = jnp.float32

    def _check(self, x: Array) -> None:
        if x.ndim != 4:
            raise ValueError(f"PSPNetCaffe input must be (N, H, W, C); got shape {x.shape}.")
        if not isinstance(self.num_classes, int) or self.num_classes < 1:
            raise ValueError(f"`num_classes` must be a positive int; got {self.num_classes!r}.")
        if self.depth not in BLOCKS:
            raise ValueError(f"`depth` must be 50 or 101; got {self.depth!r}.")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"`dropout` must be a rate in [0, 1); got {self.dropout!r}.")

    @nn.compact
    def __call__(self, x: ArrayLike, train: bool = False) -> Array:
        x = jnp.asarray(x)
        self._check(x)
        input_size = x.shape[1:3]
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)

        def conv_bn(h, name, filters, k=1, stride=1, dilation=1, padding="VALID", relu=True):
            h = Conv(
                scaled(filters, self.width),
                k,
                stride,
                padding=padding,
                kernel_dilation=dilation,
                use_bias=False,
                kernel_init=_glorot,
                name=name,
                **kw,
            )(h)
            h = nn.BatchNorm(
                use_running_average=not train,
                momentum=0.95,
                epsilon=1e-5,
                axis_name=self.bn_axis_name,
                name=f"{name}_bn",
                **kw,
            )(h)
            return nn.relu(h) if relu else h

        for name, filters, stride in _STEM:
            x = conv_bn(x, name, filters, 3, stride, padding="SAME")
        x = nn.max_pool(x, (3, 3), (2, 2), padding="SAME")  # -inf padding, as TF's "same"
        for stage, blocks in zip(_STAGES, BLOCKS[self.depth]):
            level, stride, d = _STAGES[stage]
            for b in range(1, blocks + 1):
                s = stride if b == 1 else 1
                reduce, mid, increase, *proj = _block_names(stage, b)
                h = conv_bn(x, reduce, 64 * level, 1, s)
                h = conv_bn(h, mid, 64 * level, 3, dilation=d, padding=((d, d), (d, d)))
                h = conv_bn(h, increase, 256 * level, relu=False)
                shortcut = conv_bn(x, proj[0], 256 * level, 1, s, relu=False) if proj else x
                x = nn.relu(h + shortcut)
        size = x.shape[1:3]
        pooled = {
            p: conv_bn(ops.adaptive_avg_pool(x, p), f"conv5_3_pool{p}_conv", 512) for p in PYRAMID
        }
        x = jnp.concatenate([x] + [_resize(pooled[p], size) for p in PYRAMID[::-1]], axis=-1)
        x = conv_bn(x, "conv5_4", 512, 3, padding="SAME")
        x = nn.Dropout(self.dropout, deterministic=not train)(x)
        x = Conv(self.num_classes, 1, kernel_init=_glorot, name="conv6", **kw)(x)
        return _resize(x, input_size)
