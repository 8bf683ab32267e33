"""torchvision's FCN-ResNet50 on PASCAL VOC 2012 + SBD, with torchvision's recipe.

    fcnjax train --config fcn_resnet50_voc --workdir runs/fcn_resnet50_voc \
        --config.data.root=VOCdevkit --config.data.sbd_root=benchmark_RELEASE/dataset

torchvision's segmentation reference (``references/segmentation``, ``fcn_resnet50``):
ImageNet ResNet-50 (torchvision's file) dilated to output stride 8, FCN's head and the
auxiliary head on ``layer3`` (loss ``out + 0.5 * aux``), images scaled by 0.5-2x
(torchvision scales a 520-pixel base size), 480x480 crops and flips, ImageNet
normalisation, SGD 0.02 with
momentum 0.9 and weight decay 1e-4, poly decay (power 0.9), 30 epochs, batch 32 (4 per
GPU on 8). torchvision trains the auxiliary head at ten times the rate; fcnjax's
optimizer uses one rate for all parameters. torchvision trains on COCO's VOC classes;
this recipe on VOC + SBD (``train_aug``), as the FCN recipes.
"""

from fcnjax.config import default_config


def get_config(arg: str | None = None):
    c = default_config()
    c.model = dict(name="fcn_resnet50", num_classes=21, aux_loss=True, dropout=0.1)
    c.init.backbone_weights = "imagenet"  # torchvision's resnet50-0676ba61.pth
    c.data = dict(name="voc", root=None, split="train_aug", sbd_root=None)
    c.eval_data = dict(split="val", sbd_root=None)
    c.input.size = (480, 480)  # training crops
    c.input.eval_size = (512, 512)  # evaluation pads every VOC image (<= 500x500) to this
    c.input.mode = "crop"
    c.input.scale_range = (0.5, 2.0)
    c.input.flip = True
    c.input.eval_mode = "pad"
    c.input.normalization = "backbone"  # torchvision file: ImageNet mean and std
    c.input.workers = 4
    c.batch_size = 32
    c.eval_batch_size = 8
    c.num_epochs = 30
    c.optimizer.name = "sgd"
    c.optimizer.learning_rate = 0.02
    c.optimizer.momentum = 0.9
    c.optimizer.weight_decay = 1e-4
    c.optimizer.schedule = "poly"
    c.optimizer.poly_power = 0.9
    c.log_every_steps = 50
    c.checkpoint.every_steps = 1000
    if arg == "runlocal":
        c.init.backbone_weights = None
        c.input.normalization = "imagenet"
        c.model.width = 0.0625
        c.input.size = (32, 32)
        c.input.eval_size = None
        c.batch_size = 2
        c.eval_batch_size = 2
        c.num_epochs = None
        c.num_steps = 2
        c.input.workers = 0
        c.log_every_steps = 1
        c.checkpoint.every_steps = 2
    elif arg:
        raise ValueError(f"unknown config argument {arg!r}; use 'runlocal' or nothing.")
    return c
