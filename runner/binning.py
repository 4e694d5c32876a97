"""Histograms of many tensors' values in a few device ops: each row of a matrix (or each
run of rows: a tensor cut into rows, runner/param_layout.py) binned between its min and
max, all rows counted at once. On the CPU the bounds are read on the host (a free sync
there) and one `bincount` counts; on a GPU `scatter_add_` does, without a sync. The host
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
    `torch.histc`. On a GPU nothing syncs: `scatter_add_` counts them instead."""
    g = rows.shape[0]
    lows, highs = (rows.aminmax() if g == 1 else (rows.amin(1), rows.amax(1)))  # fmt: skip
    if g == 1:
        lows, highs = lows.reshape(1), highs.reshape(1)  # aminmax(dim=1) is 20x slower on the CPU
    if spans is not None and len(spans) == g:
        spans = None  # a row each
    scaled = workspace.take("scratch", rows.shape, torch.float32, rows.device)
    count = cpu_counts if rows.device.type == "cpu" else device_counts
    return lows, highs, count(rows, lows, highs, bins, scaled, workspace, spans)


def device_counts(rows: torch.Tensor, lows: torch.Tensor, highs: torch.Tensor, bins: int,
                  scaled: torch.Tensor, workspace: Workspace,
                  spans: tuple[int, ...] | None = None) -> torch.Tensor:  # fmt: skip
    """`row_histograms`' counts without a host sync (for a GPU): all rows' bin indices,
    offset per histogram, counted by one `scatter_add_` (bincount would size its output
    from the data, a sync). `lows`, `highs`: per row."""
    g, h = rows.shape[0], len(spans) if spans is not None else rows.shape[0]
    if spans is not None:  # each row binned between its histogram's bounds
        owners, repeats = span_indices(workspace, spans, rows.device)[:2]
        lows, highs = lows[repeats].amin(1)[owners], highs[repeats].amax(1)[owners]  # NaN stays
        starts = owners * (bins + 1)
    else:
        starts = torch.arange(0, g * (bins + 1), bins + 1, device=rows.device)
    span = highs - lows
    # bins / span correctly rounded (Python's `bins / span` is reciprocal(span) * bins); a
    # constant row gets scale 0: everything to bin 0.
    scale = torch.where(span > 0, torch.full_like(span, bins).div_(span), 0.0)
    torch.sub(rows, lows.unsqueeze(1), out=scaled).mul_(scale.unsqueeze(1))
    index = workspace.take("index64", rows.shape, torch.int64, rows.device)
    index.copy_(scaled.nan_to_num_(0.0, 0.0, 0.0).clamp_(0, bins))
    index.add_(starts.unsqueeze(1))
    counts = torch.zeros(h * (bins + 1), dtype=torch.int64, device=rows.device)
    ones = torch.ones((), dtype=torch.int64, device=rows.device).expand(index.numel())
    return counts.scatter_add_(0, index.reshape(-1), ones).reshape(h, bins + 1)


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
