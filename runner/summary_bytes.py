"""One logging step's TensorBoard `Summary`, serialized without protobuf's Python API.

Filling a `Summary` field by field (`value.add()`, `extend` of every histogram's bucket
lists) cost 340 us a step for a 4 x 256 MLP's 74 scalars and 20 histograms, each Python
float converted on its own. The bytes of a tag's header are the same every step, so they
are made once per tag; a step packs its numbers with NumPy (histogram buckets as raw
little-endian doubles) and joins the pieces: 40 us. protobuf's own parser reads the
result back (`RunWriter.record`), so a mistake here fails loudly instead of writing a bad
file, and tests/test_summary_bytes.py holds the bytes equal to protobuf's serialization.

The wire format (https://protobuf.dev/programming-guides/encoding/): each field is a key
varint (field number << 3 | wire type) then its value: wire type 5 a 4-byte float, 1 an
8-byte double, 2 a varint length then that many bytes (strings, sub-messages, packed
repeated doubles). tensorboard/compat/proto/summary.proto gives the fields used here:
Summary.value = 1; Value.tag = 1, .simple_value = 2 (float), .histo = 5;
HistogramProto.min .. sum_squares = 1 .. 5 (doubles), .bucket_limit = 6, .bucket = 7
(packed doubles).
"""

from __future__ import annotations

import functools
import struct
from collections.abc import Mapping
from typing import Protocol

import numpy as np

# HistogramProto's keys: min, max, num, sum, sum_squares (fields 1 to 5, doubles), then
# bucket_limit and bucket (fields 6 and 7, packed doubles).
_KEYS = (0x09, 0x11, 0x19, 0x21, 0x29)
_FIVE_DOUBLES = struct.Struct("<" + "Bd" * 5)  # each key byte, then its double
_BUCKET_LIMIT, _BUCKET = b"\x32", b"\x3a"


class HistogramNumbers(Protocol):
    """What a histogram needs: runner.host_numbers.Histogram has these."""

    min: float
    max: float
    num: int
    sum: float
    sum_squares: float
    bucket_limits: np.ndarray  # float64 right edges
    bucket_counts: np.ndarray  # float64 counts, one per edge


@functools.lru_cache(maxsize=4096)  # lengths repeat from step to step
def varint(n: int) -> bytes:
    """`n` >= 0 as a protobuf varint: 7 bits a byte, least significant first, the high bit
    set on every byte but the last."""
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _length_delimited(key: bytes, body: bytes) -> bytes:
    return key + varint(len(body)) + body


class SummaryEncoder:
    """Serializes steps' scalars and histograms as one `Summary`, in the order given
    (scalars first), the bytes protobuf's `SerializeToString` gives for that Summary built
    field by field."""

    def __init__(self) -> None:
        self._tags: dict[str, bytes] = {}  # tag -> Value.tag's field bytes
        # The scalars' bytes for one sequence of tags, with each float's offset in them.
        self._scalar_templates: dict[tuple[str, ...], tuple[bytes, np.ndarray]] = {}

    def _tag_field(self, tag: str) -> bytes:
        field = self._tags.get(tag)
        if field is None:
            field = self._tags[tag] = _length_delimited(b"\x0a", tag.encode())
        return field

    def _scalar_template(self, tags: tuple[str, ...]) -> tuple[bytes, np.ndarray]:
        """The Values of `tags` with zero floats, and the byte offsets of the floats."""
        template = self._scalar_templates.get(tags)
        if template is None:
            pieces, offsets, at = [], [], 0
            for tag in tags:
                tag_field = self._tag_field(tag)
                # Summary.value's key and length, the Value's tag, key 0x15 (field 2, float).
                head = b"\x0a" + varint(len(tag_field) + 5) + tag_field + b"\x15"
                pieces += (head, bytes(4))
                offsets.append(at + len(head))
                at += len(head) + 4
            offsets = np.array(offsets)[:, None] + np.arange(4)  # each float's 4 bytes
            template = self._scalar_templates[tags] = (b"".join(pieces), offsets)
        return template

    def encode(self, scalars: Mapping[str, float],
               histograms: Mapping[str, HistogramNumbers]) -> bytes:  # fmt: skip
        """The serialized Summary: one Value per scalar (`simple_value`, rounded to float32
        as protobuf rounds it: out of range gives an infinity), then one per histogram."""
        pieces: list[bytes] = []
        if scalars:
            template, offsets = self._scalar_template(tuple(scalars))
            with np.errstate(over="ignore"):  # float32 overflow: inf, as protobuf stores it
                floats = np.array(list(scalars.values()), dtype=np.float64).astype("<f4")
            out = np.frombuffer(template, dtype=np.uint8).copy()
            out[offsets] = floats.view(np.uint8).reshape(-1, 4)
            pieces.append(out.tobytes())
        for tag, h in histograms.items():
            numbers = (h.min, h.max, float(h.num), h.sum, h.sum_squares)
            if all(numbers):  # no zero among them (NaN is not): all five are written
                low, high, num, total, squares = numbers
                fields = _FIVE_DOUBLES.pack(
                    0x09, low, 0x11, high, 0x19, num, 0x21, total, 0x29, squares
                )
            else:  # protobuf leaves a field that is 0.0 out (-0.0 has a bit set: it stays)
                fields = b"".join(bytes([key]) + struct.pack("<d", x)
                                  for key, x in zip(_KEYS, numbers, strict=True)
                                  if struct.pack("<d", x) != bytes(8))  # fmt: skip
            limits, counts = _doubles(h.bucket_limits), _doubles(h.bucket_counts)
            body = b"".join((fields, _length_delimited(_BUCKET_LIMIT, limits),
                             _length_delimited(_BUCKET, counts)))  # fmt: skip
            value = self._tag_field(tag) + _length_delimited(b"\x2a", body)  # Value.histo
            pieces.append(_length_delimited(b"\x0a", value))  # Summary.value
        return b"".join(pieces)


def _doubles(values: np.ndarray) -> bytes:
    return np.ascontiguousarray(values, dtype="<f8").tobytes()


def event_bytes(summary: bytes) -> bytes:
    """An `Event` holding only the serialized Summary (Event.summary is field 5): the writer
    sets its step and wall time."""
    return _length_delimited(b"\x2a", summary)
