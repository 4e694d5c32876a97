"""The hand-serialized Summary of a logging step is the Summary protobuf itself would write."""

import math

import numpy as np
import pytest
from google.protobuf.internal.encoder import _VarintBytes
from tensorboard.compat.proto.event_pb2 import Event
from tensorboard.compat.proto.summary_pb2 import Summary

from runner.host_numbers import Histogram
from runner.summary_bytes import SummaryEncoder, event_bytes, varint


def protobuf_summary(scalars: dict, histograms: dict) -> Summary:
    """The Summary built field by field with protobuf's API (what RunWriter used to do)."""
    summary = Summary()
    for tag, number in scalars.items():
        value = summary.value.add()
        value.tag, value.simple_value = tag, number
    for tag, h in histograms.items():
        value = summary.value.add()
        value.tag = tag
        histo = value.histo
        histo.min, histo.max, histo.num, histo.sum = h.min, h.max, h.num, h.sum
        histo.sum_squares = h.sum_squares
        histo.bucket_limit.extend(h.bucket_limits.tolist())
        histo.bucket.extend(h.bucket_counts.tolist())
    return summary


def histogram(bins: int, low: float, high: float, seed: int) -> Histogram:
    counts = np.random.default_rng(seed).integers(0, 1000, bins).astype(np.float64)
    limits = low + (high - low) / bins * np.arange(1, bins + 1, dtype=np.float64)
    return Histogram(low, high, int(counts.sum()), 0.5 * (low + high), 3.25, limits, counts)


SCALARS = {
    "loss/train": 0.123456789,  # rounds to float32
    "weights_norm/0.weight": 0.0,  # a oneof member: written even when zero
    "grads_std/x": -0.0,
    "activations_mean/y": float("nan"),
    "update_ratio/z": float("inf"),
    "huge": 1e39,  # beyond float32: protobuf stores inf
    "tiny": 1e-46,  # below float32's subnormals: 0
    "t" * 200: 2.5,  # a tag longer than 127 bytes: a two-byte length
    "grads/ünïcode": 1.0,
}
HISTOGRAMS = {
    "weights/0.weight": histogram(64, -0.25, 0.5, 0),
    "grads/0.bias": histogram(1, 0.0, 0.0, 1),  # zeros: protobuf leaves them out
    "weights/" + "w" * 300: histogram(3, -1e30, 2.0, 2),
}
NAN = float("nan")
HISTOGRAMS["grads/nan"] = Histogram(
    NAN, NAN, 5, NAN, NAN, np.full(4, NAN), np.array([5.0, 0, 0, 0])
)


def test_encoded_summary_is_byte_for_byte_protobufs():
    encoder = SummaryEncoder()
    for _ in range(2):  # the second time from the cached tag headers
        assert (
            encoder.encode(SCALARS, HISTOGRAMS)
            == protobuf_summary(SCALARS, HISTOGRAMS).SerializeToString()
        )
    assert encoder.encode({}, {}) == b""
    assert encoder.encode(SCALARS, {}) == protobuf_summary(SCALARS, {}).SerializeToString()


def test_encoded_event_parses_back_to_the_numbers():
    event = Event.FromString(event_bytes(SummaryEncoder().encode(SCALARS, HISTOGRAMS)))
    values = {v.tag: v for v in event.summary.value}
    assert list(values) == [*SCALARS, *HISTOGRAMS]
    assert values["loss/train"].simple_value == pytest.approx(0.123456789, rel=1e-7)
    assert values["huge"].simple_value == math.inf
    assert math.isnan(values["activations_mean/y"].simple_value)
    h = values["weights/0.weight"].histo
    expected = HISTOGRAMS["weights/0.weight"]
    assert (h.min, h.max, h.num, h.sum, h.sum_squares) == (
        -0.25, 0.5, expected.num, expected.sum, 3.25)  # fmt: skip
    assert list(h.bucket_limit) == expected.bucket_limits.tolist()
    assert list(h.bucket) == expected.bucket_counts.tolist()
    assert values["grads/0.bias"].histo.min == 0.0


@pytest.mark.parametrize("n", [0, 1, 127, 128, 300, 2**14, 2**21 + 5, 2**35])
def test_varint_is_protobufs(n):
    assert varint(n) == _VarintBytes(n)


def _written_events(log_dir) -> list[Event]:
    """The summary events of the one event file in `log_dir`, as written (the legacy loader
    does not migrate scalars to tensors)."""
    from tensorboard.backend.event_processing.event_file_loader import LegacyEventFileLoader

    (path,) = log_dir.glob("events.out.tfevents.*")
    return [e for e in LegacyEventFileLoader(str(path)).Load() if e.HasField("summary")]


def test_batched_events_reach_the_file_in_step_order_with_their_own_wall_times(
    tmp_path, monkeypatch
):
    import time

    import runner.tensorboard as tb
    from runner.stats import StepRecord

    monkeypatch.setattr(tb, "HANDOVER_SECONDS", 3600.0)  # only the count hands over
    writer = tb.RunWriter(tmp_path)
    writer.hold(0, StepRecord({"loss/train": 1.0}))  # the initial state: written first
    stamps = []
    for step in range(1, 13):
        stamps.append(time.time())
        writer.record(step, StepRecord({"loss/train": 1.0 / step}))
        time.sleep(0.002)
    writer.scalar("loss/val", 0.5, 12)  # a write outside a logging step hands over first
    writer.close()
    events = _written_events(tmp_path)
    assert [e.step for e in events] == [*range(13), 12]
    values = [e.summary.value[0].simple_value for e in events[:13]]
    assert values == pytest.approx([1.0, *(1.0 / s for s in range(1, 13))])
    walls = [e.wall_time for e in events[1:13]]  # the time of each step, not of its batch
    assert walls == sorted(walls)
    assert all(abs(w - s) < 0.5 for w, s in zip(walls, stamps, strict=True))
    assert walls[8] - walls[0] >= 0.015  # not one stamp for the batch


def test_an_event_after_a_quiet_second_is_handed_over_at_once(tmp_path, monkeypatch):
    import runner.tensorboard as tb
    from runner.stats import StepRecord

    monkeypatch.setattr(tb, "HANDOVER_SECONDS", 0.0)  # every event is "a second later"
    writer = tb.RunWriter(tmp_path)
    writer.record(1, StepRecord({"loss/train": 1.0}))
    writer.record(2, StepRecord({"loss/train": 0.5}))
    writer.writer.flush()  # the SummaryWriter's own flush: no handover of ours
    assert [e.step for e in _written_events(tmp_path)] == [1, 2]
    writer.close()
