"""Histograms of many tensors' values in a few device ops: each row of a matrix (or each
run of rows: a tensor cut into rows, runner/param_layout.py) binned between its min and
max, all rows counted at once. On the CPU the bounds are read on the host (a free sync
there) and one `bincount` counts; on a GPU `torch.histc` does, without a sync. The host
copy of a tiny tensor is binned by the same rule in `reductions.host_segments`.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from runner.reductions import Workspace, span_indices, span_layout

# Long rows' values are counted into this many histograms per row, value k into histogram
# k mod LANES, then added up: consecutive equal bins no longer wait on each other's
# increment of one counter. In one bincount for all rows, 8 lanes counted 8 rows of 65536
# in 0.74 ms (int16, with the offsets' addition), one bincount per row in 0.86 ms (int8).
LANES = 8


def row_histograms(
    rows: torch.Tensor, bins: int, workspace: Workspace, spans: tuple[int, ...] | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per row of the (g, n) float matrix: its (min, max); and the counts of the rows'
    histograms, a (h, bins + 1) int64 tensor. Histogram j holds the values of `spans[j]`
    consecutive rows (a tensor cut into rows; without `spans`, row j alone), from their
    min to their max: column k < bins counts the x with floor((x - min) / width) = k,
    width = (max - min) / bins, computed as (x - min) * (bins / (max - min)) in float32
    (a value within rounding of an edge may fall on either side of it); column `bins`
    counts the values equal to the max, which belong to the last bin
    (`host_numbers.fold_last_bin`). A constant histogram (max = min), or one holding a
    NaN or an infinity, has all its values in the first bin.

    On the CPU the bounds are read on the host (a free sync there) and the rows' bin
    indices (offset per histogram) are counted by one `bincount`: 5x faster than
    `torch.histc`. On a GPU nothing syncs: `torch.histc` counts them instead, per histogram
    (`device_counts`)."""
    g = rows.shape[0]
    lows, highs = (rows.aminmax() if g == 1 else (rows.amin(1), rows.amax(1)))  # fmt: skip
    if g == 1:
        lows, highs = lows.reshape(1), highs.reshape(1)  # aminmax(dim=1) is 20x slower on the CPU
    if spans is not None and len(spans) == g:
        spans = None  # a row each
    scaled = workspace.take("scratch", rows.shape, torch.float32, rows.device)
    count = cpu_counts if rows.device.type == "cpu" else device_counts
    return lows, highs, count(rows, lows, highs, bins, scaled, workspace, spans)


# torch.histc counts in its input's dtype: float32 holds every count up to 2^24 exactly, so
# `device_counts` counts at most this many values a call.
HISTC_PIECE = 1 << 24
# On a GPU a histogram's values are counted in this many lanes (value k in lane k mod
# DEVICE_LANES, each lane its own bins), then added up: with one set of 65 counters, the
# threads of a block queued on the same few atomics (histc of 16 M values: 215 us on an
# H100, 10x its memory traffic).
DEVICE_LANES = 32


def device_counts(rows: torch.Tensor, lows: torch.Tensor, highs: torch.Tensor, bins: int,
                  scaled: torch.Tensor, workspace: Workspace,
                  spans: tuple[int, ...] | None = None) -> torch.Tensor:  # fmt: skip
    """`row_histograms`' counts without a host sync (for a GPU): each histogram's bin
    indices, truncated in float32, counted by `torch.histc` over [0, bins + 1) (an integer
    k falls in bin k exactly; in DEVICE_LANES lanes where the rows' length allows), at most
    HISTC_PIECE values a call. bincount would size its output from the data (a sync); one
    `scatter_add_` of every value into its histogram's counters serialised on their
    atomics: every statistic every step of an 8 x 4096 MLP ran at 0.13 of the plain loop
    on an H100. `lows`, `highs`: per row."""
    g = rows.shape[0]
    if spans is not None:  # each row binned between its histogram's bounds
        owners, repeats = span_indices(workspace, spans, rows.device)[:2]
        lows, highs = lows[repeats].amin(1)[owners], highs[repeats].amax(1)[owners]  # NaN stays
    span = highs - lows
    # bins / span correctly rounded (Python's `bins / span` is reciprocal(span) * bins); a
    # constant row gets scale 0: everything to bin 0.
    scale = torch.where(span > 0, torch.full_like(span, bins).div_(span), 0.0)
    # x >= min, so the scaled values are >= 0, and <= bins but for rounding (bin `bins`
    # then); NaN where the value or the histogram's bounds are not finite (its scale is 0).
    torch.sub(rows, lows.unsqueeze(1), out=scaled).mul_(scale.unsqueeze(1)).trunc_()
    n, width = rows.shape[1], bins + 1
    lanes = DEVICE_LANES if n % DEVICE_LANES == 0 else 1
    if lanes > 1:  # bin k of lane l: k + l * width, an integer (exact in float32)
        chunk = math.gcd(n, 1024)  # offsets for this many columns, broadcast over the rest
        offsets = workspace.constant(("histc lanes", chunk, width, rows.device), lambda: (
            torch.arange(chunk, device=rows.device) % lanes * width).float())  # fmt: skip
        scaled.view(g, n // chunk, chunk).add_(offsets)
    _, _, starts = span_layout(workspace, spans, g)
    bounds = [*starts.tolist(), g]
    counts = []
    for start, end in zip(bounds, bounds[1:], strict=False):
        values = scaled[start:end].view(-1)
        total = None
        for at in range(0, values.numel(), HISTC_PIECE):
            piece = torch.histc(values[at : at + HISTC_PIECE], width * lanes, 0, width * lanes)
            piece = piece.view(lanes, width).sum(0).long()
            total = piece if total is None else total.add_(piece)
        # histc leaves NaN out: those values belong to the first bin, as on the CPU (a
        # NaN and an infinity pass there, instead of two passes over all values here).
        total[0].add_(values.numel() - total.sum())
        counts.append(total)
    return torch.stack(counts)


def lane_offsets(workspace: Workspace, owners: tuple[int, ...], chunk: int, width: int,
                 device: torch.device) -> torch.Tensor:  # fmt: skip
    """A (g, 1, chunk) int16 tensor, made once: (owners[row] * LANES + column % LANES) *
    width, added to the bin indices of g rows viewed as (n / chunk, chunk), where
    `cpu_counts` counts each histogram's lane of each value (`owners[row]`: the histogram
    of row `row`). `chunk` is a multiple of LANES; a short one (8) makes the addition 10x
    slower than a long one (1024: as fast as full-size offsets, without their memory)."""

    def make() -> torch.Tensor:
        lane = torch.arange(chunk, dtype=torch.int16) % LANES
        row = torch.tensor(owners, dtype=torch.int16).view(-1, 1, 1) * LANES
        return ((row + lane) * width).to(device)

    return workspace.constant(("lane offsets", owners, chunk, width, device), make)


def cpu_counts(rows: torch.Tensor, lows: torch.Tensor, highs: torch.Tensor, bins: int,
               scaled: torch.Tensor, workspace: Workspace,
               spans: tuple[int, ...] | None = None) -> torch.Tensor:  # fmt: skip
    """`row_histograms`' counts with the bounds read on the host (free on the CPU): scales
    made there, int16/int32 indices, one `bincount`. `lows`, `highs`: per row."""
    g = rows.shape[0]
    owners, owner, starts = span_layout(workspace, spans, g)
    if g == 1:  # Python numbers: no tensors to make
        low, high = lows.item(), highs.item()
        # bins / (max - min) in float32, as `device_counts` computes it, so both bin alike.
        # A NaN compares false: its row gets scale 0, like a constant one.
        scale = float(np.float32(bins) / (np.float32(high) - np.float32(low))) if (
            low < high) else 0.0  # fmt: skip
        torch.sub(rows, low, out=scaled).mul_(scale)
        finite = math.isfinite(low) and math.isfinite(high)
    else:  # the same float32 arithmetic, per histogram, in NumPy
        low_h, high_h = lows.numpy(), highs.numpy()
        if spans is not None:  # a histogram's bounds: its rows' (NaN propagates)
            low_h, high_h = np.minimum.reduceat(low_h, starts), np.maximum.reduceat(high_h, starts)
        with np.errstate(all="ignore"):  # (a constant or NaN histogram's quotient is unused)
            scale_h = np.where(low_h < high_h, np.float32(bins) / (high_h - low_h), np.float32(0))
        row_lows = lows.unsqueeze(1) if spans is None else torch.from_numpy(low_h[owner, None])
        torch.sub(rows, row_lows, out=scaled).mul_(torch.from_numpy(scale_h[owner, None]))
        finite = bool(np.isfinite(low_h).all() and np.isfinite(high_h).all())
    if not finite:
        scaled.nan_to_num_(0.0, 0.0, 0.0).clamp_(0, bins)  # NaN, inf: to bin 0, not off the end
    h = owners[-1] + 1
    # In [0, bins]; truncation toward zero gives the bin. int8, int16 and int32 convert from
    # float32 several times faster than int64, and bincount takes them as they are (int8
    # counts 65536 values in 70 us, int16 in 115 us: a smaller type, a faster count). Long
    # rows are counted in lanes where int16 holds the offsets, else one histogram at a
    # time; short ones at once, offset per histogram.
    n, width = rows.shape[1], bins + 1
    if n >= 4096 and n % LANES == 0 and h * LANES * width <= 2**15:
        index = workspace.take("index-lanes", rows.shape, torch.int16, rows.device).copy_(scaled)
        chunk = math.gcd(n, 4096)  # offsets for this many columns, broadcast over the rest
        offsets = lane_offsets(workspace, owners, chunk, width, rows.device)
        index.view(g, n // chunk, chunk).add_(offsets)
        counts = torch.bincount(index.view(-1), minlength=h * LANES * width)
        return counts.view(h, LANES, width).sum(1)
    if (g == 1 or rows.shape[1] >= 4096) and bins < 2**15 - 1:
        small = torch.int8 if bins < 2**7 - 1 else torch.int16
        index = workspace.take(f"index-{small}", rows.shape, small, rows.device).copy_(scaled)
        bounds = [*starts.tolist(), g]
        return torch.stack([torch.bincount(index[start:end].view(-1), minlength=width)
                            for start, end in zip(bounds, bounds[1:], strict=False)])  # fmt: skip
    index = workspace.take("index32", rows.shape, torch.int32, rows.device).copy_(scaled)
    index.add_(torch.tensor(owners, dtype=torch.int32).mul_(width).unsqueeze(1))
    return torch.bincount(index.reshape(-1), minlength=h * width).reshape(h, width)
