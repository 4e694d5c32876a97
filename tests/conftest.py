"""Shared helpers: compose a config as the CLI would, and run the CLI as a user would."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import runner

REPO = Path(__file__).resolve().parent.parent

# The Ctrl-C tests press Ctrl-C as in a terminal. A shell starts a background job (`cmd &`
# in a script) with SIGINT ignored, and Python then keeps ignoring it: give the tests the
# handler an interactive run has.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture
def build():
    """build(*overrides) -> the initialised, tied module of the composed config."""

    def make(*overrides: str):
        return runner.build_model(runner.compose(list(overrides)))

    return make


def run_cli(
    *args: str, env: dict | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess:
    """Run `python -m <args>` in a subprocess, as a user types it."""
    # A developer's own HYDRA_FULL_ERROR must not change what the tests see.
    full_env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", *args],
        capture_output=True,
        text=True,
        cwd=cwd or REPO,
        env=full_env,
        timeout=300,
    )


HOST_READS = ("item", "tolist", "cpu", "numpy", "__bool__", "__float__", "__int__")


def count_host_reads(monkeypatch) -> dict[str, int]:
    """Count calls of every Tensor method that copies to the host (a sync on a GPU); the
    returned dict fills as the test runs."""
    import torch

    calls: dict[str, int] = {}
    for method in HOST_READS:
        original = getattr(torch.Tensor, method)

        def counted(self, *args, _name=method, _original=original, **kwargs):
            calls[_name] = calls.get(_name, 0) + 1
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, method, counted)
    return calls


def write_files(folder: Path, files: dict[str, str]) -> Path:
    """Write {relative path: text} under `folder` (a user's --config-dir); return it."""
    for name, text in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)
    return folder


class WithEmptyWeight(torch.nn.Module):
    """A layer (for `_target_: conftest.WithEmptyWeight`) holding a tensor of no values
    beside its Linear: a custom module may have one."""

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(in_features, out_features)
        self.empty = torch.nn.Parameter(torch.empty(out_features, 0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x) + (x[:, :0] @ self.empty.T)  # empty @ empty: zeros, in the graph


def cut_and_alone(monkeypatch, device: str) -> tuple[list, list, list]:
    """Four logging steps and a gap of a model whose three weights share a divisor of 4096
    values (runner/param_layout.py), measured on `device` twice: with its weights cut into
    rows of one group, and with each shape reduced on its own. Returns (the records cut,
    the records alone, the row groups cut)."""
    from runner import param_layout
    from runner.stats import StepStats

    def run(min_row: int) -> tuple[list, list]:
        monkeypatch.setattr(param_layout, "MIN_ROW", min_row)
        torch.manual_seed(3)
        net = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.ReLU(),
                                  torch.nn.Linear(128, 128), torch.nn.ReLU(),
                                  torch.nn.Linear(128, 96), torch.nn.Linear(96, 1)).to(device)  # fmt: skip
        optimizer = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
        stats = StepStats(net, hist_bins=16)
        generator = torch.Generator().manual_seed(4)
        records = []
        for step in range(5):
            x, y = torch.randn(32, 64, generator=generator), torch.randn(32, 1, generator=generator)
            stats.start(activations=True)
            torch.nn.functional.mse_loss(net(x.to(device)), y.to(device)).backward()
            if step == 2:  # not a logging step
                optimizer.step()
                optimizer.zero_grad()
                continue
            stats.before_update(scalars=True, histograms=True, step=step)
            optimizer.step()
            records.append(stats.finish(scalars=True, histograms=True, extra={}, step=step))
            optimizer.zero_grad()
        return records, stats._params._groups

    (cut, groups), (alone, _) = run(4096), run(1 << 40)
    return cut, alone, groups


def assert_same_numbers(ours: list, theirs: list) -> None:
    """Two runs' records hold the same tags and numbers: histograms count for count, the
    rest within float32 rounding."""
    import numpy as np

    for mine, other in zip(ours, theirs, strict=True):
        assert mine.scalars.keys() == other.scalars.keys()
        for tag, value in other.scalars.items():
            assert mine.scalars[tag] == pytest.approx(value, rel=2e-6, abs=1e-9), tag
        assert mine.histograms.keys() == other.histograms.keys()
        for tag, h in other.histograms.items():
            m = mine.histograms[tag]
            assert (m.min, m.max, m.num) == (h.min, h.max, h.num), tag
            np.testing.assert_array_equal(m.bucket_counts, h.bucket_counts)
            assert m.sum_squares == pytest.approx(h.sum_squares, rel=1e-6), tag
