"""The hand-serialized Summary of a logging step is the Summary protobuf itself would write."""

import math

import numpy as np
import pytest
from google.protobuf.internal.encoder import _VarintBytes
from tensorboard.compat.proto.event_pb2 import Event
from tensorboard.compat.proto.summary_pb2 import Summary

from runner.param_stats import Histogram
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
