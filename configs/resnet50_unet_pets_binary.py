"""Binary segmentation, pet against background: ``resnet50_unet`` with one sigmoid output on
TFDS Oxford-IIIT Pet, cross-entropy + Dice (nnU-Net's default loss), for a Colab TPU.

    fcnjax train --config resnet50_unet_pets_binary --workdir /content/drive/MyDrive/pets_binary

``resnet50_unet_pets``' recipe (224x224 crops, global batch 64, bfloat16 on TPU, AdamW with
warm-up and poly decay, an ImageNet ResNet-50) with the trimap as two classes (the border
band ignored: ``pet_classes=2``) and a network of one output, the pet's probability
(``model.num_classes=1``, segmentation_models_pytorch's ``mode="binary"``). The loss is
the binary cross-entropy plus the soft Dice loss of the foreground over the whole global
batch; evaluation adds the pet's IoU and Dice (``foreground_iou``, ``foreground_dice``)
at ``inference.threshold``. The ``runlocal`` variant starts from random weights.
"""

from fcnjax.configs import resnet50_unet_pets


def get_config(arg: str | None = None):
    c = resnet50_unet_pets.get_config(arg)
    c.model.num_classes = 1  # one sigmoid output: the pet's probability
    c.data.pet_classes = 2  # 0 background, 1 pet; the trimap's border is ignored
    c.loss.terms = "cross_entropy + dice"
    c.checkpoint.best_metric = "foreground_iou"
    if arg == "runlocal":
        c.init.backbone_weights = None  # no download in a smoke run
        c.input.normalization = "imagenet"  # torchvision's, without the weights' file
    return c
