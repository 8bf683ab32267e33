"""``fcnjax`` commands: a run through train / evaluate / predict / verify, and every error path.

Commands run in-process through :func:`fcnjax.cli.main` (what the console script calls);
errors must exit non-zero with one message naming what was wrong.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fcnjax import cli
from fcnjax import config as config_lib
from fcnjax.data import Shapes

SHAPES = "shapes_fcn8s:runlocal"


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    wd = tmp_path_factory.mktemp("cli") / "run"
    assert cli.main(["train", "--config", SHAPES, "--workdir", str(wd)]) == 0
    return wd


def run(args, capsys):
    code = cli.main([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_train_prints_the_metrics_table_and_evaluate_agrees(workdir, capsys):
    code, out, _ = run(["evaluate", "--workdir", workdir], capsys)
    assert code == 0
    assert "mean_iou" in out and "frequency_weighted_iou" in out and "circle" in out
    saved = json.loads((workdir / "eval_validation.json").read_text())
    final = json.loads((workdir / "final_metrics.json").read_text())["eval"]
    assert saved["confusion_matrix"] == final["confusion_matrix"]


def test_predict_a_directory_writes_index_colour_and_overlay_pngs(workdir, tmp_path, capsys):
    inputs = tmp_path / "in"
    inputs.mkdir()
    for i in range(2):
        Image.fromarray(Shapes(2, size=(36, 44), split="test")[i]["image"]).save(
            inputs / f"im{i}.jpg"
        )
    (inputs / "notes.txt").write_text("not an image")
    code, out, _ = run(
        ["predict", "--workdir", workdir, "--input", inputs, "--output", tmp_path / "o"], capsys
    )
    assert code == 0, out
    for i in range(2):
        index = np.asarray(Image.open(tmp_path / "o" / f"im{i}.png"))
        assert index.shape == (36, 44) and index.max() < 4
        assert np.asarray(Image.open(tmp_path / "o" / f"im{i}_color.png")).shape == (36, 44, 3)
        assert np.asarray(Image.open(tmp_path / "o" / f"im{i}_overlay.png")).shape == (36, 44, 3)
    code, _, _ = run(
        [
            "predict",
            "--workdir",
            workdir,
            "--input",
            inputs / "im0.jpg",
            "--output",
            tmp_path / "p",
        ],
        capsys,
    )
    assert code == 0 and (tmp_path / "p" / "im0.png").exists()


@pytest.mark.parametrize(
    "override, words",
    [
        ("--config.optimiser.name=sgd", ["unknown config key 'optimiser'", "optimizer"]),
        ("--config.optimizer.nme=sgd", ["'optimizer.nme'", "learning_rate"]),
        ("--config.batch_size=abc", ["`batch_size` expects int", "'abc'"]),
        ("--config.optimizer.learning_rate=fast", ["learning_rate` expects float"]),
        ("--config.parallel=threads", ["`parallel` must be one of ('jit', 'pmap')"]),
        ("--config.optimizer.name=lion", ["`optimizer.name` must be one of", "adamw"]),
        ("--config.model.name=fcn9s", ["unknown model 'fcn9s'", "fcn8s"]),
        ("--config.model.widht=0.5", ["model 'fcn8s' does not take ['widht']", "width"]),
        ("--config.data.colour=red", ["does not take ['colour']", "num_examples"]),
        ("--config.checkpoint.best_metric=miou", ["`checkpoint.best_metric` must be one of"]),
        ("--config.loss.class_weights=(1.0, 2.0)", ["needs 4 weights"]),
        ("--config.batch_size=0", ["`batch_size` must be a positive int"]),
    ],
)
def test_train_config_errors_name_the_key_and_choices(override, words, tmp_path, capsys):
    code, out, err = run(
        ["train", "--config", SHAPES, "--workdir", tmp_path / "wd", override], capsys
    )
    assert code == 2, out + err
    for word in words:
        assert word in err, err


def test_prediction_reads_only_the_workdir_not_the_training_data(workdir, monkeypatch):
    from fcnjax import data, predict

    image = Shapes(1, size=(40, 52), split="test")[0]["image"]
    expected = predict.load(workdir)(image)
    info = json.loads((workdir / "run_info.json").read_text())
    assert info["num_classes"] == 4 and info["class_names"][1] == "circle"

    def gone(*args, **kwargs):
        raise AssertionError("prediction read the dataset")

    monkeypatch.setattr(data, "get_source", gone)
    predictor = predict.load(workdir)
    np.testing.assert_array_equal(predictor(image), expected)
    assert predictor.run.class_names == ("background", "circle", "square", "triangle")


def test_training_a_finished_workdir_again_evaluates_without_retraining(workdir, capsys):
    before = json.loads((workdir / "final_metrics.json").read_text())
    code, out, err = run(["train", "--config", SHAPES, "--workdir", workdir], capsys)
    assert code == 0, err
    after = json.loads((workdir / "final_metrics.json").read_text())
    assert after["step"] == before["step"] and "mean_iou" in out
    assert after["eval"]["confusion_matrix"] == before["eval"]["confusion_matrix"]


def test_plot_writes_training_curves(workdir, tmp_path, capsys):
    code, out, _ = run(["plot", "--workdir", workdir, "--output", tmp_path / "plots"], capsys)
    assert code == 0
    written = [Path(line) for line in out.split()]
    assert [p.name for p in written] == ["loss.png", "eval.png", "learning_rate.png"]
    assert all(p.parent == tmp_path / "plots" and p.stat().st_size > 0 for p in written)
    code, _, err = run(["plot", "--workdir", tmp_path / "nowhere"], capsys)
    assert code == 2 and "nowhere" in err and "no such directory" in err
    code, _, err = run(["plot", "--workdir", tmp_path / "plots"], capsys)  # no metrics.jsonl
    assert code == 2 and "no metrics file" in err


def test_missing_files_and_bad_arguments(tmp_path, capsys):
    code, _, err = run(["train", "--config", tmp_path / "nope.py", "--workdir", tmp_path], capsys)
    assert code == 2 and "nope.py" in err and "does not exist" in err
    assert "shapes_fcn8s" in err  # the shipped configs are named
    assert len(err.strip().splitlines()) == 1, err
    code, _, err = run(["evaluate", "--workdir", tmp_path / "empty"], capsys)
    assert code == 2 and "no config.json" in err
    with pytest.raises(SystemExit) as e:
        cli.main(["train", "--config", SHAPES, "--workdir", str(tmp_path), "--config.batch_size"])
    assert e.value.code == 2
    assert "--config.batch_size needs a value (--config.key=value)" in capsys.readouterr().err
    for bad in ("--epochs=3", "--epochs", "3"):
        with pytest.raises(SystemExit) as e:
            cli.main(["train", "--config", SHAPES, "--workdir", str(tmp_path), bad])
        assert e.value.code == 2
        err = capsys.readouterr().err
        assert f"unrecognized argument '{bad}'" in err and "--config.key=value" in err
    with pytest.raises(SystemExit) as e:
        cli.main(["demo"])  # gone: bench/conv_transpose.py times the op
    assert e.value.code == 2


def test_predict_errors(workdir, tmp_path, capsys):
    code, _, err = run(
        [
            "predict",
            "--workdir",
            workdir,
            "--input",
            tmp_path / "missing.png",
            "--output",
            tmp_path,
        ],
        capsys,
    )
    assert code == 2 and "missing.png" in err
    (tmp_path / "empty").mkdir()
    code, _, err = run(
        ["predict", "--workdir", workdir, "--input", tmp_path / "empty", "--output", tmp_path],
        capsys,
    )
    assert code == 2 and "holds no images" in err


def test_missing_and_corrupt_checkpoints_are_errors_not_fresh_starts(workdir, tmp_path, capsys):
    # A workdir whose checkpoints are gone: evaluation refuses.
    bare = tmp_path / "bare"
    bare.mkdir()
    shutil.copy(workdir / "config.json", bare / "config.json")
    code, _, err = run(["evaluate", "--workdir", bare], capsys)
    assert code == 1 and "no checkpoint directory" in err
    # A corrupt newest checkpoint: training does not start afresh, evaluation refuses.
    broken = tmp_path / "broken"
    shutil.copytree(workdir, broken)
    newest = max(
        (broken / "checkpoints").iterdir(), key=lambda p: int(p.name) if p.name.isdigit() else -1
    )
    for f in (newest / "state").rglob("*"):
        if f.is_file() and f.name not in ("commit_success.txt",):
            f.write_bytes(b"\0garbage")
    code, _, err = run(["train", "--config", SHAPES, "--workdir", broken], capsys)
    assert code == 1 and f"cannot restore the checkpoint {newest}" in err, err
    assert "corrupt" in err
    code, _, err = run(["evaluate", "--workdir", broken], capsys)
    assert code == 1 and "cannot restore" in err


def test_verify_reports_bad_examples(tmp_path, capsys):
    root = tmp_path / "data"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i, mask_size in enumerate([(16, 16), (16, 16), (8, 8)]):
        Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(root / "images" / f"{i}.png")
        Image.fromarray(np.zeros(mask_size, np.uint8)).save(root / "masks" / f"{i}.png")
    args = ["verify", "--config", "unet_catdog:runlocal", f"--config.data.root={root}"]
    args += ["--config.data.images=images"]
    code, out, _ = run(args, capsys)
    assert code == 1
    assert "3 examples, 1 bad" in out and "2.png" in out
    (root / "masks" / "2.png").unlink()
    Image.fromarray(np.ones((16, 16), np.uint8)).save(root / "masks" / "2.png")
    code, out, _ = run(args, capsys)
    assert code == 0 and "3 examples, 0 bad" in out


@pytest.mark.parametrize("command", ["train", "verify"])
def test_a_config_that_is_neither_a_name_nor_a_file_lists_the_shipped_ones(
    command, tmp_path, capsys
):
    args = [command, "--config", "shapes_fcn9s:runlocal"]
    args += ["--workdir", tmp_path / "wd"] if command == "train" else []
    code, out, err = run(args, capsys)
    assert code == 2, out + err
    assert len(err.strip().splitlines()) == 1, err
    assert f"fcnjax {command}: config error: unknown config 'shapes_fcn9s'" in err
    for name in config_lib.config_names():
        assert name in err
    assert not (tmp_path / "wd").exists()


def test_a_config_directory_is_named_as_one(tmp_path, capsys):
    code, _, err = run(["train", "--config", tmp_path, "--workdir", tmp_path / "wd"], capsys)
    assert code == 2 and "is a directory" in err and "does not exist" not in err, err
    assert "shapes_fcn8s" in err


def test_configs_by_name_and_by_path_are_the_same_config():
    assert {"shapes_fcn8s", "cae_mnist", "fcn32s_voc", "fcn16s_voc"} <= set(
        config_lib.config_names()
    )
    assert "__init__" not in config_lib.config_names()
    from fcnjax import configs

    shipped = Path(configs.__file__).parent / "shapes_fcn8s.py"
    by_name = config_lib.load_config("shapes_fcn8s:runlocal")
    by_path = config_lib.load_config(f"{shipped}:runlocal")
    assert by_name.to_dict() == by_path.to_dict() and by_name.num_steps == 4
    assert config_lib.load_config("shapes_fcn8s").num_steps == 4400  # no :arg, the full run
    staged = config_lib.load_config("fcn16s_voc")  # imports fcn32s_voc and overrides it
    assert staged.model.name == "fcn16s" and staged.optimizer.learning_rate == 1e-12
    assert staged.loss.reduction == "sum"  # from fcn32s_voc


def test_a_users_config_file_extends_a_shipped_one(tmp_path, capsys):
    mine = tmp_path / "my_config.py"
    mine.write_text(
        "from fcnjax.configs import shapes_fcn8s\n\n\n"
        "def get_config(arg=None):\n"
        "    c = shapes_fcn8s.get_config(arg)\n"
        "    c.num_steps = 3\n"
        "    c.log_every_steps = 1\n"
        "    return c\n"
    )
    config = config_lib.load_config(f"{mine}:runlocal")
    assert config.num_steps == 3 and config.model.width == 0.0625  # runlocal's, kept
    assert config_lib.load_config(str(mine)).model.width == 0.125
    code, out, err = run(["verify", "--config", f"{mine}:runlocal"], capsys)
    assert code == 0, err
    assert "data: Shapes, 32 examples, 0 bad" in out  # runlocal's data, through the CLI


@pytest.fixture
def fake_train(monkeypatch):
    """``train.train_and_evaluate`` replaced: records what the command line gave it."""
    from fcnjax import train

    seen = {}

    def fake(config, workdir, *, overwrite=False):
        seen.update(config=config, workdir=workdir, overwrite=overwrite)
        return {
            "eval": {},
            "eval_step": None,
            "step": 0,
            "seconds": 0.0,
            "workdir": workdir,
            "interrupted": None,
        }

    monkeypatch.setattr(train, "train_and_evaluate", fake)
    return seen


def test_no_arguments_trains_the_shipped_default(fake_train):
    assert cli.main([]) == 0
    assert fake_train["workdir"] == "runs/shapes_fcn8s" and fake_train["overwrite"] is False
    assert fake_train["config"].to_dict() == config_lib.load_config("shapes_fcn8s").to_dict()


def test_overrides_in_every_form_the_command_line_takes(fake_train, tmp_path):
    args = ["train", "--config", SHAPES, "--workdir", str(tmp_path), "batch_size=4"]
    args += ["--config.num_steps", "3", "--config.optimizer.name=sgd", "input.size=(16, 16)"]
    args += ["--config.distributed.initialize=True", "eval_data={'num_examples': 4}"]
    assert cli.main([*args, "--overwrite"]) == 0
    assert fake_train["overwrite"] is True
    config = fake_train["config"]
    assert config.batch_size == 4 and config.num_steps == 3 and config.optimizer.name == "sgd"
    assert config.input.size == (16, 16) and config.distributed.initialize is True
    assert config.eval_data.to_dict() == {"num_examples": 4}


def test_verify_names_a_data_source_pair_that_is_not_key_value(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["verify", "name=shapes", "num_examples"])
    assert e.value.code == 2
    assert "unrecognized argument 'num_examples'" in capsys.readouterr().err
