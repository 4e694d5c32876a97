"""The batched reductions behind every statistic, against float64 and NumPy references."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from runner.binning import cpu_counts, device_counts, row_histograms
from runner.host_numbers import fold_last_bin, reduce_rows
from runner.reductions import (
    STACK_LIMIT,
    Workspace,
    dead_rectifier_units,
    host_dead_units,
    host_segments,
    row_moments,
    row_squares,
    shape_groups,
    stacked,
    tensor_means,
    unit_sums,
)
from runner.stats import StepStats


def host_rows(rows: np.ndarray, bins: int | None) -> list[np.ndarray]:
    """host_segments with each row of a (g, n) array a segment."""
    return host_segments(rows.reshape(-1), np.full(rows.shape[0], rows.shape[1]), bins)


def reference_counts(row: np.ndarray, bins: int) -> list[int]:
    """NumPy's histogram over [min, max] in float64 (its last bin holds the max)."""
    row = row.astype(np.float64)  # float32 bounds would give float32 edges
    counts, _ = np.histogram(row, bins=bins, range=(row.min(), row.max()))
    return counts.tolist()


def test_histogram_counts_equal_numpys_up_to_values_on_an_edge():
    g = torch.Generator().manual_seed(0)
    rows = torch.randn(3, 5000, generator=g) * torch.tensor([[1.0], [1e-3], [50.0]])
    rows += torch.tensor([[0.0], [7.0], [-3.0]])
    for bins in (1, 8, 64, 100):
        lows, highs, counts = row_histograms(rows, bins, Workspace())
        assert lows.tolist() == rows.amin(1).tolist() and highs.tolist() == rows.amax(1).tolist()
        for row, host in zip(rows.numpy(), counts.tolist(), strict=True):
            ours = fold_last_bin(host).tolist()
            assert len(ours) == bins and sum(ours) == row.size
            # float32 against float64 arithmetic: a value within rounding of an edge moves
            # at most to the neighbouring bin.
            assert np.abs(np.array(ours) - reference_counts(row, bins)).sum() <= 2


def test_histogram_of_values_at_bin_centres_is_exact_and_the_max_is_in_the_last_bin():
    bins = 10
    row = (torch.arange(bins, dtype=torch.float32) + 0.5).repeat_interleave(
        torch.arange(1, bins + 1))  # fmt: skip
    row = torch.cat([torch.tensor([0.0, float(bins)]), row]).unsqueeze(0)  # min 0, max 10
    _, _, counts = row_histograms(row, bins, Workspace())
    expected = [k + 1 for k in range(bins)]
    expected[0] += 1  # the min
    expected[-1] += 1  # the max, in the last bin
    assert fold_last_bin(counts[0].numpy()).tolist() == expected


@pytest.mark.parametrize("n", [300, 4096])
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), "constant"])
def test_a_constant_nan_or_infinite_row_goes_to_the_first_bin_without_error(bad, n):
    rows = torch.randn(2, n)
    rows[1] = 3.0 if bad == "constant" else rows[1]
    if bad != "constant":
        rows[1, 17] = bad
    for count in (cpu_counts, device_counts):  # both paths run on the CPU in the test
        lows, highs = rows.amin(1), rows.amax(1)
        counts = count(rows, lows, highs, 16, torch.empty_like(rows), Workspace()).tolist()
        assert counts[1] == [n] + [0] * 16
        assert sum(counts[0]) == n and counts[0] != counts[1]


def test_the_synchronisation_free_path_counts_as_the_cpu_path_does():
    g = torch.Generator().manual_seed(1)
    # Short rows at once; long ones in lanes, or one by one (too many rows for int16
    # offsets, or a length that is not a multiple of LANES).
    for shape in ((1, 1000), (4, 256), (3, 4096), (70, 4096), (2, 4100)):
        rows = torch.randn(shape, generator=g) * 3 + 1
        lows, highs = rows.amin(1), rows.amax(1)
        for bins in (1, 7, 64):
            ws = Workspace()
            cpu = cpu_counts(rows, lows, highs, bins, torch.empty_like(rows), ws)
            device = device_counts(rows, lows, highs, bins, torch.empty_like(rows), ws)
            assert torch.equal(cpu, device), bins


@pytest.mark.parametrize("bad", [None, float("nan"), float("inf"), "constant"])
@pytest.mark.parametrize("n", [1024, 4096])
def test_a_histogram_of_several_rows_counts_as_one_row_of_their_values(n, bad):
    # A tensor cut into rows (runner/param_layout.py): its histogram, from the min to the
    # max of all its rows, holds exactly what one row of its values would, on both paths;
    # a NaN, an infinity or a constant in one of its rows acts on the whole of it.
    g = torch.Generator().manual_seed(6)
    spans = (1, 3, 2)
    rows = torch.randn(6, n, generator=g) * torch.tensor([[1.0], [2.0], [0.1], [5.0], [1.0], [3.0]])
    if bad == "constant":
        rows[4:] = 0.5
    elif bad is not None:
        rows[2, 11] = bad
    starts = np.cumsum([0, *spans[:-1]])
    lows, highs, counts = row_histograms(rows, 16, Workspace(), spans)
    assert counts.shape == (3, 17)
    for j, (start, span) in enumerate(zip(starts, spans, strict=True)):
        whole = rows[start : start + span].reshape(1, -1)
        low, high, alone = row_histograms(whole, 16, Workspace())
        assert counts[j].tolist() == alone[0].tolist(), j
        np.testing.assert_array_equal(reduce_rows(starts, "min", lows.tolist())[j], low.numpy()[0])
        np.testing.assert_array_equal(
            reduce_rows(starts, "max", highs.tolist())[j], high.numpy()[0]
        )
    device = device_counts(rows, lows, highs, 16, torch.empty_like(rows), Workspace(), spans)
    assert torch.equal(device, counts)
    if bad is not None:
        assert counts[1 if bad != "constant" else 2].tolist() == [rows[1:4].numel() if bad !=
            "constant" else rows[4:].numel()] + [0] * 16  # fmt: skip


def test_moments_of_tensors_cut_into_rows_add_up_to_the_whole_tensors():
    # With `spans`, each row is centred on its tensor's mean: the rows' sums and squares
    # add up to the tensor's own, as precise as one row of its values, a large mean
    # included. (A GPU makes the means on the device, without a sync: alike.)
    g = torch.Generator().manual_seed(7)
    spans = (4, 1, 2)
    rows = torch.randn(7, 4096, generator=g)
    rows[:4] = rows[:4] * 1e-3 + 500.0
    sums, squares = row_moments(rows, Workspace(), spans=spans)
    on_host = tensor_means(sums, spans, 4096, Workspace(), on_host=True)
    on_device = tensor_means(sums, spans, 4096, Workspace(), on_host=False)
    assert on_host.shape == on_device.shape == (7, 1)
    assert on_device[:, 0].tolist() == pytest.approx(on_host[:, 0].tolist(), rel=1e-7)
    starts = np.cumsum([0, *spans[:-1]])
    merged_sums, merged_squares = (reduce_rows(starts, "sum", sums.tolist()),
                                   reduce_rows(starts, "sum", squares.tolist()))  # fmt: skip
    for j, (start, span) in enumerate(zip(starts, spans, strict=True)):
        values = rows[start : start + span].double().reshape(-1)
        scale = values.abs().sum().item()  # float32 sums: rounding relative to this
        assert merged_sums[j] == pytest.approx(values.sum().item(), abs=1e-7 * scale)
        centred = (values - values.mean()).square().sum().item()
        whole = row_moments(rows[start : start + span].reshape(1, -1), Workspace())[1].item()
        assert abs(merged_squares[j] - centred) <= 2 * abs(whole - centred) + 1e-6 * centred
    assert reduce_rows(starts, "sum", [1.0] * 7) == [4.0, 1.0, 2.0]


@pytest.mark.parametrize("bad", [None, float("nan"), float("inf"), "constant"])
def test_a_tiny_group_reduced_on_the_host_gives_the_device_numbers(bad):
    g = torch.Generator().manual_seed(3)
    rows = torch.randn(4, 256, generator=g) * torch.tensor([[1.0], [1e-3], [40.0], [2.0]])
    rows[1] += 7.0  # a large mean: centred on the host too
    if bad == "constant":
        rows[3] = 0.25
    elif bad is not None:
        rows[3, 5] = bad
    for bins in (1, 8, 64):
        sums, squares, lows, highs, counts = host_rows(rows.numpy(), bins)
        device = [*row_moments(rows, Workspace()), *row_histograms(rows, bins, Workspace())]
        np.testing.assert_array_equal(lows, device[2].numpy())  # NaN equals NaN here
        np.testing.assert_array_equal(highs, device[3].numpy())
        assert counts.tolist() == device[4].tolist()  # the same float32 binning
        finite = slice(0, 3) if bad not in (None, "constant") else slice(0, 4)
        # float64 on the host, float32 cascade sums on the device
        assert sums[finite].tolist() == pytest.approx(
            device[0][finite].tolist(), rel=1e-5, abs=1e-5
        )
        assert squares[finite].tolist() == pytest.approx(device[1][finite].tolist(), rel=1e-5)
    np.testing.assert_array_equal(host_rows(rows.numpy(), None)[1], squares)
    if bad == "constant":
        assert squares[3] == 0.0


def test_segments_of_several_lengths_reduce_as_each_alone():
    # A step's tiny tensors of all shapes are reduced in one host_segments call: each run
    # of values gets what host_rows gives it on its own, NaN and constant runs included.
    g = np.random.default_rng(5)
    runs = [g.normal(size=1).astype(np.float32), g.normal(3.0, 0.01, 300).astype(np.float32),
            np.full(7, 0.5, dtype=np.float32), g.normal(size=64).astype(np.float32)]  # fmt: skip
    runs[3][9] = np.nan
    lengths = np.array([len(run) for run in runs])
    for bins in (None, 1, 16):
        together = host_segments(np.concatenate(runs), lengths, bins)
        for k, run in enumerate(runs):
            alone = host_rows(run[None, :], bins)
            for part, answer in zip(together, alone, strict=True):
                np.testing.assert_allclose(part[k], answer[0], rtol=1e-15)


def test_dead_units_on_the_host_equal_the_devices():
    outputs = torch.randn(3, 8, 32, generator=torch.Generator().manual_seed(4)).clamp_(min=0)
    outputs[0, :, 5] = 0.0  # one dead unit
    outputs[1, :, :20] = 0.0  # twenty
    outputs[1, :, 20] = -0.0  # a negative zero is off too
    outputs[2, 3, 7] = float("nan")  # NaN: not dead, on either side
    outputs[2, :, 8] = 0.0
    outputs[2, 5, 8] = 1e-45  # on once, barely: not dead
    rows = outputs.reshape(3, -1)
    host = host_dead_units(rows.numpy(), batch=8).tolist()
    assert host == dead_rectifier_units(unit_sums(rows, batch=8)).tolist()
    assert host[1] >= 21
    per_unit = outputs.amax(1) <= 0  # the definition: never above zero in the batch
    assert host == per_unit.sum(1).tolist()


def test_unit_sums_add_up_to_the_rows_sums():
    rows = torch.randn(4, 64 * 300, generator=torch.Generator().manual_seed(5))
    per_unit = unit_sums(rows, batch=64)
    assert per_unit.shape == (4, 300)
    expected = rows.double().reshape(4, 64, 300).sum(1)
    np.testing.assert_allclose(per_unit.double().numpy(), expected.numpy(), rtol=1e-5, atol=1e-5)
    assert per_unit.sum(1).tolist() == pytest.approx(rows.double().sum(1).tolist(), rel=1e-5)


def test_row_moments_match_float64_even_with_a_large_mean():
    g = torch.Generator().manual_seed(2)
    rows = torch.randn(3, 70000, generator=g)
    rows[1] = rows[1] * 1e-3 + 1000.0  # std a millionth of the mean: no cancellation
    rows[2] = 1.0  # constant (a fresh BatchNorm weight): std exactly 0
    sums, squares = row_moments(rows, Workspace())
    ref = rows.double()
    mean = ref.mean(1, keepdim=True)
    assert sums.tolist() == pytest.approx(ref.sum(1).tolist(), rel=1e-6)
    centred = ((ref - mean) ** 2).sum(1)
    assert squares[:2].tolist() == pytest.approx(centred[:2].tolist(), rel=1e-5)
    assert squares[2].item() == 0.0
    n = rows.shape[1]
    norm_squared = [q + s * s / n for s, q in zip(sums.tolist(), squares.tolist(), strict=True)]
    assert norm_squared == pytest.approx((ref**2).sum(1).tolist(), rel=1e-6)


def test_row_squares_and_dead_units():
    rows = torch.tensor([[1.0, -2.0, 3.0, -4.0]])
    ws = Workspace()
    assert row_squares(rows, ws).tolist() == [30.0]
    assert row_squares(rows, ws, minus=torch.ones(1, 4)).tolist() == [0 + 9 + 4 + 25]
    # Two samples of two units (rectified): unit 1 is never above zero.
    outputs = torch.tensor([[[1.0, 0.0], [0.0, 0.0]], [[0.0, 0.0], [0.0, 0.0]]])
    assert dead_rectifier_units(unit_sums(outputs.reshape(2, -1), batch=2)).tolist() == [1, 2]


def test_shape_groups_stack_small_tensors_of_one_shape_and_leave_big_ones_alone():
    big = (STACK_LIMIT,)
    shapes = [(4, 3), (3,), (4, 3), big, (3,), big, (1,)]
    assert shape_groups(shapes) == [[0, 2], [1, 4], [3], [5], [6]]


def test_stacked_views_a_single_tensor_and_copies_several():
    a, b = torch.randn(2, 3), torch.randn(2, 3)
    one = stacked([a])
    assert one.shape == (1, 6) and one.data_ptr() == a.data_ptr()
    both = stacked([a, b], Workspace())
    assert torch.equal(both, torch.stack([a.reshape(-1), b.reshape(-1)]))
    half = stacked([a.half()], Workspace())
    assert half.dtype == torch.float32 and torch.equal(half, a.half().float().reshape(1, -1))


def test_workspace_reuses_its_buffer_and_grows_it():
    ws = Workspace()
    first = ws.take("scratch", (2, 3), torch.float32, torch.device("cpu"))
    again = ws.take("scratch", (3, 2), torch.float32, torch.device("cpu"))
    assert again.data_ptr() == first.data_ptr()
    bigger = ws.take("scratch", (4, 4), torch.float32, torch.device("cpu"))
    assert bigger.shape == (4, 4) and bigger.numel() == 16


def test_activation_statistics_are_of_the_output_before_a_later_in_place_op():
    # ReLU(inplace=True) overwrites the Linear's output: its stats must be the Linear's own.
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(inplace=True), nn.Linear(8, 1))
    x = torch.randn(16, 4)
    pre = net[0](x).detach()
    stats = StepStats(net, hist_bins=4)
    stats.start(activations=True)
    net(x).sum().backward()
    stats.before_update(scalars=True, histograms=False)
    record = stats.finish(scalars=True, histograms=False, extra={})
    assert record.scalars["activations_mean/0"] == pytest.approx(pre.mean().item(), abs=1e-6)
    assert record.scalars["activations_std/0"] == pytest.approx(pre.std().item(), rel=1e-5)
    dead = (pre <= 0).all(dim=0).float().mean().item()
    assert record.scalars["dead_relu/1"] == pytest.approx(dead)
    assert record.scalars["activations_mean/1"] == pytest.approx(pre.relu().mean().item(), abs=1e-6)


def test_a_histogram_count_past_float32s_integers_stays_exact():
    # 2^24 + 1 ones: float32 cannot hold the count, the float64 host copy can.
    n = 2**24 + 1
    net = nn.Linear(n, 1, bias=False)
    with torch.no_grad():
        net.weight.fill_(1.0)
    stats = StepStats(net, hist_bins=2)
    record = stats.finish(scalars=False, histograms=True, extra={})
    h = record.histograms["weights/weight"]
    assert h.num == n and h.bucket_counts.tolist() == [float(n), 0.0]
    # The sums themselves are float32 (2^24 + 1 rounds to 2^24).
    assert math.isclose(h.sum, n, rel_tol=1e-6) and math.isclose(h.sum_squares, n, rel_tol=1e-6)
