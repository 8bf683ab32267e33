"""Images from outside as a user has them: phone photos, hostile headers, odd folder entries.

- EXIF orientation: a photo is read as viewers show it (the orientation a mask is drawn
  in), for each of the eight values, by ``read_image``, ``read_mask``, the folder source,
  ``verify``, ``fcnjax verify ... --stats``, ``fcnjax predict`` and ``colab.show``.
  The stored pixels are built from the displayed ones by the inverse of each orientation as
  the EXIF specification defines it (NumPy, not Pillow), so Pillow is not its own oracle.
- Decompression bombs and files that are not images: one line naming the file, through the
  command line (``fcnjax predict``, ``fcnjax train``), never a traceback, and nothing written.
- ``fcnjax predict`` over a folder holding a directory named like an image and names such as
  ``..png``, ``.png`` or ``b c.png``; ``fcnjax evaluate --split`` values that are no file name.
"""

from __future__ import annotations

import io
import json
import shutil
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fcnjax import cli, colab, data
from fcnjax.data import DataError
from tests.test_failures import SHAPES, one_line, run

ORIENTATION = 0x0112  # the EXIF tag

# Stored pixels from displayed ones: the inverse of what each EXIF orientation asks a viewer
# to do (orientation 6, "rotate 90 clockwise to display", is stored rotated anticlockwise).
TO_STORED = {
    1: lambda d: d,
    2: lambda d: d[:, ::-1],  # mirrored
    3: lambda d: d[::-1, ::-1],  # rotated 180
    4: lambda d: d[::-1],  # flipped
    5: lambda d: d.swapaxes(0, 1),  # transposed
    6: lambda d: np.rot90(d, 1),
    7: lambda d: d[::-1, ::-1].swapaxes(0, 1),  # transposed across the other diagonal
    8: lambda d: np.rot90(d, -1),
}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    wd = tmp_path_factory.mktemp("untrusted") / "run"
    assert cli.main(["train", "--config", SHAPES, "--workdir", str(wd)]) == 0
    return wd


def cells(h: int, w: int) -> np.ndarray:
    """``uint8 (h, w, 3)``: 8x8 cells of distinct saturated colours (JPEG blocks keep them)."""
    colours = np.array(
        [[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 0], [0, 255, 255], [255, 0, 255]]
        + [[255, 255, 255], [0, 0, 0], [128, 128, 128]],
        np.uint8,
    )
    rows, cols = np.indices((h // 8, w // 8))
    return np.kron(colours[rows * (w // 8) + cols], np.ones((8, 8, 1), np.uint8))


def save_photo(path: Path, displayed: np.ndarray, orientation: int, **options) -> None:
    """``displayed`` stored as a camera stores it, with the EXIF tag that displays it."""
    exif = Image.Exif()
    exif[ORIENTATION] = orientation
    stored = np.ascontiguousarray(TO_STORED[orientation](displayed))
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(stored).save(path, exif=exif, **options)


def save_jpeg(path: Path, displayed: np.ndarray, orientation: int) -> None:
    save_photo(path, displayed, orientation, quality=100, subsampling=0)


def bomb(path: Path, width: int = 20000, height: int = 20000) -> None:
    """A 4x4 PNG whose header declares ``width x height`` pixels (IHDR patched, CRC fixed)."""
    buf = io.BytesIO()
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(buf, format="PNG")
    png = bytearray(buf.getvalue())
    assert png[12:16] == b"IHDR"
    png[16:24] = struct.pack(">II", width, height)
    png[29:33] = struct.pack(">I", zlib.crc32(bytes(png[12:29])))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(bytes(png))


# 1. EXIF orientation.
def test_each_exif_orientation_is_read_as_displayed(tmp_path):
    displayed = cells(16, 24)
    for k in range(1, 9):
        path = tmp_path / f"o{k}.jpg"
        save_jpeg(path, displayed, k)
        image = data.read_image(path)
        assert image.shape == (16, 24, 3), k
        assert np.abs(image.astype(int) - displayed).max() <= 12, k
        grey = data.read_image(path, channels=1)
        assert grey.shape == (16, 24, 1), k
        # A mask carrying the tag (a PNG's eXIf chunk) is turned the same way, exactly.
        labels = displayed[..., 0] // 128 + 2 * (displayed[..., 1] // 128)
        save_photo(tmp_path / f"m{k}.png", labels.astype(np.uint8), k)
        np.testing.assert_array_equal(data.read_mask(tmp_path / f"m{k}.png"), labels, str(k))


def test_colab_show_displays_a_photo_upright(tmp_path):
    save_jpeg(tmp_path / "photo.jpg", cells(16, 24), 6)
    assert colab.show(tmp_path / "photo.jpg").size == (24, 16)


def phone_folder(root: Path) -> Path:
    """Photos stored rotated with their EXIF tag, masks (PNG) drawn on the displayed photo:
    class 1 where the displayed photo is white, at its top right."""
    for name, (h, w), k in (("square", (16, 16), 6), ("wide", (16, 24), 8), ("tall", (24, 16), 5)):
        photo = np.zeros((h, w, 3), np.uint8)
        photo[:8, w - 8 :] = 255
        mask = (photo[..., 0] > 0).astype(np.uint8)
        save_jpeg(root / "images" / f"{name}.jpg", photo, k)
        (root / "masks").mkdir(exist_ok=True)
        Image.fromarray(mask).save(root / "masks" / f"{name}.png")
    return root


def test_a_folder_of_phone_photos_lines_up_with_its_masks(tmp_path, capsys):
    root = phone_folder(tmp_path)
    source = data.get_source({"name": "folder", "root": str(root), "num_classes": 2})
    assert data.verify(source) is source and len(source) == 3  # no example is bad
    for i in range(len(source)):
        example = source[i]
        image, mask = example["image"], example["mask"]
        assert image.shape[:2] == mask.shape and mask.sum() == 64, source.describe(i)
        assert image[mask == 1].min() > 200 and image[mask == 0].max() < 50, source.describe(i)
    # fcnjax verify: reads every example, then counts the classes.
    assert cli.main(["verify", f"root={root}", "name=folder", "num_classes=2", "--stats"]) == 0
    out = capsys.readouterr().out
    assert "3 examples, 0 bad" in out and "| 1 | 192 |" in out


def test_predict_writes_masks_of_the_displayed_size(trained, tmp_path, capsys):
    save_jpeg(tmp_path / "in" / "photo.jpg", cells(16, 24), 6)
    args = ["predict", "--workdir", trained, "--input", tmp_path / "in", "--output"]
    code, _, err = run([*args, tmp_path / "out"], capsys)
    assert code == 0, err
    for name in ("photo.png", "photo_color.png", "photo_overlay.png"):
        with Image.open(tmp_path / "out" / name) as im:
            assert im.size == (24, 16), name


# 2. Decompression bombs and files that are not images.
def test_a_decompression_bomb_is_one_line_naming_the_file(tmp_path, monkeypatch):
    bomb(tmp_path / "bomb.png")
    with pytest.raises(DataError) as info:
        data.read_image(tmp_path / "bomb.png")
    message = str(info.value)
    assert message.startswith(f"{tmp_path / 'bomb.png'}: ") and "\n" not in message
    assert "20000x20000" in message and "PIL.Image.MAX_IMAGE_PIXELS" in message
    with pytest.raises(DataError, match="20000x20000"):
        data.read_mask(tmp_path / "bomb.png")
    # Between the limit and twice it Pillow only warns; where warnings are errors, the same.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    Image.fromarray(np.zeros((12, 12, 3), np.uint8)).save(tmp_path / "big.png")
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        with pytest.raises(
            DataError, match="12x12 pixels, over Pillow's decompression-bomb limit of 100 pixels"
        ):
            data.read_image(tmp_path / "big.png")


def test_cli_refuses_a_bomb_in_one_line(trained, tmp_path, capsys):
    bomb(tmp_path / "in" / "bomb.png")
    args = ["predict", "--workdir", trained, "--input", tmp_path / "in" / "bomb.png"]
    code, _, err = run([*args, "--output", tmp_path / "out"], capsys)
    line = one_line(err)
    assert code == 1 and f"{tmp_path / 'in' / 'bomb.png'}: " in line and "20000x20000" in line
    assert not (tmp_path / "out").exists()
    # A folder dataset holding it: training stops before it starts, naming the file.
    root = phone_folder(tmp_path / "data")
    bomb(root / "images" / "zz.png")
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(root / "masks" / "zz.png")
    config = tmp_path / "folder_config.py"
    config.write_text(
        "from fcnjax.configs import shapes_fcn8s\n\n\n"
        "def get_config(arg=None):\n"
        "    c = shapes_fcn8s.get_config('runlocal')\n"
        f"    c.data = dict(name='folder', root={str(root)!r}, num_classes=4)\n"
        "    c.eval_data = None\n"
        "    return c\n"
    )
    code, _, err = run(["train", "--config", config, "--workdir", tmp_path / "run"], capsys)
    assert code == 1 and "1 of 4 examples are bad" in one_line(err)
    assert f"{root / 'images' / 'zz.png'}" in err and "20000x20000" in err
    assert not (tmp_path / "run" / "config.json").exists()


def test_predict_refuses_a_file_that_is_no_image_before_writing(trained, tmp_path, capsys):
    save_jpeg(tmp_path / "in" / "a.jpg", cells(16, 24), 1)
    (tmp_path / "in" / "notes.png").write_text("not a picture")
    args = ["predict", "--workdir", trained, "--input", tmp_path / "in"]
    code, _, err = run([*args, "--output", tmp_path / "out"], capsys)
    line = one_line(err)
    assert code == 1 and f"{tmp_path / 'in' / 'notes.png'}: " in line and "image" in line
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


# 3. Folder entries and split names.
def test_predict_over_a_folder_of_odd_names(trained, tmp_path, capsys, caplog):
    inputs, out = tmp_path / "in", tmp_path / "out"
    (inputs / "dir.png").mkdir(parents=True)
    (inputs / "dir.png" / "inside.png").write_text("never read")
    names = ("..png", ".png", "b c.png", "a.png")
    for name in names:
        Image.fromarray(cells(16, 24)).save(inputs / name, format="PNG")
    code, stdout, err = run(
        ["predict", "--workdir", trained, "--input", inputs, "--output", out], capsys
    )
    assert code == 0, err
    assert "dir.png" in err + caplog.text and "not a file" in err + caplog.text
    written = sorted(p.name for p in out.iterdir())
    stems = [Path(n).stem for n in names]
    assert written == sorted(
        f"{s}{tail}" for s in stems for tail in (".png", "_color.png", "_overlay.png")
    )
    for name in names:
        assert f"{inputs / name} -> " in stdout


def test_evaluate_writes_any_split_to_a_safe_file_name(trained, tmp_path, capsys):
    wd = tmp_path / "run"
    shutil.copytree(trained, wd)
    root = tmp_path / "data"
    splits = ("a/b", "train[:10%]")
    for split in splits:
        photo = cells(16, 24)
        (root / split / "images").mkdir(parents=True)
        (root / split / "masks").mkdir()
        Image.fromarray(photo).save(root / split / "images" / "0.png")
        Image.fromarray(photo[..., 0] // 128 * 2).save(root / split / "masks" / "0.png")
    config = json.loads((wd / "config.json").read_text())
    config["data"] = {"name": "folder", "root": str(root), "num_classes": 4}
    config["eval_data"] = {}
    (wd / "config.json").write_text(json.dumps(config))
    for split, name in zip(splits, ("eval_a_b.json", "eval_train__10__.json")):
        code, _, err = run(["evaluate", "--workdir", wd, "--split", split], capsys)
        assert code == 0, err
        results = json.loads((wd / name).read_text())
        assert results["split"] == split and 0 <= results["pixel_accuracy"] <= 1
    assert not (wd / "eval_a").exists()
