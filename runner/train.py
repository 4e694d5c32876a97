"""Training on synthetic data: build, check, loop, log, save.

`prepare` does every check a config can fail (settings, model, data, loss,
optimizer, the output shape against the targets) before any work and without
changing the model; `train` runs the loop and writes the run's files.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from runner import artifacts
from runner.builder import BuiltModel, build
from runner.config_values import source, to_plain
from runner.data import Dataset, make_data
from runner.device import resolve_device
from runner.errors import ConfigError, first_line
from runner.faults import NonFinite, NonFiniteWatch
from runner.forward import Forward
from runner.setup_checks import check_fit, check_scheduler, check_settings
from runner.tensorboard import RunWriter
from runner.tying import count_parameters

log = logging.getLogger("runner")

# The loss each kind of data gets unless train.loss names one.
DEFAULT_LOSS = {
    "regression": "torch.nn.MSELoss",
    "teacher": "torch.nn.MSELoss",
    "classification": "torch.nn.CrossEntropyLoss",
}


@dataclass
class Setup:
    """Everything a run needs, built and checked."""

    built: BuiltModel
    model: nn.Module
    data: Dataset
    loss_fn: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    device: torch.device
    steps: int
    generator: torch.Generator  # the data stream: one shuffle per epoch
    progress: str  # "bar", "lines" or "off"
    watch: NonFiniteWatch  # train.on_nonfinite: what a NaN or inf loss or gradient does
    forward: Forward  # the step's forward pass and loss: train.amp, train.compile
    epoch_rng_state: torch.Tensor | None = None  # the data stream before this epoch's shuffle
    start_step: int = 0  # steps already done (a resumed run)
    done_step: int = 0  # the last step the loop finished
    first_step_at: float | None = None  # time.time() when the first step was done


def _instantiate(node: Any, where: str, *args: Any) -> Any:
    from hydra.utils import instantiate

    from runner.config_values import import_object

    target = node.get("_target_") if hasattr(node, "get") else None
    if isinstance(target, str):
        import_object(target, where)  # Hydra's "Error locating target" names no choices
    try:
        made = instantiate(node)
        return made(*args) if args else made
    except Exception as error:
        raise ConfigError(f"{where}: {first_line(error)}") from error


def prepare(cfg: DictConfig) -> Setup:
    """Build the model, data, loss and optimizer on the chosen device, checking all of them."""
    from runner.resume import check_same_config, load_checkpoint, restore

    check_settings(cfg)
    resume = cfg.train.get("resume")
    checkpoint = load_checkpoint(resume) if resume is not None else None
    batch_size = cfg.train.batch_size
    device = resolve_device(cfg.device)
    built = build(cfg)
    torch.manual_seed(cfg.seed)  # dropout and anything else drawing from the global stream
    model = built.module.to(device)
    try:
        data = make_data(to_plain(cfg.data), built.input_shape, cfg.seed, device,
                         source(cfg, "data"))  # fmt: skip
    except (MemoryError, RuntimeError) as error:  # n_train=1e11: the allocator refuses
        if isinstance(error, RuntimeError) and "memory" not in str(error).lower():
            raise
        raise ConfigError(f"{source(cfg, 'data')}: the data does not fit in memory "
                          f"(data.n_train={cfg.data.n_train}, data.n_val={cfg.data.n_val}): "
                          f"{first_line(error)}") from error  # fmt: skip
    if batch_size > data.n_train:
        raise ConfigError(
            f"train.batch_size={batch_size} is larger than the {data.n_train} training samples "
            f"({source(cfg, 'data')}: n_train)"
        )
    if batch_size == 1 and any(
        isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()
    ):
        raise ConfigError("train.batch_size=1: BatchNorm needs at least 2 samples per batch")
    steps = cfg.train.steps
    if cfg.train.get("epochs") is not None:
        steps = cfg.train.epochs * (data.n_train // batch_size)
    loss_fn = _instantiate(
        cfg.train.get("loss") or {"_target_": DEFAULT_LOSS[data.kind]}, "train.loss"
    )
    check_fit(model, data, loss_fn, cfg)
    optim_where = source(cfg, "optim")
    optimizer = _instantiate(cfg.optim.optimizer, f"{optim_where}: optimizer", model.parameters())
    scheduler = None
    if cfg.optim.get("scheduler") is not None:
        scheduler = _instantiate(cfg.optim.scheduler, f"{optim_where}: scheduler", optimizer)
        check_scheduler(scheduler, steps, f"{optim_where}: scheduler")
    generator = torch.Generator(device).manual_seed(cfg.seed)
    watch = NonFiniteWatch(cfg.train.get("on_nonfinite", "stop"), model, device)
    forward = Forward(model, device, cfg.train.get("amp"), cfg.train.get("compile", False))
    setup = Setup(built, model, data, loss_fn, optimizer, scheduler, device, steps, generator,
                  _progress_mode(cfg), watch, forward)  # fmt: skip
    if checkpoint is not None:
        per_epoch = data.n_train // batch_size
        check_same_config(checkpoint, cfg, f"train.resume={resume}")
        setup.start_step = restore(setup, checkpoint, per_epoch, f"train.resume={resume}")
        setup.done_step = setup.start_step
        if setup.start_step > steps:
            raise ConfigError(
                f"train.resume={resume}: the checkpoint is at step {setup.start_step}, past "
                f"train.steps={steps}"
            )
    return setup


def evaluate(setup: Setup, x: torch.Tensor, y: torch.Tensor) -> float:
    """The mean loss over a whole split, in eval mode (one forward, one host copy)."""
    if x.shape[0] == 0:
        return float("nan")
    was_training = setup.model.training
    setup.model.eval()
    with torch.no_grad():
        value = setup.loss_fn(setup.model(x), y).item()
    setup.model.train(was_training)
    return value


def _losses(setup: Setup) -> dict[str, float]:
    data = setup.data
    return {"train": evaluate(setup, data.x_train, data.y_train),
            "val": evaluate(setup, data.x_val, data.y_val)}  # fmt: skip


def hparams_of(cfg: DictConfig, setup: Setup) -> dict[str, Any]:
    """What the HParams dashboard shows for a run: chosen options, seed and key numbers.
    `lr` is the configured rate (read before any schedule moves it)."""
    unique, total = count_parameters(setup.model)
    group = setup.optimizer.param_groups[0]
    return {**{g: str(o) for g, o in cfg.choices.items()}, "seed": cfg.seed,
            "lr": group.get("initial_lr", group["lr"]), "batch_size": cfg.train.batch_size,
            "steps": setup.steps, "params_unique": unique, "params_total": total}  # fmt: skip


def train(
    cfg: DictConfig, run_dir: Path, provenance: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Train as `cfg` says; write run.json, tb/, model.pt, checkpoint.pt and metrics.json
    into `run_dir`. `provenance` (overrides, config_dir) goes into run.json.

    A NaN or infinite loss or gradient ends the run as `train.on_nonfinite` says: `stop`
    flushes tb/, keeps the last good checkpoint.pt, writes metrics.json with "status":
    "diverged", no model.pt, and raises TrainingDiverged(stopped=True); `raise` raises
    TrainingDiverged; `skip` drops those updates and carries on. A Ctrl-C or SIGTERM that
    the loop held to the end of a step leaves a checkpoint of that step, then propagates
    (KeyboardInterrupt or faults.Terminated); one that was not held leaves the last one."""
    from runner.loop import log_initial_state, run_loop
    from runner.outcome import diverged_error, metrics_of, stop_diverged
    from runner.provenance import record_run
    from runner.resume import checkpoint_state

    setup = prepare(cfg)
    log.info("device: %s", setup.device)
    if run_dir.is_dir():
        artifacts.remove_temporaries(run_dir)  # what a killed earlier run here left
    record_run(run_dir, **(provenance or {}), seed=cfg.seed, device=str(setup.device),
               threads=torch.get_num_threads(), choices=dict(cfg.choices))  # fmt: skip
    hparams = hparams_of(cfg, setup)
    writer = RunWriter(run_dir / "tb")  # opens its event file on the first write only
    initial = _losses(setup)
    log_initial_state(cfg, setup, writer, initial)
    resume = cfg.train.get("resume")
    # The newest checkpoint known to hold finite weights: (path, step).
    good = (Path(resume), setup.start_step) if resume is not None else None

    def checkpoint(step: int) -> None:
        nonlocal good
        if good == (run_dir / artifacts.CHECKPOINT_FILE, step):
            return  # written at this step already (a signal on a checkpoint step)
        setup.watch.verify(step)  # never replace a good checkpoint with non-finite weights
        artifacts.save_checkpoint(run_dir, checkpoint_state(cfg, setup, step))
        good = (run_dir / artifacts.CHECKPOINT_FILE, step)

    started = time.perf_counter()
    try:
        run_loop(cfg, setup, writer, checkpoint)
        final = _losses(setup)
        if not math.isfinite(final["train"]):
            raise NonFinite(setup.done_step, f"the final train loss is {final['train']}")
    except NonFinite as bad:
        writer.close()
        wall = time.perf_counter() - started
        if setup.watch.policy == "raise":
            raise diverged_error(setup, bad) from None
        metrics = metrics_of(setup, initial, _losses(setup), wall, "diverged")
        raise stop_diverged(run_dir, setup, bad, metrics, good) from None
    except BaseException as error:
        writer.close()  # keep what was logged up to the failure
        if isinstance(error, KeyboardInterrupt) and setup.done_step == setup.steps:
            checkpoint(setup.done_step)  # every step ran (a signal in the last checks)
        raise
    try:
        metrics = metrics_of(setup, initial, final, time.perf_counter() - started, "ok")
        writer.text("config", f"```yaml\n{OmegaConf.to_yaml(cfg, resolve=True)}\n```")
        finals = {"final/loss_train": final["train"], "final/loss_val": final["val"]}
        writer.hparams(hparams, {k: v for k, v in finals.items() if math.isfinite(v)}, setup.steps)
        writer.close()
        artifacts.save_model(run_dir, setup.model)
        checkpoint(setup.steps)
    except KeyboardInterrupt:  # every step ran: resuming from here only writes the files
        writer.close()
        checkpoint(setup.steps)
        raise
    artifacts.save_metrics(run_dir, metrics)
    return metrics


def _progress_mode(cfg: DictConfig) -> str:
    mode = cfg.train.get("progress", "auto")
    if mode == "auto":
        return "bar" if sys.stderr.isatty() else "lines"
    return mode
