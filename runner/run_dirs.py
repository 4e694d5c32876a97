"""The folders a command writes into: checked before Hydra makes them, since Hydra makes
a run's (or sweep's) folder and writes `.hydra/` there before the job's own code runs.

A folder must be one that can be made and written; it must not hold a finished run's or
sweep's results (they would be written over); a sweep's jobs must get folders of their
own; and a time-stamped folder (the default `outputs/DATE/TIME`) is made at once, so two
commands started in the same second get two folders.
"""

from __future__ import annotations

import re
from pathlib import Path

from omegaconf import DictConfig

from runner.errors import ConfigError, brief

# What shows that a folder holds a run's results (or a sweep's): never written over.
RUN_RESULTS = ("metrics.json", "model.pt", "checkpoint.pt")
SWEEP_RESULTS = ("multirun.yaml", "summary.csv", "summary.md")


def check_output_dir(folder: str | Path | None, key: str) -> None:
    """A ConfigError unless `folder` is, or can be made, a folder we may write into.

    Hydra makes the run dir before the job starts and reports a failure with a traceback;
    this checks the nearest part of the path that exists: a file there (`afile/run`) or a
    folder without write permission would stop it.
    """
    import os
    import tempfile

    if folder is None:
        return
    if not str(folder).strip():
        raise ConfigError(f"{key} is empty: give the folder the run writes into, e.g. "
                          f"{key}=runs/first")  # fmt: skip
    too_long = [part for part in Path(folder).parts if len(os.fsencode(part)) > 255]
    if too_long:
        raise ConfigError(
            f"{key}={brief(str(folder), 60)}: the name {brief(too_long[0], 30)} is "
            f"{len(os.fsencode(too_long[0]))} bytes; file systems take 255 at most"
        )
    existing = Path(folder)
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigError(
            f"{key}={folder}: cannot make this folder: {existing} is a file, not a folder; "
            f"give {key} a path under a folder"
        )
    try:  # permissions alone do not tell (root may write anywhere but /proc, /sys)
        os.rmdir(tempfile.mkdtemp(prefix=".runner-check-", dir=existing))
    except OSError as error:
        raise ConfigError(
            f"{key}={folder}: cannot make or write this folder: {existing} refuses new "
            f"folders ({error.strerror}); give {key} a folder you can write to"
        ) from error


def check_not_a_finished_run(folder: str | Path | None, sweep: bool = False,
                             raw: str | None = None) -> None:  # fmt: skip
    """A ConfigError when `folder` already holds a run's results (metrics.json, model.pt,
    checkpoint.pt, event files under tb/) or a sweep's (multirun.yaml, its summary): a run
    or sweep there would replace them, or mix its events and jobs with theirs. `sweep`:
    `folder` is the planned hydra.sweep.dir, else hydra.run.dir; `raw`: as written (a
    time-stamped folder is not checked: the command gets a new one)."""
    if folder is None or not Path(folder).is_dir() or time_stamped(str(folder), raw):
        return
    path = Path(folder)
    runs = [name for name in RUN_RESULTS if (path / name).exists()]
    if (path / "tb").is_dir() and any(p.is_file() for p in (path / "tb").rglob("*")):
        runs.append("tb/")
    sweeps = [name for name in SWEEP_RESULTS if (path / name).exists()]
    found, what = (sweeps, "a sweep") if sweeps else (runs, "a run")
    if found:
        key = "hydra.sweep.dir" if sweep else "hydra.run.dir"
        checkpoint = (path / "checkpoint.pt").resolve()  # absolute: hydra.job.chdir moves cwd
        resume = ""
        if not sweep and not sweeps and checkpoint.is_file():
            resume = f", or continue it: train.resume={checkpoint} {key}=<new folder>"
        raise ConfigError(
            f"{key}={folder}: it already holds {what} ({', '.join(found)}), which this command "
            f"would write over; give {key} a new folder{resume}"
        )


def check_job_dirs(sweep_dir: str | None, subdir: tuple[str | None, str | None],
                   several: bool) -> None:  # fmt: skip
    """A ConfigError when hydra.sweep.subdir (`planned_dir(cfg, "sweep", "subdir")`: as
    composed, as written) gives the jobs no folders of their own: one that is (or holds)
    the sweep dir itself, or a fixed name when the sweep has several jobs. Their files
    would be written over each other's, and the summary would find none."""
    composed, raw = subdir
    if sweep_dir is None or composed is None or raw is None:
        return
    sweep = Path(sweep_dir).resolve()
    job_dir = (sweep / composed).resolve()
    shared = job_dir == sweep or job_dir in sweep.parents
    if shared or (several and "${" not in raw):
        where = "the sweep dir itself" if shared else f"one folder, {composed}"
        raise ConfigError(
            f"hydra.sweep.subdir={raw}: every job of the sweep would write into {where}, over "
            "each other's files; give each job a folder of its own, e.g. "
            "'hydra.sweep.subdir=${hydra.job.num}' (the default names it by its overrides)"
        )


MAX_SUFFIX = 99  # folder_1 ... folder_99 are tried after folder


def hydra_quoted(value: str) -> str:
    """`value` as a quoted Hydra override value (a folder may hold "=", ",", spaces or
    letters the unquoted grammar refuses). Inside quotes Hydra reads a backslash as itself
    except in a run of them before a quote, which it halves (`\\'` is `'`): so only those
    runs, and one at the end, are doubled."""
    escaped = re.sub(r"(\\*)'", lambda m: m.group(1) * 2 + "\\'", value)
    escaped = re.sub(r"(\\+)$", lambda m: m.group(1) * 2, escaped)
    return f"'{escaped}'"


def planned_dir(cfg: DictConfig, mode: str, key: str = "dir") -> tuple[str | None, str | None]:
    """hydra.run.dir (`mode` "run") or hydra.sweep.dir ("sweep"; `key` "subdir": a job's
    folder in it) as Hydra will make it, and as written in the config; None for what does
    not resolve here (Hydra reports it)."""
    try:
        raw = str(cfg.hydra[mode]._get_node(key)._value())
        return str(cfg.hydra[mode][key]), raw
    except Exception:  # noqa: BLE001
        return None, None


def time_stamped(folder: str | None, raw: str | None) -> bool:
    """Whether the folder (`planned_dir`) is named by the time: `claim_time_stamped` gives
    such a command a folder of its own. (Not one holding a "$": quoted, Hydra would read
    "${" as an interpolation.)"""
    return (folder is not None and raw is not None and "${now:" in raw.replace(" ", "")
            and "$" not in folder)  # fmt: skip


def claim_time_stamped(folder: str | None, raw: str | None, mode: str) -> str | None:
    """For a run or sweep dir named by the time (`${now:...}`, as the default
    outputs/DATE/TIME is; `planned_dir`): make the folder now, or, if it exists (another
    command made it in the same second, or a finished run holds it), `<folder>_1`, `_2`,
    ... up to MAX_SUFFIX; return the override that pins Hydra to it (`hydra.run.dir=...`;
    `mode` is "run" or "sweep"). None when the name does not depend on the time; a
    ConfigError when every suffix is taken.

    Hydra resolves `${now:}` again when it composes: without the pin, a command started at
    the end of a second would be checked against one folder and write into the next."""
    import os

    if not time_stamped(folder, raw):
        return None
    base = str(Path(folder))  # "out/2026/" -> "out/2026": a suffix names a sibling
    Path(base).parent.mkdir(parents=True, exist_ok=True)
    for suffix in range(MAX_SUFFIX + 1):
        candidate = f"{base}_{suffix}" if suffix else base
        try:
            os.mkdir(candidate)
        except FileExistsError:
            continue
        return f"hydra.{mode}.dir={hydra_quoted(candidate)}"
    raise ConfigError(
        f"hydra.{mode}.dir={folder}: it and {base}_1 ... {base}_{MAX_SUFFIX} exist already; "
        f"give hydra.{mode}.dir a new folder"
    )


def pinned(argv: list[str], override: str | None) -> list[str]:
    """`argv` with `override` (`claim_time_stamped`'s) in place of any override of its key."""
    if override is None:
        return argv
    key = override.split("=", 1)[0]
    return [a for a in argv if a.lstrip("+").split("=", 1)[0] != key] + [override]
