"""`python -m runner [overrides]`: train the composed config and log every layer to TensorBoard.

The run's files go to Hydra's run dir: .hydra/, run.json, tb/, model.pt, checkpoint.pt,
metrics.json. With `-m` (multirun) each job records how it ended and the sweep dir gets
summary.csv and summary.md; a failing or diverging job does not stop the others.

Ctrl-C and SIGTERM (a scheduler pre-empting the job) end the run after the current step
with a checkpoint to resume from; the exit code is the shell's: 130 and 143.
"""

from __future__ import annotations

import sys

from runner import start_up

if __name__ == "__main__":
    start_up.defer_ctrl_c()  # until the imports are done (runner/start_up.py)

from runner.launchers import (  # noqa: E402
    start_joblib_workers,
    start_joblib_workers_from_argv,
    stop_workers,
)
from runner.pipes import survive_closed_readers  # noqa: E402

if __name__ == "__main__":
    start_up.pause()  # no garbage collection while the imports run (runner/start_up.py)
    survive_closed_readers()  # `| head`: the run goes on, its console to os.devnull
    start_joblib_workers_from_argv(sys.argv[1:])  # its worker server imports while Hydra does

import logging  # noqa: E402 (the imports below come after the worker server has started)
import os  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import hydra  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from runner import help as _help  # noqa: E402, F401 (registers ${runner_help:}, hydra.help's template)
from runner.command_line import check_command_line  # noqa: E402
from runner.config import CONF_DIR, attach_choices, check_config  # noqa: E402
from runner.errors import TrainingDiverged, exit_on_user_error, first_line  # noqa: E402
from runner.run_dirs import claim_time_stamped, pinned  # noqa: E402

log = logging.getLogger("runner")


@hydra.main(config_path=str(CONF_DIR), config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> None:
    """Train one job; a bad config prints one line and exits with code 2."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from runner.faults import sigterm_as_interrupt  # imports torch: after the config is checked

    hydra_cfg = HydraConfig.get()
    attach_choices(cfg, hydra_cfg.runtime.choices)
    run_dir = Path(hydra_cfg.runtime.output_dir)
    facts = {"overrides": list(hydra_cfg.overrides.task), "config_dir": _config_dir(hydra_cfg),
             "config_name": hydra_cfg.job.config_name}  # fmt: skip
    with sigterm_as_interrupt():  # the previous handler is back after this job
        if hydra_cfg.mode == RunMode.MULTIRUN:
            # A relative sweep dir is relative to where the sweep started (hydra.job.chdir
            # moves cwd).
            sweep_dir = Path(hydra_cfg.runtime.cwd, hydra_cfg.sweep.dir)
            _sweep_job(cfg, run_dir, sweep_dir, facts, hydra_cfg)
            return
        try:
            metrics = exit_on_user_error(_checked_train)(cfg, run_dir, facts)
        except KeyboardInterrupt as stop:
            _interrupted(run_dir, stop)
    log.info(
        "loss train %.6g -> %.6g, val %.6g -> %.6g (%d steps, %.1f steps/s on %s)",
        metrics["initial_train_loss"], metrics["final_train_loss"],
        metrics["initial_val_loss"], metrics["final_val_loss"],
        metrics["steps"], metrics["steps_per_s"], metrics["device"],
    )  # fmt: skip
    print(f"run dir: {run_dir}")
    print(f"tensorboard --logdir {run_dir / 'tb'}")


def _checked_train(cfg: DictConfig, run_dir: Path, facts: dict[str, Any]) -> dict:
    from runner.train import train

    check_config(cfg, facts["overrides"])
    return train(cfg, run_dir, facts)


def _sweep_job(cfg: DictConfig, run_dir: Path, sweep_dir: Path, facts: dict, hydra_cfg) -> None:
    """One job of a multirun: any failure is recorded, not raised, so the sweep goes on."""
    from runner.faults import Terminated
    from runner.launchers import give_the_job_pythons_ctrl_c
    from runner.sweep import claim_folder, mark_started, record_job, was_interrupted

    give_the_job_pythons_ctrl_c()
    mark_started(sweep_dir, hydra_cfg.job.num, run_dir)  # a dead worker's job is found by it
    other = claim_folder(run_dir, hydra_cfg.job.num)
    if other is not None:  # its results (and job.json) would replace the other job's
        log.error("job %d not run: its folder %s is job %s's too; give hydra.sweep.subdir a "
                  "name that differs per job, e.g. '${hydra.job.num}'", hydra_cfg.job.num,
                  run_dir, other if other >= 0 else "another")  # fmt: skip
        return
    if was_interrupted(sweep_dir):  # Ctrl-C stopped the parallel sweep before this job began
        record_job(run_dir, sweep_dir, facts["overrides"], "interrupted",
                   "interrupted (Ctrl-C) before it started")  # fmt: skip
        return
    _cap_threads(hydra_cfg)
    try:
        metrics = _checked_train(cfg, run_dir, facts)
    except KeyboardInterrupt as stop:
        status, why = (("terminated", "terminated (SIGTERM)") if isinstance(stop, Terminated)
                       else ("interrupted", "interrupted (Ctrl-C)"))  # fmt: skip
        record_job(run_dir, sweep_dir, facts["overrides"], status, why)
        if was_interrupted(sweep_dir):  # a parallel sweep: it ends as usual, then exits 130
            _interrupted(run_dir, stop, exit=False)
            return
        _interrupted(run_dir, stop)
    except Exception as error:  # noqa: BLE001 (the job's failure is its result)
        # A run that stopped cleanly on a NaN (train.on_nonfinite=stop) is "diverged".
        diverged = isinstance(error, TrainingDiverged) and error.stopped
        log.error("job %s %s: %s", run_dir.name, "diverged" if diverged else "failed",
                  first_line(error))  # fmt: skip
        record_job(run_dir, sweep_dir, facts["overrides"], "diverged" if diverged else "failed",
                   first_line(error))  # fmt: skip
        return
    record_job(run_dir, sweep_dir, facts["overrides"], "ok", metrics=metrics)


def _interrupted(run_dir: Path, stop: KeyboardInterrupt, exit: bool = True) -> None:
    """One line instead of a traceback, where to resume from, and (with `exit`) the shell's
    code for the signal: 130 for SIGINT (Ctrl-C), 143 for SIGTERM."""
    from runner.faults import Terminated

    checkpoint = run_dir / "checkpoint.pt"
    hint = f"; continue with train.resume={checkpoint}" if checkpoint.is_file() else ""
    terminated = isinstance(stop, Terminated)
    print(f"{'terminated' if terminated else 'interrupted'}{hint}", file=sys.stderr)
    if exit:
        sys.exit(143 if terminated else 130)


def _config_dir(hydra_cfg) -> str | None:
    """The folder given with --config-dir, if any (reproduce passes it on)."""
    for source in hydra_cfg.runtime.config_sources:
        if source.provider == "command-line" and source.schema == "file":
            return str(Path(hydra_cfg.runtime.cwd, source.path).resolve())
    return None


def _exit_without_teardown(code: int = 0) -> None:
    """End the process with `code` once everything is written, skipping the interpreter's
    teardown: with torch loaded, clearing torch's and torch._dynamo's modules took 0.96 s
    on this 2-core CPU, after every file of the run was closed. The atexit handlers still
    run (logging's flush and close among them) and the standard streams are flushed; while
    a thread that is not a daemon runs (a joblib sweep's, until `stop_workers`), the usual
    exit waits for it."""
    import atexit
    import contextlib
    import threading

    others = [t for t in threading.enumerate() if t is not threading.main_thread()]
    if any(not t.daemon for t in others):
        sys.exit(code)
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        # A closed pipe (`| head`) or stream: nothing to keep.
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(code)


def _cap_threads(hydra_cfg) -> None:
    """Under a parallel launcher (joblib), N jobs share the cores: each gets cores // N threads."""
    import torch

    n_jobs = hydra_cfg.launcher.get("n_jobs")
    if n_jobs is None:
        return
    cores = os.cpu_count() or 1
    parallel = n_jobs if n_jobs > 0 else max(1, cores + 1 + n_jobs)  # joblib: -1 is all cores
    torch.set_num_threads(max(1, cores // parallel))


if __name__ == "__main__":
    launcher, parallel = None, False
    try:
        # Hydra reports a bad config over several lines and exits 1; composing first gives
        # one line, 2.
        launcher, trains_here, output_dir = exit_on_user_error(check_command_line)(sys.argv[1:])
        # A multirun on the joblib launcher: its worker server starts now, if not already.
        parallel = launcher is not None and start_joblib_workers(launcher)
        if trains_here:  # before Hydra composes the job, so no job's objects are frozen
            start_up.import_training_modules()
        start_up.resume()
        start_up.ctrl_c_from_now()
        if output_dir is not None:  # a time-stamped folder: made now, Hydra pinned to it
            pin = exit_on_user_error(claim_time_stamped)(*output_dir)
            sys.argv[1:] = pinned(sys.argv[1:], pin)
        main()
    except (KeyboardInterrupt, SystemExit) as stop:
        # A job (a run's, or a sequential sweep's) prints its own line for Ctrl-C and exits
        # 130; so do a parallel sweep's workers, and joblib raises their exit here. Ctrl-C
        # outside a job (while Hydra composes) lands here too.
        code = getattr(stop, "code", 130)
        if isinstance(stop, SystemExit) and (not parallel or code not in (130, 143)):
            raise
        from runner import sweep as sweeps

        sweep = "; the sweep stopped: summary.csv in the sweep dir has each job that ended"
        if sweeps.current_sweep_dir is None:  # still composing: no job had started
            sweep = "; the sweep stopped before any job started"
        print("interrupted" + (sweep if launcher is not None else ""), file=sys.stderr)
        sys.exit(code)
    if parallel:
        stop_workers()
    _exit_without_teardown(0)
