"""How a joblib sweep's workers start: forked from a server that imported the runner once.

Hydra's joblib launcher hard-codes joblib's loky backend, whose workers start as fresh
interpreters: each imports torch, torch._dynamo, Hydra and the runner (4.5 s alone on
this 2-core CPU), longer than a tiny job takes. Loky can start its workers from a
multiprocessing forkserver instead: the server imports those modules once, and every
worker is a fork of it, with everything imported and no thread pool started yet.

The server is started as early as the launcher is known, so its imports run while this
process imports Hydra and composes the sweep (Hydra composes every job's config here
before it launches any): from the command line itself when it says
`hydra/launcher=joblib` (before Hydra is imported), else once the command line is
composed (an experiment that picks the launcher). Threads per worker are set by the job
(runner/__main__.py, `_cap_threads`): a forked worker does not read the OMP_NUM_THREADS
that joblib puts in a spawned worker's environment.

Measured with `python -m runner.bench --only sweep` (README, Performance).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from runner.worker_deaths import survive_worker_deaths

JOBLIB_LAUNCHER = "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher"
JOBLIB_OVERRIDE = "hydra/launcher=joblib"

# What a job imports before its first step, after the server's Ctrl-C handler and with the
# garbage collector off; the last one collects and freezes what they made (start_up.py). A
# module the server cannot import is skipped: multiprocessing's forkserver ignores
# ImportError there.
WORKER_MODULES = ("runner.worker_server", "runner.__main__", "runner.train", "runner.faults",
                  "runner.sweep", "torch._dynamo", "torch.utils.tensorboard",
                  "runner.worker_preloaded")  # fmt: skip

_started = False  # the server runs and loky uses it

# Flags with which Hydra launches no job.
_NO_JOBS = {"-h", "--help", "-hh", "--hydra-help", "-c", "--cfg", "-i", "--info", "-sc",
            "--shell-completion", "--experimental-rerun"}  # fmt: skip


def start_joblib_workers_from_argv(argv: Sequence[str]) -> bool:
    """Start the worker server (`start_joblib_workers`) when the command line alone says a
    multirun on the joblib launcher (`-m ... hydra/launcher=joblib`); return whether it did.

    Called before Hydra is imported, so the server's imports overlap the composing. A
    command line that then fails its check has started a server for nothing: it exits
    when it has finished importing, as its parent is gone."""
    args = set(argv)
    multirun = bool(args & {"-m", "--multirun"})
    if not multirun or JOBLIB_OVERRIDE not in args or args & _NO_JOBS:
        return False
    return start_joblib_workers({"_target_": JOBLIB_LAUNCHER})


def start_joblib_workers(launcher: Mapping[str, Any]) -> bool:
    """When `launcher` (a multirun's hydra.launcher) is Hydra's joblib launcher, make loky
    start its workers from a forkserver that preloads WORKER_MODULES, and start that server
    now (it imports in the background); return whether loky now uses it. Any other
    launcher is left alone; calling it again is harmless.

    Only on POSIX (Windows has no fork), and only when the `__main__` module is importable
    by name (`python -m runner`), since each worker imports it again."""
    global _started
    if launcher.get("_target_") != JOBLIB_LAUNCHER:
        return False
    if sys.platform == "win32" or getattr(sys.modules["__main__"], "__spec__", None) is None:
        survive_worker_deaths()  # (a script run by path: a worker would run it again)
        return False
    if _started:
        return True
    import multiprocessing
    from multiprocessing import forkserver

    multiprocessing.get_context("forkserver").set_forkserver_preload(list(WORKER_MODULES))
    # Started with SIGINT blocked (a child inherits the mask), so a Ctrl-C while it starts
    # Python waits until runner.worker_server's handler is there; here it reaches the
    # handler once the server is started. (The resource tracker first: starting it
    # unblocks SIGINT here.)
    from multiprocessing import resource_tracker

    resource_tracker.ensure_running()
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        forkserver.ensure_running()  # before importing joblib (0.17 s): its imports lead
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
    from joblib.externals.loky.backend.context import set_start_method

    set_start_method("forkserver", force=True)
    survive_worker_deaths()  # a dead worker (killed for memory) fails its job, not the sweep
    if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:  # (a script's background job)
        signal.signal(signal.SIGINT, _wait_for_the_jobs)
    atexit.register(_stop_server)
    _started = True
    return True


def stop_workers() -> None:
    """At the end of a joblib sweep (every job returned): kill the idle workers and end the
    server now. Left to the interpreter's exit, loky joins each worker as it shuts down,
    0.2 s more before the command returns."""
    from joblib.externals.loky import reusable_executor

    executor = getattr(reusable_executor, "_executor", None)
    if executor is not None:
        executor.shutdown(wait=True, kill_workers=True)
    _stop_server()


def _stop_server() -> None:
    """At exit, end the worker server at once. Left to itself it exits when this process
    has, tearing torch down for a second while holding this command's stdout open: a
    script reading the output, or `| tee`, would wait for it."""
    from multiprocessing import forkserver

    pid = getattr(forkserver._forkserver, "_forkserver_pid", None)  # none: not started
    if pid:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGTERM)  # no handler there: it ends without teardown


def _wait_for_the_jobs(signum: int, frame: object) -> None:
    """This process's Ctrl-C during a joblib sweep: the workers get it too, and each running
    job ends its step, checkpoints, records itself as interrupted and returns; the jobs
    still to start see the sweep marked interrupted and record that without training.
    So the sweep ends as usual, with its summary, and exits 130. Raising here would make
    joblib kill the workers on the way; a second Ctrl-C does. Before loky has made its
    workers (Hydra still composing) it stops at once, as in a run; while the imports run,
    once they are done (runner/start_up.py)."""
    from runner import start_up

    if start_up.note_ctrl_c_while_starting():
        return
    from joblib.externals.loky import reusable_executor

    from runner import sweep

    if getattr(reusable_executor, "_executor", None) is None or sweep.current_sweep_dir is None:
        raise KeyboardInterrupt
    sweep.mark_interrupted(sweep.current_sweep_dir)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    print("SIGINT: the running jobs stop after their step (again to stop at once)", file=sys.stderr)


def give_the_job_pythons_ctrl_c() -> None:
    """In a worker forked from the server: put back Python's own SIGINT handler, which the
    training loop holds to the end of a step (runner/faults.py). The server's quiet one
    (runner/worker_server.py), inherited, would raise mid-step, where an exception can be
    swallowed (a `__del__`, a callback) and the job train on."""
    if getattr(signal.getsignal(signal.SIGINT), "__module__", None) == "runner.worker_server":
        signal.signal(signal.SIGINT, signal.default_int_handler)
