"""keras-segmentation's ``resnet50_unet`` on TFDS Oxford-IIIT Pet, for a Colab TPU.

    fcnjax train --config resnet50_unet_pets --workdir /content/drive/MyDrive/resnet50_unet

``fcn8s_pets``' recipe (TFDS ``oxford_iiit_pet`` trimaps prepared without TensorFlow,
224x224 crops, global batch 64 over the devices (Colab: one v5e-1 chip), bfloat16 compute
with float32 parameters, AdamW with warm-up and poly decay) with a U-Net decoder on an ImageNet
ResNet-50 (torchvision's file, downloaded once into ``~/.cache/fcnjax``). The
``runlocal`` variant keeps the full network and the ImageNet weights (a 98 MB download on
first use, or ``--config.init.backbone_weights=/path/to/resnet50.pth``) on 32x32 inputs.
"""

from fcnjax.configs import fcn8s_pets


def get_config(arg: str | None = None):
    c = fcn8s_pets.get_config(arg)
    c.model = dict(name="resnet50_unet", num_classes=3)
    c.init.backbone_weights = "imagenet"  # torchvision's resnet50-0676ba61.pth
    c.input.normalization = "backbone"
    return c
