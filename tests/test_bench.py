"""`python -m runner.bench`: every part runs and reports its medians and ratios as a table.

Only the shape of the report and the sanity of its numbers are checked; no timing is
asserted (the targets are for the README, measured on a quiet machine)."""

from __future__ import annotations

import math
import re

import pytest
from conftest import run_cli

from runner.bench_workload import MODES, PlainLoop, RunnerLoop, Workload


def test_plain_loop_and_runner_loop_train_the_same_architecture(tmp_path):
    workload = Workload(width=16, depth=2, in_features=8, samples=64, batch=16, steps=4)
    plain = PlainLoop(workload)
    runner = RunnerLoop(workload, "everything every step", tmp_path)
    shapes = [tuple(p.shape) for p in plain.model.parameters()]
    assert shapes == [tuple(p.shape) for p in runner.setup.model.parameters()]
    assert plain.run() > 0 and runner.run() > 0
    runner.close()
    assert any((tmp_path).iterdir())  # the runner's loop wrote its events


@pytest.mark.slow
def test_bench_reports_every_part(tmp_path):
    out = tmp_path / "bench.md"
    done = run_cli("runner.bench", "--width", "16", "--depth", "2", "--in-features", "8",
                   "--samples", "256", "--batch", "32", "--steps", "5", "--repeats", "1",
                   "--sweep-jobs", "2", "--sweep-steps", "5", "--out", str(out))  # fmt: skip
    assert done.returncode == 0, done.stderr
    text = out.read_text()
    assert text.startswith("Machine: ")
    for mode in MODES:
        row = next(line for line in text.splitlines() if line.startswith(f"| runner, {mode} |"))
        ratio = float(row.split("|")[3])
        assert 0 < ratio < math.inf  # (5 steps: a ratio, not a measurement)
    for label in ("import torch", "plain script's first step", "`python -m runner` first step",
                  "process RSS, MiB", "joblib, 2 workers"):  # fmt: skip
        assert label in text
    seconds = re.search(r"\| `python -m runner` first step \| ([\d.]+) \|", text)
    assert seconds and 0 < float(seconds.group(1)) < 120


def test_bad_arguments_are_one_line(tmp_path):
    done = run_cli("runner.bench", "--batch", "512", "--samples", "256")
    assert done.returncode == 2
    assert "--batch 512 is larger than --samples 256" in done.stderr
    assert "Traceback" not in done.stderr
