"""Numbers the host finishes from a step's device reductions: a tensor's sample std from
its centred sum of squares, and its histogram (TensorBoard's record of it) from the bin
counts and bounds that `runner.binning.row_histograms` or `host_segments` measured.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass
class Histogram:
    """What TensorBoard's HistogramProto holds for one tensor (as `add_histogram_raw` takes it)."""

    min: float
    max: float
    num: int
    sum: float
    sum_squares: float
    bucket_limits: np.ndarray  # float64 right edges of the bins
    bucket_counts: np.ndarray  # float64 counts, one per bin


def histogram_rows(lows: list[float], highs: list[float], counts: np.ndarray) -> tuple:
    """Histograms' edges and counts from `row_histograms`' host numbers (per row: min, max
    and bins + 1 int64 counts): (right edges, counts, total counts). A row's edges are
    low + width * (k + 1), width = max(high - low, 1e-12) / bins, in float64; its counts
    are float64, the max's column folded into the last bin."""
    bins = counts.shape[1] - 1
    low, high = np.asarray(lows, dtype=np.float64), np.asarray(highs, dtype=np.float64)
    with np.errstate(invalid="ignore"):  # a NaN or infinite bound: NaN edges, quietly
        width = np.maximum(high - low, 1e-12) / bins
        steps = width[:, None] * np.arange(1, bins + 1, dtype=np.float64)
        limits = low[:, None] + steps
    return limits, fold_last_bin(counts), counts.sum(1).tolist()


def sum_of_squares(total: float, centred_squares: float, n: int) -> float:
    """sum(x^2) of n values from their sum and centred sum of squares: q + s^2 / n. Values
    holding an infinity (and no NaN) have an infinite sum, and their centred squares are
    NaN (inf - inf): their sum of squares is inf, as a direct sum gives."""
    if math.isinf(total):
        return math.inf
    return centred_squares + total * total / n


def sample_std(centred_squares: float, n: int) -> float:
    """The sample std from the centred sum of squares of n values (0 for a single value)."""
    return math.sqrt(centred_squares / (n - 1)) if n > 1 else 0.0


def fold_last_bin(counts: np.ndarray) -> np.ndarray:
    """The `bins` counts (float64) of host copies of `row_histograms` rows, an array (...,
    bins + 1): the values equal to the max join the last bin."""
    counts = np.asarray(counts)
    folded = counts[..., :-1].astype(np.float64)
    folded[..., -1] += counts[..., -1]
    return folded


def reduce_rows(starts: np.ndarray, rule: str, values: list[float]) -> list[float]:
    """Per run of consecutive values from each of `starts` to the next: their "min", "max"
    (a NaN propagates) or "sum" (in float64)."""
    ufunc = {"min": np.minimum, "max": np.maximum, "sum": np.add}[rule]
    with np.errstate(invalid="ignore", over="ignore"):
        return ufunc.reduceat(np.asarray(values, dtype=np.float64), starts).tolist()
