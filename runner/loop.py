"""The training loop proper: slice a batch, forward, backward, step; log on logging steps only.

On a step that does not log, the loop launches the model's own kernels and nothing
else: no hooks, no statistics, no host syncs (the progress line reads the loss at
most ten times a run, the bar only on steps that log or every 50 steps).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable

import torch
from omegaconf import DictConfig

from runner.errors import TrainingDiverged
from runner.stats import StepStats
from runner.tensorboard import RunWriter
from runner.train import Setup, evaluate

log = logging.getLogger("runner")
BAR_REFRESH_STEPS = 50  # without logging, the bar reads the loss this often


def run_loop(
    cfg: DictConfig, setup: Setup, writer: RunWriter, checkpoint: Callable[[int], None]
) -> None:
    """Run steps `setup.start_step + 1` to `setup.steps`, writing statistics to `writer` as
    `cfg.log` says and calling `checkpoint(step)` every `train.checkpoint_every` steps."""
    model, data, optimizer = setup.model, setup.data, setup.optimizer
    batch, steps = cfg.train.batch_size, setup.steps
    every, hist_every = cfg.log.every, cfg.log.hist_every
    val_every, clip = cfg.train.val_every, cfg.train.get("grad_clip")
    checkpoint_every, first = cfg.train.get("checkpoint_every", 0), setup.start_step + 1
    stats = StepStats(model, cfg.log.hist_bins) if (every or hist_every) else None
    per_epoch = data.n_train // batch
    progress = setup.progress
    bar = _bar(steps, setup.start_step) if progress == "bar" else None
    line_every = max(1, steps // 10)
    started = time.perf_counter()
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
        loss = setup.loss_fn(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if logs:
            stats.before_update(scalars, histograms)
        if clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        optimizer.step()
        # The rate this step used, read before the schedule moves it.
        lr = optimizer.param_groups[0]["lr"]
        if setup.scheduler is not None:
            setup.scheduler.step()
        shown_loss = None
        if logs:
            record = stats.finish(scalars, histograms, {"loss/train": loss} if scalars else {})
            if scalars:
                record.scalars["lr"] = lr
                shown_loss = record.scalars["loss/train"]
                if not math.isfinite(shown_loss):  # seen for free: the value is on the host
                    writer.record(step, record)
                    raise TrainingDiverged.of(f"the loss is {shown_loss} at step {step}")
            writer.record(step, record)
        if val_every and (step % val_every == 0 or step == steps):
            writer.scalar("loss/val", evaluate(setup, data.x_val, data.y_val), step)
        setup.done_step = step
        if checkpoint_every and step % checkpoint_every == 0 and step != steps:
            checkpoint(step)  # the final one is written after the loop
        if bar is not None:
            if shown_loss is None and step % BAR_REFRESH_STEPS == 0:
                shown_loss = loss.item()
            if shown_loss is not None:
                bar.set_postfix(loss=f"{shown_loss:.4g}", refresh=False)
            bar.update(1)
        elif progress == "lines" and (step % line_every == 0 or step == steps):
            rate = (step - first + 1) / max(time.perf_counter() - started, 1e-9)
            log.info("step %d/%d  loss %.6g  %.1f steps/s", step, steps, loss.item(), rate)
    if bar is not None:
        bar.close()


def _bar(steps: int, done: int):
    from tqdm import tqdm

    return tqdm(total=steps, initial=done, unit="step", dynamic_ncols=True)
