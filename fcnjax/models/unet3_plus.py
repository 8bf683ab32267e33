"""UNet 3+ (Huang et al., 2020): a U-Net whose every decoder stage reads every scale."""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from fcnjax import ops
from fcnjax.layers import Conv, crop_to
from fcnjax.models.vgg import he_normal, scaled
from fcnjax.typing import Array, ArrayLike, DTypeLike

__all__ = ["UNet3Plus"]


def _bn_scale_init(key: Array, shape: Sequence[int], dtype: DTypeLike = jnp.float32) -> Array:
    # The authors' init_weights('kaiming') draws BatchNorm weights from N(1, 0.02).
    return 1 + 0.02 * jax.random.normal(key, shape, dtype)


def _ceil_max_pool(x: ArrayLike, window: int) -> Array:
    """Non-overlapping ``window`` x ``window`` max pooling with PyTorch's ``ceil_mode=True``:
    windows start at 0 and the last one may overhang the end (never the start, unlike
    ``"SAME"`` padding, which splits its overhang between both ends).

    ``(N, H, W, C) -> (N, ceil(H / window), ceil(W / window), C)``.

    >>> import jax.numpy as jnp
    >>> _ceil_max_pool(jnp.arange(5.).reshape(1, 5, 1, 1), 4)[0, :, 0, 0]
    Array([3., 4.], dtype=float32)
    """
    x = jnp.asarray(x)
    pads = [(0, 0), *[(0, -s % window) for s in x.shape[1:3]], (0, 0)]
    return ops.max_pool(jnp.pad(x, pads, constant_values=-jnp.inf), window)


class UNet3Plus(nn.Module):
    """UNet 3+ (Huang et al., ICASSP 2020), as the authors' ``UNet_3Plus``
    (github.com/ZJUGiveLab/UNet-Version, ``models/UNet_3Plus.py``).

    Encoder: five levels of ``unetConv2`` (two Conv 3x3 -> BatchNorm -> ReLU; 64, 128, 256,
    512, 1024 filters), 2x2 max pooling between them; ``h1`` ... ``h5`` (``hd5 = h5``).
    Decoder stage ``d`` = 4, 3, 2, 1 reads all five scales: ``h1 ... h(d-1)`` max-pooled
    (``ceil_mode``) by ``2 ** (d - j)``, ``hd`` itself, ``hd(d+1) ... hd5`` bilinearly
    upsampled by ``2 ** (j - d)``; each through Conv 3x3 to ``cat_channels`` (64) ->
    BatchNorm -> ReLU, concatenated in that order (``UpChannels`` = 5 x 64 = 320) and fused
    by Conv 3x3 (320) -> BatchNorm -> ReLU. A Conv 3x3 of ``hd1`` gives the logits (the
    authors' forward ends in a sigmoid; fcnjax returns logits, the task's loss applies
    softmax or sigmoid). Parameters carry the authors' names: ``h1_PT_hd4_conv``,
    ``hd5_UT_hd4_bn``, ``conv4d_1``, ``bn4d_1``, ``outconv1``; their ``conv{l}.conv{i}.0``
    / ``.1`` are ``conv{l}_{i}`` / ``conv{l}_{i}_bn``. Longer or shorter ``filters`` give
    that many levels, by the same rule. Not here: the deep-supervision and
    classification-guided variants (``UNet_3Plus_DeepSup``, ``..._CGM``).

    Any input size. The authors' code assumes sizes divisible by 16 (floor pooling, fixed
    x2 ... x16 upsamplers); fcnjax pools the encoder with ``ceil_mode`` too, so that level
    ``l`` has ``ceil(H / 2 ** (l - 1))`` rows, exactly what the decoder's ceil-mode pooling
    of any finer level gives; and it upsamples by the exact factor, then crops the end.
    Every coarse sample then stays over the block of pixels it pooled (top-left aligned),
    as at divisible sizes; resizing to the target's size instead would stretch the grid by
    up to half a coarse sample. At sizes divisible by ``2 ** (len(filters) - 1)`` this is
    the authors' arithmetic exactly; logits are always at the input size.

    Attributes:
      num_classes: number of classes (the output convolution's filters).
      width: multiplies every channel count (``filters`` and ``cat_channels``), at least 1.
      filters: the encoder's channels per level.
      cat_channels: each scale's channels in a decoder stage (the authors' ``CatChannels``);
        None: ``filters[0]``, as the authors.
      bn_momentum: BatchNorm running-average momentum (PyTorch's 0.1 is 0.9 here).
      bn_axis_name: the mapped axis to average batch statistics over (data parallel).
      dtype: computation dtype; param_dtype: parameter dtype.

    Initialisation as the authors': convolution kernels He normal (fan-in), BatchNorm
    scales N(1, 0.02); biases zero (theirs keep PyTorch's default uniform).

    Returns logits ``(N, H, W, num_classes)``. Batch statistics are in the
    ``batch_stats`` collection: pass ``mutable=["batch_stats"]`` with ``train=True``.

    >>> import jax, jax.numpy as jnp
    >>> model = UNet3Plus(2, width=0.125)
    >>> x = jnp.ones((1, 37, 45, 3))
    >>> variables = jax.eval_shape(model.init, jax.random.key(0), x)
    >>> jax.eval_shape(model.apply, variables, x).shape
    (1, 37, 45, 2)
    """

    num_classes: int
    width: float = 1.0
    filters: Sequence[int] = (64, 128, 256, 512, 1024)
    cat_channels: int | None = None
    bn_momentum: float = 0.9
    bn_axis_name: str | None = None
    dtype: DTypeLike | None = None
    param_dtype: DTypeLike = jnp.float32

    def _check(self, x: Array) -> None:
        if x.ndim != 4:
            raise ValueError(f"UNet3Plus input must be (N, H, W, C); got shape {x.shape}.")
        if int(self.num_classes) < 1:
            raise ValueError(f"`num_classes` must be a positive int; got {self.num_classes!r}.")
        if len(self.filters) < 2 or any(int(f) < 1 for f in self.filters):
            raise ValueError(f"`filters` must be two or more positive ints; got {self.filters!r}.")
        if self.cat_channels is not None and int(self.cat_channels) < 1:
            raise ValueError(
                f"`cat_channels` must be a positive int or None; got {self.cat_channels!r}."
            )
        if not 0 <= self.bn_momentum < 1:
            raise ValueError(f"`bn_momentum` must be in [0, 1); got {self.bn_momentum!r}.")

    def _conv_bn_relu(self, h: Array, features: int, conv: str, bn: str, train: bool) -> Array:
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        h = Conv(features, 3, padding="SAME", kernel_init=he_normal, name=conv, **kw)(h)
        h = nn.BatchNorm(
            use_running_average=not train,
            momentum=self.bn_momentum,
            epsilon=1e-5,
            scale_init=_bn_scale_init,
            axis_name=self.bn_axis_name,
            name=bn,
            **kw,
        )(h)
        return nn.relu(h)

    @nn.compact
    def __call__(self, x: ArrayLike, train: bool = False) -> Array:
        x = jnp.asarray(x)
        self._check(x)
        filters = [scaled(int(f), self.width) for f in self.filters]
        cat = scaled(int(self.cat_channels or self.filters[0]), self.width)
        n = len(filters)

        h, enc = x, []  # enc[l - 1] is the authors' h{l}
        for level, f in enumerate(filters, start=1):
            if level > 1:
                h = _ceil_max_pool(h, 2)  # theirs: MaxPool2d(2), the same at even sizes
            for i in (1, 2):
                h = self._conv_bn_relu(h, f, f"conv{level}_{i}", f"conv{level}_{i}_bn", train)
            enc.append(h)

        dec = {n: enc[-1]}  # hd5 = h5
        for d in range(n - 1, 0, -1):
            size = enc[d - 1].shape[1:3]
            parts = []
            for j in range(1, n + 1):
                if j < d:
                    src, name = _ceil_max_pool(enc[j - 1], 2 ** (d - j)), f"h{j}_PT_hd{d}"
                elif j == d:
                    src, name = enc[d - 1], f"h{d}_Cat_hd{d}"
                else:
                    up = ops.upsample_bilinear(dec[j], 2 ** (j - d)).astype(dec[j].dtype)
                    src, name = crop_to(up, size), f"hd{j}_UT_hd{d}"
                parts.append(self._conv_bn_relu(src, cat, f"{name}_conv", f"{name}_bn", train))
            fused = jnp.concatenate(parts, axis=-1)
            dec[d] = self._conv_bn_relu(fused, cat * n, f"conv{d}d_1", f"bn{d}d_1", train)

        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        return Conv(self.num_classes, 3, kernel_init=he_normal, name="outconv1", **kw)(dec[1])
