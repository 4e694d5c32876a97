"""The training loop proper: slice a batch, forward, backward, step; log on logging steps only.

On a step that does not log, the loop launches the model's own kernels and nothing
else: no hooks, no statistics, no host syncs (the progress line reads the loss at
most ten times a run, the bar only on steps that log or every 50 steps). The watch for
non-finite values adds one small device copy a step under `train.on_nonfinite=stop` or
`raise`, and one host read a step under `skip` (see runner/faults.py). A Ctrl-C or
SIGTERM is held to the end of the step, which is then checkpointed.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from typing import Any

import torch
from omegaconf import DictConfig

from runner.faults import StepBoundary
from runner.stats import StepStats
from runner.tensorboard import RunWriter
from runner.train import Setup, evaluate

log = logging.getLogger("runner")
BAR_REFRESH_STEPS = 50  # without logging, the bar reads the loss this often


def run_loop(
    cfg: DictConfig, setup: Setup, writer: RunWriter, checkpoint: Callable[[int], None]
) -> None:
    """Run steps `setup.start_step + 1` to `setup.steps`, writing statistics to `writer` as
    `cfg.log` says and calling `checkpoint(step)` every `train.checkpoint_every` steps.

    Raises faults.NonFinite when `setup.watch` finds a NaN or inf (on a logging step, in a
    checkpoint, at the end); a held signal ends the loop after `checkpoint(step)` with
    KeyboardInterrupt or faults.Terminated. `setup.done_step` is the last step run."""
    bar = _bar(setup.steps, setup.start_step) if setup.progress == "bar" else None
    logs = cfg.log.every or cfg.log.hist_every
    stats = StepStats(setup.model, cfg.log.hist_bins) if logs else None
    try:
        with StepBoundary() as signals:
            _steps(cfg, setup, writer, checkpoint, signals, bar, stats)
            setup.watch.verify(setup.done_step)  # the one read a run without logging makes
            if signals.pending is not None:  # a signal during that check: the step is whole
                checkpoint(setup.done_step)
    finally:
        if bar is not None:
            bar.close()
        if stats is not None:
            stats.unhook()  # the model leaves the loop as it came: no hooks


def _steps(cfg: DictConfig, setup: Setup, writer: RunWriter, checkpoint: Callable[[int], None],
           signals: StepBoundary, bar: Any, stats: StepStats | None) -> None:  # fmt: skip
    model, data, optimizer, watch = setup.model, setup.data, setup.optimizer, setup.watch
    batch, steps = cfg.train.batch_size, setup.steps
    every, hist_every = cfg.log.every, cfg.log.hist_every
    val_every, clip = cfg.train.val_every, cfg.train.get("grad_clip")
    checkpoint_every, first = cfg.train.get("checkpoint_every", 0), setup.start_step + 1
    per_epoch = data.n_train // batch
    progress = setup.progress
    line_every = max(1, steps // 10)
    started = time.perf_counter()
    watch.start(setup.start_step)
    model.train()
    x_epoch = y_epoch = None
    for step in range(first, steps + 1):
        k = (step - 1) % per_epoch
        if k == 0 or step == first:  # an epoch starts (or resumes): one shuffle on the device
            setup.epoch_rng_state = setup.generator.get_state()  # host-side state: no sync
            order = torch.randperm(data.n_train, generator=setup.generator, device=setup.device)
            x_epoch, y_epoch = data.x_train[order], data.y_train[order]
        x, y = x_epoch[k * batch : (k + 1) * batch], y_epoch[k * batch : (k + 1) * batch]
        scalars = bool(every) and step % every == 0
        histograms = bool(hist_every) and step % hist_every == 0
        logs = scalars or histograms  # stats exists whenever either interval is non-zero
        if logs:
            stats.start(activations=scalars)
        elif stats is not None:
            stats.unhook()  # hooks only on steps that log
        loss = setup.forward(x, y, setup.loss_fn, hooked=scalars)  # activations: hooks, eager
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        update = watch.observe(loss)  # False only under `skip`, for a non-finite step
        if logs:
            stats.before_update(scalars, histograms, step)
        if update:
            if clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
            optimizer.step()
        # The rate this step used, read before the schedule moves it.
        lr = optimizer.param_groups[0]["lr"]
        if setup.scheduler is not None:
            step_schedule(setup.scheduler, step, cfg)
        shown_loss = None
        if logs:
            extra = {"loss/train": loss} if scalars else {}
            record = stats.finish(scalars, histograms, {**extra, **watch.logged()}, step)
            bad = watch.check_logged(step, record.scalars)  # seen for free: on the host already
            if scalars:
                record.scalars["lr"] = lr
                record.scalars.update(watch.scalars())
                shown_loss = record.scalars["loss/train"]
            writer.record(step, record)
            if bad is not None:
                setup.done_step = step
                raise bad
        if val_every and (step % val_every == 0 or step == steps):
            writer.scalar("loss/val", evaluate(setup, data.x_val, data.y_val), step)
        setup.done_step = step
        if step == first:
            setup.first_step_at = time.time()  # process start -> here: runner.bench's startup
        if checkpoint_every and step % checkpoint_every == 0 and step != steps:
            checkpoint(step)  # the final one is written after the loop
        if bar is not None:
            if shown_loss is None and step % BAR_REFRESH_STEPS == 0:
                shown_loss = loss.item()
            if shown_loss is not None:
                bar.set_postfix(loss=f"{shown_loss:.4g}", refresh=False)
            bar.update(1)
        elif progress == "lines" and (step % line_every == 0 or step == steps):
            shown_loss = loss.item()
            rate = (step - first + 1) / max(time.perf_counter() - started, 1e-9)
            log.info("step %d/%d  loss %.6g  %.1f steps/s", step, steps, shown_loss, rate)
        if shown_loss is not None and not math.isfinite(shown_loss) and watch.policy != "skip":
            watch.verify(step)  # the host saw it anyway: stop now, not at the next check
        if signals.pending is not None:
            checkpoint(step)  # a consistent step: resuming from it gives the same bits
            signals.raise_pending()


def _bar(steps: int, done: int):
    from tqdm import tqdm

    return tqdm(total=steps, initial=done, unit="step", dynamic_ncols=True)


def log_initial_state(cfg: DictConfig, setup: Setup, writer: RunWriter, initial: dict) -> None:
    """Step 0: the initialised weights (norms, stds, histograms), the initial losses, and the
    activations of the first batch (the signal at init). The forward pass runs on a copy
    with the RNG put back, so training is the same with or without it."""
    from runner.probe import record_calls

    scalars, histograms = bool(cfg.log.every), bool(cfg.log.hist_every)
    if not (scalars or histograms) or setup.start_step:
        return
    stats = StepStats(setup.model, cfg.log.hist_bins)
    if scalars:
        stats.add_calls(record_calls(setup.model, setup.data.x_train[: cfg.train.batch_size]))
    record = stats.finish(scalars, histograms, {})
    if scalars:
        record.scalars["loss/train"] = initial["train"]
        if cfg.train.val_every and math.isfinite(initial["val"]):
            record.scalars["loss/val"] = initial["val"]
    writer.hold(0, record)  # written with the first write after step 1


def step_schedule(scheduler: Any, step: int, cfg: DictConfig) -> None:
    """`scheduler.step()`; a schedule that fails (StepLR with step_size 0 divides by it)
    ends the run with one line naming it, as a bad config does."""
    try:
        scheduler.step()
    except Exception as error:
        from runner.config_values import source
        from runner.errors import ConfigError, first_line

        raise ConfigError(
            f"{source(cfg, 'optim')}: scheduler: {type(scheduler).__name__}.step() failed "
            f"after step {step}: {first_line(error)}"
        ) from error
