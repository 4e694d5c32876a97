"""Start-up without the garbage collector's repeated full passes over the imports.

A process that trains imports Hydra, torch and torch._dynamo (every torch.optim optimizer
imports it when it is made): ~330k objects that live as long as the process. While they
are being made, CPython's collector scans them again and again: 5 full and ~760 young
collections, 0.5-0.6 s of a 2.7 s import on this 2-core CPU (counted with gc.callbacks).
So such a process starts with the collector off (`pause`); once the imports are done,
and before any job's objects exist, `resume` collects once what they left (~190k of
those objects are garbage cycles), freezes what survived (`gc.freeze`: no collection
scans it again) and turns the collector back on for what the jobs make.

A joblib sweep's worker server does the same around its preloads (runner/launchers.py):
its workers are forked after the freeze, so loky's `gc.collect()` after a job (at most
once a second; 0.17-0.19 s with the imports unfrozen, every other job of the benchmark's
sweep) scans only what the jobs made.

Ctrl-C while the imports run is noted, not raised (`defer_ctrl_c`), and raised once they
are done (`ctrl_c_from_now`): a KeyboardInterrupt raised inside a module's import
(numpy's, within torch's) can be swallowed there, so the command runs on, or leave the
module half made for the next import to fail on with a traceback.
"""

from __future__ import annotations

import gc
import signal

_paused = False  # the collector is off because `pause` turned it off
_deferring = False  # Ctrl-C is noted, not raised (`defer_ctrl_c` ... `ctrl_c_from_now`)
_pressed = False  # ... and it was pressed


def pause() -> None:
    """Turn the collector off until `resume`: the first thing a process that imports torch
    does."""
    global _paused
    if gc.isenabled():
        gc.disable()
        _paused = True


def resume() -> None:
    """After `pause` (else nothing): collect what start-up left, freeze what survived and turn
    the collector back on.

    Call it only while no job's objects exist: a frozen object is never collected, so
    one that later became part of a garbage cycle (a finished job's config, model or
    optimizer) would never be freed."""
    global _paused
    if _paused:
        gc.collect()
        gc.freeze()
        gc.enable()
        _paused = False


def import_training_modules() -> None:
    """Import what training needs before its first step: the runner's training modules
    (torch with them) and torch._dynamo, which the optimizer would import when it is
    made (torch.optim's `Optimizer.add_param_group`)."""
    import torch._dynamo  # noqa: F401

    import runner.faults  # noqa: F401
    import runner.train  # noqa: F401


def defer_ctrl_c() -> None:
    """From now until `ctrl_c_from_now`, Ctrl-C only takes note. A process that started with
    SIGINT ignored (a background job of a script) keeps ignoring it."""
    global _deferring
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        return
    signal.signal(signal.SIGINT, _note_ctrl_c)
    _deferring = True


def _note_ctrl_c(signum: int, frame: object) -> None:
    note_ctrl_c_while_starting()


def note_ctrl_c_while_starting() -> bool:
    """For a SIGINT handler installed during start-up (a joblib sweep's): note the press and
    return True while `defer_ctrl_c` holds, else return False (the handler acts)."""
    global _pressed
    if _deferring:
        _pressed = True
    return _deferring


def ctrl_c_from_now() -> None:
    """End `defer_ctrl_c`: Ctrl-C raises KeyboardInterrupt again (or does what a handler
    installed meanwhile does), and one pressed while starting is raised now."""
    global _deferring
    if not _deferring:
        return
    _deferring = False
    if signal.getsignal(signal.SIGINT) is _note_ctrl_c:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    if _pressed:
        raise KeyboardInterrupt
