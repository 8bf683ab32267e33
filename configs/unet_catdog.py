"""keras-segmentation's ``unet_mini`` on COCO's cats and dogs: image and mask folders, 200x200.

    fcnjax train --config unet_catdog --workdir runs/unet_catdog \
        --config.data.root=coco
    fcnjax predict --workdir runs/unet_catdog --input coco/imgs_test --output coco/outputs

keras-segmentation layout: ``root/imgs_train`` and ``root/masks`` paired by file stem,
masks holding class indices (0 background, 1 cat or dog). keras-segmentation resizes
every image to the model's input and trains 2 epochs with Adam (its default optimizer).
"""

from fcnjax.config import default_config


def get_config(arg: str | None = None):
    c = default_config()
    c.model = dict(name="unet_mini", num_classes=2)  # fcnjax's `unet` before issue 27
    c.data = dict(name="folder", root=None, images="imgs_train", masks="masks", num_classes=2)
    c.eval_data = None  # the recipe has no validation split; add one with --config.eval_data
    c.input.size = (200, 200)
    c.input.mode = "resize"  # keras-segmentation resizes to the input size
    c.input.eval_mode = "resize"
    c.input.flip = False
    c.input.normalization = "unit"
    c.batch_size = 2  # keras-segmentation's default batch_size
    c.num_epochs = 2
    c.optimizer.name = "adam"  # keras-segmentation compiles with 'adam'
    c.optimizer.learning_rate = 1e-3
    c.optimizer.eps = 1e-7
    c.log_every_steps = 10
    c.checkpoint.every_steps = 500
    if arg == "runlocal":
        c.input.size = (32, 32)
        c.num_epochs = None
        c.num_steps = 2
        c.log_every_steps = 1
        c.checkpoint.every_steps = 2
    elif arg:
        raise ValueError(f"unknown config argument {arg!r}; use 'runlocal' or nothing.")
    return c
