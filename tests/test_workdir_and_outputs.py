"""A workdir's record and prediction's outputs: nothing a user has is lost or replaced.

- A resume whose config builds another network or optimizer than the checkpoint's is
  refused before anything in the workdir is written, naming what changed; evaluation then
  still reads the workdir as it was.
- A workdir whose config and checkpoint disagree is refused by ``evaluate``/``predict``,
  never evaluated with another network.
- A user's own files with the names of a run's outputs are refused, then replaced only with
  ``--overwrite``.
- Prediction creates each output exclusively: two concurrent runs never replace each
  other's files, a planted link is never written through, and Ctrl-C says what was written.
- A greyscale model takes a colour photo the way its training images were read.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fcnjax import cli, predict
from fcnjax.data import Shapes
from fcnjax.training import workdir
from tests.test_failures import SHAPES, one_line, run

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "JAX_PLATFORMS": "cpu"}


def snapshot(directory: Path) -> dict[str, tuple[bytes, int]]:
    """Every file under ``directory``: its bytes and modification time."""
    return {
        str(p.relative_to(directory)): (p.read_bytes(), p.stat().st_mtime_ns)
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    wd = tmp_path_factory.mktemp("record") / "run"
    assert cli.main(["train", "--config", SHAPES, "--workdir", str(wd)]) == 0
    return wd


# A folder dataset of greyscale images with 3 classes, and a config file that trains on it.
FOLDER_CONFIG = """
from fcnjax.configs import shapes_fcn8s

def get_config(arg=None):
    c = shapes_fcn8s.get_config("runlocal")
    c.data = dict(name="folder", root={root!r}, split="train", num_classes=int(arg or 3),
                  channels=1)
    c.eval_data = dict(split="val")
    c.input.eval_mode = "none"
    return c
"""


@pytest.fixture(scope="module")
def grey(tmp_path_factory):
    """``(config file, workdir)`` of a greyscale FCN-8s trained on 3 classes."""
    root = tmp_path_factory.mktemp("grey")
    for split, n in (("train", 8), ("val", 2)):
        for i in range(n):
            example = Shapes(1, size=(40, 40), seed=i + 100 * len(split))[0]
            mask = np.minimum(example["mask"], 2).astype(np.uint8)
            for sub, array in (("images", example["image"][..., 0]), ("masks", mask)):
                (root / split / sub).mkdir(parents=True, exist_ok=True)
                Image.fromarray(array).save(root / split / sub / f"{i}.png")
    config = root / "grey_config.py"
    config.write_text(FOLDER_CONFIG.format(root=str(root)))
    wd = root / "run"
    assert cli.main(["train", "--config", str(config), "--workdir", str(wd)]) == 0
    return config, wd


@pytest.mark.parametrize(
    "override, words",
    [
        (
            "--config.model.name=fcn32s",
            ["model.name: 'fcn8s' -> 'fcn32s'", "only in the checkpoint: params/"],
        ),
        ("--config.model.width=0.125", ["model.width: 0.0625 -> 0.125", "in the checkpoint, ("]),
        ("--config.optimizer.name=sgd", ["optimizer.name: 'adamw' -> 'sgd'"]),
    ],
)
def test_a_resume_of_another_network_is_refused_and_touches_nothing(
    trained, override, words, capsys
):
    before = snapshot(trained)
    code, _, err = run(["train", "--config", SHAPES, "--workdir", trained, override], capsys)
    line = one_line(err)
    assert code == 2, err
    assert "cannot resume from" in line and "nothing in" in line
    for w in words:
        assert w in line, line
    assert "Move it away" not in line and "corrupt" not in line  # the checkpoint is fine
    assert snapshot(trained) == before


def test_a_resume_with_another_class_count_is_refused_and_evaluate_still_agrees(grey, capsys):
    config, wd = grey
    expected = json.loads((wd / "final_metrics.json").read_text())["eval"]["mean_iou"]
    before = snapshot(wd)
    code, _, err = run(["train", "--config", f"{config}:4", "--workdir", wd], capsys)
    line = one_line(err)
    assert code == 2 and "classes: 3 -> 4" in line, err
    assert snapshot(wd) == before
    code, out, err = run(["evaluate", "--workdir", wd], capsys)
    assert code == 0, err
    assert json.loads((wd / "eval_val.json").read_text())["mean_iou"] == pytest.approx(expected)


def test_evaluate_refuses_a_workdir_whose_config_is_another_networks(trained, tmp_path, capsys):
    wd = tmp_path / "copy"
    shutil.copytree(trained, wd)
    config = json.loads((wd / "config.json").read_text())
    config["model"]["name"] = "fcn32s"  # what a refused resume used to leave behind
    (wd / "config.json").write_text(json.dumps(config))
    for command in (["evaluate"], ["predict", "--input", tmp_path, "--output", tmp_path / "o"]):
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "x.png")
        code, _, err = run([*command, "--workdir", wd], capsys)
        line = one_line(err)
        assert code == 1 and "holds another network than" in line, err
        assert "not in the checkpoint" not in line and "only in the checkpoint" in line


@pytest.mark.parametrize("name", ["predictions.png", "run_info.json", "checkpoints"])
def test_a_users_own_files_are_refused_by_name(name, trained, tmp_path, capsys):
    wd = tmp_path / "mine"
    wd.mkdir()
    if name == "checkpoints":
        (wd / name).mkdir()
        (wd / name / "notes.txt").write_text("mine")
    else:  # a file of that name: the user's own, or an fcnjax file copied from elsewhere
        shutil.copy(trained / "run_info.json", wd / name)
    before = snapshot(wd)
    code, _, err = run(["train", "--config", SHAPES, "--workdir", wd], capsys)
    line = one_line(err)
    assert code == 2 and name in line and "--overwrite" in line and "did not write" in line
    after = snapshot(wd)
    after.pop(workdir.LOCK_NAME)  # the claim's empty lock file, and nothing else, is new
    assert after == before


def test_overwrite_replaces_a_users_file_and_the_run_then_owns_it(tmp_path, capsys):
    wd = tmp_path / "mine"
    wd.mkdir()
    (wd / "predictions.png").write_bytes(b"the user's own picture")
    assert run(["train", "--config", SHAPES, "--workdir", wd, "--overwrite"], capsys)[0] == 0
    with Image.open(wd / "predictions.png") as im:  # fcnjax's picture now
        assert im.format == "PNG"
    assert workdir.foreign_files(wd) == []
    code, _, err = run(["train", "--config", SHAPES, "--workdir", wd], capsys)  # its own run
    assert code == 0, err


def test_write_new_never_replaces_nor_follows_a_link(tmp_path):
    outside = tmp_path / "outside.png"
    (tmp_path / "out").mkdir()
    link = tmp_path / "out" / "a.png"
    link.symlink_to(outside)  # dangling
    with pytest.raises(FileExistsError):
        workdir.write_new(link, b"x")
    assert not outside.exists()
    workdir.write_new(link, b"x", replace=True)  # the link itself is replaced
    assert not link.is_symlink() and link.read_bytes() == b"x" and not outside.exists()
    with pytest.raises(FileExistsError):
        workdir.write_new(link, b"y")
    assert link.read_bytes() == b"x"


def _images(directory: Path, n: int, seed: int, size: int = 40) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    source = Shapes(n, size=(size, size), seed=seed, split="test")
    for i in range(n):
        Image.fromarray(source[i]["image"]).save(directory / f"img{i:02d}.png")


def test_a_dangling_link_in_the_output_folder_is_not_written_through(trained, tmp_path, capsys):
    _images(tmp_path / "in", 1, 0)
    out, outside = tmp_path / "out", tmp_path / "elsewhere" / "img00.png"
    out.mkdir()
    outside.parent.mkdir()
    (out / "img00.png").symlink_to(outside)
    args = ["predict", "--workdir", trained, "--input", tmp_path / "in", "--output", out]
    code, _, err = run(args, capsys)
    assert code == 2 and "img00.png" in one_line(err) and "--overwrite" in one_line(err)
    assert not outside.exists()
    assert run([*args, "--overwrite"], capsys)[0] == 0
    assert not outside.exists() and not (out / "img00.png").is_symlink()


def _predict_process(wd: Path, inp: Path, out: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "fcnjax",
            "predict",
            "--workdir",
            wd,
            "--input",
            inp,
            "--output",
            out,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
        cwd=ROOT,
    )


def test_two_concurrent_predictions_never_replace_each_others_files(trained, tmp_path):
    n = 12
    _images(tmp_path / "a", n, seed=1)  # the same names, other pictures
    _images(tmp_path / "b", n, seed=2)
    out = tmp_path / "out"
    procs = [_predict_process(trained, tmp_path / x, out) for x in "ab"]
    results = [(p.wait(timeout=300), *p.communicate()) for p in procs]
    codes = sorted(code for code, _, _ in results)
    assert codes[0] == 0 and codes[1] == 2, results  # exactly one refused
    err = next(err for code, _, err in results if code == 2)
    assert re.search(r"appeared while predicting|exist already", one_line(err)), err
    # Each image's three files come from one run: the index PNG and the colour PNG agree.
    files = sorted(p.name for p in out.iterdir())
    assert len(files) % 3 == 0
    for index in (out / f for f in files if re.fullmatch(r"img\d\d\.png", f)):
        mask = np.asarray(Image.open(index))
        colour = np.asarray(Image.open(index.with_name(index.stem + "_color.png")).convert("RGB"))
        palette = np.asarray(Image.open(index).convert("RGB"))
        assert (colour == palette).all() and mask.shape == colour.shape[:2]


def test_ctrl_c_during_predict_counts_what_was_written(trained, tmp_path):
    n = 60
    _images(tmp_path / "in", n, seed=3, size=160)
    out = tmp_path / "out"
    proc = _predict_process(trained, tmp_path / "in", out)
    try:
        deadline = time.monotonic() + 120
        while not (out.is_dir() and len(list(out.glob("*_overlay.png"))) >= 2):
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.02)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    line = one_line(err)
    m = re.search(r"(\d+) of 60 images were predicted \((\d+) files", line)
    assert m and "nothing was saved" not in line, line
    done, files = int(m.group(1)), int(m.group(2))
    assert 2 <= done < n and files == 3 * done
    assert len([p for p in out.iterdir() if not p.name.startswith(".")]) == files
    assert not list(out.glob(".*"))  # no temporary file left


def test_a_ctrl_c_between_an_images_files_waits_for_all_of_them(tmp_path, monkeypatch):
    """The race the test above can hit: SIGINT right after a file is linked into place and
    before it is counted. Held back until the image's three files are all there."""
    real = workdir.write_new

    def interrupted(path, data, **kw):
        written = real(path, data, **kw)
        signal.raise_signal(signal.SIGINT)  # Ctrl-C at the worst moment
        return written

    monkeypatch.setattr(workdir, "write_new", interrupted)
    mask = np.arange(48, dtype=np.uint8).reshape(6, 8) % 3
    image = np.zeros((6, 8, 3), np.uint8)
    with pytest.raises(KeyboardInterrupt):
        predict.save_prediction(mask, image, tmp_path / "a.png")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "a_color.png", "a_overlay.png"]
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "a.png")), mask)


def test_a_failed_write_leaves_none_of_an_images_files(tmp_path, monkeypatch):
    real, calls = workdir.write_new, []

    def full_disk(path, data, **kw):
        calls.append(path)
        if len(calls) == 3:
            raise OSError(28, "No space left on device", str(path))
        return real(path, data, **kw)

    monkeypatch.setattr(workdir, "write_new", full_disk)
    with pytest.raises(OSError, match="No space"):
        predict.save_prediction(
            np.zeros((4, 4), np.uint8), np.zeros((4, 4, 1), np.uint8), tmp_path / "b.png"
        )
    assert list(tmp_path.iterdir()) == []


def test_a_greyscale_model_reads_a_colour_photo_as_its_training_did(grey, tmp_path, capsys):
    _, wd = grey
    photo = tmp_path / "photo.jpg"
    Image.fromarray(Shapes(1, size=(30, 44), split="test")[0]["image"]).save(photo)
    code, _, err = run(["predict", "--workdir", wd, "--input", photo, "--output", tmp_path], capsys)
    assert code == 0, err
    mask = np.asarray(Image.open(tmp_path / "photo.png"))
    assert mask.shape == (30, 44) and mask.max() < 3
    grey_photo = np.asarray(Image.open(photo).convert("L"))[..., None]
    np.testing.assert_array_equal(predict.predict_segmentation(wd, grey_photo), mask)
    with pytest.raises(ValueError, match=r"takes images of 1 channel\(s\).*\(30, 44, 3\)"):
        predict.predict_segmentation(wd, np.asarray(Image.open(photo)))


def test_an_image_cut_off_in_its_pixels_names_what_was_written(trained, tmp_path, capsys):
    _images(tmp_path / "in", 2, seed=4, size=64)
    cut = tmp_path / "in" / "img01.png"
    cut.write_bytes(cut.read_bytes()[: cut.stat().st_size // 2])  # the header is whole
    out = tmp_path / "out"
    args = ["predict", "--workdir", trained, "--input", tmp_path / "in", "--output", out]
    code, _, err = run(args, capsys)
    line = one_line(err)
    assert code == 1 and str(cut) in line, err
    assert "1 of 2 images were predicted (3 files in" in line
    assert sorted(p.name for p in out.iterdir()) == [
        "img00.png",
        "img00_color.png",
        "img00_overlay.png",
    ]
