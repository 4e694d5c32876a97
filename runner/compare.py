"""`python -m runner.compare DIR... [--out DIR]`: compare runs from their TensorBoard event files.

DIR is a run dir or a sweep dir (its job dirs are the runs). Prints a table with a row
per run (final losses, steps to reach a loss threshold) and a per-layer table with the
runs side by side (gradient norm and weight std at the first and last logged steps),
and writes three PNGs: loss curves, per-layer gradient norm grouped by tying (tied vs
untied), and per-layer activation std at init and at the end grouped by init scheme
(the signal-propagation picture). Groups average their runs (e.g. over seeds).
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from runner.errors import exit_on_ctrl_c

EXAMPLES = """\
examples:
  python -m runner.compare multirun/2026-11-22/10-00-00            # every job of a sweep
  python -m runner.compare outputs/a outputs/b --out /tmp/plots --threshold 0.01
"""


@dataclass
class Run:
    """One run's scalar series, read from its tb/ folder."""

    label: str
    path: Path
    choices: dict[str, str]
    series: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    status: str = "unfinished"  # ok, failed (its job.json says), or unfinished
    metrics: dict = field(default_factory=dict)  # metrics.json of a finished run

    def at(self, tag: str, step: int) -> float | None:
        """The value of `tag` at `step`, or None."""
        return dict(self.series.get(tag, [])).get(step)

    def layers(self, prefix: str) -> list[str]:
        """The names under `prefix/`, in layer order ("2" before "10")."""
        names = [t.split("/", 1)[1] for t in self.series if t.startswith(prefix + "/")]
        return sorted(names, key=natural_order)


def natural_order(name: str) -> list:
    """Sort key of a layer or parameter name: "2" before "10", "0.1.weight" before "0.10"."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def find_runs(folders: Sequence[Path]) -> list[Run]:
    """Every run under the folders given: a folder with tb/ is a run, else its children are."""
    from runner.errors import ConfigError

    runs = []
    given = [folder.resolve() for folder in folders]
    twice = sorted({str(f) for f in given if given.count(f) > 1})
    if twice:  # its curves would be drawn twice, under two labels
        raise ConfigError(f"{twice[0]}: given more than once; give each run or sweep once")
    for folder in folders:
        if not folder.is_dir():
            what = "is a file, not a run dir or sweep dir" if folder.is_file() else "no such folder"
            raise ConfigError(f"{folder}: {what}")
        candidates = _run_dirs(folder)
        labels = [path.relative_to(folder).as_posix() if path != folder else path.name
                  for path in candidates]  # fmt: skip
        loaded = (_load(path, label) for path, label in zip(candidates, labels, strict=True))
        found = [run for run in loaded if run.series]
        if not found:
            files = [f for run in candidates for f in (run / "tb").rglob("*") if f.is_file()]
            why = ("its event files hold no scalars (empty, cut short or damaged)" if files
                   else "no TensorBoard event files (no run dir with tb/ in it)")  # fmt: skip
            raise ConfigError(f"{folder}: {why}")
        runs += found
    _shorten_labels(runs)
    labels = [run.label for run in runs]
    for run in runs:  # the same job name in two sweeps: say which sweep
        if labels.count(run.label) > 1:
            run.label = f"{run.path.parent.name}/{run.label}"
    return runs


def _run_dirs(folder: Path) -> list[Path]:
    """`folder` if it holds tb/ (a run), else the run dirs below it, at any depth (a sweep's
    jobs; `hydra.sweep.subdir=s${seed}/run` nests them), in name order."""
    if (folder / "tb").is_dir():
        return [folder]
    found = []
    for child in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
        found += _run_dirs(child)
    return found


def _shorten_labels(runs: list[Run]) -> None:
    """Sweep job names repeat the overrides all jobs share; keep the parts that differ."""
    parts = [run.label.split(",") for run in runs]
    if len(runs) < 2 or not all(len(p) == len(parts[0]) for p in parts):
        return
    common = set(parts[0]).intersection(*parts[1:])
    for run, items in zip(runs, parts, strict=True):
        kept = [item for item in items if item not in common]
        run.label = ",".join(kept) or run.label


def _load(path: Path, label: str) -> Run:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(path / "tb"), size_guidance={"scalars": 0, "histograms": 1})
    accumulator.Reload()
    series = {tag: [(e.step, e.value) for e in accumulator.Scalars(tag)]
              for tag in accumulator.Tags()["scalars"]}  # fmt: skip
    record = path / "run.json"
    choices = json.loads(record.read_text()).get("choices", {}) if record.is_file() else {}
    run = Run(label, path, choices, series)
    if (path / "metrics.json").is_file():
        run.metrics = json.loads((path / "metrics.json").read_text())
        run.status = run.metrics.get("status", "ok")  # a stopped run says "diverged"
    if (path / "job.json").is_file():
        run.status = json.loads((path / "job.json").read_text()).get("status", run.status)
    return run


def summary_table(runs: list[Run], threshold: float) -> str:
    """One row per run: status, final losses (metrics.json, evaluated on the whole splits)
    and the first logged step with loss/train <= threshold."""
    from tabulate import tabulate

    rows = []
    for run in runs:
        reached = next((s for s, v in run.series.get("loss/train", []) if v <= threshold), None)
        rows.append([run.label, run.status, run.metrics.get("final_train_loss"),
                     run.metrics.get("final_val_loss"), reached])  # fmt: skip
    headers = ["run", "status", "final train loss", "final val loss",
               f"steps to loss/train <= {threshold:.4g}"]  # fmt: skip
    return tabulate(rows, headers, floatfmt=".4g", disable_numparse=[0], missingval="-")


def layer_table(runs: list[Run], steps: Sequence[int] | None = None) -> str:
    """Per parameter, the runs side by side: gradient norm and weight std at each chosen step
    (the last logged step at or before it; default: each run's last logged step)."""
    from tabulate import tabulate

    names = sorted({n for run in runs for n in run.layers("grads_norm")}, key=natural_order)
    headers, columns = ["parameter"], []
    if not names:
        return "(no per-layer scalars: the runs were made with log.every=0)"
    for run in runs:
        own = run.layers("grads_norm")  # runs of different models have different layers
        logged = [s for s, _ in run.series.get(f"grads_norm/{own[0]}", [])] if own else []
        for wanted in steps or [logged[-1] if logged else 0]:
            step = max((s for s in logged if s <= wanted), default=None)
            if step is not None:
                headers += [f"{run.label}\n|grad| @{step}", f"{run.label}\nstd(w) @{step}"]
                columns.append((run, step))
    rows = []
    for name in names:
        row: list = [name]
        for run, step in columns:
            row += [run.at(f"grads_norm/{name}", step), run.at(f"weights_std/{name}", step)]
        rows.append(row)
    return tabulate(rows, headers, floatfmt=".3g", disable_numparse=[0], missingval="-")


def _finite(text: str) -> float:
    """--threshold: a finite number."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r}: give a finite number, e.g. 0.05")
    return value


def _step_list(text: str) -> list[int]:
    """--steps 0,100,1000: whole numbers >= 0."""
    try:
        steps = [int(s) for s in text.split(",")]
    except ValueError:
        steps = [-1]
    if min(steps) < 0:
        raise argparse.ArgumentTypeError(f"{text!r}: give steps as 0,100,1000")
    return steps


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """DIR... plus --out and --threshold."""
    from runner.errors import tool_parser

    parser = tool_parser(
        "compare",
        "Compare runs (run dirs or sweep dirs) from their TensorBoard event files.",
        EXAMPLES,
    )
    parser.add_argument("dirs", nargs="+", type=Path, help="run dirs or sweep dirs")
    parser.add_argument("--out", type=Path, help="folder for the PNGs (default: FIRST_DIR/compare)")
    parser.add_argument(
        "--steps", type=_step_list,
        help="steps for the per-layer table, e.g. 0,100,1000 (default: each run's last)",
    )  # fmt: skip
    parser.add_argument(
        "--threshold", type=_finite,
        help="loss for 'steps to reach'; default: 1.1 x the best final train loss of the runs",
    )  # fmt: skip
    return parser.parse_args(argv)


@exit_on_ctrl_c
def main(argv: Sequence[str] | None = None) -> None:
    """Read, print the tables, write the plots."""
    from runner.errors import exit_on_user_error

    exit_on_user_error(_compare)(parse_args(argv))


def _compare(args: argparse.Namespace) -> None:
    runs = find_runs(args.dirs)
    finals = [run.metrics["final_train_loss"] for run in runs
              if isinstance(run.metrics.get("final_train_loss"), float)]  # fmt: skip
    threshold = args.threshold if args.threshold is not None else 1.1 * min(finals, default=0.0)
    print(summary_table(runs, threshold))
    print()
    print(layer_table(runs, args.steps))
    out = args.out or args.dirs[0] / "compare"
    from runner.compare_plots import plot

    for path in plot(runs, out):
        print(f"wrote {path}")


if __name__ == "__main__":
    from runner.pipes import survive_closed_readers

    survive_closed_readers()  # `| head`: no traceback when the reader leaves
    main(sys.argv[1:])
