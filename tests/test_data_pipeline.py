"""Transforms, loaders (shuffling, epochs, process shards, evaluation padding), statistics,
and the shapes dataset's difficulty."""

import os
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest

from fcnjax import data, weights
from fcnjax.data import IGNORE_LABEL, DataError


class Indexed(data.Source):
    """Example i: image filled with i (so batches reveal which examples they hold)."""

    num_classes = 3

    def __init__(self, n, size=(6, 5), bad=()):
        self.n, self.size, self.bad = n, size, set(bad)

    def __len__(self):
        return self.n

    def describe(self, i):
        return f"item{i}.png"

    def load(self, i):
        mask = np.full(self.size, i % 3, np.uint8)
        if i in self.bad:
            mask[0, 0] = 9
        return {"image": np.full((*self.size, 3), i, np.uint8), "mask": mask}


PLAIN = data.TrainTransform(size=(6, 5), mode="none", flip=False, jitter=None, normalization="none")


def ids(batch):
    return batch["image"][:, 0, 0, 0].astype(int).tolist()


# --------------------------------------------------------------------------------------
# transforms


def test_resize_is_bilinear_for_images_and_nearest_for_masks():
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (16, 20, 3), dtype=np.uint8)
    mask = rng.integers(0, 4, (16, 20)).astype(np.uint8)
    up_image, up_mask = data.resize(image, mask, (32, 40))
    assert up_image.shape == (32, 40, 3) and up_mask.shape == (32, 40)
    # Exact 2x nearest: every output label is the input label of its source pixel.
    np.testing.assert_array_equal(up_mask, mask.repeat(2, 0).repeat(2, 1))
    # Bilinear with half-pixel centres: the oracle is jax.image.resize (rounded to uint8).
    expected = jax.image.resize(image.astype(np.float32), (32, 40, 3), "bilinear")
    np.testing.assert_allclose(up_image, np.asarray(expected), atol=1)
    grey = image[..., :1]
    assert data.resize(grey, None, (8, 10))[0].shape == (8, 10, 1)


def test_crop_pad_flip_and_jitter():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (10, 12, 3), dtype=np.uint8)
    mask = rng.integers(0, 3, (10, 12)).astype(np.uint8)
    crop_image, crop_mask = data.random_crop(rng, image, mask, (6, 7))
    windows = [np.s_[y : y + 6, x : x + 7] for y in range(5) for x in range(6)]
    hits = [w for w in windows if (image[w] == crop_image).all() and (mask[w] == crop_mask).all()]
    assert hits, "a crop must be a window of the input"
    padded_image, padded_mask = data.pad_to(image, mask, (13, 12), fill=7)
    assert (padded_mask[10:] == IGNORE_LABEL).all() and (padded_image[10:] == 7).all()
    np.testing.assert_array_equal(padded_mask[:10], mask)
    flipped = data.hflip(*data.hflip(image, mask))
    np.testing.assert_array_equal(flipped[0], image)
    np.testing.assert_array_equal(data.hflip(image, mask)[1][:, 0], mask[:, -1])
    out = data.color_jitter(np.random.default_rng(3), image, 0.5, 0, 0)
    factor = np.random.default_rng(3).uniform(0.5, 1.5)
    np.testing.assert_allclose(out, np.clip(image * factor, 0, 255), rtol=1e-6)
    assert data.color_jitter(rng, image.astype(np.float32) * 4).max() <= 255


def test_normalization_choices_match_the_weights_presets():
    image = np.random.default_rng(0).integers(0, 256, (4, 4, 3), dtype=np.uint8)
    np.testing.assert_allclose(data.normalize(image, "unit"), image / 255, rtol=1e-6)
    np.testing.assert_allclose(
        data.normalize(image, "caffe"),
        image[..., ::-1] - np.array([103.939, 116.779, 123.68]),
        rtol=1e-5,
    )
    np.testing.assert_allclose(
        data.normalize(image, "imagenet"), weights.TORCHVISION(image), rtol=1e-6
    )
    with pytest.raises(ValueError, match="`normalization` must be one of"):
        data.TrainTransform(size=4, normalization="zscore")


def test_train_transform_keeps_masks_aligned_with_images():
    # The image encodes each pixel's own label: after any scale/crop/flip they must agree.
    rng = np.random.default_rng(0)
    mask = rng.integers(0, 4, (15, 20)).astype(np.uint8).repeat(8, 0).repeat(8, 1)
    image = np.repeat(mask[..., None] * 60, 3, -1).astype(np.uint8)
    t = data.TrainTransform(
        size=(64, 64), scale_range=(0.75, 1.5), jitter=None, normalization="none"
    )
    for seed in range(5):
        out = t({"image": image, "mask": mask}, np.random.default_rng(seed))
        assert out["mask"].dtype == np.int32 and out["image"].dtype == np.float32
        # Away from label edges (where bilinear blends), the image value is 60 * label.
        m = np.pad(out["mask"], 2, mode="edge")
        windows = np.lib.stride_tricks.sliding_window_view(m, (5, 5))
        interior = (windows == out["mask"][..., None, None]).all((-1, -2))
        interior &= out["mask"] != IGNORE_LABEL
        assert interior.mean() > 0.2
        np.testing.assert_allclose(
            out["image"][..., 0][interior], 60 * out["mask"][interior], atol=1
        )


def test_eval_transform_pads_exactly_or_names_the_oversized_example():
    t = data.EvalTransform(size=(8, 8), normalization="none")
    ex = {"image": np.ones((5, 6, 3), np.uint8), "mask": np.zeros((5, 6), np.uint8)}
    out = t(ex)
    assert out["mask"].shape == (8, 8) and (out["mask"][5:] == IGNORE_LABEL).all()
    assert (out["mask"][:5, :6] == 0).all()
    with pytest.raises(DataError, match="big.png: 9x6 is larger than the evaluation size 8x8"):
        t({"image": np.ones((9, 6, 3), np.uint8), "mask": np.zeros((9, 6), np.uint8)}, "big.png")


# --------------------------------------------------------------------------------------
# loaders


def test_train_loader_epochs_shuffle_and_determinism():
    src = Indexed(12)
    loader = data.train_loader(src, 4, PLAIN, seed=3, num_epochs=2)
    batches = [ids(b) for b in loader]
    assert len(batches) == 6
    epoch1, epoch2 = sum(batches[:3], []), sum(batches[3:], [])
    assert sorted(epoch1) == sorted(epoch2) == list(range(12))
    assert epoch1 != epoch2 and epoch1 != list(range(12))  # shuffled, afresh each epoch
    assert [ids(b) for b in loader] == batches  # same seed, same batches
    assert sum(map(ids, data.train_loader(src, 4, PLAIN, seed=4, num_epochs=1)), []) != epoch1
    # Each epoch drops its own remainder: 12 examples in batches of 5, 2 batches per epoch.
    fives = [ids(b) for b in data.train_loader(src, 5, PLAIN, num_epochs=3)]
    assert len(fives) == 3 * data.steps_per_epoch(src, 5) == 6
    for e in range(3):
        assert len(set(fives[2 * e] + fives[2 * e + 1])) == 10  # no repeats within an epoch
    b = next(iter(data.train_loader(src, 4, PLAIN)))
    assert b["image"].dtype == np.float32 and b["mask"].dtype == np.int32
    assert b["mask"].shape == (4, 6, 5)


def test_two_processes_read_disjoint_rows_of_the_same_global_batches():
    src = Indexed(16)
    t = data.TrainTransform(size=(4, 4), scale_range=(0.8, 1.2), jitter=None, normalization="none")
    single = list(data.train_loader(src, 8, t, seed=1, num_epochs=2, process_count=1))
    parts = [
        list(data.train_loader(src, 8, t, seed=1, num_epochs=2, process_index=p, process_count=2))
        for p in range(2)
    ]
    assert len(parts[0]) == len(parts[1]) == len(single) == 4
    for step, batch in enumerate(single):
        rows = [parts[p][step] for p in range(2)]
        assert set(ids(rows[0])).isdisjoint(ids(rows[1]))
        for key in batch:  # process rows stack into the global batch, augmentation included
            np.testing.assert_array_equal(np.concatenate([r[key] for r in rows]), batch[key])
    for epoch in range(2):
        seen = sum((ids(parts[p][s]) for p in range(2) for s in (2 * epoch, 2 * epoch + 1)), [])
        assert sorted(seen) == list(range(16)), "each epoch covers every example exactly once"
    with pytest.raises(ValueError, match="positive multiple of the process count 2"):
        data.train_loader(src, 5, t, process_index=0, process_count=2)


def test_worker_processes_give_the_same_batches():
    src = data.Shapes(12, size=24)
    t = data.TrainTransform(size=(16, 16))
    inline = list(data.train_loader(src, 4, t, seed=5, num_epochs=1))
    workers = list(data.train_loader(src, 4, t, seed=5, num_epochs=1, workers=2))
    assert len(inline) == len(workers) == 3
    for a, b in zip(inline, workers):
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])


def test_train_loader_skips_bad_examples_when_asked(caplog):
    src = Indexed(8, bad={2, 5})
    with pytest.raises(Exception, match=r"item\d.png: mask labels \[9\]"):
        list(data.train_loader(src, 2, PLAIN, num_epochs=1))
    got = sum(map(ids, data.train_loader(src, 2, PLAIN, num_epochs=1, on_error="skip")), [])
    assert sorted(got) == [0, 1, 3, 4, 6, 7]
    assert "Skipping a bad example: item2.png" in caplog.text


@pytest.mark.parametrize("count", [1, 2])
def test_eval_loader_keeps_every_example_exactly_once(count):
    src = Indexed(11, size=(5, 4))
    t = data.EvalTransform(size=(6, 6), normalization="none")
    parts = [
        list(data.eval_loader(src, 4, t, process_index=p, process_count=count))
        for p in range(count)
    ]
    assert {len(p) for p in parts} == {3}  # ceil(11 / 4) on every process
    valid = [
        i
        for p in parts
        for b in p
        for i, v, img in zip(b["index"], b["valid"], ids(b))
        if v
        if img == i
    ]
    assert sorted(valid) == list(range(11))
    padding = [(b["mask"][~b["valid"]], b["image"][~b["valid"]]) for p in parts for b in p]
    assert sum(len(m) for m, _ in padding) == 1
    assert all((m == IGNORE_LABEL).all() and (img == 0).all() for m, img in padding)
    assert all(b["image"].shape == (4 // count, 6, 6, 3) for p in parts for b in p)


def test_eval_loader_counts_a_bad_example_as_padding_when_skipping():
    first_bad = list(
        data.eval_loader(Indexed(3, bad={0}), 2, data.EvalTransform(size=(6, 5)), on_error="skip")
    )
    assert np.concatenate([b["valid"] for b in first_bad]).tolist() == [0, 1, 1, 0]
    src = Indexed(5, bad={1})
    t = data.EvalTransform(size=(6, 5), mode="none", normalization="none")
    with pytest.raises(Exception, match=r"item1.png: mask labels \[9\]"):
        list(data.eval_loader(src, 2, t))
    batches = list(data.eval_loader(src, 2, t, on_error="skip"))
    valid = np.concatenate([b["valid"] for b in batches])
    index = np.concatenate([b["index"] for b in batches])
    assert index.tolist() == [0, 1, 2, 3, 4, 5] and valid.tolist() == [1, 0, 1, 1, 1, 0]


def test_mismatched_shapes_without_size_say_how_to_fix():
    class Ragged(Indexed):
        def load(self, i):
            return {
                "image": np.zeros((4 + i, 4, 3), np.uint8),
                "mask": np.zeros((4 + i, 4), np.uint8),
            }

    with pytest.raises(Exception, match="different 'image' shapes.*give the transform a `size`"):
        next(iter(data.train_loader(Ragged(4), 2, PLAIN)))


def test_global_batch_on_eight_devices():
    script = textwrap.dedent(
        """
        import os
        os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"
        import jax, numpy as np
        from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
        from fcnjax import data
        mesh = Mesh(np.array(jax.devices()), ("data",))
        src = data.Shapes(16, size=16)
        batch = next(iter(data.train_loader(src, 16, data.TrainTransform(size=8))))
        out = data.global_batch(batch, NamedSharding(mesh, P("data")))
        assert out["image"].shape == (16, 8, 8, 3) and out["mask"].shape == (16, 8, 8)
        assert len(out["image"].addressable_shards) == 8
        assert out["image"].addressable_shards[3].data.shape == (2, 8, 8, 3)
        np.testing.assert_array_equal(np.asarray(out["mask"]), batch["mask"])
        print("ok")
        """
    )
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-2000:]


# --------------------------------------------------------------------------------------
# statistics


def test_class_counts_and_median_frequency_weights_against_numpy():
    src = data.Shapes(24, size=32, seed=2)
    masks = np.stack([src[i]["mask"] for i in range(len(src))])
    counts = data.class_counts(src)
    expected_pixels = np.array([(masks == c).sum() for c in range(4)])
    expected_image_pixels = np.array(
        [sum(m.size for m in masks if (m == c).any()) for c in range(4)]
    )
    np.testing.assert_array_equal(counts.pixels, expected_pixels)
    np.testing.assert_array_equal(counts.image_pixels, expected_image_pixels)
    freq = expected_pixels / expected_image_pixels
    np.testing.assert_allclose(data.median_frequency_weights(counts), np.median(freq) / freq)
    w = data.median_frequency_weights(counts)
    assert w[0] < 0.2 < w[1:].min()  # the abundant background weighs least


def test_class_counts_name_a_bad_label():
    with pytest.raises(DataError, match=r"item4.png: mask labels \[9\]"):
        data.class_counts(Indexed(6, bad={4}))


# --------------------------------------------------------------------------------------
# shapes


def test_shapes_is_deterministic_and_splits_differ():
    a, b = data.Shapes(3, size=(40, 50), seed=7), data.Shapes(3, size=(40, 50), seed=7)
    for i in range(3):
        np.testing.assert_array_equal(a[i]["image"], b[i]["image"])
        np.testing.assert_array_equal(a[i]["mask"], b[i]["mask"])
    assert a[0]["image"].shape == (40, 50, 3)
    val = data.Shapes(3, size=(40, 50), seed=7, split="val")
    assert not np.array_equal(val[0]["image"], a[0]["image"])


def test_shapes_needs_shape_not_colour():
    """A per-pixel colour classifier (Bayes-optimal on quantised RGB, fit on one split and
    scored on another) cannot tell the shapes apart, nor objects from background."""
    train, test = data.Shapes(96, size=48, seed=0), data.Shapes(48, size=48, split="test")

    def pixels(src):
        ex = [src[i] for i in range(len(src))]
        rgb = np.concatenate([e["image"].reshape(-1, 3) for e in ex]) // 32  # 8 bins per channel
        return rgb[:, 0] * 64 + rgb[:, 1] * 8 + rgb[:, 2], np.concatenate(
            [e["mask"].ravel() for e in ex]
        )

    bins, labels = pixels(train)
    hist = np.stack([np.bincount(bins[labels == c], minlength=512) + 1 for c in range(4)])
    posterior = hist / hist.sum(1, keepdims=True)  # class-conditional colour likelihoods
    bins, labels = pixels(test)
    fg = labels > 0
    assert np.bincount(labels[fg], minlength=4)[1:].min() > 0.2 * fg.sum()  # classes balanced
    shape_guess = 1 + posterior[1:, bins[fg]].argmax(0)
    shape_accuracy = (shape_guess == labels[fg]).mean()
    fg_guess = posterior[1:].mean(0)[bins] > posterior[0][bins]
    balanced = 0.5 * (fg_guess[fg].mean() + (~fg_guess[~fg]).mean())
    assert shape_accuracy < 0.42, shape_accuracy  # chance is 1/3
    assert balanced < 0.6, balanced  # chance is 1/2


def test_fused_scale_crop_equals_scale_then_crop():
    src = data.Shapes(4, size=(45, 60), seed=3)
    for i in range(4):
        ex = src[i]
        for seed in range(6):
            r1, r2 = np.random.default_rng(seed), np.random.default_rng(seed)
            scaled = data.random_scale(r1, ex["image"], ex["mask"], (0.5, 2.0))
            image, mask = data.random_crop(r1, *scaled, (48, 48))
            fused_image, fused_mask = data.random_scale_crop(r2, ex["image"], ex["mask"], (48, 48))
            # Equal up to float rounding where a nearest-neighbour pick is an exact tie: then
            # the label comes from the adjacent source pixel.
            assert (fused_mask != mask).mean() < 0.03
            near = np.lib.stride_tricks.sliding_window_view(mask, (3, 3))  # interior pixels
            assert (near == fused_mask[1:-1, 1:-1, None, None]).any((-1, -2)).all()
            np.testing.assert_allclose(fused_image, image, atol=2)


def test_loader_iterators_resume_from_a_checkpointed_state():
    loader = data.train_loader(Indexed(20), 4, PLAIN, seed=2)
    it = iter(loader)
    next(it), next(it)
    state = it.get_state()
    expected = [ids(next(it)) for _ in range(3)]
    resumed = iter(loader)
    resumed.set_state(state)
    assert [ids(next(resumed)) for _ in range(3)] == expected


def test_memory_mapped_numpy_sources_reopen_in_workers(tmp_path):
    import pickle

    import cloudpickle

    images = np.random.default_rng(0).integers(0, 256, (40, 16, 16, 3), dtype=np.uint8)
    masks = np.random.default_rng(1).integers(0, 3, (40, 16, 16)).astype(np.uint8)
    np.save(tmp_path / "x.npy", images)
    np.save(tmp_path / "y.npy", masks)
    src = data.NumpyArrays(tmp_path / "x.npy", tmp_path / "y.npy", num_classes=3)
    blob = cloudpickle.dumps(src)
    assert len(blob) < images.nbytes // 10  # file names travel, not the arrays
    copy = pickle.loads(blob)
    for i in (0, 39):
        np.testing.assert_array_equal(copy[i]["image"], images[i])
        np.testing.assert_array_equal(copy[i]["mask"], masks[i])
    t = data.TrainTransform(size=(8, 8))
    inline = list(data.train_loader(src, 8, t, num_epochs=1))
    workers = list(data.train_loader(src, 8, t, num_epochs=1, workers=1))
    for a, b in zip(inline, workers, strict=True):
        np.testing.assert_array_equal(a["mask"], b["mask"])
