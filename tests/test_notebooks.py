"""The colab/ notebooks, executed top to bottom on the CPU in smoke mode (nbclient).

``FCNJAX_SMOKE=1`` makes every notebook run its configs' ``:runlocal`` variants on
generated data: TFDS's MNIST and Oxford-IIIT Pet are prepared without TensorFlow, as for a
user, from look-alike release files in the real formats (``fcnjax.colab.data_context``);
the issue's budget is 3 minutes a notebook. Outputs are never committed: the files must hold none.
"""

from __future__ import annotations

import time
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from fcnjax.config import ConfigError

COLAB = Path(__file__).resolve().parent.parent / "colab"
NOTEBOOKS = sorted(p.name for p in COLAB.glob("*.ipynb"))


def test_the_three_notebooks_exist_without_outputs():
    assert NOTEBOOKS == [
        "01_transposed_convolution.ipynb",
        "02_autoencoder_mnist.ipynb",
        "03_fcn_segmentation_tpu.ipynb",
    ]
    for name in NOTEBOOKS:
        book = nbformat.read(COLAB / name, as_version=4)
        nbformat.validate(book)
        code = [c for c in book.cells if c.cell_type == "code"]
        assert code and all(not c.outputs and c.execution_count is None for c in code), name
        assert "colab-badge.svg" in book.cells[0].source, name


def test_the_notebooks_target_colabs_tpu_v5e_1():
    """Colab's TPU runtime is a v5e-1 (one chip); the v2-8 and its 8 cores are gone."""
    for name in NOTEBOOKS:
        text = (COLAB / name).read_text()
        assert "v2-8" not in text and "TPU cores" not in text, name
    book = nbformat.read(COLAB / "03_fcn_segmentation_tpu.ipynb", as_version=4)
    assert book.metadata["accelerator"] == "TPU" and book.metadata.colab.gpuType == "V5E1"


def test_colab_config_follows_the_smoke_switch(monkeypatch):
    from fcnjax import colab

    monkeypatch.setenv("FCNJAX_SMOKE", "1")
    assert colab.smoke() and colab.config("cae_mnist").num_steps == 4  # :runlocal
    monkeypatch.setenv("FCNJAX_SMOKE", "0")
    full = colab.config("cae_mnist", overrides=["batch_size=16"])
    assert not colab.smoke() and full.num_epochs == 10 and full.batch_size == 16
    with pytest.raises(ConfigError, match="unknown config 'nope'.*shapes_fcn8s"):
        colab.config("nope")


def _run(name: str, tmp_path: Path, monkeypatch) -> tuple[nbformat.NotebookNode, float]:
    monkeypatch.setenv("FCNJAX_SMOKE", "1")
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    book = nbformat.read(COLAB / name, as_version=4)
    client = NotebookClient(
        book, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    start = time.perf_counter()
    client.execute()
    return book, time.perf_counter() - start


def _text(book) -> str:
    parts = []
    for cell in book.cells:
        for out in cell.get("outputs", []):
            parts.append(out.get("text", "") or str(out.get("data", {}).get("text/plain", "")))
    return "\n".join(parts)


def _images(book) -> int:
    return sum(
        "image/png" in out.get("data", {}) for c in book.cells for out in c.get("outputs", [])
    )


def test_01_transposed_convolution(tmp_path, monkeypatch):
    book, seconds = _run("01_transposed_convolution.ipynb", tmp_path, monkeypatch)
    text = _text(book)
    assert "scatter:          [   1.   10.  102. 1020.  203. 2030.  300. 3000.]" in text, text
    assert "kernel 3, stride 2: contributions per interior output pixel [1.0, 2.0, 4.0]" in text
    assert "kernel 4, stride 2: contributions per interior output pixel [4.0]" in text
    assert "gradients agree: True" in text
    assert "PyTorch" in text and "Keras" in text  # both peers ran (the test extra has them)
    assert _images(book) == 4  # two zero insertions, bilinear upsampling, checkerboards
    print(f"01 ran in {seconds:.0f} s")


def test_02_autoencoder_mnist(tmp_path, monkeypatch):
    book, seconds = _run("02_autoencoder_mnist.ipynb", tmp_path, monkeypatch)
    text = _text(book)
    assert "decoded (2, -4): (28, 28, 1)" in text
    assert "Dataset mnist downloaded and prepared" in text  # the real preparation ran
    wd = tmp_path / "runs" / "cae_mnist"
    for name in ("reconstructions.png", "latent.png", "decoded.png", "latent_grid.png"):
        assert (wd / name).is_file(), name
    assert (wd / "plots" / "loss.png").is_file()
    assert _images(book) == 5  # reconstructions, latent scatter, (2, -4), the grid, the loss
    print(f"02 ran in {seconds:.0f} s")


def test_03_fcn_segmentation(tmp_path, monkeypatch):
    book, seconds = _run("03_fcn_segmentation_tpu.ipynb", tmp_path, monkeypatch)
    text = _text(book)
    assert "backend: cpu" in text and "mean_iou" in text and "frequency_weighted_iou" in text
    assert "mesh: {'data': 1}" in text and '"dtype": "float32"' in text  # bfloat16 on TPU only
    assert "global batch 2 on 1 device(s): (2, 32, 32, 3) per device" in text
    assert "resumed from step 2, now at step 4" in text
    assert "Dataset oxford_iiit_pet downloaded and prepared" in text  # once, then reused
    assert text.count("Dataset oxford_iiit_pet downloaded and prepared") == 1
    wd = tmp_path / "runs" / "fcn8s_pets"
    assert (wd / "checkpoints" / "4").is_dir() and (wd / "plots" / "eval.png").is_file()
    assert _images(book) == 2  # the predictions figure and the loss curve
    print(f"03 ran in {seconds:.0f} s")


@pytest.fixture(autouse=True)
def _no_stray_smoke(monkeypatch):
    monkeypatch.delenv("FCNJAX_SMOKE", raising=False)
