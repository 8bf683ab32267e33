"""FCN-8s on TFDS Oxford-IIIT Pet (pet / background / border trimap), for a Colab TPU.

    fcnjax train --config fcn8s_pets --workdir /content/drive/MyDrive/fcn8s_pets

TFDS ``oxford_iiit_pet`` (downloaded and prepared on first use into ``data.data_dir``,
without TensorFlow: :mod:`fcnjax.data.prepare`). ImageNet VGG16 (Keras), 224x224 resized
inputs, global batch 64 split over the devices (Colab: one v5e-1 chip), bfloat16 compute
with float32 parameters, AdamW with warm-up and poly decay.
"""

from fcnjax.config import default_config


def get_config(arg: str | None = None):
    c = default_config()
    c.model = dict(name="fcn8s", num_classes=3, dropout=0.5, final_upsample="bilinear")
    c.init.backbone_weights = "imagenet"
    c.data = dict(
        name="tfds", dataset="oxford_iiit_pet", split="train", pet_classes=3, data_dir=None
    )
    c.eval_data = dict(split="test")
    c.input.size = (224, 224)
    c.input.mode = "crop"
    c.input.scale_range = (0.75, 1.5)
    c.input.flip = True
    c.input.eval_mode = "resize"
    c.input.normalization = "backbone"
    c.input.workers = 2
    c.dtype = "bfloat16"  # TPU's native compute; parameters stay float32
    c.batch_size = 64
    c.num_epochs = 20
    c.optimizer.name = "adamw"
    c.optimizer.learning_rate = 3e-4
    c.optimizer.weight_decay = 1e-4
    c.optimizer.schedule = "poly"
    c.optimizer.warmup_steps = 100
    c.log_every_steps = 20
    c.checkpoint.every_steps = 250
    if arg == "runlocal":
        c.init.backbone_weights = None
        c.input.normalization = "imagenet"
        c.model.width = 0.0625
        c.input.size = (32, 32)
        c.dtype = "float32"
        c.batch_size = 2
        c.num_epochs = None
        c.num_steps = 2
        c.input.workers = 0
        c.log_every_steps = 1
        c.checkpoint.every_steps = 2
    elif arg:
        raise ValueError(f"unknown config argument {arg!r}; use 'runlocal' or nothing.")
    return c
