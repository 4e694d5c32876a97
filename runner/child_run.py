"""A training run started by another command (`runner.reproduce`), stopped the way a run
in a terminal is: Ctrl-C, SIGTERM and a closed terminal each reach it once, it ends its
step and saves a checkpoint, and its own line says how to go on.

The run gets a session of its own, so a Ctrl-C in the terminal reaches the parent alone,
which passes it on once: had both got it, the run's second Ctrl-C would stop it at once.
SIGTERM is passed on as it is, SIGHUP (the terminal closed) as SIGTERM. Should the parent
end without passing anything on (SIGKILL), Linux sends the run SIGTERM
(PR_SET_PDEATHSIG), so no run trains on alone.
"""

from __future__ import annotations

import signal
import subprocess
import threading
from collections.abc import Sequence

PASSED_ON = {signal.SIGTERM: signal.SIGTERM, signal.SIGHUP: signal.SIGTERM}


def run_passing_signals(command: Sequence[str], cwd: str | None) -> subprocess.CompletedProcess:
    """Run `command` to its end, its output captured, passing Ctrl-C (KeyboardInterrupt
    here) on as SIGINT and PASSED_ON's signals as theirs (handlers only in the main
    thread, put back after). A second Ctrl-C kills it."""
    process: subprocess.Popen | None = None
    held: list[int] = []  # a signal that came before the run existed

    def pass_on(signum: int, frame: object) -> None:
        if process is None:
            held.append(PASSED_ON[signum])
        elif process.poll() is None:
            process.send_signal(PASSED_ON[signum])

    previous = {}
    if threading.current_thread() is threading.main_thread():
        previous = {signum: signal.signal(signum, pass_on) for signum in PASSED_ON}
    try:
        try:
            process = subprocess.Popen(
                list(command), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                cwd=cwd, start_new_session=True, preexec_fn=_end_with_parent,
            )  # fmt: skip
            for signum in held:
                process.send_signal(signum)
            stdout, stderr = process.communicate()
        except KeyboardInterrupt:
            if process is None:
                raise
            process.send_signal(signal.SIGINT)
            stdout, stderr = process.communicate()  # a second Ctrl-C: killed (below)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        if process is not None and process.poll() is None:
            process.kill()
    return subprocess.CompletedProcess(list(command), process.returncode, stdout, stderr)


def _end_with_parent() -> None:
    """In the child, before it runs: SIGTERM when the parent ends (Linux; elsewhere
    nothing)."""
    import contextlib
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG
