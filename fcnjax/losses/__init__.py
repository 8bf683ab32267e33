"""Losses for segmentation, of ``f[N, H, W, K]`` logits and ``int[N, H, W]`` masks with an
ignore label, and the autoencoder's reconstruction error.

- Per pixel: :func:`softmax_cross_entropy` (class weights, FCN's summed form),
  :func:`softmax_focal_loss` (Lin et al., per-class ``alpha``); with one sigmoid output
  (binary, ``K = 1``): :func:`sigmoid_binary_cross_entropy`, :func:`sigmoid_focal_loss`
  (optax's, per pixel).
- Regions, a ratio of sums over the whole batch (segmentation_models_pytorch's smoothing,
  ``log_loss`` and ``classes``; softmax, or a binary network's foreground):
  :func:`dice_loss`, :func:`jaccard_loss`, :func:`tversky_loss` (focal Tversky with
  ``gamma``), each also as :func:`region_sums` (sums that add over devices and batches)
  and ``*_from_sums`` (the ratio, once). optax's ``dice_loss`` smooths differently (its
  Dice with ``smooth=s`` is ours with ``2s``), so it is not used.
- The Lovász extension of the Jaccard loss (Berman et al.): :func:`lovasz_softmax` and,
  for one output, :func:`lovasz_hinge`, per batch or per image.
- :func:`mean_squared_error` for reconstructions.

Pure and jittable. Argument checks read only static shapes, dtypes and Python numbers, so
they raise the same ``ValueError`` under ``jax.jit`` as outside it. Pixels that do not count
(the ignore label, a label out of range, ``where`` False) reach neither a value nor a
gradient, whatever their logits hold.
"""

from fcnjax.losses._focal import (
    sigmoid_binary_cross_entropy,
    sigmoid_focal_loss,
    softmax_focal_loss,
)
from fcnjax.losses._lovasz import lovasz_grad, lovasz_hinge, lovasz_softmax
from fcnjax.losses._pixel import mean_squared_error, pixel_weights, softmax_cross_entropy
from fcnjax.losses._region import (
    dice_from_sums,
    jaccard_from_sums,
    region_sums,
    tversky_from_sums,
)
from fcnjax.losses._region_loss import dice_loss, jaccard_loss, tversky_loss

__all__ = [
    "dice_from_sums",
    "dice_loss",
    "jaccard_from_sums",
    "jaccard_loss",
    "lovasz_grad",
    "lovasz_hinge",
    "lovasz_softmax",
    "mean_squared_error",
    "pixel_weights",
    "region_sums",
    "sigmoid_binary_cross_entropy",
    "sigmoid_focal_loss",
    "softmax_cross_entropy",
    "softmax_focal_loss",
    "tversky_from_sums",
    "tversky_loss",
]
