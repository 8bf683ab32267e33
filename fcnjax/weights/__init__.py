"""Pretrained backbone weights: VGG16 from Keras or torchvision files.

FCN starts from an ImageNet-trained VGG16. :func:`load_vgg16` reads one of the two
public releases, or a file of the same layout (any width), and returns plain NumPy
parameters for :class:`~fcnjax.models.vgg.VGG16` together with the input normalisation
the weights were trained with (:class:`Preprocessing`); :func:`into_backbone` places them
in a model's parameter tree.

The package is one loader shared by every backbone and one module of key maps per
network:

* :mod:`fcnjax.weights.files`: local paths or URLs (downloaded once into
  :func:`default_cache_dir` through :mod:`fcnjax.download`, checked against
  :data:`KNOWN_CHECKSUMS`), and the file formats: **Keras HDF5** (``keras.applications``;
  ``model.save_weights("w.h5")`` in Keras 2, or ``legacy_h5_format`` in Keras 3), PyTorch
  ``.pth``/``.pt`` state dicts (read with ``torch.load(..., weights_only=True)``; needs
  torch) and ``.safetensors`` (no torch). No code from a file is ever executed.
* :mod:`fcnjax.weights.vgg16`: VGG16's tensor names in Keras' and torchvision's releases,
  and their conversion to fcnjax's layout (FCN's convolutionalised ``fc6``/``fc7``).
* :mod:`fcnjax.weights.backbone`: :func:`into_backbone`, for any backbone.

:class:`Preprocessing`, :data:`KERAS_CAFFE` and :data:`TORCHVISION` live in
:mod:`fcnjax.data.transforms` (the input pipeline applies them) and are re-exported here.
"""

from fcnjax.data.transforms import KERAS_CAFFE, TORCHVISION, Preprocessing
from fcnjax.weights.backbone import into_backbone
from fcnjax.weights.files import KNOWN_CHECKSUMS, WeightsUnavailableError, default_cache_dir
from fcnjax.weights.vgg16 import TORCHVISION_VGG16_URL, VGG16_URLS, load_vgg16

__all__ = [
    "KERAS_CAFFE",
    "KNOWN_CHECKSUMS",
    "TORCHVISION",
    "TORCHVISION_VGG16_URL",
    "VGG16_URLS",
    "Preprocessing",
    "WeightsUnavailableError",
    "default_cache_dir",
    "into_backbone",
    "load_vgg16",
]
