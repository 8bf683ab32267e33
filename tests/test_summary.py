"""fcnjax.training.summary: event files read back by TensorBoard's own reader, JSON lines
(written here, read by fcnjax.metrics_log), progress (fcnjax.training.progress), tables.

TensorBoard (the ``test`` extra, no TensorFlow) is the oracle for the event files that
tensorboardX writes: its record reader checks both CRCs of every record with its own CRC-32C,
and the real protobuf library parses the events.
"""

import io
import json
import logging
import math
import re
import struct
import time

import jax.numpy as jnp
import numpy as np
import pytest
import tqdm.std

from fcnjax import metrics_log, plots
from fcnjax.metrics_log import read_jsonl
from fcnjax.training import summary
from fcnjax.training.progress import Progress
from fcnjax.training.summary import JsonlWriter, MetricWriter, drop_after, format_table

# ---------------------------------------------------------------------------------------------
# Event files


def raw_events(path):
    """Every Event in ``path`` as parsed by TensorBoard's reader (records with a bad CRC end it)."""
    from tensorboard.backend.event_processing.event_file_loader import RawEventFileLoader
    from tensorboard.compat.proto import event_pb2

    return [event_pb2.Event.FromString(r) for r in RawEventFileLoader(str(path)).Load()]


def accumulate(logdir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(logdir))
    acc.Reload()
    return acc


def event_files(workdir):
    return sorted((workdir / "tensorboard").glob("events.out.tfevents.*"))


def test_event_file_read_by_tensorboard(tmp_path):
    # Steps of one, two and five varint bytes; NumPy and JAX scalars as values.
    steps = [0, 300, 2**33]
    losses = [2.5, np.float32(0.125), jnp.float32(-1e-7)]
    with MetricWriter(tmp_path) as w:
        for step, loss in zip(steps, losses):
            w.write(step, {"loss": loss, "lr": 1e-3 * (step + 1)})
    (path,) = event_files(tmp_path)
    assert path.name.endswith(".fcnjax")

    acc = accumulate(tmp_path / "tensorboard")
    assert sorted(acc.Tags()["scalars"]) == ["train/loss", "train/lr"]
    loss = acc.Scalars("train/loss")
    assert [e.step for e in loss] == steps
    np.testing.assert_allclose([e.value for e in loss], [2.5, 0.125, -1e-7], rtol=1e-7)
    lr = [e.value for e in acc.Scalars("train/lr")]
    np.testing.assert_allclose(lr, [1e-3, 0.301, 1e-3 * (2**33 + 1)], rtol=1e-6)

    events = raw_events(path)
    assert len(events) == 4  # the file version, then one event per write with both tags
    assert events[0].file_version == "brain.Event:2"
    assert not events[0].HasField("summary")
    assert [[v.tag for v in e.summary.value] for e in events[1:]] == [
        ["train/loss", "train/lr"]
    ] * 3
    assert all(abs(e.wall_time - events[0].wall_time) < 60 for e in events)
    assert events[0].wall_time > 1.6e9  # seconds since the epoch, not a perf counter


def test_corrupted_record_is_rejected_by_tensorboard(tmp_path):
    # The round trip above could not fail on a CRC error unless the reader checks CRCs.
    with MetricWriter(tmp_path) as w:
        w.write(1, {"loss": 1.0})
        w.write(2, {"loss": 2.0})
    (path,) = event_files(tmp_path)
    data = bytearray(path.read_bytes())
    first = struct.unpack("<Q", data[:8])[0] + 16  # length + 2 CRCs + data of record 1
    assert len(raw_events(path)) == 3
    data[first + 12 + 3] ^= 1  # one bit of the second record's data
    path.write_bytes(data)
    assert len(raw_events(path)) == 1


def test_metric_writers_started_in_the_same_second_get_their_own_files(tmp_path, monkeypatch):
    with monkeypatch.context() as m:  # tensorboardX names event files by the second
        m.setattr(time, "time", lambda: 1700000000.0)
        a, b = MetricWriter(tmp_path), MetricWriter(tmp_path)
    a.write(1, {"x": 1.0})
    b.write(1, {"x": 2.0})
    a.close()
    b.close()
    paths = event_files(tmp_path)
    assert len(paths) == 2 and all(".1700000000." in p.name for p in paths)
    values = sorted(e.summary.value[0].simple_value for p in paths for e in raw_events(p)[1:])
    assert values == [1.0, 2.0]


def test_events_reach_the_file_while_the_writer_is_open(tmp_path, monkeypatch):
    monkeypatch.setattr(summary, "FLUSH_SECS", 0.05)
    with MetricWriter(tmp_path) as w:
        w.write(7, {"loss": 0.5})
        deadline = time.monotonic() + 30  # generous: the writer thread flushes every 0.05 s
        while not (tags := accumulate(tmp_path / "tensorboard").Tags()["scalars"]):
            assert time.monotonic() < deadline, "no event reached the file before close()"
            time.sleep(0.02)
        assert tags == ["train/loss"]


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


# The one reader of metrics.jsonl (fcnjax.metrics_log.read_jsonl), as the trainer (summary)
# and the curves (plots.read_metrics) see it.
READERS = {
    "summary.read_jsonl": lambda p: [r["step"] for r in summary.read_jsonl(p)],
    "plots.read_metrics": lambda p: plots.read_metrics(p)["a"][0].tolist(),
}


def test_one_reader_of_metrics_jsonl():
    assert summary.read_jsonl is metrics_log.read_jsonl
    assert plots.read_jsonl is metrics_log.read_jsonl


@pytest.mark.parametrize("reader", READERS)
def test_a_cut_off_last_line_is_skipped_with_a_warning(tmp_path, caplog, reader):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1, "a": 1}\n\n{"step": 2, "a": 2}\n{"step": 3, "a')
    with caplog.at_level(logging.WARNING, logger="fcnjax.metrics_log"):
        assert READERS[reader](path) == [1, 2]
    (message,) = [r.getMessage() for r in caplog.records]
    assert message.startswith(f"{path}, line 4: skipped a cut-off last line")
    caplog.clear()
    path.write_text('{"step": 1, "a": 1}\n{"step": 2, "a": 2}')  # whole, without a newline
    assert READERS[reader](path) == [1, 2] and not caplog.records


@pytest.mark.parametrize("reader", READERS)
@pytest.mark.parametrize(
    "text, line, why",
    [
        ('{"step": 1, "a": 1}\n{"step": 2, "lo\n{"step": 3, "a": 3}\n', 2, "Unterminated string"),
        ('{"step": 1, "a": 1}\nnot json\n', 2, "Expecting value at column 1"),
        ('{"step": 1, "a": 1}\n\n[1, 2]\n{"step": 3, "a": 3}', 3, "not a JSON object"),
        ('{"step": 1, "a": 1}\n{"step": "2", "a": 2}\n', 2, "no integer 'step'"),
        ('{"step": 1, "a": 1}\n{"a": 2}', 2, "no integer 'step'"),  # last, but JSON
        (b'{"step": 1, "a": 1}\n{"step": 2, "x\xff": 1}\n', 2, "can't decode byte 0xff"),
    ],
)
def test_a_bad_line_elsewhere_names_the_file_and_the_line(tmp_path, reader, text, line, why):
    path = tmp_path / "metrics.jsonl"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(ValueError) as info:
        READERS[reader](path)
    assert str(info.value).startswith(f"{path}, line {line}: not a metrics record (")
    assert why in str(info.value) and "only the last line may be cut off" in str(info.value)


def test_a_writer_removes_a_cut_off_line_before_appending(tmp_path):
    # A run killed mid-line, then a writer that appends: the file stays readable, each record
    # whole, and the cut-off line does not end up in the middle.
    path = tmp_path / "m.jsonl"
    with JsonlWriter(path) as w:
        w.write(1, {"loss": 1.0})
    with open(path, "a") as f:
        f.write('{"step": 2, "time": 17')
    with JsonlWriter(path) as w:
        w.write(2, {"loss": 0.5})
    assert [(r["step"], r["loss"]) for r in read_jsonl(path)] == [(1, 1.0), (2, 0.5)]
    assert path.read_text().count("\n") == 2 and path.read_text().endswith("\n")


def test_drop_after_refuses_a_bad_line_in_the_middle(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_text('{"step": 1}\nnot json\n{"step": 3}\n')
    with pytest.raises(ValueError, match=r"m\.jsonl, line 2: not a metrics record"):
        drop_after(path, 1)
    with pytest.raises(ValueError, match="line 2"):
        JsonlWriter(path)
    assert path.read_text() == '{"step": 1}\nnot json\n{"step": 3}\n'  # left as it was


def test_metric_writer_writes_the_same_tags_to_both(tmp_path):
    metrics = {
        "mean_iou": jnp.float32(0.5),
        "per_class_iou": {
            "background": 0.75,
            "cat": np.float32(0.25),
            "traffic light": 0.125,  # a COCO class: the tag keeps its space
            "dog": float("nan"),
        },
        "confusion_matrix": np.eye(3),
        "name": "voc",
    }
    with MetricWriter(tmp_path / "run") as w:
        w.write(10, {"loss": 1.5})
        w.write(20, metrics, prefix="val")
    expected = {
        "val/mean_iou": 0.5,
        "val/iou/background": 0.75,
        "val/iou/cat": 0.25,
        "val/iou/traffic light": 0.125,
    }

    records = read_jsonl(tmp_path / "run" / "metrics.jsonl")
    assert [r["step"] for r in records] == [10, 20]
    assert records[0]["train/loss"] == 1.5
    assert {k: v for k, v in records[1].items() if k not in ("step", "time")} == {
        **expected,
        "val/iou/dog": None,
    }

    acc = accumulate(tmp_path / "run" / "tensorboard")
    assert sorted(acc.Tags()["scalars"]) == sorted([*expected, "val/iou/dog", "train/loss"])
    for tag, value in expected.items():
        assert [(e.step, e.value) for e in acc.Scalars(tag)] == [(20, value)]
    assert math.isnan(acc.Scalars("val/iou/dog")[0].value)


def test_disabled_metric_writer_writes_nothing(tmp_path):
    with MetricWriter(tmp_path / "run", enabled=False) as w:
        w.write(1, {"loss": 1.0})
    assert list(tmp_path.iterdir()) == []


def test_metric_writer_refuses_writes_after_close(tmp_path):
    for enabled in (True, False):
        w = MetricWriter(tmp_path / "run", enabled=enabled)
        w.close()
        w.close()  # a second close is harmless
        with pytest.raises(ValueError, match="closed"):
            w.write(1, {"loss": 1.0})


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


def steps_shown(text):
    return re.findall(r"step (\d+)/\d+", text)


def test_progress_log_lines_rate_and_eta_exclude_the_first_step():
    clock, out = FakeClock(), io.StringIO()
    # The window spans the whole run, so the rate at step 500 would show a first step counted.
    p = Progress(1000, stream=out, every=500, window=1000, time_fn=clock)
    clock.t = 100.0  # step 1 ends after 100 s of compilation
    for step in range(1, 1001):
        p.update(step, images=8, loss=1.0 / step)
        clock.t += 0.25  # then 8 images every 0.25 s: 32 img/s
    p.close()
    text = out.getvalue()
    assert "\r" not in text  # clean lines in a log
    assert text.splitlines() == [
        # elapsed 100 + 499 * 0.25 s; ETA 500 steps at 4 steps/s
        " 50%|#####     | step 500/1000 [03:44<02:05, 32.0 img/s, loss=0.0020]",
        "100%|##########| step 1000/1000 [05:49<00:00, 32.0 img/s, loss=0.0010]",
    ]


def test_progress_rate_is_over_the_recent_window_and_resumes_on_multiples_of_every():
    clock, out = FakeClock(), io.StringIO()
    p = Progress(4000, start_step=250, stream=out, every=100, window=5, time_fn=clock)
    for step in range(251, 451):
        clock.t += 0.25 if step <= 300 else 1.0  # slows down to 8 img/s after step 300
        p.update(step, images=8)
    lines = out.getvalue().splitlines()
    assert steps_shown(out.getvalue()) == ["300", "400"]
    assert lines[0].endswith("<15:25, 32.0 img/s]")  # 3700 steps at 0.25 s
    assert lines[1].endswith("<1:00:00, 8.0 img/s]")  # 3600 steps at 1 s


def test_progress_prints_once_per_interval_when_updated_every_few_steps():
    clock, out = FakeClock(), io.StringIO()
    p = Progress(30, stream=out, every=10, time_fn=clock)
    for step in range(3, 31, 3):  # 3, 6, ..., 30: no update falls on 10 or 20
        clock.t += 3.0
        p.update(step, images=24)
        p.update(step, images=0, loss=0.5)  # a second update at the step, with the loss
    assert steps_shown(out.getvalue()) == ["12", "21", "30"]  # and step 30 only once


def test_progress_first_update_has_no_rate_yet():
    out = io.StringIO()
    Progress(2, stream=out, every=1, time_fn=FakeClock(5.0)).update(1, images=4, lr=1e-5)
    assert out.getvalue() == " 50%|#####     | step 1/2 [00:00<?, ? img/s, lr=1.000e-05]\n"


def test_progress_write_prints_a_line_between_log_lines():
    out = io.StringIO()
    with Progress(4, stream=out, every=2, time_fn=FakeClock()) as p:
        p.update(2, images=1)
        p.write("eval: mean_iou 0.5")
        p.update(4, images=1)
    assert steps_shown(out.getvalue()) == ["2", "4"]
    assert out.getvalue().splitlines()[1] == "eval: mean_iou 0.5"


@pytest.mark.parametrize("leaked", [False, True])
def test_progress_on_a_terminal_redraws_in_place_at_most_ten_times_a_second(monkeypatch, leaked):
    clock, out = FakeClock(), Terminal()
    monkeypatch.setattr(tqdm.std, "time", clock)  # tqdm's clock, which spaces its redraws
    # A bar another library left open (TFDS's, after an error) must not push ours a line
    # down: tqdm would place a new bar below every live one.
    other = tqdm.std.tqdm(total=3, file=io.StringIO()) if leaked else None
    with Progress(100, stream=out, time_fn=clock) as p:
        for step in range(1, 51):
            clock.t += 1 / 64  # exact in binary
            p.update(step, images=1, loss=0.5)
        p.write("eval: mean_iou 0.5")
        clock.t += 1 / 64
        p.update(51, images=1)  # 1/64 s after the last redraw: drawn only by close()
    text = out.getvalue()
    before, message, after = text.partition("eval: mean_iou 0.5\n")
    assert message and "\n" not in before  # the message on its own line, the bar in place
    drawn = [int(s) for s in steps_shown(before)]
    assert drawn[0] == 0 and 2 <= len(drawn) <= 1 + 50 / 64 / 0.1
    # At least 0.1 s (6.4 steps of 1/64 s) between redraws.
    assert all(b - a >= 7 for a, b in zip(drawn, drawn[1:]))
    assert steps_shown(after) == ["50", "51"]  # redrawn under the message, then by close()
    assert after.endswith("\n") and after.count("\n") == 1
    last = after.rstrip().rsplit("\r", 1)[-1]
    assert re.fullmatch(r" 51%\|#####1 *\| step 51/100 \[00:00<00:00, 64\.0 img/s\] *", last)
    if other is not None:
        other.close()


@pytest.mark.parametrize(
    "kwargs, name",
    [({"total_steps": -1}, "total_steps"), ({"window": 0}, "window"), ({"every": 0}, "every")],
)
def test_progress_rejects_bad_arguments(kwargs, name):
    with pytest.raises(ValueError, match=f"Progress: expected {name} >= "):
        Progress(**{"total_steps": 10, **kwargs}, stream=io.StringIO())


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
