"""FCN-16s on VOC, stage 2: initialised from a trained FCN-32s workdir (the reference recipe).

    fcnjax train --config fcn16s_voc --workdir runs/fcn16s_voc \
        --config.init.from_workdir=runs/fcn32s_voc --config.data.root=VOCdevkit ...

Every parameter of FCN-32s (VGG16, fc6/fc7, score_fr) is copied; ``score_pool4`` starts
at zero and ``upscore2`` as bilinear. The learning rate drops 100x (1e-12, summed loss).
"""

from fcnjax.configs import fcn32s_voc


def get_config(arg: str | None = None):
    c = fcn32s_voc.get_config(arg)
    c.model.name = "fcn16s"
    c.init.backbone_weights = None  # everything comes from the FCN-32s run
    c.init.from_workdir = "runs/fcn32s_voc"
    c.optimizer.learning_rate = 1e-12
    if arg == "runlocal":
        c.init.from_workdir = None
    return c
