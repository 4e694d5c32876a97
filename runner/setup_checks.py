"""The checks `runner.train.prepare` makes before any work: every `train.*`, `log.*`,
`optim` and `data` setting against its valid range (and no NaN or infinity), the
scheduler against how the loop steps it, and the model's output and the loss against
the data's targets. Each failure is one ConfigError line naming the key.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import torch
from omegaconf import DictConfig
from torch import nn

from runner.config_values import source, to_plain
from runner.data import Dataset
from runner.errors import ConfigError, first_line, is_number, require_int
from runner.faults import NONFINITE_POLICIES
from runner.forward import check_amp

PROGRESS_MODES = ("auto", "bar", "lines", "off")
CLASSIFICATION_LOSSES = (nn.CrossEntropyLoss, nn.NLLLoss, nn.BCELoss, nn.BCEWithLogitsLoss)


def _integer(node: DictConfig, key: str, where: str, minimum: int) -> int:
    return require_int(node.get(key), f"{where}.{key}", minimum)


def _check_finite(node: Any, path: str, where: str) -> None:
    """Every number under `node` (a plain tree) is finite: a NaN or infinite rate, noise or
    clip would only show later, as a diverged run."""
    if isinstance(node, dict):
        for key, value in node.items():
            _check_finite(value, f"{path}.{key}", where)
    elif isinstance(node, list):
        for i, value in enumerate(node):
            _check_finite(value, f"{path}[{i}]", where)
    elif isinstance(node, float) and not math.isfinite(node):
        raise ConfigError(f"{where}{path} must be a finite number, got {node}")


MAX_HIST_BINS = 1_000_000  # a host array of bins + 1 counts per tensor each logging step


def check_settings(cfg: DictConfig) -> None:
    """The `train.*` and `log.*` values, each against its valid range; no NaN or infinity
    in `train`, `log`, `optim` or `data`."""
    for group in ("train", "log", "optim", "data"):
        where = f"{source(cfg, group)}: " if group in ("optim", "data") else ""
        _check_finite(to_plain(cfg.get(group)), group, where)
    train_cfg, log_cfg = cfg.train, cfg.log
    _integer(train_cfg, "batch_size", "train", 1)
    _integer(train_cfg, "steps", "train", 0)
    _integer(train_cfg, "val_every", "train", 0)
    _integer(train_cfg, "checkpoint_every", "train", 0)
    if train_cfg.get("epochs") is not None:
        _integer(train_cfg, "epochs", "train", 0)
    _integer(log_cfg, "every", "log", 0)
    _integer(log_cfg, "hist_every", "log", 0)
    if _integer(log_cfg, "hist_bins", "log", 1) > MAX_HIST_BINS:
        raise ConfigError(f"log.hist_bins must be at most {MAX_HIST_BINS:,}, got "
                          f"{log_cfg.hist_bins:,}")  # fmt: skip
    clip = train_cfg.get("grad_clip")
    if clip is not None and (not is_number(clip) or clip <= 0):
        raise ConfigError(f"train.grad_clip must be a number > 0 or null, got {clip!r}")
    if train_cfg.get("progress", "auto") not in PROGRESS_MODES:
        raise ConfigError(
            f"train.progress must be one of {', '.join(PROGRESS_MODES)}, got {train_cfg.progress!r}"
        )
    optimizer = cfg.optim.get("optimizer")
    lr = optimizer.get("lr") if isinstance(optimizer, DictConfig) else None
    if lr is not None and (not is_number(lr) or lr < 0):  # torch's own check names no key
        raise ConfigError(
            f"{source(cfg, 'optim')}: optim.optimizer.lr must be a number >= 0, got {lr!r}"
        )
    check_amp(train_cfg.get("amp"))
    if train_cfg.get("on_nonfinite", "stop") not in NONFINITE_POLICIES:
        raise ConfigError(
            f"train.on_nonfinite must be one of {', '.join(NONFINITE_POLICIES)}, "
            f"got {train_cfg.on_nonfinite!r}"
        )


def check_scheduler(scheduler: Any, steps: int, where: str) -> None:
    """The runner calls `scheduler.step()` once after every training step, with no metric."""
    name = type(scheduler).__name__
    if not callable(getattr(scheduler, "step", None)):
        raise ConfigError(f"{where}: {name} has no step(); give a torch.optim.lr_scheduler "
                          "class with _partial_: true")  # fmt: skip
    if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
        raise ConfigError(f"{where}: ReduceLROnPlateau steps on a metric, and the runner "
                          "steps the schedule once a training step without one; use a "
                          "schedule by step (StepLR, CosineAnnealingLR, OneCycleLR)")  # fmt: skip
    total = getattr(scheduler, "total_steps", None)  # OneCycleLR refuses to go past it
    if isinstance(total, int) and total < steps:
        raise ConfigError(f"{where}: {name} has total_steps={total} but the run trains "
                          f"{steps} steps; set total_steps to at least {steps}")  # fmt: skip


def check_fit(model: nn.Module, data: Dataset, loss_fn: nn.Module, cfg: DictConfig) -> None:
    """The model's output and the loss must fit the targets; two samples in eval mode tell,
    so no BatchNorm statistics move and no dropout draws from the RNG."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            try:
                out = model(data.x_train[:2])
            except Exception as error:
                raise ConfigError(
                    f"{source(cfg, 'model')}: the model cannot take {source(cfg, 'data')}'s input "
                    f"{tuple(data.x_train.shape[1:])} ({data.x_train.dtype}): {first_line(error)}"
                ) from error
            kind = data.kind
            expected = (cfg.data.n_classes,) if kind == "classification" else data.y_train.shape[1:]
            if tuple(out.shape[1:]) != tuple(expected):
                key = "n_classes" if kind == "classification" else "out_features"
                fix = f"data.{key}={out.shape[1]} or " if out.dim() == 2 and key in cfg.data else ""
                raise ConfigError(
                    f"{source(cfg, 'model')}: the model outputs {tuple(out.shape[1:])} per sample "
                    f"but {source(cfg, 'data')} needs {tuple(expected)}; set {fix}the last "
                    "layer's out_features"
                )
            if kind != "classification" and isinstance(loss_fn, CLASSIFICATION_LOSSES):
                # CrossEntropyLoss takes float targets as class probabilities: it would run
                # and learn nothing (one output: a loss of 0 from the first step).
                raise ConfigError(
                    f"train.loss: {type(loss_fn).__name__} is a classification loss but "
                    f"{source(cfg, 'data')} has real-valued targets (kind: {kind}); use a "
                    "regression loss (torch.nn.MSELoss, L1Loss, HuberLoss) or data=classification"
                )
            try:
                with warnings.catch_warnings():  # MSELoss warns on class ids, then fails
                    warnings.simplefilter("ignore")
                    value = loss_fn(out, data.y_train[:2])
            except Exception as error:
                fits = "a regression loss such as torch.nn.MSELoss"
                if kind == "classification":
                    fits = "a classification loss such as torch.nn.CrossEntropyLoss"
                raise ConfigError(
                    f"train.loss: {type(loss_fn).__name__} does not fit {kind} targets "
                    f"({source(cfg, 'data')}): {first_line(error)}; use {fits}, or null for "
                    "the default"
                ) from error
            if value.dim() != 0:
                raise ConfigError(f"train.loss: {type(loss_fn).__name__} must reduce to one number")
    finally:
        model.train(was_training)
