"""`python -m runner`'s command line, composed before Hydra composes it.

Hydra reports a bad config over several lines and exits with 1; composing the command
line first (each swept option once, not the whole grid) turns any mistake into the
one-line error and exit code 2 of every other bad input, before a job starts. The
output dir is checked too, since Hydra creates it before the run's own code runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

from omegaconf import DictConfig

from runner.config import check_no_new_variables, compose, compose_with_hydra, job_config
from runner.config_errors import first_lines
from runner.errors import ConfigError
from runner.run_dirs import (
    check_job_dirs,
    check_not_a_finished_run,
    check_output_dir,
    planned_dir,
)


class Plan(NamedTuple):
    """What a checked command line will do."""

    launcher: DictConfig | None  # a multirun's hydra.launcher (how its jobs start), else None
    trains_here: bool  # a job trains in this process: a run, or a sweep on the basic launcher
    # The run dir (or sweep dir) Hydra will make: (folder, as written, "run" or "sweep"), for
    # `run_dirs.claim_time_stamped`; None where no job starts.
    output_dir: tuple[str | None, str | None, str] | None = None


NO_JOB_HERE = Plan(None, False)  # --help, --info, --cfg (checked, then only printed), ...


def check_command_line(argv: Sequence[str]) -> Plan:
    """Compose what `python -m runner ARGV` would run, raising ConfigError for a bad config;
    return what it will do (`Plan`).

    Hydra reports its own composition errors over several lines and exits with 1, from
    inside `@hydra.main`; composing first gives the runner's one line and exit code 2.
    In a multirun (`-m`, or an experiment's `hydra.sweeper.params`), every option of a
    swept group and one value of each type of a swept key is composed, so a bad job
    fails the sweep before any job starts; ranges and names are checked by each job.
    Flags that do not compose a job (--help, --info, ...) are left to Hydra. The run dir
    (or sweep dir) must be a folder that can be made: Hydra makes it before any job.
    """
    import argparse

    from hydra._internal.utils import get_args_parser  # the parser @hydra.main itself uses
    from hydra.types import RunMode

    parser = get_args_parser()
    parser.exit_on_error = False
    try:
        args, unknown = parser.parse_known_args(list(argv))
    except argparse.ArgumentError:
        return NO_JOB_HERE  # Hydra prints its own usage error
    # Hydra's usage error; a pickled config (Hydra then ignores the other flags).
    if unknown or getattr(args, "experimental_rerun", None) is not None:
        return NO_JOB_HERE
    if args.resolve and args.cfg is None and not args.help:  # (Hydra's ValueError otherwise)
        raise ConfigError("command line: --resolve resolves what --cfg prints: give it with "
                          "--cfg job, --cfg hydra or --cfg all")  # fmt: skip
    if args.help or args.hydra_help or args.config_path is not None:  # (another config folder)
        return NO_JOB_HERE
    _one_command(args)
    if args.info or args.shell_completion:
        return NO_JOB_HERE
    overrides, config_dir = list(args.overrides), args.config_dir
    name = args.config_name or "config"
    # hydra.mode=MULTIRUN (an override, or set in a config) is -m without the flag; --cfg
    # prints a job's config whatever the mode.
    if args.cfg is not None or not (args.multirun or _multirun_mode(overrides, name, config_dir)):
        cfg = compose_with_hydra(overrides, name, config_dir)
        if args.cfg is not None or cfg.hydra.mode != RunMode.MULTIRUN:
            run_dir, run_dir_as_written = planned_dir(cfg, "run")
            sweep_params = cfg.hydra.sweeper.get("params") or {}  # (job_config drops hydra)
            check_no_new_variables(cfg, overrides, name, config_dir)
            job_config(cfg, overrides)
            check_output_dir(run_dir, "hydra.run.dir")
            if args.cfg:
                return NO_JOB_HERE  # --cfg only prints
            check_not_a_finished_run(run_dir, raw=run_dir_as_written)
            _warn_unswept(sweep_params)
            return Plan(None, True, (run_dir, run_dir_as_written, "run"))
    launcher, jobs, sweep_dir = _covering_jobs(overrides, name, config_dir)
    _check_launcher(launcher)
    for job in jobs:
        compose(job, name, config_dir)
    if args.cfg:
        return NO_JOB_HERE  # --cfg prints the config and launches nothing
    return Plan(launcher, launcher.get("_target_") == BASIC_LAUNCHER, (*sweep_dir, "sweep"))


# The overrides that make a command line a multirun without -m (the enum's name or value).
MULTIRUN_MODE = ("hydra.mode=MULTIRUN", "hydra.mode=2")
# Hydra's flags of which a command line may give one (Hydra's own message is a traceback).
COMMANDS = {"run": "--run (-r)", "multirun": "--multirun (-m)", "cfg": "--cfg (-c)",
            "info": "--info (-i)", "shell_completion": "--shell-completion (-sc)"}  # fmt: skip


def _one_command(args) -> None:
    """A ConfigError when the parsed command line gives more than one of COMMANDS."""
    given = [flag for key, flag in COMMANDS.items() if getattr(args, key) not in (None, False)]
    if len(given) > 1:
        choices = ", ".join(COMMANDS.values())
        raise ConfigError(f"command line: {' and '.join(given)} together: give one of {choices}")


def _multirun_mode(overrides: list[str], config_name: str, config_dir: str | None) -> bool:
    """Whether the command line is a multirun without -m: hydra.mode=MULTIRUN given, or set
    by a config, which is read (as Hydra reads it) from the overrides that sweep nothing
    when they do not compose as a run (a sweep such as seed=0,1)."""
    if any(o.lstrip("+") in MULTIRUN_MODE for o in overrides):
        return True
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException
    from hydra.types import RunMode

    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except HydraException:
        return False  # the run's compose reports it
    if not any(o.is_sweep_override() for o in parsed):
        return False  # the run's compose reads a config's mode
    fixed = [o.input_line for o in parsed if not o.is_sweep_override()]
    try:
        return compose_with_hydra(fixed, config_name, config_dir).hydra.mode == RunMode.MULTIRUN
    except ConfigError:
        return False  # the run's compose reports it


def _warn_unswept(params: Any) -> None:
    """A run whose config names a sweep (an experiment's hydra.sweeper.params) runs one job:
    Hydra sweeps only with -m. Say so, since a user may have meant the sweep."""
    import sys

    if params:
        grid = " ".join(f"{key}={value}" for key, value in params.items())
        print(f"warning: the config sweeps {grid}, but without -m (--multirun) this runs one "
              "job with its own values; add -m to run the sweep", file=sys.stderr)  # fmt: skip


def _check_launcher(launcher: DictConfig) -> None:
    """joblib's n_jobs: a worker count, negative counting back from the cores (0 is none)."""
    from runner.launchers import JOBLIB_LAUNCHER

    n_jobs = launcher.get("n_jobs") if launcher.get("_target_") == JOBLIB_LAUNCHER else -1
    if n_jobs is not None and (isinstance(n_jobs, bool) or not isinstance(n_jobs, int)
                               or n_jobs == 0):  # fmt: skip
        raise ConfigError(
            f"hydra.launcher.n_jobs={n_jobs}: give the number of parallel jobs (an integer, "
            "not 0; -1: one per core, -2: all cores but one)"
        )


# Hydra's default sweeper: its grid comes from the command line and hydra.sweeper.params.
BASIC_SWEEPER = "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"
# Hydra's default launcher: it runs the jobs one after another in this process.
BASIC_LAUNCHER = "hydra._internal.core_plugins.basic_launcher.BasicLauncher"


def _covering_jobs(
    overrides: list[str], config_name: str, config_dir: str | None
) -> tuple[DictConfig, list[list[str]], tuple[str | None, str | None]]:
    """The sweep's hydra.launcher; override lists that, together, compose every option of
    each swept config group and one value of each type of each swept key (a few jobs
    instead of the whole grid); and the sweep dir (`run_dirs.planned_dir`)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.override_parser.types import Transformer
    from hydra.errors import HydraException

    parser = OverridesParser.create()
    try:
        parsed = parser.parse_overrides(overrides)
    except HydraException as error:
        raise ConfigError(f"command line: {first_lines(str(error))}") from error
    fixed = [o.input_line for o in parsed if not o.is_sweep_override()]
    base = compose_with_hydra(fixed, config_name, config_dir)
    sweep_dir, sweep_dir_as_written = planned_dir(base, "sweep")
    subdir = planned_dir(base, "sweep", "subdir")
    groups, launcher = set(base.hydra.runtime.choices), base.hydra.launcher
    params, experiment = [], base.hydra.runtime.choices.get("experiment")
    if base.hydra.sweeper.get("_target_") == BASIC_SWEEPER:
        params = [f"{k}={v}" for k, v in (base.hydra.sweeper.get("params") or {}).items()]
    params_source = "hydra.sweeper.params"  # where an error in them points
    if experiment:
        params_source = f"experiment/{experiment}.yaml: {params_source}"
    job_config(base, fixed)
    check_output_dir(sweep_dir, "hydra.sweep.dir")
    check_not_a_finished_run(sweep_dir, sweep=True, raw=sweep_dir_as_written)
    several = False  # whether the sweep makes more than one job
    # As the basic sweeper does: the config's params first, the command line's win per key.
    in_order = [(o, params_source) for o in parser.parse_overrides(params)]
    in_order += [(o, "command line") for o in parsed]
    picked: dict[str, list[str]] = {}
    for override, where in in_order:
        key = override.get_key_element()
        if override.is_sweep_override() and key.lstrip("+~").startswith(("hydra.", "hydra/")):
            raise ConfigError(
                f"{where}: {override.input_line}: Hydra cannot sweep its own settings "
                "(hydra.* keys, hydra/ groups); give it one value, and sweep keys of the "
                "runner's config (seed=0,1, init=default,xavier)"
            )
        if not override.is_sweep_override():
            picked[key] = [override.get_value_element_as_str()]
            continue
        try:
            values = list(override.sweep_iterator())
        except HydraException:
            picked.pop(key, None)  # a glob or an interval: left to the sweeper
            several = True
            continue
        several = several or len(values) > 1
        shown = [Transformer.str(v) for v in values]
        twice = sorted({v for v in shown if shown.count(v) > 1})
        if twice:  # two jobs of one overrides: one job dir, their files mixed
            raise ConfigError(
                f"{where}: {override.input_line} gives {', '.join(twice)} more than once; "
                "each value makes one job (and job dir): give each once"
            )
        if key.lstrip("+~").split("@")[0] in groups:
            picked[key] = list(dict.fromkeys(Transformer.str(v) for v in values))
        else:
            by_type: dict[type, str] = {}
            for value in values:
                by_type.setdefault(type(value), Transformer.str(value))
            picked[key] = list(by_type.values())
    check_job_dirs(sweep_dir, subdir, several)
    count = max((len(values) for values in picked.values()), default=0)
    jobs = [[f"{key}={values[i % len(values)]}" for key, values in picked.items()]
            for i in range(count)]  # fmt: skip
    return launcher, jobs, (sweep_dir, sweep_dir_as_written)
