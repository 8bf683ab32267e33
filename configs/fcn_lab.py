"""The POSTECH lab's FCN: frozen ImageNet VGG16, skips on pool4/pool3 *features*, 2 classes.

    fcnjax train --config fcn_lab --workdir runs/fcn_lab \
        --config.data.root=/path/to/lab_data

The lab's data are NumPy arrays: 180 training images ``(180, 224, 224, 3)`` with one-hot
masks ``(180, 224, 224, 2)`` and 27 test images; ``data.root`` is the folder holding
``train_imgs.npy``/``train_seg.npy``/``test_imgs.npy``/``test_seg.npy``. Keras: Adam,
categorical cross-entropy, batch 5, 5 epochs, VGG16 ``trainable = False``.
"""

from fcnjax.config import default_config


def get_config(arg: str | None = None):
    c = default_config()
    c.model = dict(name="fcn8s", skip="features", num_classes=2)
    c.init.backbone_weights = "imagenet"  # keras.applications VGG16 (downloaded, cached)
    c.data = dict(name="numpy", root=None, images="train_imgs.npy", masks="train_seg.npy")
    c.eval_data = dict(images="test_imgs.npy", masks="test_seg.npy")
    c.input.size = (224, 224)
    c.input.mode = "none"  # the arrays are 224x224 already
    c.input.flip = False  # the lab does not augment
    c.input.normalization = "backbone"  # Keras' VGG16 preprocessing (caffe: BGR, mean)
    c.batch_size = 5
    c.num_epochs = 5
    c.optimizer.name = "adam"
    c.optimizer.learning_rate = 1e-3
    c.optimizer.eps = 1e-7
    c.optimizer.freeze_backbone = True  # base_model.trainable = False
    c.log_every_steps = 6
    c.checkpoint.every_steps = 36  # one epoch
    if arg == "runlocal":
        c.init.backbone_weights = None
        c.input.normalization = "unit"
        c.model.width = 0.0625
        c.input.size = (32, 32)
        c.num_epochs = None
        c.num_steps = 2
        c.batch_size = 2
        c.log_every_steps = 1
        c.checkpoint.every_steps = 2
    elif arg:
        raise ValueError(f"unknown config argument {arg!r}; use 'runlocal' or nothing.")
    return c
