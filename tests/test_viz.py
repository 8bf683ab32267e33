"""fcnjax.viz: palettes, legends, overlays, figures and training curves, checked pixel by pixel."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
from PIL import Image

from fcnjax import viz


def test_palettes():
    voc = viz.palette(21)
    assert voc.shape == (21, 3) and voc.dtype == np.uint8
    assert voc[1].tolist() == [128, 0, 0] and voc[20].tolist() == [0, 64, 128]  # VOC's colours
    camvid = viz.palette(12, "camvid")
    assert camvid[3].tolist() == [128, 64, 128]  # SegNet's road
    assert camvid[11].tolist() == voc[11].tolist()  # past SegNet's 11: VOC's colours
    hue = viz.palette(5, "hue")
    assert hue[0].tolist() == [0, 0, 0] and len({tuple(c) for c in hue.tolist()}) == 5
    assert viz.palette(1, "hue").tolist() == [[0, 0, 0]]
    with pytest.raises(ValueError, match="`name` must be one of"):
        viz.palette(3, "viridis")
    with pytest.raises(ValueError, match="`num_classes` must be a positive int"):
        viz.palette(0)


def test_legend_has_one_swatch_per_class_in_its_colour():
    colours = viz.palette(3, "hue")
    im = viz.legend(["background", "cat", "dog"], colours, font_size=12)
    for i, c in enumerate(colours):
        y = 4 + i * 18 + 6  # inside swatch i (rows of font_size + 6 pixels)
        assert im[y, 14].tolist() == c.tolist()
    with pytest.raises(ValueError, match="3 colours for 4 names"):
        viz.legend(list("abcd"), colours)


def test_overlay_blends_only_non_background_pixels():
    image = np.full((2, 2, 3), 100, np.uint8)
    mask = np.array([[0, 1], [2, 0]])
    out = viz.overlay(image, mask, alpha=0.25)
    assert out[0, 0].tolist() == [100, 100, 100]
    assert out[0, 1].tolist() == [round(0.75 * 100 + 0.25 * 128), 75, 75]  # class 1: (128, 0, 0)


def test_segmentation_figure_layout_and_errors():
    image = np.zeros((10, 12, 3), np.uint8)
    pred = np.zeros((10, 12), int)
    pred[:, 6:] = 1
    fig = viz.segmentation_figure([image, image], [pred, pred], [pred, pred], scale=2)
    # a title strip of 20 px, then two rows of three 20x24 panels, 2 px apart
    assert fig.shape == (20 + 2 * 22 + 2, 3 * 26 + 2, 3)
    masks = fig[20 + 2 : 20 + 22, 26 + 2 : 2 * 26]  # row 1, ground truth: colours, 2x
    assert masks[0, 0].tolist() == [0, 0, 0] and masks[0, -1].tolist() == [128, 0, 0]
    named = viz.segmentation_figure([image], [pred], class_names=["bg", "thing"], mode="overlay")
    assert named.shape[1] > 2 * 14 + 2  # two panels and a legend on the right
    blended = named[20 + 2, 14 + 2 + 11]  # prediction panel, class 1: half VOC red on black
    assert blended.tolist() == [64, 0, 0]
    with pytest.raises(ValueError, match="`mode` must be 'mask' or 'overlay'"):
        viz.segmentation_figure([image], [pred], mode="blend")
    with pytest.raises(ValueError, match="one entry per example"):
        viz.segmentation_figure([image], [pred, pred])
    with pytest.raises(ValueError, match=r"predictions\[0\] has shape \(3, 3\)"):
        viz.segmentation_figure([image], [np.zeros((3, 3), int)])


def test_latent_grid_decodes_the_plane_left_to_right_and_top_to_bottom():
    seen = []

    def decode(z):
        seen.append(z)
        return np.broadcast_to(z[:, None, None, :1], (len(z), 4, 4, 1))  # brightness = x

    tiles = viz.latent_grid(decode, lo=(-1, -2), hi=(1, 2), n=3, pad=1)
    assert tiles.shape == (3 * 5 + 1, 3 * 5 + 1, 3)
    z = seen[0]
    assert z.shape == (9, 2) and z.dtype == np.float32
    np.testing.assert_allclose(z[0], [-1, 2])  # top-left: smallest x, largest y
    np.testing.assert_allclose(z[-1], [1, -2])  # bottom-right
    assert tiles[2, 2, 0] == 0 and tiles[2, 12, 0] == 255  # x rises to the right
    with pytest.raises(ValueError, match=r"must return \(9, H, W, C\) images"):
        viz.latent_grid(lambda z: np.zeros((2, 4, 4, 1)), n=3)


@pytest.mark.parametrize(("padding", "crop"), [("SAME", 1), ("VALID", 0)])
def test_zero_insertion_picture_marks_samples_zeros_and_the_first_window(padding, crop):
    cell, n, s, k = 20, 3, 2, 4
    im = viz.zero_insertion(n, s, k, padding, cell=cell)
    x0, top = (n + 2) * cell + 3 * cell, 22
    side = (n - 1) * s + 1 + 2 * (k - 1)
    blue = (158, 202, 225)

    def fill(r, c):  # a cell's colour, sampled away from its number and border
        return tuple(im[top + r * cell + 3, x0 + c * cell + 3].tolist())

    kinds = [[fill(r, c) for c in range(side)] for r in range(side)]
    samples = [(r, c) for r in range(side) for c in range(side) if kinds[r][c] == blue]
    assert samples == [(k - 1 + s * i, k - 1 + s * j) for i in range(n) for j in range(n)]
    assert kinds[k - 1 + 1][k - 1] == (255, 255, 255)  # an inserted zero
    assert kinds[0][0] == (220, 220, 220)  # border
    red = im[top + crop * cell, x0 + crop * cell + cell // 2]
    assert red.tolist() == [214, 39, 40]  # the first kept output's window starts at the crop


def test_read_metrics_keeps_the_last_value_of_a_repeated_step(tmp_path):
    lines = [
        {"step": 10, "time": 1.0, "train/loss": 2.0},
        {"step": 20, "time": 2.0, "train/loss": 1.0},
        {"step": 20, "time": 3.0, "train/loss": 0.5, "note": "x"},  # a resumed run
        {"step": 20, "eval/mean_iou": 0.5},
    ]
    (tmp_path / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in lines) + "\n")
    series = viz.read_metrics(tmp_path)
    assert sorted(series) == ["eval/mean_iou", "train/loss"]
    steps, values = series["train/loss"]
    assert steps.tolist() == [10, 20] and values.tolist() == [2.0, 0.5]
    # A cut-off final line (a killed writer) is skipped; other junk is an error.
    (tmp_path / "metrics.jsonl").write_text('{"step": 1, "a": 1}\n{"step": 2, "a')
    assert viz.read_metrics(tmp_path)["a"][0].tolist() == [1]
    (tmp_path / "metrics.jsonl").write_text('{"step": 1}\nnot json\n{"step": 2}\n')
    with pytest.raises(ValueError, match="line 2: not a metrics record"):
        viz.read_metrics(tmp_path)
    with pytest.raises(FileNotFoundError, match="no metrics file"):
        viz.read_metrics(tmp_path / "nowhere")


def test_plot_metrics_writes_the_curves_that_were_logged(tmp_path):
    rows = [{"step": s, "train/loss": 1 / s, "train/learning_rate": 0.1} for s in (1, 2, 3)]
    rows.append({"step": 3, "eval/loss": 0.4, "eval/mean_iou": 0.7, "eval/iou/cat": 0.6})
    (tmp_path / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    written = viz.plot_metrics(tmp_path)
    assert [p.name for p in written] == ["loss.png", "eval.png", "learning_rate.png"]
    for p in written:
        assert p.parent == tmp_path / "plots"
        with Image.open(p) as im:
            assert im.format == "PNG" and min(im.size) > 100
    ae = tmp_path / "ae"
    ae.mkdir()
    (ae / "metrics.jsonl").write_text(json.dumps({"step": 1, "train/loss": 0.1}))
    assert [p.name for p in viz.plot_metrics(ae, tmp_path / "out")] == ["loss.png"]
    (ae / "metrics.jsonl").write_text(json.dumps({"step": 1, "other": 0.1}))
    with pytest.raises(ValueError, match="holds no loss"):
        viz.plot_metrics(ae)


def _three_digits(n_each=20):
    """Points around one centre per label (the look-alike digits 1, 5 and 6)."""
    centres = {1: (-2.0, 1.0), 5: (2.0, 2.0), 6: (0.0, -3.0)}
    labels = np.repeat([6, 1, 5], n_each)  # unsorted: the legend sorts them
    noise = 0.3 * np.random.default_rng(0).standard_normal((len(labels), 2))
    return np.array([centres[int(v)] for v in labels]) + noise, labels


def test_scatter_figure_has_axes_ticks_labels_legend_and_the_marked_point():
    points, labels = _three_digits()
    fig = viz.scatter_figure(points, labels, highlight=(2, -4))
    image = viz.figure_to_array(fig)  # draws it: tick labels are known from here on
    assert image.shape == (480, 480, 3) and image.dtype == np.uint8
    (ax,) = fig.axes
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("z1", "z2")
    assert len([t for t in ax.get_xticklabels() if t.get_text()]) >= 3
    assert len([t for t in ax.get_yticklabels() if t.get_text()]) >= 3
    legend = ax.get_legend()
    assert legend.get_title().get_text() == "label"
    assert [t.get_text() for t in legend.get_texts()] == ["1", "5", "6"]
    assert [t.get_text() for t in ax.texts] == ["decoded (2, -4)"]
    lo, hi = ax.get_ylim()
    assert lo < -4 < hi  # the marked point is inside the axes
    assert viz.scatter_figure(points).axes[0].get_legend() is None  # no labels, no legend


def test_scatter_pixels_show_each_class_colour_where_its_point_is():
    points = np.array([[-2.7, -2.6], [0.3, 2.7], [2.6, 0.4]])  # off the grid lines
    fig = viz.scatter_figure(points, np.array([5, 1, 6]), highlight=(-2.6, 2.5), size=300)
    image = viz.figure_to_array(fig)
    assert image.shape == (300, 300, 3)
    np.testing.assert_array_equal(
        image, viz.scatter(points, [5, 1, 6], highlight=(-2.6, 2.5), size=300)
    )

    def pixel(x, y):
        px, py = fig.axes[0].transData.transform((x, y))  # from the bottom left
        return image[int(image.shape[0] - py), int(px)].astype(int)

    tab10 = {1: (31, 119, 180), 5: (255, 127, 14), 6: (44, 160, 44)}  # sorted labels: C0-C2
    for (x, y), label in zip(points, [5, 1, 6]):
        expected = 0.7 * np.array(tab10[label]) + 0.3 * 255  # alpha 0.7 over white
        np.testing.assert_allclose(pixel(x, y), expected, atol=3)
    assert pixel(-2.6, 2.5).max() < 60  # the black cross


def test_scatter_draws_axes_even_without_points():
    empty = viz.scatter(np.zeros((0, 2)))
    dark = (empty < 128).all(-1)
    assert dark.mean() > 0.005  # spines, ticks and their labels
    assert (dark.sum(0) > 0.5 * len(empty)).any()  # the left spine: one tall dark column
    points, labels = _three_digits()
    full = viz.scatter(points, labels)
    coloured = lambda im: (np.ptp(im.astype(int), -1) > 60).sum()  # noqa: E731 (not grey)
    assert coloured(empty) == 0 and coloured(full) > 10 * len(points)


def test_scatter_errors_name_the_argument():
    points, labels = _three_digits()
    with pytest.raises(ValueError, match=r"`points` must be \(M, 2\).*\(4, 3\)"):
        viz.scatter(np.zeros((4, 3)))
    with pytest.raises(ValueError, match="`labels` must hold one label per point: 60 points, 2"):
        viz.scatter(points, labels[:2])
    with pytest.raises(ValueError, match="`highlight` must be one finite point"):
        viz.scatter(points, highlight=(1, 2, 3))
    with pytest.raises(ValueError, match="`size` must be an int >= 100"):
        viz.scatter(points, size=50)


def test_plots_without_matplotlib_say_how_to_install_it(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)  # import fails
    with pytest.raises(ImportError, match=r'viz.scatter needs matplotlib.*"fcnjax\[viz\]"'):
        viz.scatter(np.zeros((3, 2)))
    (tmp_path / "metrics.jsonl").write_text(json.dumps({"step": 1, "train/loss": 0.1}))
    with pytest.raises(ImportError, match=r'pip install "fcnjax\[viz\]"'):
        viz.plot_metrics(tmp_path)
