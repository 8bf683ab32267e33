"""FCN-32s on PASCAL VOC 2012 + SBD, the FCN reference recipe (stage 1 of 32s -> 16s -> 8s).

    fcnjax train --config fcn32s_voc --workdir runs/fcn32s_voc \
        --config.data.root=VOCdevkit --config.data.sbd_root=benchmark_RELEASE/dataset

Long, Shelhamer & Darrell (PAMI 2016) and fcn.berkeleyvision.org's ``voc-fcn32s``:
VGG16 with ImageNet weights (fc6/fc7 from the classifier), whole images one at a time
(batch 1, no crop), Caffe preprocessing (BGR, mean subtracted, 0-255), the loss *summed*
over pixels (``normalize: false``), SGD with momentum 0.99 at a fixed 1e-10 (a per-pixel
mean loss would use ~1e-4 / pixels; see ``fcnjax.losses``), weight decay 5e-4, biases at
twice the rate without decay, 100k iterations on SBD train + VOC train minus VOC val.
The paper's shorter variant (Long et al., 2015, section 4.3): batch 20, momentum 0.9,
lr 1e-4, mean loss.
"""

from fcnjax.config import default_config


def get_config(arg: str | None = None):
    c = default_config()
    c.model = dict(name="fcn32s", num_classes=21, dropout=0.5, final_upsample="transposed")
    c.init.backbone_weights = "imagenet"
    c.data = dict(name="voc", root=None, split="train_aug", sbd_root=None)
    c.eval_data = dict(split="val", sbd_root=None)
    c.input.size = (512, 512)  # evaluation pads every VOC image (<= 500x500) to this
    c.input.mode = "none"  # whole images, batch 1
    c.input.flip = False
    c.input.eval_mode = "pad"
    c.input.normalization = "backbone"  # Keras file: caffe preprocessing
    c.input.workers = 2
    c.batch_size = 1
    c.eval_batch_size = 8
    c.num_steps = 100_000
    c.loss.reduction = "sum"
    c.optimizer.name = "sgd"
    c.optimizer.learning_rate = 1e-10
    c.optimizer.momentum = 0.99
    c.optimizer.weight_decay = 5e-4
    c.optimizer.bias_lr_mult = 2.0  # Caffe lr_mult 2, decay_mult 0 for biases
    c.log_every_steps = 100
    c.checkpoint.every_steps = 4000
    if arg == "runlocal":
        c.init.backbone_weights = None
        c.input.normalization = "caffe"
        c.model.width = 0.0625
        c.input.size = (64, 64)
        c.num_steps = 2
        c.eval_batch_size = 2
        c.log_every_steps = 1
        c.checkpoint.every_steps = 2
    elif arg:
        raise ValueError(f"unknown config argument {arg!r}; use 'runlocal' or nothing.")
    return c
