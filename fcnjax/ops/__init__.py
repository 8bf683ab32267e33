"""Pure-function operations: transposed convolution, bilinear upsampling, max-unpooling,
adaptive average pooling, bilinear resizing with aligned corners.

Everything here works on plain arrays, without Flax: ``from fcnjax import ops``.
"""

from fcnjax.ops._args import per_dim
from fcnjax.ops._conv import conv
from fcnjax.ops._conv_transpose import METHODS, conv_transpose, select_method, zero_insert
from fcnjax.ops._geometry import (
    ConvTransposeGeometry,
    conv_transpose_geometry,
    conv_transpose_shape,
)
from fcnjax.ops._kernels import (
    kernel_from_keras,
    kernel_from_torch,
    kernel_to_keras,
    kernel_to_torch,
)
from fcnjax.ops._pooling import adaptive_avg_pool, max_pool, max_pool_with_argmax, max_unpool
from fcnjax.ops._resize import resize_align_corners
from fcnjax.ops._upsample import (
    bilinear_filter,
    bilinear_kernel,
    resize_logits,
    upsample_bilinear,
)

__all__ = [
    "METHODS",
    "ConvTransposeGeometry",
    "adaptive_avg_pool",
    "bilinear_filter",
    "bilinear_kernel",
    "conv",
    "conv_transpose",
    "conv_transpose_geometry",
    "conv_transpose_shape",
    "kernel_from_keras",
    "kernel_from_torch",
    "kernel_to_keras",
    "kernel_to_torch",
    "max_pool",
    "max_pool_with_argmax",
    "max_unpool",
    "per_dim",
    "resize_align_corners",
    "resize_logits",
    "select_method",
    "upsample_bilinear",
    "zero_insert",
]
