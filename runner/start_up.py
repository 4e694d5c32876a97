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
"""

from __future__ import annotations

import gc

_paused = False  # the collector is off because `pause` turned it off


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
