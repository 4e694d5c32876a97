"""Training on synthetic data: build, check, loop, log, save.

`prepare` does every check a config can fail (model, data, loss, optimizer, the
output shape against the targets) before any work; `train` runs the loop and
writes the run's files. Nothing is computed for logging on steps that do not log.
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
from runner.config import source, to_plain
from runner.data import Dataset, make_data
from runner.device import resolve_device
from runner.errors import ConfigError
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
    generator: torch.Generator  # the data stream: shuffling each epoch
    progress: str  # "bar", "lines" or "off"


def _non_negative_int(node: DictConfig, key: str, where: str, minimum: int = 0) -> int:
    value = node.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{where}.{key} must be an integer >= {minimum}, got {value!r}")
    return value


def _instantiate(node: Any, where: str, *args: Any) -> Any:
    from hydra.utils import instantiate

    try:
        made = instantiate(node)
        return made(*args) if args else made
    except Exception as error:
        message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ConfigError(f"{where}: {message}") from error


def prepare(cfg: DictConfig) -> Setup:
    """Build the model, data, loss and optimizer on the chosen device, checking all of them."""
    train_cfg, log_cfg = cfg.train, cfg.log
    batch_size = _non_negative_int(train_cfg, "batch_size", "train", 1)
    for key in ("steps", "val_every"):
        _non_negative_int(train_cfg, key, "train")
    for key in ("every", "hist_every"):
        _non_negative_int(log_cfg, key, "log")
    _non_negative_int(log_cfg, "hist_bins", "log", 1)
    device = resolve_device(cfg.device)
    built = build(cfg)
    torch.manual_seed(cfg.seed)  # dropout and anything else drawing from the global stream
    model = built.module.to(device)
    data = make_data(to_plain(cfg.data), built.input_shape, cfg.seed, device, source(cfg, "data"))
    if batch_size > data.n_train:
        raise ConfigError(
            f"train.batch_size={batch_size} is larger than the {data.n_train} training samples "
            f"({source(cfg, 'data')}: n_train)"
        )
    steps = train_cfg.steps
    if train_cfg.get("epochs") is not None:
        epochs = _non_negative_int(train_cfg, "epochs", "train")
        steps = epochs * (data.n_train // batch_size)
    loss_node = train_cfg.get("loss") or {"_target_": DEFAULT_LOSS[data.kind]}
    loss_fn = _instantiate(loss_node, "train.loss")
    _check_fit(model, data, loss_fn, cfg)
    optimizer = _instantiate(cfg.optim.optimizer, f"{source(cfg, 'optim')}: optimizer",
                             model.parameters())  # fmt: skip
    scheduler = None
    if cfg.optim.get("scheduler") is not None:
        scheduler = _instantiate(
            cfg.optim.scheduler, f"{source(cfg, 'optim')}: scheduler", optimizer
        )
    generator = torch.Generator(device).manual_seed(cfg.seed)
    progress = _progress_mode(cfg)
    return Setup(
        built, model, data, loss_fn, optimizer, scheduler, device, steps, generator, progress
    )


def _check_fit(model: nn.Module, data: Dataset, loss_fn: nn.Module, cfg: DictConfig) -> None:
    """The model's output and the loss must fit the targets; one small batch tells."""
    with torch.no_grad():
        out = model(data.x_train[:2])
        expected = (
            data.y_train.shape[1:] if data.kind != "classification" else (cfg.data.n_classes,)
        )
        if tuple(out.shape[1:]) != tuple(expected):
            raise ConfigError(
                f"{source(cfg, 'model')}: the model outputs {tuple(out.shape[1:])} per sample but "
                f"{source(cfg, 'data')} needs {tuple(expected)}; set the last layer's out_features"
            )
        try:
            value = loss_fn(out, data.y_train[:2])
        except Exception as error:
            raise ConfigError(
                f"train.loss: {type(loss_fn).__name__} does not fit {data.kind} targets: "
                f"{str(error).strip().splitlines()[0]}"
            ) from error
        if value.dim() != 0:
            raise ConfigError(f"train.loss: {type(loss_fn).__name__} must reduce to one number")


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


def hparams_of(cfg: DictConfig, setup: Setup) -> dict[str, Any]:
    """What the HParams dashboard shows for a run: chosen options, seed and key numbers."""
    unique, total = count_parameters(setup.model)
    lr = setup.optimizer.param_groups[0]["lr"]
    return {**{g: str(o) for g, o in cfg.choices.items()}, "seed": cfg.seed, "lr": lr,
            "batch_size": cfg.train.batch_size, "steps": setup.steps,
            "params_unique": unique, "params_total": total}  # fmt: skip


def train(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    """Train as `cfg` says; write tb/, model.pt, checkpoint.pt and metrics.json into `run_dir`."""
    from runner.loop import run_loop

    setup = prepare(cfg)
    log.info("device: %s", setup.device)
    writer = None
    if cfg.log.every or cfg.log.hist_every:
        from runner.tensorboard import RunWriter

        writer = RunWriter(run_dir / "tb")
        writer.text("config", f"```yaml\n{OmegaConf.to_yaml(cfg)}\n```")
    data = setup.data
    initial = {"train": evaluate(setup, data.x_train, data.y_train),
               "val": evaluate(setup, data.x_val, data.y_val)}  # fmt: skip
    started = time.perf_counter()
    try:
        run_loop(cfg, setup, writer, setup.progress)
    except BaseException:
        if writer is not None:
            writer.close()  # keep what was logged up to the failure
        raise
    wall = time.perf_counter() - started
    final = {"train": evaluate(setup, data.x_train, data.y_train),
             "val": evaluate(setup, data.x_val, data.y_val)}  # fmt: skip
    unique, total = count_parameters(setup.model)
    metrics = {
        "initial_train_loss": initial["train"], "initial_val_loss": initial["val"],
        "final_train_loss": final["train"], "final_val_loss": final["val"],
        "steps": setup.steps, "wall_time_s": wall,
        "steps_per_s": setup.steps / wall if wall > 0 and setup.steps else 0.0,
        "params_unique": unique, "params_total": total, "device": str(setup.device),
    }  # fmt: skip
    if writer is not None:
        finals = {"final/loss_train": final["train"], "final/loss_val": final["val"]}
        finite = {k: v for k, v in finals.items() if math.isfinite(v)}
        writer.hparams(hparams_of(cfg, setup), finite, setup.steps)
        writer.close()
    artifacts.save_model(run_dir, setup.model)
    artifacts.save_checkpoint(run_dir, _checkpoint(cfg, setup))
    artifacts.save_metrics(run_dir, metrics)
    return metrics


def _checkpoint(cfg: DictConfig, setup: Setup) -> dict[str, Any]:
    return {
        "model": setup.model.state_dict(),
        "optimizer": setup.optimizer.state_dict(),
        "scheduler": setup.scheduler.state_dict() if setup.scheduler is not None else None,
        "step": setup.steps,
        "rng": {
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if setup.device.type == "cuda" else None,
            "data": setup.generator.get_state(),
        },
        "config": OmegaConf.to_container(cfg, resolve=True),
    }


def _progress_mode(cfg: DictConfig) -> str:
    mode = cfg.train.get("progress", "auto")
    if mode not in ("auto", "bar", "lines", "off"):
        raise ConfigError(f"train.progress must be auto, bar, lines or off, got {mode!r}")
    if mode == "auto":
        return "bar" if sys.stderr.isatty() else "lines"
    return mode
