"""Every name of the two tables users come from gives a network: keras-segmentation's
``model_from_name`` and torchvision's ``models.segmentation`` (issue 27's acceptance).

The tables are copied here because neither library can be imported in the test
environment (keras-segmentation needs TensorFlow-era Keras; torchvision does not import
beside the pinned CPU torch); each is quoted from the named source file.
"""

import re
from pathlib import Path

import jax
import jax.numpy as jnp
import pytest

from fcnjax import models

# keras_segmentation/models/all_models.py (keras-segmentation 0.3.0 on PyPI, and the
# repository's master at 1b2ba53): every key of `model_from_name`, in its order.
KERAS_SEGMENTATION = (
    "fcn_8",
    "fcn_32",
    "fcn_8_vgg",
    "fcn_32_vgg",
    "fcn_8_resnet50",
    "fcn_32_resnet50",
    "fcn_8_mobilenet",
    "fcn_32_mobilenet",
    "pspnet",
    "vgg_pspnet",
    "resnet50_pspnet",
    "pspnet_50",
    "pspnet_101",
    "unet_mini",
    "unet",
    "vgg_unet",
    "resnet50_unet",
    "mobilenet_unet",
    "segnet",
    "vgg_segnet",
    "resnet50_segnet",
    "mobilenet_segnet",
)

# torchvision/models/segmentation/__init__.py: the builders of fcn.py, deeplabv3.py and
# lraspp.py (`__all__` of each).
TORCHVISION = (
    "fcn_resnet50",
    "fcn_resnet101",
    "deeplabv3_resnet50",
    "deeplabv3_resnet101",
    "deeplabv3_mobilenet_v3_large",
    "lraspp_mobilenet_v3_large",
)


@pytest.mark.parametrize("name", KERAS_SEGMENTATION + TORCHVISION)
def test_every_name_builds_a_network_with_logits_at_the_input_size(name):
    assert name in models.NAMES and name in models.REFERENCES
    model = models.get(name, num_classes=5)
    x = jax.ShapeDtypeStruct((1, 96, 128, 3), jnp.float32)
    variables = jax.eval_shape(model.init, jax.random.key(0), x)
    logits = jax.eval_shape(model.apply, variables, x)
    assert logits.shape == (1, 96, 128, 5)


def test_the_names_are_each_libraries_own():
    library = {name: models.REFERENCES[name] for name in KERAS_SEGMENTATION}
    assert all("keras-segmentation" in ref for ref in library.values()), library
    library = {name: models.REFERENCES[name] for name in TORCHVISION}
    assert all("torchvision" in ref for ref in library.values()), library


def test_the_readme_table_lists_every_name():
    """Each registered name is in the first column of the README's model table."""
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    table = readme.split("| name | network |", 1)[1].split("\n\n", 1)[0]
    listed = set()
    for row in table.splitlines()[2:]:
        listed |= set(re.findall(r"`([a-z0-9_]+)`", row.split(" | ", 1)[0]))
    assert set(models.NAMES) - listed == set()
