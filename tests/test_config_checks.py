"""What a run needs is checked before it trains: no setting that builds no network, and no
validation example that evaluation (or the pictures) cannot take, is found after training.

Each test goes through the real command line (:func:`fcnjax.cli.main` in-process) and
checks the exit status, the one-line message naming the setting, and that the workdir
holds nothing of a run that was refused.
"""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from fcnjax import data, models
from fcnjax.data import Shapes
from fcnjax.training import tasks
from tests.test_failures import SHAPES, one_line, run


# 1. Model settings that build no network (a model would clamp its channels to 1 and train).
@pytest.mark.parametrize(
    "config, override, words",
    [
        (SHAPES, "model.width=0", "`model.width` must be a positive number; got 0"),
        (SHAPES, "model.width=-1", "`model.width` must be a positive number; got -1"),
        (SHAPES, "model.dropout=1.0", "`model.dropout` must be a rate in [0, 1); got 1.0"),
        (SHAPES, "model.num_classes=0", "`model.num_classes` must be a positive int or None"),
        (SHAPES, "model.variant=4s", "`model.variant` must be one of ('32s', '16s', '8s')"),
        ("cae_mnist", "model.latent_dim=0", "`model.latent_dim` must be a positive int; got 0"),
        ("cae_mnist", "model.features=(32,0)", "`model.features` must be two positive ints"),
        ("cae_mnist", "model.channels=-1", "`model.channels` must be a positive int; got -1"),
        ("unet_catdog", "model.widths=(32,0,128)", "`model.widths` must be a non-empty tuple"),
        ("unet_catdog", "model.dropout=-0.2", "`model.dropout` must be a rate in [0, 1)"),
        ("segnet_camvid", "model.kernel_size=0", "`model.kernel_size` must be a positive int"),
        ("segnet_camvid", "model.bn_momentum=1.0", "`model.bn_momentum` must be a number in"),
        ("fcn_resnet50_voc", "model.width=0.0", "`model.width` must be a positive number"),
        ("resnet50_unet_pets", "model.backbone_style=caffe", "`model.backbone_style` must be"),
    ],
)
def test_model_values_that_build_no_network_are_refused(config, override, words, tmp_path, capsys):
    wd = tmp_path / "w"
    args = ["train", "--config", config, "--workdir", wd, f"--config.{override}"]
    code, _, err = run(args, capsys)
    assert code == 2 and words in one_line(err)
    assert not wd.exists()


# ... and so are models built in Python with them (no clamping to one channel).
@pytest.mark.parametrize(
    "name, kwargs, field",
    [
        ("fcn8s", dict(num_classes=2, width=0), "width"),
        ("resnet50_unet", dict(num_classes=2, width=-0.5), "width"),
        ("fcn8s", dict(num_classes=2, width=0.0625, dropout=1.0), "dropout"),
        ("unet_mini", dict(num_classes=0, widths=(4, 8)), "num_classes"),
        ("segnet_basic", dict(num_classes=0, widths=(4,)), "num_classes"),
        ("fcn_resnet50", dict(num_classes=2, width=0.0625, dropout=1.5), "dropout"),
        ("conv_autoencoder", dict(latent_dim=0), "latent_dim"),
        ("conv_autoencoder", dict(features=(8, 0)), "features"),
    ],
)
def test_models_refuse_what_builds_no_network(name, kwargs, field):
    with pytest.raises(ValueError, match=f"`{field}` must be"):
        models.get(name, **kwargs)  # by name: checked before the module is made
    model = models._lookup(name)(**kwargs)  # the module made directly checks them too
    x = jnp.zeros((1, 28, 28, 1 if name == "conv_autoencoder" else 3))
    with pytest.raises(ValueError, match=f"`{field}` must be"):
        jax.eval_shape(model.init, jax.random.key(0), x)


# 2. Validation examples that evaluation cannot take are found before training.
def _folder(root: Path, sizes) -> None:
    for i, size in enumerate(sizes):
        example = Shapes(1, size=size, split="test", seed=i)[0]
        for kind in ("images", "masks"):
            (root / kind).mkdir(parents=True, exist_ok=True)
            Image.fromarray(example[kind[:-1]]).save(root / kind / f"{i}.png")


@pytest.fixture(scope="module")
def mixed(tmp_path_factory) -> Path:
    """A config on a folder dataset: training images 32x32, validation 32x32 and 40x48."""
    tmp = tmp_path_factory.mktemp("mixed")
    _folder(tmp / "data" / "train", [(32, 32)] * 8)
    _folder(tmp / "data" / "val", [(32, 32), (40, 48)])
    path = tmp / "mixed.py"
    path.write_text(
        "from fcnjax.configs import shapes_fcn8s\n\n\n"
        "def get_config(arg=None):\n"
        "    c = shapes_fcn8s.get_config('runlocal')\n"
        f"    c.data = dict(name='folder', root={str(tmp / 'data')!r}, split='train',\n"
        "                  num_classes=4)\n"
        "    c.eval_data = dict(split='val')\n"
        "    c.num_steps = 1\n"
        "    c.checkpoint.every_steps = 1\n"
        "    return c\n"
    )
    return path


def test_a_validation_image_larger_than_the_evaluation_size(mixed, tmp_path, capsys):
    wd = tmp_path / "run"
    args = ["--config.input.eval_mode=pad", "--config.input.eval_size=(32, 32)"]
    code, _, err = run(["train", "--config", mixed, "--workdir", wd, *args], capsys)
    line = one_line(err)
    assert code == 1 and f"{mixed.parent / 'data' / 'val' / 'images' / '1.png'}" in line
    assert "40x48 is larger than the evaluation size 32x32" in line
    assert "`input.eval_size` to at least (40, 48)" in line and "`input.eval_mode`" in line
    assert not (wd / "checkpoints").exists() and not (wd / "config.json").exists()


def test_without_validation_the_pictures_training_examples_are_checked(mixed, tmp_path, capsys):
    wd = tmp_path / "run"
    args = ["--config.data.split=val", "--config.eval_data=None", "--config.batch_size=2"]
    args += ["--config.input.eval_mode=pad", "--config.input.eval_size=(32, 32)"]
    code, _, err = run(["train", "--config", mixed, "--workdir", wd, *args], capsys)
    line = one_line(err)
    assert code == 1 and "1.png" in line and "40x48 is larger than the evaluation size" in line
    assert not (wd / "checkpoints").exists() and not (wd / "config.json").exists()


def test_mixed_sizes_in_batches_of_several_are_refused(mixed, tmp_path, capsys):
    wd = tmp_path / "run"
    args = ["--config.input.eval_mode=none", "--config.eval_batch_size=2"]
    code, _, err = run(["train", "--config", mixed, "--workdir", wd, *args], capsys)
    line = one_line(err)
    assert code == 1 and "evaluation batches of 2 (`eval_batch_size`)" in line
    assert "is 32x32" in line and "1.png" in line and "40x48" in line
    assert "Set `eval_batch_size` to 1" in line
    assert not (wd / "checkpoints").exists() and not (wd / "config.json").exists()


def test_mixed_sizes_one_at_a_time_train_evaluate_and_draw(mixed, tmp_path, capsys):
    wd = tmp_path / "run"
    args = ["--config.input.eval_mode=none", "--config.eval_batch_size=1"]
    model = "--config.model={'name': 'unet_mini', 'widths': (4, 8)}"  # the fastest to compile
    code, _, err = run(["train", "--config", mixed, "--workdir", wd, model, *args], capsys)
    assert code == 0, err
    drawn = np.asarray(Image.open(wd / "predictions.png"))
    assert drawn.shape[0] > 2 * (32 + 40)  # two rows, each at its own size, doubled


def test_pictures_take_examples_of_different_sizes(tmp_path):
    shapes = [(24, 24), (32, 40), (24, 24)]
    examples = [Shapes(1, size=s, split="test", seed=i)[0] for i, s in enumerate(shapes)]
    source = _Listed(examples)
    model = models.get("unet_mini", num_classes=4, widths=(4, 8))
    variables = jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, 24, 24, 3)))
    transform = data.EvalTransform(mode="none")
    outputs = {"num_examples": 3}
    task = tasks.Segmentation(num_classes=4)
    (written,) = task.write_pictures(model, variables, source, transform, tmp_path, outputs)
    assert written == tmp_path / "predictions.png" and written.is_file()


class _Listed(data.Source):
    """Examples from a list, of any sizes."""

    num_classes = 4
    class_names = data.SHAPE_CLASSES

    def __init__(self, examples):
        self.examples = examples

    def __len__(self) -> int:
        return len(self.examples)

    def load(self, index: int) -> data.Example:
        return self.examples[index]
