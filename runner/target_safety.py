"""Which `_target_`s rerunning a run would import and call, and which of them reproduce
trusts: torch's, runner's, and the run's own project's (a `NAME.py` or `NAME/` package
in the folder the run was started from, run.json's cwd, counted only when the run dir
lies inside that folder and NAME is not also a standard or installed module). A tripwire
for unexpected code in someone else's run dir, not a sandbox."""

from __future__ import annotations

from pathlib import Path
from typing import Any

ALLOWED_TARGETS = ("torch.", "runner.")  # plus the run's project modules (project_modules)
TARGET_IN_OVERRIDE = r"_target_\s*[:=]\s*['\"]?([A-Za-z_][\w.]*)"


def targets_in(tree: Any) -> list[str]:
    """Every `_target_` value in a nested dict/list config, in order."""
    found: list[str] = []
    if isinstance(tree, dict):
        for key, value in tree.items():
            if key == "_target_" and isinstance(value, str):
                found.append(value)
            else:
                found += targets_in(value)
    elif isinstance(tree, list):
        for value in tree:
            found += targets_in(value)
    return found


def project_modules(run_dir: Path, record: dict[str, Any]) -> set[str]:
    """Top-level modules of the project the run was started in (run.json's cwd): its NAME.py
    files and NAME/__init__.py packages. None when the run dir is not inside that folder (a
    run dir cannot vouch for modules it ships), and never a name that also resolves to a
    standard or installed module (no project can vouch for `os`)."""
    import importlib.util

    cwd = Path(record.get("cwd") or "/nonexistent").resolve()
    run_dir = run_dir.resolve()
    if not cwd.is_dir() or cwd == run_dir or not run_dir.is_relative_to(cwd):
        return set()
    names = {p.stem for p in cwd.glob("*.py")} | {p.parent.name for p in cwd.glob("*/__init__.py")}
    found = set()
    for name in names:
        try:
            spec = importlib.util.find_spec(name)
        except (ImportError, ValueError):
            spec = None
        origin = Path(spec.origin).resolve() if spec and spec.origin else None
        if spec is None or (origin is not None and origin.is_relative_to(cwd)):
            found.add(name)
    return found


def custom_targets(run_dir: Path, record: dict[str, Any]) -> list[str]:
    """The `_target_`s a reproduction of the run in `run_dir` (its run.json: `record`) would
    run that are not torch's, runner's or the run's project's, sorted."""
    import re

    from omegaconf import OmegaConf

    saved = OmegaConf.to_container(OmegaConf.load(run_dir / ".hydra/config.yaml"), resolve=False)
    targets = set(targets_in(saved))
    for override in record.get("overrides", []):
        targets.update(re.findall(TARGET_IN_OVERRIDE, str(override)))
    targets.update(_composed_targets(record))
    project = project_modules(run_dir, record)
    allowed = [t for t in targets if t.startswith(ALLOWED_TARGETS) or t.split(".")[0] in project]
    return sorted(targets.difference(allowed))


def _composed_targets(record: dict[str, Any]) -> list[str]:
    """The targets of the config the recorded overrides compose to now (a --config-dir's
    files may have changed since); none if it does not compose (the rerun reports that)."""
    from omegaconf import OmegaConf

    from runner.config import compose
    from runner.errors import UserError

    config_dir = record.get("config_dir")
    try:
        cfg = compose(record.get("overrides", []), record.get("config_name") or "config",
                      config_dir if config_dir and Path(config_dir).is_dir() else None)  # fmt: skip
    except UserError:
        return []
    return targets_in(OmegaConf.to_container(cfg, resolve=False))
