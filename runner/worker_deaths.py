"""A joblib sweep whose worker process dies (killed for memory, a crash in C, `os._exit`).

Loky then breaks its executor: every running job dies with it and Hydra's joblib launcher
raises TerminatedWorkerError, so the sweep ended with a traceback, no summary and no
record of the jobs that were running. Here the launcher's `launch` goes on instead:

- the jobs that had ended (their job.json is written) keep their results;
- the jobs that had started (Hydra made their job dir) run again one at a time in a
  worker of their own, so a second death is that job's own: it is recorded as failed,
  with the workers' exit codes, and the others run to their end (what the killed
  attempt left in a job dir, never a finished job's, is cleared first);
- the jobs that had not started run in parallel again, as before.

The sweep then ends as any sweep with a failed job: its summary, and exit code 1.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

_patched = False


def survive_worker_deaths() -> None:
    """Wrap Hydra's joblib launcher's `launch` (once) so a dead worker fails only its job."""
    global _patched
    if _patched:
        return
    from hydra_plugins.hydra_joblib_launcher import _core

    original = _core.launch

    def launch(launcher: Any, job_overrides: Sequence[Sequence[str]],
               initial_job_idx: int) -> list:  # fmt: skip
        from joblib.externals.loky.process_executor import TerminatedWorkerError

        try:
            return original(launcher, job_overrides, initial_job_idx)
        except TerminatedWorkerError:
            jobs = {initial_job_idx + i: list(o) for i, o in enumerate(job_overrides)}
            return _after_a_death(launcher, jobs)

    _core.launch = launch
    _patched = True


def _after_a_death(launcher: Any, jobs: dict[int, list[str]]) -> list:
    """Every job of `jobs` (number -> overrides) brought to an end; their JobReturns."""
    from joblib.externals.loky.process_executor import TerminatedWorkerError

    from runner.sweep import JOB_FILE, record_job

    sweep_dir = Path(str(launcher.config.hydra.sweep.dir))
    returns: dict[int, Any] = {}
    pending = dict(jobs)
    while pending:
        dirs = {num: _job_dir(launcher, num, overrides) for num, overrides in pending.items()}
        for num in [n for n in pending if (dirs[n] / JOB_FILE).is_file()]:
            returns[num] = _ended(pending.pop(num))
        for num in [n for n in pending if dirs[n].is_dir()]:  # started: now alone
            overrides = pending.pop(num)
            shutil.rmtree(dirs[num])  # the killed attempt's: no job.json, so no result
            try:
                returns[num] = _run(launcher, {num: overrides}, alone=True)[0]
            except TerminatedWorkerError as death:
                dirs[num].mkdir(parents=True, exist_ok=True)
                record_job(dirs[num], sweep_dir, overrides, "failed", _why(death))
                returns[num] = _ended(overrides)
        if not pending:
            break
        try:
            returns.update(zip(pending, _run(launcher, pending, alone=False), strict=True))
            pending = {}
        except TerminatedWorkerError:
            continue  # another death: sort the jobs out again
    return [returns[num] for num in sorted(returns)]


def _job_dir(launcher: Any, num: int, overrides: list[str]) -> Path:
    """Where job `num` writes: hydra.sweep.dir/hydra.sweep.subdir, as Hydra's joblib
    launcher composes the job (`execute_job`)."""
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    config = launcher.hydra_context.config_loader.load_sweep_config(launcher.config, overrides)
    with open_dict(config):
        config.hydra.job.id = f"{config.hydra.job.name}_{num}"
        config.hydra.job.num = num
    HydraConfig.instance().set_config(config)
    return Path(str(config.hydra.sweep.dir), str(config.hydra.sweep.subdir))


def _run(launcher: Any, jobs: dict[int, list[str]], alone: bool) -> list:
    """Run `jobs` as Hydra's joblib launcher does, keeping their numbers; `alone`: one at a
    time in a loky worker of its own (joblib's n_jobs=1 would run it in this process)."""
    from hydra.core.singleton import Singleton
    from hydra_plugins.hydra_joblib_launcher._core import execute_job

    state = Singleton.get_state()
    calls: list[tuple[Callable, tuple]] = [
        (execute_job, (num, overrides, launcher.hydra_context, launcher.config,
                       launcher.task_function, state))
        for num, overrides in jobs.items()
    ]  # fmt: skip
    if alone:
        from joblib.externals.loky import get_reusable_executor

        executor = get_reusable_executor(max_workers=1)
        return [executor.submit(function, *args).result() for function, args in calls]
    from joblib import Parallel, delayed

    return Parallel(**launcher.joblib)(delayed(function)(*args) for function, args in calls)


def _ended(overrides: list[str]) -> Any:
    """A JobReturn for a job that recorded how it ended (the sweep reads its job.json)."""
    from hydra.core.utils import JobReturn, JobStatus

    job = JobReturn(overrides=overrides, status=JobStatus.COMPLETED)
    job._return_value = None
    return job


def _why(death: BaseException) -> str:
    """The one-line reason recorded for a job whose worker died."""
    import re

    codes = re.search(r"exit codes of the workers are (\{[^}]*\})", str(death))
    shown = f" (exit codes {codes.group(1)})" if codes else ""
    return (f"its worker process died{shown}: killed for memory (out of memory), a crash "
            "outside Python, or os._exit")  # fmt: skip
