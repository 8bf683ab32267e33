"""The defaults every recipe starts from: every field of a training config, each with its
type (also those whose default is None: ``placeholder`` fields), so that a typo in a recipe
or an override is an error (flax's ``configs/default.py``). Not a recipe itself:
:func:`fcnjax.config.config_names` leaves it out; recipes call :func:`default_config`
(also :func:`fcnjax.config.default_config`) and override.
"""

from __future__ import annotations

import ml_collections
from ml_collections import ConfigDict
from ml_collections.config_dict import placeholder

from fcnjax.training import optim

__all__ = ["default_config"]


def default_config() -> ConfigDict:
    """Every field of a training config, with its default (and, where that is None, its type)."""
    c = ConfigDict()
    c.task = "segmentation"  # segmentation | autoencoder (reconstruct the image, MSE)
    c.seed = 0  # parameters, shuffling, augmentation and dropout all derive from it

    # Model: `name` from fcnjax.models.NAMES, the rest are its keyword arguments.
    # num_classes defaults to the training source's.
    c.model = ConfigDict({"name": "fcn8s"})
    c.init = ConfigDict()
    c.init.backbone_weights = placeholder(str)  # the model's VGG16/ResNet: "imagenet", path, URL
    c.init.from_workdir = placeholder(str)  # staged FCN training: start from that run's params
    c.dtype = "float32"  # compute dtype; parameters stay float32 (bfloat16 on TPU)

    # Data: `fcnjax.data.get_source` arguments for training; `eval_data` overrides them
    # for the validation source (None: no evaluation).
    c.data = ConfigDict({"name": "shapes"})
    c.eval_data = ConfigDict({"split": "validation"})
    c.input = ConfigDict()
    c.input.size = placeholder(tuple)  # (H, W) of training crops and padded evaluation images
    c.input.eval_size = placeholder(tuple)  # evaluation's (H, W) if not input.size's
    c.input.mode = "crop"  # crop (random scale + crop) | resize | none
    c.input.scale_range = (0.5, 2.0)  # random scale for mode=crop (None: no scaling)
    c.input.flip = True
    c.input.jitter = placeholder(tuple)  # (brightness, contrast, saturation) or None
    c.input.normalization = "unit"  # unit | imagenet | caffe | none; "backbone": the weights'
    c.input.eval_mode = "pad"  # pad | resize | none
    c.input.workers = 0  # decoding processes (grain); 0: threads in this process
    c.input.threads = 2
    c.input.prefetch = 4

    c.batch_size = 16  # global batch, split over processes and devices
    c.eval_batch_size = placeholder(int)  # None: batch_size
    # How evaluation (in training, `fcnjax evaluate`) and `fcnjax predict` score an image
    # (fcnjax.inference): sliding windows and test-time augmentation; by default neither.
    c.inference = ConfigDict()
    c.inference.window = placeholder(tuple)  # (h, w) of sliding windows; None: whole images
    c.inference.stride = placeholder(tuple)  # (h, w) between windows; None: the window
    c.inference.blend = "constant"  # constant | gaussian (less weight near window edges)
    c.inference.batch = 4  # window positions per network call
    c.inference.flip = False  # TTA: the mirrored image too, probabilities averaged
    c.inference.scales = (1.0,)  # TTA: image scales, probabilities averaged
    c.inference.threshold = 0.5  # one-output (binary) networks: label 1 where sigmoid > it
    c.num_steps = placeholder(int)  # training steps; or
    c.num_epochs = placeholder(int)  # passes over the training source (one must be set)

    c.optimizer = ConfigDict(dict(optim.DEFAULTS))  # see fcnjax.training.optim.DEFAULTS
    c.optimizer.grad_clip_norm = placeholder(float)  # None: no clipping
    c.loss = _loss_section()

    c.parallel = "jit"  # jit (NamedSharding over a Mesh) | pmap
    c.distributed = ConfigDict()
    # auto: when a coordinator is set | True | False
    c.distributed.initialize = ml_collections.FieldReference("auto", field_type=(str, bool))
    c.distributed.coordinator_address = placeholder(str)  # "host:port" of process 0 (or env)
    c.distributed.num_processes = placeholder(int)
    c.distributed.process_id = placeholder(int)

    c.log_every_steps = 50
    c.eval_every_steps = placeholder(int)  # None: at every checkpoint and at the end
    c.checkpoint = ConfigDict()
    c.checkpoint.every_steps = 1000
    c.checkpoint.keep = 3  # latest checkpoints kept (the best one is kept apart)
    c.checkpoint.best_metric = "mean_iou"  # validation metric for checkpoints/best
    c.checkpoint.best_mode = "max"  # max | min
    c.checkpoint.asynchronous = True

    c.outputs = ConfigDict()
    c.outputs.num_examples = 8  # validation examples in predictions.png
    c.outputs.latent_points = 500  # autoencoder: points in latent.png
    c.outputs.decode_point = (2.0, -4.0)  # autoencoder: latent point decoded to decoded.png
    return c


def _loss_section() -> ConfigDict:
    """The ``loss`` section: its terms (:mod:`fcnjax.losses`) and each term's options."""
    loss = ConfigDict()
    # The sum of terms: "cross_entropy + dice", "focal + 0.5*lovasz" or ((name, weight), ...);
    # the losses: cross_entropy, focal, dice, jaccard, tversky, lovasz (fcnjax.losses).
    loss.terms = ml_collections.FieldReference("cross_entropy", field_type=(str, tuple))
    loss.mode = "auto"  # auto (binary when model.num_classes is 1) | multiclass | binary
    # cross-entropy: mean over counted pixels | sum (FCN reference; evaluated: the split's sum)
    loss.reduction = "mean"
    # None | "median_frequency" | one weight per class (binary: background, foreground);
    # they weigh cross_entropy's pixels and the class mean of dice, jaccard and tversky.
    loss.class_weights = placeholder((str, tuple))
    loss.ignore_label = 255

    def region(**more):  # classes: "present" (in the batch's truth) | "all" | (indices)
        classes = ml_collections.FieldReference("present", field_type=(str, tuple))
        return ConfigDict(dict(smooth=0.0, eps=1e-7, log_loss=False, classes=classes, **more))

    loss.dice = region()  # smooth: added to numerator and denominator (smp's convention)
    loss.jaccard = region()
    # alpha weighs false positives, beta false negatives; gamma: focal Tversky (mean ** gamma).
    loss.tversky = region(alpha=0.5, beta=0.5, gamma=1.0)
    # alpha: None | one weight per class | binary: the foreground's weight in [0, 1].
    loss.focal = ConfigDict(dict(gamma=2.0, alpha=placeholder((float, tuple))))
    lovasz_classes = ml_collections.FieldReference("present", field_type=(str, tuple))
    loss.lovasz = ConfigDict(dict(per_image=False, classes=lovasz_classes))  # binary: hinge
    return loss
