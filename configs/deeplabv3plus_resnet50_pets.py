"""DeepLabV3+ (segmentation_models_pytorch's) on ResNet-50, TFDS Oxford-IIIT Pet, for a Colab TPU.

    fcnjax train --config deeplabv3plus_resnet50_pets --workdir /content/drive/MyDrive/deeplabv3plus

``resnet50_unet_pets``' recipe (TFDS ``oxford_iiit_pet`` trimaps, 224x224 crops, global
batch 64 over the devices (Colab: one v5e-1 chip), bfloat16 compute with float32
parameters, AdamW with warm-up and poly decay, the ImageNet ResNet-50 of torchvision)
with DeepLabV3+ (Chen et al., 2018) as smp builds it: the encoder at output stride 16,
separable ASPP (rates 12, 24, 36) and the 48-channel projection of the stride-4 features.
The ``runlocal`` variant trains a 1/16-width network from scratch on 32x32 inputs.
"""

from fcnjax.configs import resnet50_unet_pets


def get_config(arg: str | None = None):
    c = resnet50_unet_pets.get_config(arg)
    c.model = dict(name="deeplabv3plus_resnet50", num_classes=3)
    if arg == "runlocal":
        c.model.width = 0.0625
        c.init.backbone_weights = None
        c.input.normalization = "imagenet"
    return c
