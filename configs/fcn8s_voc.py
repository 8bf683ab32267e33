"""FCN-8s on VOC, stage 3: initialised from a trained FCN-16s workdir (the reference recipe).

    fcnjax train --config fcn8s_voc --workdir runs/fcn8s_voc \
        --config.init.from_workdir=runs/fcn16s_voc --config.data.root=VOCdevkit ...

Every parameter of FCN-16s is copied; ``score_pool3`` starts
at zero and ``upscore_pool4`` as bilinear. The learning rate drops 100x again (1e-14).
"""

from fcnjax.configs import fcn32s_voc


def get_config(arg: str | None = None):
    c = fcn32s_voc.get_config(arg)
    c.model.name = "fcn8s"
    c.init.backbone_weights = None  # everything comes from the FCN-16s run
    c.init.from_workdir = "runs/fcn16s_voc"
    c.optimizer.learning_rate = 1e-14
    if arg == "runlocal":
        c.init.from_workdir = None
    return c
