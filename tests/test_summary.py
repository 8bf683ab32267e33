"""fcnjax.summary: event files read back by TensorBoard's own reader, JSON lines, progress, tables.

TensorBoard (the ``test`` extra, no TensorFlow) is the oracle for the event files: its record
reader checks both CRCs with its own CRC-32C, and the real protobuf library parses the events.
"""

import io
import json
import math
import os
import struct

import jax.numpy as jnp
import numpy as np
import pytest

from fcnjax import summary
from fcnjax.summary import (
    EventWriter,
    JsonlWriter,
    MetricWriter,
    Progress,
    crc32c,
    format_table,
    masked_crc32c,
    read_jsonl,
)

# ---------------------------------------------------------------------------------------------
# CRC-32C


@pytest.mark.parametrize(
    "data, expected",
    [
        (b"123456789", 0xE3069283),  # the standard check value
        (b"", 0x00000000),
        # RFC 3720 (iSCSI) appendix B.4
        (bytes(32), 0x8A9136AA),
        (b"\xff" * 32, 0x62A8AB43),
        (bytes(range(32)), 0x46DD794E),
        (bytes(range(31, -1, -1)), 0x113FDB5C),
    ],
)
def test_crc32c_known_vectors(data, expected):
    assert crc32c(data) == expected


def test_masked_crc32c_matches_tensorboard(rng):
    from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import masked_crc32c as reference

    for n in (0, 1, 8, 1000):
        data = rng.integers(0, 256, n, dtype=np.uint8).tobytes()
        assert masked_crc32c(data) == reference(data)


# ---------------------------------------------------------------------------------------------
# Event files


def raw_events(path):
    """Every Event in ``path`` as parsed by TensorBoard's reader (records with a bad CRC end it)."""
    from tensorboard.backend.event_processing.event_file_loader import RawEventFileLoader
    from tensorboard.compat.proto import event_pb2

    return [event_pb2.Event.FromString(r) for r in RawEventFileLoader(path).Load()]


def test_event_file_read_by_tensorboard(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    # Steps of one, two and five varint bytes; NumPy and JAX scalars as values.
    steps = [0, 300, 2**33]
    losses = [2.5, np.float32(0.125), jnp.float32(-1e-7)]
    with EventWriter(tmp_path) as w:
        for step, loss in zip(steps, losses):
            w.scalars(step, {"train/loss": loss, "train/lr": 1e-3 * (step + 1)})
        w.image(300, "val/prediction", b"\x89PNG fake", height=4, width=6)
    assert os.path.basename(w.path).startswith("events.out.tfevents.")
    assert w.path.endswith(".fcnjax")

    acc = EventAccumulator(str(tmp_path))
    acc.Reload()
    assert sorted(acc.Tags()["scalars"]) == ["train/loss", "train/lr"]
    loss = acc.Scalars("train/loss")
    assert [e.step for e in loss] == steps
    np.testing.assert_allclose([e.value for e in loss], [2.5, 0.125, -1e-7], rtol=1e-7)
    lr = [e.value for e in acc.Scalars("train/lr")]
    np.testing.assert_allclose(lr, [1e-3, 0.301, 1e-3 * (2**33 + 1)], rtol=1e-6)
    (image,) = acc.Images("val/prediction")
    assert (image.step, image.height, image.width) == (300, 4, 6)
    assert image.encoded_image_string == b"\x89PNG fake"

    events = raw_events(w.path)
    assert len(events) == 5
    assert events[0].file_version == "brain.Event:2"
    assert not events[0].HasField("summary")
    assert events[-1].summary.value[0].image.colorspace == 3
    assert all(abs(e.wall_time - events[0].wall_time) < 60 for e in events)
    assert events[0].wall_time > 1.6e9  # seconds since the epoch, not a perf counter


def test_corrupted_record_is_rejected_by_tensorboard(tmp_path):
    # The round trip above could not fail on a CRC error unless the reader checks CRCs.
    with EventWriter(tmp_path) as w:
        w.scalars(1, {"loss": 1.0})
        w.scalars(2, {"loss": 2.0})
    data = bytearray(open(w.path, "rb").read())
    first = struct.unpack("<Q", data[:8])[0] + 16  # length + 2 CRCs + data of record 1
    assert len(raw_events(w.path)) == 3
    data[first + 12 + 3] ^= 1  # one bit of the second record's data
    with open(w.path, "wb") as f:
        f.write(data)
    assert len(raw_events(w.path)) == 1


def test_event_writers_started_in_the_same_second_get_their_own_files(tmp_path, monkeypatch):
    monkeypatch.setattr(summary.time, "time", lambda: 1700000000.0)
    with EventWriter(tmp_path) as a, EventWriter(tmp_path) as b:
        a.scalars(1, {"x": 1.0})
        b.scalars(1, {"x": 2.0})
    assert a.path != b.path
    assert b.path == a.path + ".1"
    assert [e.summary.value[0].simple_value for e in raw_events(b.path)[1:]] == [2.0]


# ---------------------------------------------------------------------------------------------
# JSON lines and MetricWriter


def test_jsonl_round_trip_with_non_finite_values_as_null(tmp_path):
    path = tmp_path / "m.jsonl"
    with JsonlWriter(path) as w:
        w.write(np.int64(1), {"loss": np.float32(0.5), "acc": jnp.float32(0.25)})
        w.write(2, {"loss": float("nan"), "grad_norm": np.inf})
    with JsonlWriter(path) as w:  # a resumed run appends
        w.write(3, {"loss": 0.125})
    lines = path.read_text().splitlines()
    for line in lines:  # strict JSON: no NaN / Infinity literals
        json.loads(line, parse_constant=lambda c: pytest.fail(f"non-standard {c}"))
    records = read_jsonl(path)
    assert [r["step"] for r in records] == [1, 2, 3]
    assert records[0]["loss"] == 0.5 and records[0]["acc"] == 0.25
    assert records[1]["loss"] is None and records[1]["grad_norm"] is None
    assert all(isinstance(r["time"], float) and r["time"] > 1.6e9 for r in records)


def test_read_jsonl_skips_only_a_cut_last_line(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_text('{"step": 1}\n{"step": 2}\n{"step": 3, "lo')
    assert read_jsonl(path) == [{"step": 1}, {"step": 2}]
    path.write_text('{"step": 1}\n{"step": 2, "lo\n{"step": 3}\n')
    with pytest.raises(json.JSONDecodeError):
        read_jsonl(path)


def test_metric_writer_writes_the_same_tags_to_both(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    metrics = {
        "mean_iou": jnp.float32(0.5),
        "per_class_iou": {"background": 0.75, "cat": np.float32(0.25), "dog": float("nan")},
        "confusion_matrix": np.eye(3),
        "name": "voc",
    }
    with MetricWriter(tmp_path / "run") as w:
        w.write(10, {"loss": 1.5})
        w.write(20, metrics, prefix="val")
    expected = {"val/mean_iou": 0.5, "val/iou/background": 0.75, "val/iou/cat": 0.25}

    records = read_jsonl(tmp_path / "run" / "metrics.jsonl")
    assert [r["step"] for r in records] == [10, 20]
    assert records[0]["train/loss"] == 1.5
    assert {k: v for k, v in records[1].items() if k not in ("step", "time")} == {
        **expected,
        "val/iou/dog": None,
    }

    acc = EventAccumulator(str(tmp_path / "run" / "tensorboard"))
    acc.Reload()
    assert sorted(acc.Tags()["scalars"]) == sorted([*expected, "val/iou/dog", "train/loss"])
    for tag, value in expected.items():
        assert [(e.step, e.value) for e in acc.Scalars(tag)] == [(20, value)]
    assert math.isnan(acc.Scalars("val/iou/dog")[0].value)


def test_disabled_metric_writer_writes_nothing(tmp_path):
    with MetricWriter(tmp_path / "run", enabled=False) as w:
        w.write(1, {"loss": 1.0})
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------------------------
# Progress


class FakeClock:
    def __init__(self, t=0.0):
        self.t = t

    def __call__(self):
        return self.t


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_progress_log_lines_rate_and_eta_exclude_the_first_step():
    clock, out = FakeClock(), io.StringIO()
    # The window spans the whole run, so the rate at step 500 would show a first step counted.
    p = Progress(1000, stream=out, every=500, window=1000, time_fn=clock)
    clock.t = 100.0  # step 1 ends after 100 s of compilation
    for step in range(1, 1001):
        p.update(step, images=8, loss=1.0 / step)
        clock.t += 0.25  # then 8 images every 0.25 s: 32 img/s
    p.close()
    lines = out.getvalue().splitlines()
    assert lines == [
        "step 500/1000 [##########..........]  50% loss 0.0020 | 32.0 img/s | ETA 2:05",
        "step 1000/1000 [####################] 100% loss 0.0010 | 32.0 img/s | ETA 0:00",
    ]


def test_progress_rate_is_over_the_recent_window_and_resumes_on_multiples_of_every():
    clock, out = FakeClock(), io.StringIO()
    p = Progress(4000, start_step=250, stream=out, every=100, window=5, time_fn=clock)
    for step in range(251, 451):
        clock.t += 0.25 if step <= 300 else 1.0  # slows down to 8 img/s after step 300
        p.update(step, images=8)
    lines = out.getvalue().splitlines()
    assert [line.split()[1] for line in lines] == ["300/4000", "400/4000"]
    assert lines[0].endswith("| 32.0 img/s | ETA 15:25")  # 3700 steps at 0.25 s
    assert lines[1].endswith("| 8.0 img/s | ETA 1:00:00")  # 3600 steps at 1 s


def test_progress_prints_once_per_interval_when_updated_every_few_steps():
    clock, out = FakeClock(), io.StringIO()
    p = Progress(30, stream=out, every=10, time_fn=clock)
    for step in range(3, 31, 3):  # 3, 6, ..., 30: no update falls on 10 or 20
        clock.t += 3.0
        p.update(step, images=24)
        p.update(step, images=0, loss=0.5)  # the trainer's second update, with the loss
    steps = [line.split()[1] for line in out.getvalue().splitlines()]
    assert steps == ["12/30", "21/30", "30/30"]  # and step 30 only once


def test_progress_first_update_has_no_rate_yet():
    out = io.StringIO()
    Progress(2, stream=out, every=1, time_fn=FakeClock(5.0)).update(1, images=4, lr=1e-5)
    assert out.getvalue() == "step 1/2 [##########..........]  50% lr 1.000e-05\n"


def test_progress_on_a_terminal_redraws_in_place_at_most_ten_times_a_second():
    clock, out = FakeClock(), Terminal()
    with Progress(100, stream=out, time_fn=clock) as p:
        for step in range(1, 51):
            clock.t += 1 / 64  # exact in binary; a redraw every 7 updates (7/64 s >= 0.1 s)
            p.update(step, images=1)
        p.write("eval: mean_iou 0.5")
        clock.t += 1 / 64
        p.update(51, images=1)  # 1/64 s after the last redraw: drawn only by close()
    text = out.getvalue()
    drawn = [line.rstrip() for line in text.replace("\n", "\r").split("\r") if line.strip()]
    assert [line.split()[1] for line in drawn] == [
        *(f"{s}/100" for s in range(1, 51, 7)),  # steps 1, 8, ..., 50
        "mean_iou",
        "50/100",  # redrawn under the message
        "51/100",  # by close()
    ]
    assert text.count("\n") == 2 and text.endswith("\n")
    assert drawn[-1] == "step 51/100 [##########..........]  51% | 64.0 img/s | ETA 0:01"


# ---------------------------------------------------------------------------------------------
# Tables


def test_format_table():
    table = format_table(
        {
            "pixel_accuracy": np.float32(0.97123),
            "mean_iou": jnp.float32(0.5),
            "images": np.int64(1449),
            "confusion_matrix": np.eye(2),
            "per_class_iou": {"background": 0.95, "aeroplane": float("nan")},
            "per_class_accuracy": {"background": 0.99},
        },
        title="VOC 2012 val",
    )
    assert table == (
        "VOC 2012 val\n"
        "pixel_accuracy  0.9712\n"
        "mean_iou        0.5000\n"
        "images          1449\n"
        "\n"
        "class       IoU     accuracy\n"
        "background  0.9500  0.9900\n"
        "aeroplane   nan     -"
    )
    assert format_table({"per_class_iou": {"cat": 0.5}}) == "class  IoU\ncat    0.5000"
    # segmentation_metrics without class names gives lists.
    assert (
        format_table({"per_class_iou": [0.5, 0.25]}) == "class  IoU\n0      0.5000\n1      0.2500"
    )
