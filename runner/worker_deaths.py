"""A joblib sweep whose worker process dies (killed for memory, a crash in C, `os._exit`).

Loky then breaks its executor: every running job dies with it and Hydra's joblib launcher
raises TerminatedWorkerError, so the sweep ended with a traceback, no summary and no
record of the jobs that were running. Here the launcher's `launch` goes on instead. Each
job notes its number and folder when it begins (runner/sweep.py `mark_started`), so:

- the jobs that had ended (their job.json is written) keep their results;
- the jobs that had begun run again one at a time, each in a worker of its own, so a
  second death is that job's own: it is recorded as failed, with the workers' exit codes,
  and the others run to their end (what the killed attempt left in its job dir, never a
  finished job's, is cleared first);
- the jobs that had not begun run in parallel again, as before.

Every round settles each job that had begun, so the rounds are bounded. The sweep then
ends as any sweep with a failed job: its summary, and exit code 1.
"""

from __future__ import annotations

import re
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

    from runner.sweep import JOB_FILE, record_job, started_dir, started_marker

    sweep_dir = Path(str(launcher.config.hydra.sweep.dir)).resolve()
    returns: dict[int, Any] = {}
    pending = dict(jobs)
    for _ in range(len(jobs) + 1):
        for num in list(pending):
            job_dir = started_dir(sweep_dir, num)
            if job_dir is None:
                continue  # not begun: runs in parallel below
            overrides = pending.pop(num)
            if (job_dir / JOB_FILE).is_file():  # it ended and recorded how
                returns[num] = _ended(overrides)
                continue
            _clear(job_dir, sweep_dir)
            started_marker(sweep_dir, num).unlink()
            try:  # alone: a death now is this job's own
                returns[num] = _run(launcher, {num: overrides}, alone=True)[0]
            except TerminatedWorkerError as death:
                job_dir.mkdir(parents=True, exist_ok=True)
                record_job(job_dir, sweep_dir, overrides, "failed", _why(death))
                returns[num] = _ended(overrides)
        if not pending:
            break
        try:
            returns.update(zip(pending, _run(launcher, pending, alone=False), strict=True))
            pending = {}
        except TerminatedWorkerError:
            continue  # another death: settle the jobs that had begun
    for num, overrides in pending.items():  # workers died before any of these began
        job_dir = sweep_dir / f"not_run_{num}"
        job_dir.mkdir(parents=True, exist_ok=True)
        record_job(job_dir, sweep_dir, overrides, "failed",
                   "not run: worker processes kept dying before it began")  # fmt: skip
        returns[num] = _ended(overrides)
    return [returns[num] for num in sorted(returns)]


def _clear(job_dir: Path, sweep_dir: Path) -> None:
    """Remove what a killed attempt wrote in `job_dir` (no job.json: no result), when the
    folder is a job's own: strictly inside the sweep dir, holding no other job's files."""
    from runner.sweep import JOB_FILE

    folder = job_dir.resolve()
    if folder == sweep_dir or sweep_dir not in folder.parents or not folder.is_dir():
        return
    if not any(folder.rglob(JOB_FILE)):
        shutil.rmtree(folder, ignore_errors=True)


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
    if alone:  # an executor of its own: joblib's reusable one must stay joblib's
        from joblib.externals.loky import ProcessPoolExecutor

        executor = ProcessPoolExecutor(max_workers=1)
        try:
            return [executor.submit(function, *args).result() for function, args in calls]
        finally:
            executor.shutdown(wait=True, kill_workers=True)
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
    codes = re.search(r"exit codes of the workers are (\{[^}]*\})", str(death))
    shown = f" (exit codes {codes.group(1)})" if codes else ""
    return (f"its worker process died{shown}: killed for memory (out of memory), a crash "
            "outside Python, or os._exit")  # fmt: skip
