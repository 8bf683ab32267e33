"""Pretrained backbone weights: VGG16, ResNet and MobileNetV3 from Keras or torchvision files.

FCN starts from an ImageNet-trained VGG16, the models with a ResNet encoder from a ResNet.
:func:`load_vgg16` reads one of VGG16's two public releases, or a file of the same
layout (any width), and returns plain NumPy parameters for
:class:`~fcnjax.models.vgg.VGG16` together with the input normalisation the weights were
trained with (:class:`Preprocessing`); :func:`load_resnet` does the same for
:class:`~fcnjax.models.resnet.ResNet` (torchvision's ``resnet18`` ... ``resnet152`` or
``keras.applications``' ResNet50/101/152), with the BatchNorm statistics and the
arithmetic ``style`` the file needs; :func:`load_mobilenet_v3` reads torchvision's
MobileNetV3-Large (:class:`~fcnjax.models.mobilenet_v3.MobileNetV3Large`, BatchNorm
statistics included). :func:`into_backbone` places them in a model's parameter tree
(and, for a ResNet or MobileNetV3, its ``batch_stats``).

The package is one loader shared by every backbone and one module of key maps per
network:

* :mod:`fcnjax.weights.files`: local paths or URLs (downloaded once into
  :func:`default_cache_dir` through :mod:`fcnjax.download`, checked against
  :data:`KNOWN_CHECKSUMS`), and the file formats: **Keras HDF5** (``keras.applications``;
  ``model.save_weights("w.h5")`` in Keras 2, or ``legacy_h5_format`` in Keras 3), PyTorch
  ``.pth``/``.pt`` state dicts (read with ``torch.load(..., weights_only=True)``; needs
  torch) and ``.safetensors`` (no torch). No code from a file is ever executed; a file
  that cannot be read as tensors (empty, damaged, pickled objects) raises
  :class:`WeightsFileError`, one line naming it.
* :mod:`fcnjax.weights.vgg16`: VGG16's tensor names in Keras' and torchvision's releases,
  and their conversion to fcnjax's layout (FCN's convolutionalised ``fc6``/``fc7``).
* :mod:`fcnjax.weights.resnet`: ResNet's tensors in torchvision's and Keras' releases
  (and the first Keras ResNet50's Caffe names, :mod:`fcnjax.weights.resnet_names`),
  BatchNorm statistics included.
* :mod:`fcnjax.weights.mobilenet`: MobileNet v1 (Keras' file, as keras-segmentation
  loads it; :func:`load_mobilenet`) and MobileNetV2 (Keras' or torchvision's;
  :func:`load_mobilenet_v2`), with Keras' ``x / 127.5 - 1`` (:data:`KERAS_TF`).
* :mod:`fcnjax.weights.mobilenet_v3`: MobileNetV3-Large's tensors in torchvision's release.
* :mod:`fcnjax.weights.pspnet_caffe`: keras-segmentation's pretrained ``pspnet_50`` /
  ``pspnet_101`` files (whole networks, by their Caffe layer names),
  :func:`load_pspnet_caffe`.
* :mod:`fcnjax.weights.segmentation`: whole networks from PyTorch state dicts
  (:func:`load_torchvision_segmentation`): torchvision's ``fcn_resnet*`` and
  ``deeplabv3_resnet*``, segmentation_models_pytorch's ``DeepLabV3Plus`` on a ResNet.
* :mod:`fcnjax.weights.backbone`, for any backbone: the one shape checker of every loader
  (a file's tensors against the network's shapes: every missing, unexpected and misshapen
  tensor listed in one error) and :func:`into_backbone`.

:class:`Preprocessing`, :data:`KERAS_CAFFE` and :data:`TORCHVISION` live in
:mod:`fcnjax.data.transforms` (the input pipeline applies them) and are re-exported here.
"""

from fcnjax.data.transforms import KERAS_CAFFE, TORCHVISION, Preprocessing
from fcnjax.weights.backbone import into_backbone
from fcnjax.weights.files import (
    KNOWN_CHECKSUMS,
    WeightsFileError,
    WeightsUnavailableError,
    default_cache_dir,
)
from fcnjax.weights.mobilenet import (
    KERAS_MOBILENET_URL,
    KERAS_MOBILENET_V2_URL,
    KERAS_TF,
    TORCHVISION_MOBILENET_V2_URL,
    load_mobilenet,
    load_mobilenet_v2,
)
from fcnjax.weights.mobilenet_v3 import TORCHVISION_MOBILENET_V3_LARGE_URL, load_mobilenet_v3
from fcnjax.weights.pspnet_caffe import PSPNET_URLS, load_pspnet_caffe
from fcnjax.weights.resnet import KERAS_RESNET_URLS, TORCHVISION_RESNET_URLS, load_resnet
from fcnjax.weights.segmentation import load_torchvision_segmentation, segmentation_variables
from fcnjax.weights.vgg16 import TORCHVISION_VGG16_URL, VGG16_URLS, load_vgg16

__all__ = [
    "KERAS_CAFFE",
    "KERAS_MOBILENET_URL",
    "KERAS_MOBILENET_V2_URL",
    "KERAS_RESNET_URLS",
    "KERAS_TF",
    "KNOWN_CHECKSUMS",
    "PSPNET_URLS",
    "TORCHVISION",
    "TORCHVISION_MOBILENET_V2_URL",
    "TORCHVISION_MOBILENET_V3_LARGE_URL",
    "TORCHVISION_RESNET_URLS",
    "TORCHVISION_VGG16_URL",
    "VGG16_URLS",
    "Preprocessing",
    "WeightsFileError",
    "WeightsUnavailableError",
    "default_cache_dir",
    "into_backbone",
    "load_mobilenet",
    "load_mobilenet_v2",
    "load_mobilenet_v3",
    "load_pspnet_caffe",
    "load_resnet",
    "load_torchvision_segmentation",
    "load_vgg16",
    "segmentation_variables",
]
