"""keras-segmentation's ``vgg_unet`` on cats and dogs from COCO: folders of images and masks.

    fcnjax train --config vgg_unet_catdog --workdir runs/vgg_unet_catdog \
        --config.data.root=coco
    fcnjax predict --workdir runs/vgg_unet_catdog --input coco/imgs_test --output coco/outputs

The U-Net tutorial's task (``unet_catdog``) on keras-segmentation's ``vgg_unet``: a U-Net
decoder on ImageNet VGG16 (Keras' notop file, Caffe preprocessing), images resized to
keras-segmentation's default 416x608, batch 2, Adam, 5 epochs (keras-segmentation's
``train`` default).
"""

from fcnjax.config import default_config


def get_config(arg: str | None = None):
    c = default_config()
    c.model = dict(name="vgg_unet", num_classes=2)
    c.init.backbone_weights = "imagenet"  # keras.applications' VGG16, notop
    c.data = dict(name="folder", root=None, images="imgs_train", masks="masks", num_classes=2)
    c.eval_data = None  # the recipe has no validation split; add one with --config.eval_data
    c.input.size = (416, 608)  # keras-segmentation's vgg_unet default input
    c.input.mode = "resize"
    c.input.eval_mode = "resize"
    c.input.flip = False
    c.input.normalization = "backbone"
    c.batch_size = 2
    c.num_epochs = 5
    c.optimizer.name = "adam"
    c.optimizer.learning_rate = 1e-3
    c.optimizer.eps = 1e-7  # Keras' Adam
    c.log_every_steps = 10
    c.checkpoint.every_steps = 500
    if arg == "runlocal":
        c.init.backbone_weights = None
        c.input.normalization = "caffe"
        c.model.width = 0.0625
        c.input.size = (32, 32)
        c.num_epochs = None
        c.num_steps = 2
        c.log_every_steps = 1
        c.checkpoint.every_steps = 2
    elif arg:
        raise ValueError(f"unknown config argument {arg!r}; use 'runlocal' or nothing.")
    return c
