"""Per-tensor reductions of many tensors in few device ops: the numbers behind every statistic.

A PyTorch op costs about 5 us on a CPU whatever its size, more than the arithmetic on a
256 x 256 tensor, and a logging step reduces ~30 tensors several ways. So tensors of one
shape (each below STACK_LIMIT values) are stacked into the rows of one matrix, small ones
of several shapes cut into rows of one length (runner/param_layout.py; `spans` below: a
tensor's number of rows), and every reduction is one op per group of rows: a 4 x 256
MLP's four weights make one group (its biases go to the host), its 9 layer outputs 2;
runner/binning.py bins their histograms. Results stay on the device; the host finishes
them (means, stds, norms) after the step's one copy (runner/host_copy.py). A group of at
most TINY_LIMIT values rides whole in that copy instead, and `host_segments` reduces all
of them on the host at once (NumPy, by the same rules).

Per row x of n values, `row_moments` gives s = sum(x) and the centred sum of squares
q = sum((x - s/n)^2), both cascade sums (float32 rounding even at millions of values,
where the CPU's `vector_norm` loses three digits at 16M values; the outputs of a group
with rectifiers sum each unit over the batch first, `unit_sums`). From them:
mean = s/n, std = sqrt(q / (n - 1)), ||x||^2 = q + s^2/n (two positive terms: no
cancellation, unlike sum(x^2) - n mean^2).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

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
        self._constants: dict[tuple, Any] = {}  # see `constant`

    def constant(self, key: tuple, make: Callable[[], Any]) -> Any:
        """The value of `make()` for `key`, made on first use (index tensors, offsets)."""
        value = self._constants.get(key)
        if value is None:
            value = self._constants[key] = make()
        return value

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


def span_layout(workspace: Workspace, spans: tuple[int, ...] | None,
                g: int) -> tuple[tuple[int, ...], np.ndarray, np.ndarray]:  # fmt: skip
    """For g rows in tensors (or histograms) of `spans[j]` consecutive rows each (one row
    each without `spans`), made once: (owners, owner array, starts), owners[row] the
    tensor of `row` (a tuple and an array), starts[j] the first row of tensor j."""

    def make() -> tuple[tuple[int, ...], np.ndarray, np.ndarray]:
        every = spans if spans is not None else (1,) * g
        owners = np.repeat(np.arange(len(every)), every)
        return tuple(owners.tolist()), owners, np.cumsum([0, *every[:-1]])

    return workspace.constant(("span layout", spans, g), make)


def span_indices(workspace: Workspace, spans: tuple[int, ...],
                 device: torch.device) -> tuple[torch.Tensor, ...]:  # fmt: skip
    """For tensors (or histograms) of `spans[j]` consecutive rows each, made once on
    `device`: (owners, repeats, pads, sizes), int64 tensors but `sizes`. owners[row] is
    the tensor of `row`; repeats and pads (h, max span) list each tensor's rows, filled up
    with its first row (which leaves a min or a max as it is) or with row g (where the
    caller puts a 0, which leaves a sum as it is); `sizes`: the spans as floats."""

    def make() -> tuple[torch.Tensor, ...]:
        g = sum(spans)
        _, owners, starts = span_layout(workspace, spans, g)
        width = np.arange(max(spans))
        inside = width[None, :] < np.array(spans)[:, None]
        repeats = starts[:, None] + np.where(inside, width[None, :], 0)
        pads = np.where(inside, repeats, g)
        host = [owners, repeats, pads, np.array(spans, dtype=np.float32)]
        return tuple(to_device(a, device) for a in host)

    return workspace.constant(("span indices", spans, device), make)


def to_device(array: np.ndarray, device: torch.device) -> torch.Tensor:
    """A host array as a tensor on `device`. To a GPU it is copied from pinned memory,
    asynchronously: a copy from pageable memory syncs the host (4 syncs on a run's first
    logging step, seen with `torch.cuda.set_sync_debug_mode`)."""
    tensor = torch.from_numpy(np.ascontiguousarray(array))
    if device.type != "cuda":
        return tensor.to(device)
    return tensor.pin_memory().to(device, non_blocking=True)


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
    spans: tuple[int, ...] | None = None, overwrite: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """Per row of the (g, n) float matrix: (sum, sum of squares about the mean), the mean
    the row's own, or with `spans` its tensor's (`spans[j]` consecutive rows are tensor j,
    `tensor_means`): then a tensor's rows' numbers add up to its own. `sums`: the rows'
    sums where the caller has them (from `unit_sums`). `overwrite`: `rows` is a buffer of
    the caller's that it no longer needs, and the centred squares are written over it (the
    same bits): where they went to the workspace, that write into memory gone cold since
    the last logging step cost about 0.2 ms a step for a 4 x 256 MLP's layer outputs."""
    sums = rows.sum(1) if sums is None else sums
    centred = rows if overwrite else workspace.take("scratch", rows.shape, torch.float32,
                                                    rows.device)  # fmt: skip
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
        _, owner, starts = span_layout(workspace, spans, sums.shape[0])
        totals = np.add.reduceat(sums.numpy().astype(np.float64), starts)
        return torch.from_numpy((totals / (n * np.asarray(spans))).astype(np.float32)[owner, None])
    owners, _, pads, sizes = span_indices(workspace, spans, sums.device)
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
    min, max and (segments, bins + 1) counts, binned as `binning.cpu_counts` bins (float32 scale and
    offsets, NaN and infinities to the first bin): what `row_moments` and `binning.row_histograms`
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
