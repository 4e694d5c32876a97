"""The three PNGs of `python -m runner.compare`: loss curves; per-parameter gradient norm
grouped by tying (tied vs untied); per-layer activation std at init and at the end
grouped by init scheme (the signal-propagation picture). A group's line is the mean of
its runs (e.g. over seeds); matplotlib draws them off screen (Agg)."""

from __future__ import annotations

import math
from pathlib import Path

from runner.compare import Run, natural_order

PLOTS = ("loss.png", "grad_norm_by_layer.png", "activation_std_by_layer.png")


def plot(runs: list[Run], out: Path) -> list[Path]:
    """Write the three PNGs into `out`; return their paths."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    written = []

    figure, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for run in runs:
        for axis, tag in zip(axes, ("loss/train", "loss/val"), strict=True):
            points = run.series.get(tag, [])
            if points:
                axis.plot(*zip(*points, strict=True), label=run.label, linewidth=1)
    for axis, title in zip(axes, ("train loss", "validation loss"), strict=True):
        axis.set(title=title, xlabel="step")
        _log_scale_if_positive(axis)
    if axes[0].get_legend_handles_labels()[0]:
        axes[0].legend(fontsize=7)
    written.append(_save(figure, out / PLOTS[0]))

    figure, axis = plt.subplots(figsize=(9, 4.5))
    _layer_lines(axis, runs, "grads_norm", group="tying", at="mean")
    axis.set(title="gradient norm per parameter (mean over logged steps), by tying",
             ylabel="‖grad‖")  # fmt: skip
    _log_scale_if_positive(axis)
    written.append(_save(figure, out / PLOTS[1]))

    figure, axis = plt.subplots(figsize=(9, 4.5))
    _layer_lines(axis, runs, "activations_std", group="init", at="first", style="--", legend=False)
    _layer_lines(axis, runs, "activations_std", group="init", at="last", style="-")
    axis.set(title="activation std per layer: at init (dashed) and at the end (solid), by init",
             ylabel="std of the layer's output")  # fmt: skip
    _log_scale_if_positive(axis)
    written.append(_save(figure, out / PLOTS[2]))
    return written


def _layer_lines(axis, runs: list[Run], prefix: str, group: str, at: str, style: str = "-",
                 legend: bool = True) -> None:  # fmt: skip
    """One line per value of `group` (e.g. each init scheme): the mean over its runs, per layer.
    Values that are not finite (a diverged run) are left out of the mean."""
    groups: dict[str, list[Run]] = {}
    for run in runs:
        groups.setdefault(run.choices.get(group, run.label), []).append(run)
    names = sorted({n for run in runs for n in run.layers(prefix)}, key=natural_order)
    for index, (label, members) in enumerate(sorted(groups.items())):
        means = []
        for name in names:
            values = [_pick(run.series.get(f"{prefix}/{name}", []), at) for run in members]
            values = [v for v in values if v is not None and math.isfinite(v)]
            means.append(sum(values) / len(values) if values else float("nan"))
        axis.plot(range(len(names)), means, style, marker="o", markersize=3, color=f"C{index}",
                  label=f"{group}={label}" if legend else None)  # fmt: skip
    axis.set_xticks(range(len(names)), names, rotation=60, fontsize=7)
    axis.set_xlabel("layer" if prefix.startswith("activations") else "parameter")
    if legend:
        axis.legend(fontsize=7)


def _log_scale_if_positive(axis) -> None:
    """Log scale (values span decades) unless no line has a positive value to show."""
    values = [y for line in axis.get_lines() for y in line.get_ydata()]
    if any(isinstance(y, float) and math.isfinite(y) and y > 0 for y in map(float, values)):
        axis.set_yscale("log", nonpositive="mask")


def _pick(points: list[tuple[int, float]], at: str) -> float | None:
    """The first or last value of a series, or (`at` "mean") their mean; None if empty."""
    if not points:
        return None
    if at == "first":
        return points[0][1]
    if at == "last":
        return points[-1][1]
    return sum(v for _, v in points) / len(points)


def _save(figure, path: Path) -> Path:
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    import matplotlib.pyplot as plt

    plt.close(figure)
    return path
