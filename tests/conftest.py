"""Shared helpers: compose a config as the CLI would, and run the CLI as a user would."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import runner

REPO = Path(__file__).resolve().parent.parent


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
