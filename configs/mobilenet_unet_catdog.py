"""keras-segmentation's ``mobilenet_unet`` on cats and dogs from COCO: folders of images and masks.

    fcnjax train --config mobilenet_unet_catdog --workdir runs/mobilenet_unet_catdog \
        --config.data.root=coco
    fcnjax predict --workdir runs/mobilenet_unet_catdog --input coco/imgs_test \
        --output coco/outputs

``vgg_unet_catdog``'s task (keras-segmentation's ``train``: batch 2, Adam, 5 epochs) on
keras-segmentation's ``mobilenet_unet``: its U-Net decoder on the ImageNet MobileNet (alpha
1.0, Keras applications' notop file, inputs scaled to [-1, 1]) at keras-segmentation's
224x224 input (the only size it builds; fcnjax takes any).
"""

from fcnjax.configs import vgg_unet_catdog


def get_config(arg: str | None = None):
    c = vgg_unet_catdog.get_config(arg)
    c.model.name = "mobilenet_unet"  # the ImageNet MobileNet: vgg_unet_catdog's "imagenet"
    if arg != "runlocal":
        c.input.size = (224, 224)  # keras-segmentation's mobilenet_unet input
    return c
