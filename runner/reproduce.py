"""`python -m runner.reproduce RUN_DIR [--out DIR]`: run a finished run again and compare.

The run is repeated as `python -m runner` with the overrides (and `--config-dir`) that
its run.json recorded, into a new folder; then its final metrics and a hash of its
final weights are compared with the original's. Prints `identical` or each difference,
and warns when versions, device, git revision or the composed config differ.
Exit code: 0 identical, 1 different, 2 not a run dir.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

# Metrics that must match bit for bit; wall time and speed never do.
COMPARED_METRICS = ("initial_train_loss", "initial_val_loss", "final_train_loss", "final_val_loss",
                    "steps", "params_unique", "params_total", "device")  # fmt: skip
NEEDED = ("run.json", "metrics.json", "model.pt", ".hydra/config.yaml")

EXAMPLES = """\
examples:
  python -m runner.reproduce outputs/2026-11-22/10-00-00
  python -m runner.reproduce multirun/2026-11-22/10-00-00/init=xavier,seed=1 --out /tmp/again
"""


def weights_digest(model_file: Path) -> str:
    """sha256 over a state_dict's names, dtypes, shapes and bytes, in key order."""
    import torch

    state = torch.load(model_file, map_location="cpu", weights_only=True)
    digest = hashlib.sha256()
    for name, tensor in state.items():
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def hydra_quoted(value: str) -> str:
    """`value` as a quoted Hydra override value: sweep job dirs hold "=" and ","."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def default_out(run_dir: Path) -> Path:
    """RUN_DIR.reproduced beside the run; for a sweep's job, beside the sweep dir, so the
    new run does not join the sweep's summary, compare or TensorBoard listing."""
    parent = run_dir.parent
    if (parent / "multirun.yaml").is_file() or (parent / "summary.csv").is_file():
        return parent.with_name(parent.name + ".reproduced") / run_dir.name
    return run_dir.with_name(run_dir.name + ".reproduced")


def check_run_dir(run_dir: Path) -> None:
    """A ConfigError unless `run_dir` holds a finished run."""
    from runner.errors import ConfigError

    if not run_dir.is_dir():
        raise ConfigError(f"{run_dir}: no such folder")
    missing = [name for name in NEEDED if not (run_dir / name).is_file()]
    if missing:
        raise ConfigError(
            f"{run_dir}: not a finished run (missing {', '.join(missing)}); give the folder "
            "that `python -m runner` printed as its run dir"
        )


def rerun(run_dir: Path, out: Path) -> subprocess.CompletedProcess:
    """Run the recorded command's overrides again, with the run dir moved to `out`."""
    record = json.loads((run_dir / "run.json").read_text())
    command = [sys.executable, "-m", "runner", *record.get("overrides", []),
               f"hydra.run.dir={hydra_quoted(str(out))}"]  # fmt: skip
    if record.get("config_dir"):
        command += ["--config-dir", record["config_dir"]]
    if record.get("config_name") not in (None, "config"):
        command += ["--config-name", record["config_name"]]
    cwd = record.get("cwd") if Path(record.get("cwd", "")).is_dir() else None
    return subprocess.run(command, capture_output=True, text=True, cwd=cwd)


def differences(original: Path, again: Path) -> tuple[list[str], list[str]]:
    """(differences in results, warnings about the setting) between two finished runs."""
    diffs, warnings = [], []
    old_metrics = json.loads((original / "metrics.json").read_text())
    new_metrics = json.loads((again / "metrics.json").read_text())
    for key in COMPARED_METRICS:
        if old_metrics.get(key) != new_metrics.get(key):
            diffs.append(f"{key}: {old_metrics.get(key)!r} -> {new_metrics.get(key)!r}")
    old_hash, new_hash = weights_digest(original / "model.pt"), weights_digest(again / "model.pt")
    if old_hash != new_hash:
        diffs.append(f"final weights: sha256 {old_hash[:16]}... -> {new_hash[:16]}...")
    old_run = json.loads((original / "run.json").read_text())
    new_run = json.loads((again / "run.json").read_text())
    for key in ("versions", "device", "git"):
        if old_run.get(key) != new_run.get(key):
            warnings.append(
                f"{key} differ: {_short(old_run.get(key))} -> {_short(new_run.get(key))}"
            )
    configs = [run / ".hydra/config.yaml" for run in (original, again)]
    if all(c.is_file() for c in configs) and configs[0].read_text() != configs[1].read_text():
        warnings.append(
            "the composed config differs (a config file changed since): see both .hydra/config.yaml"
        )
    return diffs, warnings


def _short(value: Any) -> str:
    return json.dumps(value, sort_keys=True) if isinstance(value, dict) else str(value)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """RUN_DIR and --out."""
    from runner.errors import tool_parser

    parser = tool_parser(
        "reproduce",
        "Run a finished run again from the config it saved, and compare the results.",
        EXAMPLES,
    )
    parser.add_argument("run_dir", type=Path, help="a run dir (or a job dir of a sweep)")
    parser.add_argument(
        "--out",
        type=Path,
        help="where the new run goes (default: RUN_DIR.reproduced, or SWEEP.reproduced/JOB)",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    """Reproduce, compare, print; exit 0 when identical."""
    from runner.errors import exit_on_user_error

    sys.exit(exit_on_user_error(_reproduce)(parse_args(argv)))


def _reproduce(args: argparse.Namespace) -> int:
    from runner.errors import ConfigError

    run_dir = args.run_dir.resolve()
    check_run_dir(run_dir)
    out = (args.out or default_out(run_dir)).resolve()
    if out.exists() and any(out.iterdir()):
        raise ConfigError(f"--out {out}: already holds files; give an empty or new folder")
    print(f"reproducing {run_dir}\n        into {out}")
    result = rerun(run_dir, out)
    if result.returncode != 0 or not (out / "model.pt").is_file():
        tail = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["(no output)"]
        print(f"the new run failed (exit {result.returncode}): {tail[0]}", file=sys.stderr)
        return 1
    diffs, warnings = differences(run_dir, out)
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    if diffs:
        print("different:")
        for line in diffs:
            print(f"  {line}")
        return 1
    print(
        f"identical: final metrics and weights (sha256 {weights_digest(out / 'model.pt')[:16]}...)"
    )
    return 0


if __name__ == "__main__":
    main(sys.argv[1:])
