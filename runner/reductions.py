"""Per-tensor reductions of many tensors in few device ops: the numbers behind every statistic.

A PyTorch op costs about 5 us on a CPU whatever its size, more than the arithmetic on a
256 x 256 tensor, and a logging step reduces ~30 tensors several ways. So tensors of one
shape (each below STACK_LIMIT values) are stacked into the rows of one matrix, small ones
of several shapes cut into rows of one length (runner/param_layout.py; `spans` below: a
tensor's number of rows), and every reduction is one op per group of rows: a 4 x 256
MLP's four weights make one group (its biases go to the host), its 9 layer outputs 2.
Results stay on the device; the host finishes them (means, stds, norms)
after the step's one copy (runner/host_copy.py). A group of at most TINY_LIMIT values rides
whole in that copy instead, and `host_segments` reduces all of them on the host at once
(NumPy, by the same rules).

Per row x of n values, `row_moments` gives s = sum(x) and the centred sum of squares
q = sum((x - s/n)^2), both cascade sums (float32 rounding even at millions of values,
where the CPU's `vector_norm` loses three digits at 16M values; the outputs of a group
with rectifiers sum each unit over the batch first, `unit_sums`). From them:
mean = s/n, std = sqrt(q / (n - 1)), ||x||^2 = q + s^2/n (two positive terms: no
cancellation, unlike sum(x^2) - n mean^2).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

# Tensors with fewer values than this are stacked with others of their shape; a bigger one is
# reduced alone, where its ops take long enough that their fixed cost does not matter and a
# stacking copy would cost memory.
STACK_LIMIT = 1 << 20
# Groups of at most this many values are copied to the host whole (inside the step's one
# copy) and reduced there by `host_segments`: a bias or a norm layer's weight costs a dozen
# device ops of fixed cost otherwise, more than the NumPy arithmetic on its values.
TINY_LIMIT = 1 << 13


def shape_groups(shapes: Sequence[tuple[int, ...]]) -> list[list[int]]:
    """Indices into `shapes`, grouped for stacking: tensors of one shape with fewer than
    STACK_LIMIT values share a group (groups in order of first appearance); each bigger
    tensor is a group of its own."""
    groups: list[list[int]] = []
    by_shape: dict[tuple[int, ...], list[int]] = {}
    for i, shape in enumerate(shapes):
        if math.prod(shape) >= STACK_LIMIT:
            groups.append([i])
        elif tuple(shape) in by_shape:
            by_shape[tuple(shape)].append(i)
        else:
            by_shape[tuple(shape)] = [i]
            groups.append(by_shape[tuple(shape)])
    return groups


class Workspace:
    """Reused buffers for the big temporaries of the reductions (centred rows, bin indices,
    stacked tensors). A fresh allocation of a few MB costs page faults on the CPU each
    time: a 2 MB subtraction took 440 us into a new tensor and 50 us into a reused one.
    Every use is consumed before the next begins (on a GPU, stream order sees to that)."""

    def __init__(self) -> None:
        self._buffers: dict[str, torch.Tensor] = {}
        self._views: dict[tuple, torch.Tensor] = {}  # made once: a view costs two ops
        self._constants: dict[tuple, torch.Tensor] = {}  # tensors made once per shape

    def lane_offsets(self, owners: tuple[int, ...], chunk: int, width: int,
                     device: torch.device) -> torch.Tensor:  # fmt: skip
        """A (g, 1, chunk) int16 tensor, made once: (owners[row] * LANES + column % LANES)
        * width, added to the bin indices of g rows viewed as (n / chunk, chunk), where
        `cpu_counts` counts each histogram's lane of each value (`owners[row]`: the
        histogram of row `row`). `chunk` is a multiple of LANES; a short one (8) makes the
        addition 10x slower than a long one (1024: as fast as full-size offsets, without
        their memory)."""
        key = ("lane offsets", owners, chunk, width, device)
        offsets = self._constants.get(key)
        if offsets is None:
            lane = torch.arange(chunk, dtype=torch.int16) % LANES
            row = torch.tensor(owners, dtype=torch.int16).view(-1, 1, 1) * LANES
            offsets = self._constants[key] = ((row + lane) * width).to(device)
        return offsets

    def span_layout(self, spans: tuple[int, ...] | None,
                    g: int) -> tuple[tuple[int, ...], np.ndarray, np.ndarray]:  # fmt: skip
        """For g rows in histograms of `spans[j]` consecutive rows each (one row each without
        `spans`), made once: (owners, owner array, starts), owners[row] the histogram of
        `row` (a tuple and an array), starts[j] the first row of histogram j."""
        key = ("span layout", spans, g)
        layout = self._constants.get(key)
        if layout is None:
            spans = spans if spans is not None else (1,) * g
            owners = np.repeat(np.arange(len(spans)), spans)
            layout = (tuple(owners.tolist()), owners, np.cumsum([0, *spans[:-1]]))
            self._constants[key] = layout
        return layout

    def span_indices(self, spans: tuple[int, ...],
                     device: torch.device) -> tuple[torch.Tensor, ...]:  # fmt: skip
        """For histograms (tensors) of `spans[j]` consecutive rows each, made once on
        `device`: (owners, repeats, pads, sizes), int64 tensors but `sizes`. owners[row] is
        the tensor of `row`; repeats and pads (h, max span) list each tensor's rows, filled
        up with its first row (which leaves a min or a max as it is) or with row g (where
        the caller puts a 0, which leaves a sum as it is); `sizes`: the spans as floats."""
        key = ("span indices", spans, device)
        indices = self._constants.get(key)
        if indices is None:
            g, h = sum(spans), len(spans)
            owners = np.repeat(np.arange(h), spans)
            starts, width = np.cumsum([0, *spans[:-1]]), np.arange(max(spans))
            inside = width[None, :] < np.array(spans)[:, None]
            repeats = starts[:, None] + np.where(inside, width[None, :], 0)
            pads = np.where(inside, repeats, g)
            host = [owners, repeats, pads, np.array(spans, dtype=np.float32)]
            indices = self._constants[key] = tuple(torch.from_numpy(a).to(device) for a in host)
        return indices

    def take(self, name: str, shape: tuple[int, ...], dtype: torch.dtype,
             device: torch.device) -> torch.Tensor:  # fmt: skip
        """A tensor of `shape` in the buffer `name`, grown when too small (contents undefined)."""
        key = (name, tuple(shape), dtype, device)
        view = self._views.get(key)
        if view is not None:
            return view
        numel = math.prod(shape)
        buffer = self._buffers.get(name)
        if buffer is None or buffer.numel() < numel or buffer.dtype != dtype or (
                buffer.device != device):  # fmt: skip
            buffer = self._buffers[name] = torch.empty(numel, dtype=dtype, device=device)
            self._views = {k: v for k, v in self._views.items() if k[0] != name}  # stale
        view = self._views[key] = buffer[:numel].view(shape)
        return view


def stacked(tensors: Sequence[torch.Tensor], workspace: Workspace | None = None) -> torch.Tensor:
    """The tensors as the rows of a float32 (len(tensors), numel) matrix: a view of a single
    contiguous float32 tensor, else a copy into a workspace buffer (or new memory)."""
    flats = [t.reshape(-1) for t in tensors]
    if len(flats) == 1 and flats[0].dtype == torch.float32:
        return flats[0].unsqueeze(0)
    if workspace is None:
        return torch.stack(flats).float()
    out = workspace.take("rows", (len(flats), flats[0].numel()), torch.float32, flats[0].device)
    if out.numel() <= TINY_LIMIT and flats[0].dtype == out.dtype:  # one op beats k of them
        return torch.stack(flats, out=out)
    # Row by row: copy_ converts and runs on every thread, where stack (cat) copies on one:
    # three 256 x 256 gradients fresh from backward took 51 us by rows and 172 us stacked.
    for row, flat in zip(out, flats, strict=True):
        row.copy_(flat)
    return out


def row_moments(
    rows: torch.Tensor, workspace: Workspace, sums: torch.Tensor | None = None,
    spans: tuple[int, ...] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """Per row of the (g, n) float matrix: (sum, sum of squares about the mean), the mean
    the row's own, or with `spans` its tensor's (`spans[j]` consecutive rows are tensor j,
    `tensor_means`): then a tensor's rows' numbers add up to its own. `sums`: the rows'
    sums where the caller has them (from `unit_sums`)."""
    sums = rows.sum(1) if sums is None else sums
    centred = workspace.take("scratch", rows.shape, torch.float32, rows.device)
    if spans is not None and len(spans) < rows.shape[0]:
        means = tensor_means(sums, spans, rows.shape[1], workspace)
    else:  # s / n, not s * (1 / n): a row of ones (a fresh BatchNorm weight) has a std of 0.
        means = (sums / rows.shape[1]).unsqueeze(1)
    return sums, squared_difference(rows, means, centred).sum(1)


def tensor_means(sums: torch.Tensor, spans: tuple[int, ...], n: int, workspace: Workspace,
                 on_host: bool | None = None) -> torch.Tensor:  # fmt: skip
    """Per row of n values (`sums`: each row's sum; tensor j: `spans[j]` consecutive rows),
    its tensor's mean as a (g, 1) float32 tensor: the sum of its rows' sums / its values.
    `on_host` (the default on the CPU, a free sync there): in float64 with NumPy; else on
    the device, without a sync."""
    if on_host if on_host is not None else sums.device.type == "cpu":
        _, owner, starts = workspace.span_layout(spans, sums.shape[0])
        totals = np.add.reduceat(sums.numpy().astype(np.float64), starts)
        return torch.from_numpy((totals / (n * np.asarray(spans))).astype(np.float32)[owner, None])
    owners, _, pads, sizes = workspace.span_indices(spans, sums.device)
    totals = torch.cat([sums, sums.new_zeros(1)])[pads].sum(1)  # each tensor's rows, 0-padded
    return (totals / (sizes * n))[owners].unsqueeze(1)


def squared_difference(a: torch.Tensor, b: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """(a - b)^2 elementwise into `out` (b broadcast to a's shape), in one pass: the
    unreduced MSE loss, the same bits as sub then square_ at 60% of their time (a 2 MB
    pass fewer)."""
    return torch._C._nn.mse_loss(a, b, 0, out=out)  # 0: reduction "none"


def row_squares(rows: torch.Tensor, workspace: Workspace,
                minus: torch.Tensor | None = None) -> torch.Tensor:  # fmt: skip
    """Per row of the (g, n) float matrix: sum(x^2), or sum((x - y)^2) with y = `minus`."""
    squares = workspace.take("scratch", rows.shape, torch.float32, rows.device)
    if minus is None:
        return torch.mul(rows, rows, out=squares).sum(1)
    return squared_difference(rows, minus, squares).sum(1)


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
        owners, repeats = workspace.span_indices(spans, rows.device)[:2]
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


# Long rows' values are counted into this many histograms per row, value k into histogram
# k mod LANES, then added up: consecutive equal bins no longer wait on each other's
# increment of one counter. In one bincount for all rows, 8 lanes counted 8 rows of 65536
# in 0.74 ms (int16, with the offsets' addition), one bincount per row in 0.86 ms (int8).
LANES = 8


def cpu_counts(rows: torch.Tensor, lows: torch.Tensor, highs: torch.Tensor, bins: int,
               scaled: torch.Tensor, workspace: Workspace,
               spans: tuple[int, ...] | None = None) -> torch.Tensor:  # fmt: skip
    """`row_histograms`' counts with the bounds read on the host (free on the CPU): scales
    made there, int16/int32 indices, one `bincount`. `lows`, `highs`: per row."""
    g = rows.shape[0]
    owners, owner, starts = workspace.span_layout(spans, g)
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
        offsets = workspace.lane_offsets(owners, chunk, width, rows.device)
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


def unit_sums(rows: torch.Tensor, batch: int) -> torch.Tensor:
    """Per row (a layer output of `batch` samples, flattened): each unit's sum over the
    batch, a (g, units) tensor. Their sums are the rows' sums (each unit's `batch` values
    added in order, then the units' sums by cascade), so one pass over the outputs gives
    both those and what `dead_rectifier_units` counts: a separate max over the batch read
    the outputs again, 100 us for a 4 x 256 MLP's."""
    return rows.reshape(rows.shape[0], batch, -1).sum(1)


def dead_rectifier_units(sums_of_units: torch.Tensor) -> torch.Tensor:
    """Per row of `unit_sums` of rectifier outputs (values >= 0): how many units are never
    above zero in the batch. With no negative values, a unit's sum is 0 exactly when all
    its values are 0 (a NaN unit sums to NaN: not dead)."""
    return (sums_of_units == 0).sum(1, dtype=torch.float32)  # exact below 2^24 units


def host_segments(values: np.ndarray, lengths: np.ndarray, bins: int | None) -> list[np.ndarray]:
    """Per segment of a flat float32 array (consecutive runs of `lengths` values, each at
    least one): the sum and the centred sum of squares (in float64), and with `bins` the
    min, max and (segments, bins + 1) counts, binned as `cpu_counts` bins (float32 scale and
    offsets, NaN and infinities to the first bin): what `row_moments` and `row_histograms`
    give for rows on the device. One set of NumPy ops for all segments: the step's tiny
    tensors of every shape are reduced together."""
    segments = len(lengths)
    starts = np.zeros(segments, dtype=np.int64)
    np.cumsum(lengths[:-1], out=starts[1:])
    with np.errstate(all="ignore"):  # NaN and inf give NaN and inf, as on the device
        x = values.astype(np.float64)
        sums = np.add.reduceat(x, starts)
        x -= np.repeat(sums / lengths, lengths)
        squares = np.add.reduceat(np.square(x, out=x), starts)
        if bins is None:
            return [sums, squares]
        lows = np.minimum.reduceat(values, starts)  # a NaN propagates, as amin's does
        highs = np.maximum.reduceat(values, starts)
        scales = np.where(lows < highs, np.float32(bins) / (highs - lows), np.float32(0.0))
        scaled = (values - np.repeat(lows, lengths)) * np.repeat(scales, lengths)
    if not (np.isfinite(lows).all() and np.isfinite(highs).all()):  # a NaN or an infinity
        scaled = np.clip(np.nan_to_num(scaled, nan=0.0, posinf=0.0, neginf=0.0), 0, bins)
    index = scaled.astype(np.int64)  # in [0, bins]: truncation gives the bin
    index += np.repeat(np.arange(0, segments * (bins + 1), bins + 1), lengths)
    counts = np.bincount(index, minlength=segments * (bins + 1)).reshape(segments, bins + 1)
    return [sums, squares, lows, highs, counts]


def host_dead_units(rows: np.ndarray, batch: int) -> np.ndarray:
    """Per row of a float32 array on the host (a layer output of `batch` samples,
    flattened): how many units are never above zero in the batch (a NaN unit is not dead),
    as `dead_rectifier_units` counts a rectifier's on the device."""
    with np.errstate(invalid="ignore"):
        never_on = rows.reshape(rows.shape[0], batch, -1).max(1) <= 0
    return never_on.sum(1).astype(np.float64)
