"""What a run records about where it came from (run.json): enough to reproduce it and to
say why a reproduction might differ.

{command, cwd, overrides, config_dir, seed, device, versions{python, torch, hydra, omegaconf,
runner}, git{revision, dirty}, started}
"""

from __future__ import annotations

import json
import platform
import subprocess
import sys
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

RUN_FILE = "run.json"
PROJECT_DIR = Path(__file__).resolve().parent.parent


def versions() -> dict[str, str | None]:
    """Versions of Python and of the packages that decide a run's numbers."""
    found: dict[str, str | None] = {"python": platform.python_version()}
    for package in ("torch", "hydra-core", "omegaconf", "runner"):
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[package] = None
    return found


def git_state(folder: Path = PROJECT_DIR) -> dict[str, Any]:
    """The project's git revision and whether its tree has uncommitted changes (null: no git)."""

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", "-C", str(folder), *args], capture_output=True,
                                  text=True, timeout=10)  # fmt: skip
        except (OSError, subprocess.TimeoutExpired):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    revision = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no") if revision else None
    return {"revision": revision, "dirty": bool(status) if status is not None else None}


def command_line() -> list[str]:
    """The command that ran: `python -m runner ...` (sys.argv[0] is the package's
    __main__.py), with the time-stamped folder made for it where it had one
    (runner/run_dirs.py)."""
    if sys.argv and sys.argv[0].endswith(("runner/__main__.py", "runner\\__main__.py")):
        return [sys.executable, "-m", "runner", *sys.argv[1:]]
    return [sys.executable, *sys.argv]


def record_run(run_dir: Path, **facts: Any) -> dict[str, Any]:
    """Write run.json into `run_dir` with the facts given plus versions, git state and time."""
    from runner.artifacts import write_atomic

    record = {
        "command": command_line(),
        "cwd": str(Path.cwd()),
        **facts,
        "versions": versions(),
        "git": git_state(),
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    text = json.dumps(record, indent=2)
    write_atomic(run_dir / RUN_FILE, lambda f: f.write(text), binary=False)
    return record
