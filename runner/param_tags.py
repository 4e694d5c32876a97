"""A logging step's parameter numbers as TensorBoard tags: each unique tensor's norms,
stds, update ratio and histograms, under every name that refers to it (a tied tensor has
several), in model order. The numbers come from runner/param_stats.py.
"""

from __future__ import annotations

import math

import numpy as np

from runner.host_numbers import Histogram, histogram_rows, sample_std, sum_of_squares


class ParamTags:
    """Writes the tags of one model's unique tensors (`names[i]`: the names of tensor i,
    `numels[i]`: its number of values); each tag string is made once."""

    def __init__(self, names: list[list[str]], numels: list[int]) -> None:
        self._names = names
        self._numels = numels
        self._cache: dict[tuple[str, ...], list[list[tuple[str, ...]]]] = {}

    def write(self, tables: dict[str, list[list]], scalars: bool, updated: bool,
              histograms: bool, scalars_of: dict[str, float],
              histograms_of: dict[str, Histogram]) -> list[float] | None:  # fmt: skip
        """`tables[prefix][i]`: tensor i's host numbers, [sum, centred squares, (min, max,
        counts), (||dw||^2, ||w_before||^2)], prefix "grads" or "weights". Writes
        `{prefix}_norm/<name>` = sqrt(q + s^2/n) and `{prefix}_std/<name>` = sqrt(q/(n-1))
        (with `scalars`), `update_ratio/<name>` = ||dw|| / max(||w_before||, 1e-12) (with
        `updated`) and the histograms `{prefix}/<name>` (with `histograms`). Returns the
        weights' sums of squares q + s^2/n (None without weights)."""
        squares = {prefix: [sum_of_squares(m[0], m[1], n)
                            for n, m in zip(self._numels, measured, strict=True)]
                   for prefix, measured in tables.items()}  # fmt: skip
        for prefix, measured in tables.items():
            if scalars:
                tags = self._tags(f"{prefix}_norm", f"{prefix}_std")
                rows = zip(self._numels, measured, squares[prefix], tags, strict=True)
                for n, m, sum_squares, tensor_tags in rows:
                    norm, std = math.sqrt(sum_squares), sample_std(m[1], n)
                    for norm_tag, std_tag in tensor_tags:
                        scalars_of[norm_tag] = norm
                        scalars_of[std_tag] = std
            if prefix == "weights" and updated:
                for m, tensor_tags in zip(measured, self._tags("update_ratio"), strict=True):
                    ratio = math.sqrt(m[-2]) / max(math.sqrt(m[-1]), 1e-12)
                    for (tag,) in tensor_tags:
                        scalars_of[tag] = ratio
        if histograms and tables:
            self._histograms(tables, squares, histograms_of)
        return squares.get("weights")

    def _tags(self, *kinds: str) -> list[list[tuple[str, ...]]]:
        """Per unique tensor, per name of it: the tags `<kind>/<name>` of `kinds` (made
        once: a step writes ~100 of them)."""
        tags = self._cache.get(kinds)
        if tags is None:
            tags = self._cache[kinds] = [
                [tuple(f"{kind}/{name}" for kind in kinds) for name in names]
                for names in self._names
            ]
        return tags

    def _histograms(self, tables: dict[str, list[list]], squares: dict[str, list[float]],
                    histograms_of: dict[str, Histogram]) -> None:  # fmt: skip
        """The histograms of every (prefix, tensor), their edges and counts made at once;
        `squares`: each one's sum of squares, as `write` made them."""
        rows = [m for measured in tables.values() for m in measured]
        lows, highs = [m[2] for m in rows], [m[3] for m in rows]
        limits, counts, nums = histogram_rows(lows, highs, np.stack([m[4] for m in rows]))
        at = 0
        for prefix, measured in tables.items():
            tags = self._tags(prefix)
            for m, sum_squares, tensor_tags in zip(measured, squares[prefix], tags, strict=True):
                histogram = Histogram(lows[at], highs[at], nums[at], m[0], sum_squares,
                                      limits[at], counts[at])  # fmt: skip
                for (tag,) in tensor_tags:
                    histograms_of[tag] = histogram
                at += 1
