"""Imported first by a joblib sweep's worker server (runner/launchers.py), before torch.

It turns the garbage collector off for the server's imports (runner/start_up.py), and
makes the standard streams survive a reader that leaves (runner/pipes.py): the workers
log to the sweep's stdout.

A Ctrl-C reaches the whole process group, the server too, which spends its first
seconds importing torch and the runner: Python would end it with the interrupted
import's traceback. The server starts with SIGINT blocked (runner/launchers.py); this
module's handler ignores it there, and unblocks it. The sweep decides: it goes on (the
jobs still to start record the interrupt, so they need the server to fork their
workers) or ends, and the server then ends with it (SIGTERM at exit, or its parent
gone). Its workers, forked later, inherit the handler, and there it raises
KeyboardInterrupt as Python's own does, so a job checkpoints and records the interrupt.
"""

from __future__ import annotations

import os
import signal

from runner import start_up
from runner.pipes import survive_closed_readers

_SERVER = os.getpid()


def _interrupt(signum: int, frame: object) -> None:
    if os.getpid() != _SERVER:  # a worker: its job stops after its step
        raise KeyboardInterrupt


# A sweep started with SIGINT ignored (a script's background job) passes that on: its
# server and jobs keep ignoring it.
if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:
    signal.signal(signal.SIGINT, _interrupt)
signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
survive_closed_readers()  # `python -m runner -m ... | head`: the workers' jobs go on
start_up.pause()  # until runner.worker_preloaded, the last of the server's imports
# The forkserver skips a preload that fails to import: should the last one fail, each
# worker still turns the collector back on (collect, freeze) before its first job.
os.register_at_fork(after_in_child=start_up.resume)
