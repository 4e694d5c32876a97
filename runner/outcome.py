"""How a run ends, as metrics.json and the error a user sees.

A finished run's metrics.json has "status": "ok". A run that diverged under
`train.on_nonfinite=stop` (or that `skip` could not save) has "status": "diverged", the
first non-finite step, the step it stopped at, the losses (NaN written as null) and its
last good checkpoint; it writes no model.pt, so nothing that looks like a result.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from runner import artifacts
from runner.errors import TrainingDiverged
from runner.faults import NonFinite
from runner.tying import count_parameters

if TYPE_CHECKING:
    from runner.train import Setup


def metrics_of(
    setup: Setup, initial: dict[str, float], final: dict[str, float], wall: float, status: str
) -> dict[str, Any]:
    """metrics.json's fields: losses before and after ({"train", "val"}), counts, timing."""
    unique, total = count_parameters(setup.model)
    done = setup.done_step - setup.start_step
    return {
        "status": status,
        "initial_train_loss": initial["train"], "initial_val_loss": initial["val"],
        "final_train_loss": final["train"], "final_val_loss": final["val"],
        "steps": setup.steps, "resumed_from_step": setup.start_step, "wall_time_s": wall,
        "steps_per_s": done / wall if wall > 0 else 0.0,
        "params_unique": unique, "params_total": total, "device": str(setup.device),
        "nonfinite_skipped": setup.watch.skipped,
        # Wall-clock time (Unix seconds) the first step ended: runner.bench's time to first step.
        "first_step_at": setup.first_step_at,
    }  # fmt: skip


def diverged_error(setup: Setup, bad: NonFinite, kept: str | None = None) -> TrainingDiverged:
    """The one-line error for `bad`: what, the first bad step, the policy, and (for a run that
    stopped cleanly) `kept`, the last good checkpoint."""
    policy = setup.watch.policy
    skipped = f", {setup.watch.skipped} updates skipped" if policy == "skip" else ""
    what = f"{bad.what} at step {bad.step} (train.on_nonfinite={policy}{skipped})"
    if kept is None:
        return TrainingDiverged.of(what)
    return TrainingDiverged.of(f"{what}; last good checkpoint: {kept}", stopped=True)


def stop_diverged(
    run_dir: Path,
    setup: Setup,
    bad: NonFinite,
    metrics: dict[str, Any],
    good: tuple[Path, int] | None,
) -> TrainingDiverged:
    """Write metrics.json for a run that diverged (`metrics` from `metrics_of`, status
    "diverged"); return the error to raise. `good` is the last checkpoint known to hold
    finite weights (path, step), if any."""
    metrics = {**metrics, "diverged_at_step": bad.step, "stopped_at_step": setup.done_step,
               "reason": bad.what, "last_good_checkpoint": str(good[0]) if good else None,
               "last_good_checkpoint_step": good[1] if good else None}  # fmt: skip
    artifacts.save_metrics(run_dir, metrics)
    return diverged_error(setup, bad, f"{good[0]} at step {good[1]}" if good else "none")
