"""The step's one device-to-host copy: every statistic's device tensors in one transfer.

A logging step's reductions leave small device tensors (sums, squares, bounds, bin
counts) and the whole values of tiny tensors. Each producer wraps its tensors in a
`Shipment` with a `finish` that files the host values; `ship_to_host` concatenates all of
them into one float32 tensor, copies it to the host once (one sync on a GPU), and calls
the finishers. The tiny tensors that the host reduces are reduced together, in one
`host_segments` call over all their rows.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
import torch

from runner.reductions import host_segments


@dataclass
class Shipment:
    """Device tensors for the step's one host copy, and what turns their host values into
    the step's numbers: `finish` gets one list of Python numbers per float (or bool) tensor
    of `pieces` and one int64 NumPy array per int64 one (bin counts), in the order of
    `pieces`, then one float32 NumPy array per tensor of `whole` (float32 tensors copied as
    they are). With `host_rows`, whole[0] is a tensor whose segments the host reduces with
    every other shipment's such segments in one `host_segments` call: its rows, or the
    runs of `host_lengths` values of it, flattened; finish gets its segments' part of the
    answer last (with `host_bins`, histograms of that many bins too)."""

    pieces: list[torch.Tensor]
    finish: Callable[[list], None]
    whole: list[torch.Tensor] = field(default_factory=list)
    host_rows: bool = False
    host_bins: int | None = None
    host_lengths: list[int] | None = None


def ship_to_host(shipped: list[Shipment]) -> None:
    """The step's one device-to-host copy of every shipment's tensors, then each shipment's
    `finish` with its host values (see Shipment). The tiny tensors the host reduces are
    reduced by one `host_segments` call."""
    if not shipped:
        return
    tensors = [t for shipment in shipped for t in shipment.pieces]
    # The whole tensors: the rows the host reduces first (one run of segments), then
    # the rest, in shipment order.
    host_reduced = [s for s in shipped if s.host_rows]
    reduced_rows = [s.whole[0] for s in host_reduced]
    whole = reduced_rows + [t for s in shipped for t in s.whole[1 if s.host_rows else 0 :]]
    # The one device-to-host copy of the step, as float32: the float pieces, the whole
    # tensors, then the int64 pieces (bin counts: exact past 2^24) as their bits, two
    # float32 per value, read back as int64 on the host. One dtype keeps the cat a plain
    # copy (a mixed-dtype cat took 0.4 ms a step).
    floats = [i for i, t in enumerate(tensors) if t.dtype != torch.int64]
    ints = [i for i, t in enumerate(tensors) if t.dtype == torch.int64]
    float_bits = [_as_float32(tensors[i]) for i in floats] + [t.reshape(-1) for t in whole]
    length = sum(t.numel() for t in float_bits)
    pad = [float_bits[0].new_zeros(length % 2)] if float_bits else []  # int64 alignment
    int_bits = [tensors[i].reshape(-1).view(torch.float32) for i in ints]
    host = torch.cat([*float_bits, *pad, *int_bits]).cpu().numpy()  # the rest reads it
    piece_length = length - sum(t.numel() for t in whole)
    flat = host[:piece_length].tolist()
    values: list = [None] * len(tensors)
    at = 0
    for i in floats:
        values[i] = flat[at : at + tensors[i].numel()]
        at += tensors[i].numel()
    if ints:  # kept as NumPy (bin counts: they are written as arrays)
        counts, at = host[length + length % 2 :].view(np.int64), 0
        for i in ints:
            values[i] = counts[at : at + tensors[i].numel()]
            at += tensors[i].numel()
    arrays, at = [], piece_length
    for t in whole:  # views of the host copy: no conversion to Python numbers
        arrays.append(host[at : at + t.numel()])
        at += t.numel()
    ends = piece_length + sum(t.numel() for t in reduced_rows)
    bins = max((s.host_bins for s in shipped if s.host_bins), default=None)
    reduced = _reduce_on_host(host[piece_length:ends], host_reduced, bins)
    firsts, rest = iter(arrays[: len(reduced_rows)]), iter(arrays[len(reduced_rows) :])
    for shipment in shipped:
        taken, values = values[: len(shipment.pieces)], values[len(shipment.pieces) :]
        if shipment.host_rows:
            given = [next(firsts), *(next(rest) for _ in shipment.whole[1:]), next(reduced)]
        else:
            given = [next(rest) for _ in shipment.whole]
        shipment.finish(taken + given)


def _reduce_on_host(values: np.ndarray, shipments: list[Shipment],
                    bins: int | None) -> Iterator[list]:  # fmt: skip
    """`host_segments` of the segments of every host-reduced tensor of `shipments` (their
    host copies, adjacent: `values`) in one call, with histograms of `bins` bins if any;
    yields each shipment's part of the answer, in order."""
    if not shipments:
        return
    layout = tuple(_segment_lengths(s) for s in shipments)
    lengths = _LENGTHS.get(layout)
    if lengths is None:  # the same every logging step: made once
        if len(_LENGTHS) >= 64:  # a process that trains many models: forget the old ones
            _LENGTHS.clear()
        lengths = _LENGTHS[layout] = np.array([n for part in layout for n in part])
    answer, end = host_segments(values, lengths, bins), 0
    for part in layout:
        yield [piece[end : end + len(part)] for piece in answer]
        end += len(part)


_LENGTHS: dict[tuple, np.ndarray] = {}  # segment lengths of a layout of shipments


def _segment_lengths(shipment: Shipment) -> tuple[int, ...]:
    """The lengths of the segments of a host-reduced shipment's whole[0]: `host_lengths`,
    or one per row."""
    if shipment.host_lengths is not None:
        return tuple(shipment.host_lengths)
    rows, n = shipment.whole[0].shape
    return (n,) * rows


def _as_float32(t: torch.Tensor) -> torch.Tensor:
    """`t` flattened as float32 (bool and bfloat16 convert exactly)."""
    flat = t if t.dim() == 1 else t.reshape(-1)  # most pieces are (rows,): no reshape op
    return flat if flat.dtype == torch.float32 else flat.float()
