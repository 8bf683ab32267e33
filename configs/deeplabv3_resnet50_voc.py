"""torchvision's DeepLabV3-ResNet50 on PASCAL VOC 2012 + SBD, with torchvision's recipe.

    fcnjax train --config deeplabv3_resnet50_voc --workdir runs/deeplabv3_resnet50_voc \
        --config.data.root=VOCdevkit --config.data.sbd_root=benchmark_RELEASE/dataset

torchvision's segmentation reference (``references/segmentation``, ``deeplabv3_resnet50``,
``--aux-loss``) trains DeepLabV3 with the recipe of its FCN-ResNet50 (``fcn_resnet50_voc``):
ImageNet ResNet-50 dilated to output stride 8, the ASPP head (rates 12, 24, 36, image
pooling) and the auxiliary FCN head on ``layer3`` (loss ``out + 0.5 * aux``), 0.5-2x scaled
480x480 crops and flips, SGD 0.02 with momentum 0.9 and weight decay 1e-4, poly decay
(power 0.9), 30 epochs, batch 32. torchvision trains on COCO's VOC classes; this recipe
on VOC + SBD (``train_aug``), as the FCN recipes.
"""

from fcnjax.configs import fcn_resnet50_voc


def get_config(arg: str | None = None):
    c = fcn_resnet50_voc.get_config(arg)
    c.model.name = "deeplabv3_resnet50"  # 42,004,074 parameters with the auxiliary head
    return c
