"""`python -m runner.reproduce RUN_DIR [--out DIR]`: run a finished run again and compare.

The run is repeated as `python -m runner` with the overrides (and `--config-dir`) that
its run.json recorded, into a new folder; then its final metrics and a hash of its
final weights are compared with the original's. Prints `identical` or each difference,
and warns when versions, device, git revision or the composed config differ.

Re-running a config imports and calls every `_target_` in it, so a run dir from someone
else could run any code. Unless `--allow-custom-targets` is given, reproduce refuses a
config whose `_target_`s (in .hydra/config.yaml, in the recorded overrides, and in the
config those compose to today) lie outside `torch.`, `runner.` and the run's own project:
a `NAME.py` or `NAME/` package in the folder the run was started from (run.json's cwd),
counted only when the run dir lies inside that folder and NAME is not also a standard or
installed module. This is a tripwire for unexpected code, not a sandbox: torch itself has
targets that run code (torch.hub.load).
Exit code: 0 identical, 1 different, 2 not a run dir or custom targets refused.
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

from runner.errors import exit_on_ctrl_c
from runner.run_dirs import check_output_dir, hydra_quoted
from runner.target_safety import custom_targets

# Metrics that must match bit for bit; wall time and speed never do.
COMPARED_METRICS = ("initial_train_loss", "initial_val_loss", "final_train_loss", "final_val_loss",
                    "steps", "params_unique", "params_total", "device")  # fmt: skip
NEEDED = ("run.json", "metrics.json", "model.pt", ".hydra/config.yaml")

EXAMPLES = """\
examples:
  python -m runner.reproduce outputs/2026-11-22/10-00-00
  python -m runner.reproduce multirun/2026-11-22/10-00-00/init=xavier,seed=1 --out /tmp/again
  python -m runner.reproduce someone_elses_run --allow-custom-targets   # after reading them
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


def default_out(run_dir: Path) -> Path:
    """RUN_DIR.reproduced beside the run; for a sweep's job, beside the sweep dir, so the
    new run does not join the sweep's summary, compare or TensorBoard listing."""
    parent = run_dir.parent
    if (parent / "multirun.yaml").is_file() or (parent / "summary.csv").is_file():
        return parent.with_name(parent.name + ".reproduced") / run_dir.name
    return run_dir.with_name(run_dir.name + ".reproduced")


def check_run_dir(run_dir: Path) -> None:
    """A ConfigError unless `run_dir` holds a finished run."""
    from runner.errors import ConfigError, first_line

    if not run_dir.is_dir():
        raise ConfigError(f"{run_dir}: no such folder")
    missing = [name for name in NEEDED if not (run_dir / name).is_file()]
    if missing:
        raise ConfigError(
            f"{run_dir}: not a finished run (missing {', '.join(missing)}); give the folder "
            "that `python -m runner` printed as its run dir"
        )
    run_record(run_dir)
    try:
        from omegaconf import OmegaConf

        OmegaConf.load(run_dir / ".hydra/config.yaml")
    except Exception as error:  # a hand-edited file
        raise ConfigError(f"{run_dir / '.hydra/config.yaml'}: cannot read it "
                          f"({first_line(error)})") from error  # fmt: skip


def run_record(run_dir: Path) -> dict[str, Any]:
    """run.json, checked: a mapping whose `overrides` is a list of strings (the command)."""
    from runner.errors import ConfigError, first_line

    path = run_dir / "run.json"
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise ConfigError(f"{path}: cannot read it as JSON ({first_line(error)})") from error
    overrides = record.get("overrides") if isinstance(record, dict) else None
    if not isinstance(overrides, list) or not all(isinstance(o, str) for o in overrides):
        raise ConfigError(f"{path}: it has no 'overrides' list (the command's overrides), "
                          "so the run cannot be made again: not a run's run.json")  # fmt: skip
    return record


def rerun(run_dir: Path, out: Path) -> subprocess.CompletedProcess:
    """Run the recorded command's overrides again, with the run dir moved to `out`. Ctrl-C,
    SIGTERM or a closed terminal reach that run once (runner/child_run.py): it ends its
    step and saves a checkpoint, and this process prints its line ("interrupted; continue
    with train.resume=...") and exits with its code, 130 or 143."""
    record = run_record(run_dir)
    command = [sys.executable, "-m", "runner", *record.get("overrides", []),
               f"hydra.run.dir={hydra_quoted(str(out))}"]  # fmt: skip
    if record.get("config_dir"):
        command += ["--config-dir", record["config_dir"]]
    if record.get("config_name") not in (None, "config"):
        command += ["--config-name", record["config_name"]]
    cwd = record.get("cwd") if Path(record.get("cwd", "")).is_dir() else None
    from runner.child_run import run_passing_signals

    done = run_passing_signals(command, cwd)
    if done.returncode in (130, 143):  # interrupted: its line says how to go on
        print((done.stderr.strip().splitlines() or ["interrupted"])[-1], file=sys.stderr)
        sys.exit(done.returncode)
    return done


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
    if all(c.is_file() for c in configs) and _config_differs(*configs):
        warnings.append(
            "the composed config differs (a config file changed since): see both .hydra/config.yaml"
        )
    return diffs, warnings


def _config_differs(old: Path, new: Path) -> bool:
    """Whether two saved configs differ, a key the schema gained since the old run was made
    counting as its default there (it did not exist, so the run had the default)."""
    import yaml

    from runner.resume import flatten, with_gained_keys

    was, now = (flatten(yaml.safe_load(path.read_text()) or {}) for path in (old, new))
    return with_gained_keys(was, now) != now


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
    parser.add_argument(
        "--allow-custom-targets",
        action="store_true",
        help="run a config whose _target_s lie outside torch, runner and the run's project",
    )
    return parser.parse_args(argv)


@exit_on_ctrl_c
def main(argv: Sequence[str] | None = None) -> None:
    """Reproduce, compare, print; exit 0 when identical."""
    from runner.errors import exit_on_user_error

    sys.exit(exit_on_user_error(_reproduce)(parse_args(argv)))


def _reproduce(args: argparse.Namespace) -> int:
    from runner.errors import ConfigError

    run_dir = args.run_dir.resolve()
    check_run_dir(run_dir)
    if not args.allow_custom_targets:
        found = custom_targets(run_dir, run_record(run_dir))
        if found:
            raise ConfigError(
                f"{run_dir}: its config has _target_s outside torch, runner and the run's "
                f"project: {', '.join(found)}; reproducing would import and call them, so "
                "read them first, then pass --allow-custom-targets"
            )
    out = (args.out or default_out(run_dir)).resolve()
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out}: is a file; give an empty or new folder")
    if out.exists() and any(out.iterdir()):
        raise ConfigError(f"--out {out}: already holds files; give an empty or new folder")
    check_output_dir(out, "--out")
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
    from runner.pipes import survive_closed_readers

    survive_closed_readers()  # `| head`: no traceback when the reader leaves
    main(sys.argv[1:])
