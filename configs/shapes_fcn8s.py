"""FCN-8s on the generated ``shapes`` data: the offline default job (``python -m fcnjax``).

    fcnjax train --config configs/shapes_fcn8s.py --workdir runs/shapes_fcn8s
    fcnjax train --config configs/shapes_fcn8s.py:runlocal --workdir /tmp/smoke  # seconds

Sized for a 2-core CPU: 64x64 images, a quarter-width VGG16 with BatchNorm (trains from
scratch in a few hundred steps), Adam with warm-up and cosine decay. The target is a
validation mean IoU of at least 0.90 in under five minutes.
"""

from fcnjax.config import default_config


def get_config(arg: str | None = None):
    c = default_config()
    c.model = dict(
        name="fcn8s",
        width=0.25,  # channels of VGG16 x 0.25 (16 ... 128, fc6/fc7 1024)
        backbone="vgg16_bn",  # BatchNorm: from-scratch training in minutes
        dropout=0.0,  # no fc dropout: the data is unlimited
        final_upsample="bilinear",
    )
    c.data = dict(name="shapes", num_examples=4096, size=64, seed=0)
    c.eval_data = dict(split="validation", num_examples=256)
    c.input.size = (64, 64)
    c.input.mode = "none"  # generated at the training size: flips only
    c.input.normalization = "unit"
    c.batch_size = 16
    c.num_steps = 800
    c.optimizer.name = "adamw"
    c.optimizer.learning_rate = 2e-3
    c.optimizer.weight_decay = 1e-4
    c.optimizer.schedule = "cosine"
    c.optimizer.warmup_steps = 50
    c.log_every_steps = 20
    c.checkpoint.every_steps = 400
    c.checkpoint.best_metric = "mean_iou"
    if arg == "runlocal":  # a smoke test: seconds on a CPU
        c.model.width = 0.125
        c.data.num_examples = 32
        c.eval_data.num_examples = 16
        c.input.size = (32, 32)
        c.data.size = 32
        c.batch_size = 8
        c.num_steps = 4
        c.log_every_steps = 2
        c.checkpoint.every_steps = 2
    elif arg:
        raise ValueError(f"unknown config argument {arg!r}; use 'runlocal' or nothing.")
    return c
