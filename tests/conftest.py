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
