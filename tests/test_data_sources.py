"""Sources on small files written here in the real layouts and formats, and their errors."""

import json
import logging
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fcnjax import data, viz
from fcnjax.data import IGNORE_LABEL, DataError

RNG = np.random.default_rng(0)


def write_image(path, h, w, fmt=None):
    Image.fromarray(RNG.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path, format=fmt)


def write_mask(path, mask, palette=False):
    img = Image.fromarray(mask.astype(np.uint8), mode="L")
    if palette:
        img = img.convert("P")
        img.putpalette(viz.palette(256).ravel().tolist())
        img.putdata(mask.ravel().tolist())
    img.save(path)


def random_mask(h, w, num_classes, ignore_frac=0.1):
    mask = RNG.integers(0, num_classes, (h, w)).astype(np.uint8)
    mask[RNG.uniform(size=(h, w)) < ignore_frac] = IGNORE_LABEL
    return mask


def make_folder(tmp_path, n=4, num_classes=3, h=20, w=24):
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    masks = {}
    for i in range(n):
        write_image(tmp_path / "images" / f"im{i}.jpg", h, w)
        masks[f"im{i}"] = random_mask(h, w, num_classes)
        write_mask(tmp_path / "masks" / f"im{i}.png", masks[f"im{i}"])
    return masks


# --------------------------------------------------------------------------------------
# folder


def test_folder_pairs_by_stem_and_reads_exact_masks(tmp_path):
    masks = make_folder(tmp_path)
    src = data.get_source({"name": "folder", "root": str(tmp_path), "num_classes": 3})
    assert len(src) == 4
    for i in range(4):
        ex = src[i]
        assert ex["image"].shape == (20, 24, 3) and ex["image"].dtype == np.uint8
        np.testing.assert_array_equal(ex["mask"], masks[f"im{i}"])


def test_folder_rgb_masks_read_like_keras_segmentation(tmp_path, caplog):
    # keras-segmentation: cv2.imread (BGR) then [:, :, 0], i.e. the blue channel.
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    write_image(tmp_path / "images" / "a.png", 6, 7)
    write_image(tmp_path / "images" / "b.png", 6, 7)
    mask = random_mask(6, 7, 2, 0)
    Image.fromarray(np.stack([mask] * 3, -1)).save(tmp_path / "masks" / "a.png")
    rgb = np.stack([np.full_like(mask, 9), np.full_like(mask, 200), mask], -1)
    Image.fromarray(rgb).save(tmp_path / "masks" / "b.bmp")
    src = data.Folder(tmp_path, num_classes=2)
    with caplog.at_level(logging.WARNING, logger="fcnjax.data"):
        np.testing.assert_array_equal(src[0]["mask"], mask)
        assert not caplog.text
        np.testing.assert_array_equal(src[1]["mask"], mask)
    assert "b.bmp: the mask's channels differ" in caplog.text


def test_high_bit_depth_images_and_bad_label_maps_are_refused(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    Image.fromarray(np.full((4, 5), 40000, np.uint16)).save(tmp_path / "images" / "a.png")
    write_mask(tmp_path / "masks" / "a.png", np.zeros((4, 5)))
    with pytest.raises(DataError, match=r"a.png: a 'I;16' .* would be clipped to 8 bits"):
        data.Folder(tmp_path, num_classes=2)[0]
    with pytest.raises(ValueError, match=r"`label_map` entries must map \[0, 255\]"):
        data.Folder(tmp_path, num_classes=2, label_map={300: 0})


def test_folder_list_file_orders_and_restricts(tmp_path):
    masks = make_folder(tmp_path)
    (tmp_path / "val.txt").write_text("im3\n# comment\n\nim1.jpg\n")
    write_image(tmp_path / "images" / "scan.v2.jpg", 20, 24)
    write_mask(tmp_path / "masks" / "scan.v2.png", masks["im0"])
    (tmp_path / "dotted.txt").write_text("scan.v2\n")
    assert data.Folder(tmp_path, 3, list_file="dotted.txt").pairs[0][0].name == "scan.v2.jpg"
    src = data.Folder(tmp_path, 3, list_file="val.txt")
    assert len(src) == 2
    np.testing.assert_array_equal(src[0]["mask"], masks["im3"])
    (tmp_path / "bad.txt").write_text("im1\nnope\n")
    with pytest.raises(DataError, match=r"bad.txt.*1 listed name.*nope"):
        data.Folder(tmp_path, 3, list_file="bad.txt")


def test_folder_split_subdirectory(tmp_path):
    (tmp_path / "train").mkdir()
    make_folder(tmp_path / "train", n=2)
    assert len(data.Folder(tmp_path, 3, split="train")) == 2


@pytest.mark.parametrize(
    "damage, message",
    [
        (
            lambda p: (p / "masks" / "im1.png").unlink(),
            r"1 image\(s\) in .*images have no mask.*im1.jpg",
        ),
        (
            lambda p: (p / "images" / "im2.jpg").unlink(),
            r"1 mask\(s\) in .*masks have no image.*im2.png",
        ),
        (
            lambda p: write_image(p / "images" / "im0.png", 3, 3),
            r"two images files share the stem 'im0'",
        ),
    ],
)
def test_folder_pairing_errors_name_the_files(tmp_path, damage, message):
    make_folder(tmp_path)
    damage(tmp_path)
    with pytest.raises(DataError, match=message):
        data.Folder(tmp_path, num_classes=3)


def test_folder_missing_and_empty_directories(tmp_path):
    with pytest.raises(DataError, match=r"nowhere.*images directory does not exist"):
        data.Folder(tmp_path / "nowhere", 3)
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    (tmp_path / "images" / "notes.txt").write_text("not an image")
    with pytest.raises(DataError, match=r"images directory has no files with extension"):
        data.Folder(tmp_path, 3)
    with pytest.raises(ValueError, match="needs `num_classes`"):
        data.Folder(tmp_path)


def test_verify_finds_every_bad_example_and_skip_reports_them(tmp_path, caplog):
    make_folder(tmp_path, n=5)
    write_mask(tmp_path / "masks" / "im0.png", np.zeros((19, 24)))  # wrong size
    write_mask(tmp_path / "masks" / "im1.png", np.full((20, 24), 7))  # label >= num_classes
    jpeg = (tmp_path / "images" / "im2.jpg").read_bytes()
    (tmp_path / "images" / "im2.jpg").write_bytes(jpeg[: len(jpeg) // 2])  # truncated
    src = data.Folder(tmp_path, num_classes=3)
    with pytest.raises(DataError) as info:
        data.verify(src)
    text = str(info.value)
    assert "3 of 5 examples are bad" in text
    assert "im0.jpg" in text and "mask is 19x24 but the image is 20x24" in text
    assert "im1.jpg" in text and "labels [7] are >= num_classes=3" in text
    assert "im2.jpg" in text and "cannot read the image" in text
    with caplog.at_level(logging.WARNING, logger="fcnjax.data"):
        good = data.get_source(
            {"name": "folder", "root": str(tmp_path), "num_classes": 3, "on_error": "skip"}
        )
    assert len(good) == 2 and [p.index for p in good.skipped] == [0, 1, 2]
    assert "Skipping 3 of 5 examples" in caplog.text and "im2.jpg" in caplog.text
    assert {good.describe(i).split()[0].rsplit("/", 1)[1] for i in range(2)} == {
        "im3.jpg",
        "im4.jpg",
    }
    # verify=False defers the same errors to loading, still naming the file.
    lazy = data.get_source(
        {"name": "folder", "root": str(tmp_path), "num_classes": 3, "verify": False}
    )
    with pytest.raises(DataError, match=r"im1.jpg.*labels \[7\]"):
        lazy[1]


# --------------------------------------------------------------------------------------
# voc


def make_voc(tmp_path, sbd=True):
    root = tmp_path / "VOCdevkit" / "VOC2012"
    for d in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (root / d).mkdir(parents=True)
    ids = [f"2007_00000{i}" for i in range(5)]
    masks = {}
    for i in ids:
        write_image(root / "JPEGImages" / f"{i}.jpg", 12, 16)
        masks[i] = random_mask(12, 16, 21)
        write_mask(root / "SegmentationClass" / f"{i}.png", masks[i], palette=True)
    (root / "ImageSets/Segmentation/train.txt").write_text("\n".join(ids[:3]) + "\n")
    (root / "ImageSets/Segmentation/val.txt").write_text("\n".join(ids[3:]) + "\n")
    (root / "ImageSets/Segmentation/trainval.txt").write_text("\n".join(ids) + "\n")
    if sbd:
        from scipy.io import savemat

        ds = tmp_path / "SBD" / "dataset"
        (ds / "img").mkdir(parents=True)
        (ds / "cls").mkdir()
        sbd_ids = [ids[0], ids[3], "2008_000001", "2008_000002"]  # overlaps VOC train and val
        for i in sbd_ids:
            write_image(ds / "img" / f"{i}.jpg", 10, 11)
            masks[("sbd", i)] = RNG.integers(0, 21, (10, 11)).astype(np.uint8)
            gt = {
                "Segmentation": masks[("sbd", i)],
                "Boundaries": np.zeros(1),
                "CategoriesPresent": np.zeros(1),
            }
            savemat(ds / "cls" / f"{i}.mat", {"GTcls": gt})
        (ds / "train.txt").write_text("\n".join(sbd_ids[:3]) + "\n")
        (ds / "val.txt").write_text(sbd_ids[3] + "\n")
    return root, ids, masks


def test_voc_palette_pngs_give_class_indices(tmp_path):
    root, ids, masks = make_voc(tmp_path)
    src = data.get_source({"name": "voc", "root": str(tmp_path / "VOCdevkit"), "split": "train"})
    assert len(src) == 3 and src.num_classes == 21 and src.class_names[15] == "person"
    palette = viz.palette(256)
    for k, i in enumerate(ids[:3]):
        mask = src[k]["mask"]
        np.testing.assert_array_equal(mask, masks[i])
        # Independent path: the PNG as RGB colours, mapped back through the VOC colour map.
        rgb = np.asarray(Image.open(root / "SegmentationClass" / f"{i}.png").convert("RGB"))
        lookup = {tuple(c): j for j, c in enumerate(palette[:21])} | {tuple(palette[255]): 255}
        np.testing.assert_array_equal(mask, [[lookup[tuple(p)] for p in row] for row in rgb])
    assert len(data.VOC(root, "val")) == 2 and len(data.VOC(root, "trainval")) == 5


def test_voc_sbd_and_train_aug(tmp_path):
    root, ids, masks = make_voc(tmp_path)
    sbd = data.VOC(root, "sbd_train")
    assert len(sbd) == 3
    np.testing.assert_array_equal(sbd[2]["mask"], masks[("sbd", "2008_000001")])
    aug = data.VOC(root, "train_aug")
    # VOC train (3) + SBD ids not in VOC val and not already there (2008_000001/2).
    assert [p.stem for p, _, _ in aug.items] == sorted([*ids[:3], "2008_000001", "2008_000002"])
    k = [p.stem for p, _, _ in aug.items].index(ids[0])
    np.testing.assert_array_equal(aug[k]["mask"], masks[ids[0]])  # VOC's own mask wins
    with pytest.raises(DataError, match="no SBD found"):
        data.VOC(make_voc(tmp_path / "other", sbd=False)[0], "train_aug")


def test_voc_errors(tmp_path):
    with pytest.raises(DataError, match="not a VOC folder"):
        data.VOC(tmp_path)
    root, ids, _ = make_voc(tmp_path)
    (root / "JPEGImages" / f"{ids[1]}.jpg").unlink()
    with pytest.raises(DataError, match=rf"1 listed file\(s\) do not exist: .*{ids[1]}.jpg"):
        data.VOC(root, "train")
    with pytest.raises(ValueError, match="`split` must be one of"):
        data.VOC(root, "test")


# --------------------------------------------------------------------------------------
# camvid


def test_camvid_layout_and_void(tmp_path):
    for split in ("train", "val", "test"):
        (tmp_path / split).mkdir()
        (tmp_path / f"{split}annot").mkdir()
    mask = RNG.integers(0, 12, (9, 12)).astype(np.uint8)  # 11 = void
    write_image(tmp_path / "train" / "0001TP_006690.png", 9, 12)
    write_mask(tmp_path / "trainannot" / "0001TP_006690.png", mask)
    src = data.get_source({"name": "camvid", "root": str(tmp_path), "split": "train"})
    assert src.num_classes == 11 and src.class_names[-1] == "bicyclist"
    np.testing.assert_array_equal(src[0]["mask"], np.where(mask == 11, IGNORE_LABEL, mask))
    write_mask(tmp_path / "trainannot" / "0001TP_006690.png", np.full((9, 12), 12))
    with pytest.raises(DataError, match=r"0001TP_006690.png.*labels \[12\]"):
        data.CamVid(tmp_path)[0]
    with pytest.raises(DataError, match="no files with extension"):
        data.CamVid(tmp_path, "val")


# --------------------------------------------------------------------------------------
# coco


def coco_ann(ann_id, image_id, category_id, area, segmentation, iscrowd=0):
    return {
        "id": ann_id,
        "image_id": image_id,
        "category_id": category_id,
        "iscrowd": iscrowd,
        "area": area,
        "segmentation": segmentation,
    }


COCO_H, COCO_W = 30, 40


def make_coco(tmp_path, extra=()):
    """A COCO folder: val2017/ images and annotations/instances_val2017.json."""
    from pycocotools import mask as mask_utils

    (tmp_path / "val2017").mkdir(exist_ok=True)
    (tmp_path / "annotations").mkdir(exist_ok=True)
    h, w = COCO_H, COCO_W
    blob = np.zeros((h, w), np.uint8, order="F")
    blob[5:15, 20:35] = 1
    compressed = mask_utils.encode(np.asfortranarray(blob))["counts"].decode()
    two_parts = [[6.5, 2, 12, 2, 12, 6.5, 6.5, 6.5], [30, 25, 38, 25, 34, 29], [1, 1, 2, 2]]
    images = [{"id": k, "file_name": f"{k:012d}.jpg", "height": h, "width": w} for k in (1, 2, 3)]
    for im in images:
        write_image(tmp_path / "val2017" / im["file_name"], h, w)
    anns = [
        # Image 1: a small cat listed before the dog polygon it lies on (the larger object
        # must be painted first whatever the file order), and a person (not chosen).
        coco_ann(2, 1, 17, 40.0, [[10, 10, 18, 10, 14, 18]]),
        coco_ann(1, 1, 18, 300.0, [[2, 2, 30, 2, 30, 25, 2, 25]]),
        coco_ann(3, 1, 1, 50.0, [[35, 20, 39, 20, 39, 29, 35, 29]]),
        # Image 2: a crowd of cats as uncompressed RLE (column-major runs), a dog as
        # compressed RLE, and a dog of two polygons plus one of two points (no area).
        coco_ann(4, 2, 17, 100.0, {"size": [h, w], "counts": [45, 10, 50, 10, w * h - 115]}, 1),
        coco_ann(5, 2, 18, 150.0, {"size": [h, w], "counts": compressed}),
        coco_ann(7, 2, 18, 30.0, two_parts),
        # Image 3: only a person.
        coco_ann(6, 3, 1, 50.0, [[1, 1, 9, 1, 9, 9]]),
        *extra,
    ]
    cats = [{"id": 1, "name": "person"}, {"id": 17, "name": "cat"}, {"id": 18, "name": "dog"}]
    info = {"images": images, "annotations": anns, "categories": cats}
    (tmp_path / "annotations" / "instances_val2017.json").write_text(json.dumps(info))
    return anns, blob


def test_coco_semantic_masks_match_pycocotools(tmp_path):
    from pycocotools.coco import COCO as PyCOCO

    anns, blob = make_coco(tmp_path)
    src = data.get_source({"name": "coco", "root": str(tmp_path), "split": "val2017"})
    assert len(src) == 2 and src.class_names == ("background", "cat", "dog")
    # Oracle: pycocotools' own annToMask on the file, painted largest first, crowds ignored.
    coco = PyCOCO(str(tmp_path / "annotations" / "instances_val2017.json"))
    for k, image_id in enumerate((1, 2)):
        expected = np.zeros((COCO_H, COCO_W), np.uint8)
        chosen = [a for a in anns if a["image_id"] == image_id and a["category_id"] in (17, 18)]
        for a in sorted(chosen, key=lambda a: -a["area"]):
            value = IGNORE_LABEL if a["iscrowd"] else {17: 1, 18: 2}[a["category_id"]]
            expected[coco.annToMask(coco.anns[a["id"]]) > 0] = value
        np.testing.assert_array_equal(src[k]["mask"], expected)
    # By hand: the small cat on top of the dog, the person not chosen.
    cat_on_dog, person = src[0]["mask"], src[0]["mask"][20:30, 35:40]
    assert cat_on_dog[12, 14] == 1 and cat_on_dog[20, 5] == 2 and not person.any()
    # The crowd's runs are rows 15..24 of columns 1 and 3; the compressed RLE is `blob`.
    second = src[1]["mask"]
    assert (second == IGNORE_LABEL).sum() == 20
    assert (second[15:25, 1] == IGNORE_LABEL).all() and (second[15:25, 3] == IGNORE_LABEL).all()
    np.testing.assert_array_equal(second[blob > 0], 2)
    assert second[4, 9] == 2 and second[27, 34] == 2  # both polygons of annotation 7
    compressed = next(a for a in anns if a["id"] == 5)["segmentation"]
    np.testing.assert_array_equal(data.annotation_to_mask(compressed, COCO_H, COCO_W), blob > 0)


def test_coco_without_pycocotools_says_how_to_install(tmp_path, monkeypatch):
    import tomllib

    make_coco(tmp_path)
    for name in [m for m in sys.modules if m.split(".")[0] == "pycocotools"]:
        monkeypatch.setitem(sys.modules, name, None)  # `import pycocotools` now fails
    monkeypatch.setitem(sys.modules, "pycocotools", None)
    hint = r'pip install "fcnjax\[coco\]"'
    with pytest.raises(ImportError, match=hint):
        data.get_source({"name": "coco", "root": str(tmp_path), "split": "val2017"})
    with pytest.raises(ImportError, match=hint):
        data.annotation_to_mask([[1, 1, 4, 1, 4, 4]], 5, 6)
    # ... and that extra is what installs it.
    pyproject = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    extra = pyproject["project"]["optional-dependencies"]["coco"]
    assert any(req.startswith("pycocotools") for req in extra), extra


def test_coco_errors(tmp_path):
    from pycocotools import mask as mask_utils

    small = mask_utils.encode(np.asfortranarray(np.ones((2, 3), np.uint8)))["counts"]
    assert not data.annotation_to_mask([[1, 2, 3, 4]], 5, 6).any()  # < 3 points: no area
    with pytest.raises(ValueError, match=r"the RLE is \[3, 3\] but the image is \[5, 6\]"):
        data.annotation_to_mask({"size": [3, 3], "counts": [9]}, 5, 6)
    # pycocotools would leave the pixels after a short RLE uninitialised.
    with pytest.raises(ValueError, match="the RLE covers 9 pixels, not 5 x 6"):
        data.annotation_to_mask({"size": [5, 6], "counts": [9]}, 5, 6)
    with pytest.raises(ValueError, match="the RLE covers 6 pixels, not 5 x 6"):
        data.annotation_to_mask({"size": [5, 6], "counts": small}, 5, 6)
    with pytest.raises(ValueError, match="non-negative integers"):
        data.annotation_to_mask({"size": [5, 6], "counts": [31, -1]}, 5, 6)
    with pytest.raises(ValueError, match="must be polygons or an RLE"):
        data.annotation_to_mask(None, 5, 6)
    bad = coco_ann(9, 1, 17, 1.0, {"size": [COCO_H, COCO_W], "counts": [5]})
    make_coco(tmp_path, extra=[bad])
    with pytest.raises(DataError, match=r"instances_val2017.json: annotation id 9 of image id 1"):
        data.COCO(tmp_path, "val2017")[0]
    make_coco(tmp_path)
    with pytest.raises(ValueError, match=r"\['horse'\] not in instances_val2017.json.*'cat'"):
        data.COCO(tmp_path, "val2017", categories=("cat", "horse"))
    with pytest.raises(
        DataError, match="instances_train2017.json: the COCO annotation file does not exist"
    ):
        data.COCO(tmp_path, "train2017")
    assert len(data.COCO(tmp_path, "val2017", categories=("person",))) == 2
    assert len(data.COCO(tmp_path, "val2017", only_with_categories=False)) == 3
    (tmp_path / "annotations" / "instances_val2017.json").write_text('{"images": []}')
    with pytest.raises(DataError, match="not a COCO instances file"):
        data.COCO(tmp_path, "val2017")


# --------------------------------------------------------------------------------------
# numpy


def test_numpy_one_hot_masks_keras_layout(tmp_path):
    images = RNG.uniform(0, 1, (5, 8, 8, 3)).astype(np.float32)
    index = RNG.integers(0, 2, (5, 8, 8))
    one_hot = np.eye(2, dtype=np.float32)[index]
    one_hot[0, 0, 0] = 0  # a pixel with no class: ignored
    np.save(tmp_path / "seg_images.npy", images)
    np.save(tmp_path / "seg_training.npy", one_hot)
    src = data.get_source(
        {
            "name": "numpy",
            "root": str(tmp_path),
            "images": "seg_images.npy",
            "masks": "seg_training.npy",
        }
    )
    assert src.num_classes == 2 and len(src) == 5
    expected = index.astype(np.uint8)
    expected[0, 0, 0] = IGNORE_LABEL
    for i in range(5):
        np.testing.assert_array_equal(src[i]["mask"], expected[i])
        np.testing.assert_array_equal(src[i]["image"], np.rint(images[i] * 255).astype(np.uint8))


def test_numpy_npz_index_masks_labels_and_image_only(tmp_path):
    images = RNG.integers(0, 256, (4, 6, 6), dtype=np.uint8)
    masks = RNG.integers(0, 3, (4, 6, 6)).astype(np.int64)
    np.savez(tmp_path / "d.npz", x_train=images, y_train=masks)
    src = data.NumpyArrays("d.npz", "d.npz", num_classes=3, root=tmp_path)
    assert src[2]["image"].shape == (6, 6, 1)
    np.testing.assert_array_equal(src[2]["mask"], masks[2])
    keras_layout = data.NumpyArrays(images, masks[..., None], num_classes=3)
    np.testing.assert_array_equal(keras_layout[1]["mask"], masks[1])
    alone = data.NumpyArrays(images, labels=np.arange(4))
    assert not alone.has_masks and "mask" not in alone[1] and int(alone[1]["label"]) == 1


def test_numpy_errors(tmp_path):
    np.save(tmp_path / "flat.npy", np.zeros((4, 5)))
    with pytest.raises(DataError, match=r"flat.npy: images must be .* got shape \(4, 5\)"):
        data.NumpyArrays(tmp_path / "flat.npy")
    with pytest.raises(DataError, match="missing.npy: the NumPy file does not exist"):
        data.NumpyArrays(tmp_path / "missing.npy")
    images = np.zeros((3, 4, 4, 3), np.uint8)
    with pytest.raises(DataError, match="has 2 masks for the 3 images"):
        data.NumpyArrays(images, np.zeros((2, 4, 4), np.uint8), num_classes=2)
    with pytest.raises(DataError, match=r"masks must be class indices .* got shape \(3, 4\)"):
        data.NumpyArrays(images, np.zeros((3, 4), np.uint8), num_classes=2)
    double = np.ones((3, 4, 4, 2), np.uint8)
    with pytest.raises(DataError, match=r"\[0\].*more than one class set"):
        data.NumpyArrays(images, double)[0]
    nan = np.zeros((2, 4, 4, 3), np.float32)
    nan[1, 0, 0, 0] = np.nan
    with pytest.raises(DataError, match=r"\[1\]: the image holds NaN"):
        data.NumpyArrays(nan, value_range=1)[1]
    np.savez(tmp_path / "two.npz", a=images, b=images)
    with pytest.raises(DataError, match=r"holds arrays \['a', 'b'\]"):
        data.NumpyArrays(tmp_path / "two.npz")


# --------------------------------------------------------------------------------------
# tfds (mocked: no download here)


def test_tfds_mnist_digit_filter():
    import tensorflow_datasets as tfds

    with tfds.testing.mock_data(num_examples=40):
        src = data.get_source({"name": "tfds", "dataset": "mnist", "digits": (1, 5, 6)})
        raw = tfds.data_source("mnist", split="train")
        labels = [int(raw[i]["label"]) for i in range(len(raw))]
        expected = [i for i, label in enumerate(labels) if label in (1, 5, 6)]
        assert len(src) == len(expected) > 0
        for k, i in enumerate(expected):
            ex = src[k]
            assert int(ex["label"]) == labels[i] and ex["image"].shape == (28, 28, 1)
            np.testing.assert_array_equal(ex["image"], raw[i]["image"])
        assert not src.has_masks and src.has_labels


def test_tfds_oxford_pet_trimap():
    import tensorflow_datasets as tfds

    trimaps = [RNG.integers(1, 4, (10, 14, 1)).astype(np.uint8) for _ in range(3)]

    def as_data_source(self, split, **kwargs):
        record = {"image": np.zeros((10, 14, 3), np.uint8), "label": 0, "species": 0}
        record |= {"file_name": "x", "head_bbox": np.zeros(4, np.float32)}
        return [{**record, "segmentation_mask": t} for t in trimaps]

    with tfds.testing.mock_data(as_data_source_fn=as_data_source):
        three = data.TFDS("oxford_iiit_pet", "train")
        two = data.TFDS("oxford_iiit_pet", "train", pet_classes=2)
        for i, t in enumerate(trimaps):
            t = t[..., 0]
            np.testing.assert_array_equal(three[i]["mask"], np.choose(t - 1, [1, 0, 2]))
            np.testing.assert_array_equal(two[i]["mask"], np.choose(t - 1, [1, 0, IGNORE_LABEL]))
    # TFDS's random mock has masks of another size than the images: verify says so.
    with tfds.testing.mock_data(num_examples=2):
        with pytest.raises(DataError, match=r"tfds oxford_iiit_pet\[train\] record 0: "):
            data.get_source({"name": "tfds", "dataset": "oxford_iiit_pet"})


def test_tfds_errors(tmp_path):
    with pytest.raises(DataError, match="no segmentation masks; use the `voc` source"):
        data.TFDS("voc/2012")
    with pytest.raises(DataError, match=r"'mnist' .* is not prepared in .*nothing"):
        data.TFDS("mnist", data_dir=tmp_path / "nothing", download=False)


def test_get_source_rejects_unknown_names_and_keys():
    with pytest.raises(ValueError, match=r"`data.name` must be one of .*'shapes'"):
        data.get_source({"name": "imagenet"})
    with pytest.raises(ValueError, match=r"does not take \['colour'\]; it takes .*'size'"):
        data.get_source({"name": "shapes", "colour": "red"})


def test_verify_a_data_source_and_print_class_weights(tmp_path, capsys):
    from fcnjax import cli

    masks = make_folder(tmp_path, n=3)
    source = ["verify", f"root={tmp_path}", "name=folder", "num_classes=3"]
    assert cli.main([*source, "--stats"]) == 0
    out = capsys.readouterr().out
    assert "data: Folder, 3 examples, 0 bad" in out and "3 classes: 0, 1, 2" in out
    all_masks = np.stack(list(masks.values()))
    assert f"| 1 | {(all_masks == 1).sum()} |" in out
    assert f"| (ignored, 255) | {(all_masks == IGNORE_LABEL).sum()} |" in out
    write_mask(tmp_path / "masks" / "im1.png", np.full((20, 24), 5))
    assert cli.main([*source, "--stats"]) == 1
    out = capsys.readouterr().out
    assert "3 examples, 1 bad" in out and "im1.jpg" in out and "labels [5]" in out
    assert "| class |" not in out  # no statistics of data with a bad example


def test_get_source_takes_a_config_dict():
    import ml_collections

    config = ml_collections.ConfigDict(
        {"name": "shapes", "root": None, "size": [16, 24], "num_examples": 5}
    )
    src = data.get_source(config)
    assert len(src) == 5 and src[0]["image"].shape == (16, 24, 3)
