"""Continuing a run from its checkpoint.pt (`train.resume=PATH`).

A checkpoint holds the model, optimizer, scheduler, the step, and the RNG states,
including the data stream as it was before the current epoch's shuffle, so the
resumed run replays that epoch's order and ends with the same bits as a run that
went straight through (on the same device).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from runner.errors import ConfigError, first_line

if TYPE_CHECKING:
    from runner.train import Setup

CHECKPOINT_KEYS = ("model", "optimizer", "scheduler", "step", "rng")


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint.pt written by a run, or fail with one line saying what is wrong.

    It is loaded with `weights_only=True`: tensors, numbers, strings and containers only. A
    file that holds pickled code or objects (which a plain `torch.load` would run) is
    refused, naming what it holds, and nothing in it is run."""
    where = f"train.resume={path}"
    path = Path(path)
    if path.is_dir():
        hint = f"; give {path / 'checkpoint.pt'}" if (path / "checkpoint.pt").is_file() else ""
        raise ConfigError(f"{where}: is a folder, not a checkpoint file{hint}")
    if not path.is_file():
        raise ConfigError(f"{where}: no such file")
    try:
        with warnings.catch_warnings():  # torch warns about a foreign pickle before refusing it
            warnings.simplefilter("ignore")
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # truncated, not a torch file, or unsafe content
        raise ConfigError(f"{where}: {_unreadable(error)}") from error
    if not isinstance(checkpoint, dict) or not all(k in checkpoint for k in CHECKPOINT_KEYS):
        raise ConfigError(
            f"{where}: not a runner checkpoint (it needs the keys {', '.join(CHECKPOINT_KEYS)})"
        )
    return checkpoint


def _unreadable(error: Exception) -> str:
    """Why torch.load(weights_only=True) failed, in a user's words."""
    import re

    text = str(error)
    found = re.findall(r"GLOBAL ([\w.]+)", text)
    if found:
        return (
            f"refused: the file holds pickled code or objects ({', '.join(dict.fromkeys(found))}) "
            "that a checkpoint never needs; it was loaded with weights_only=True, so none of "
            "it ran. Use a checkpoint.pt that a run wrote"
        )
    wanted = "give a checkpoint.pt that a run wrote"
    if "central directory" in text or "PytorchStreamReader" in text:
        return f"cannot read it as a checkpoint (the file is cut short or damaged); {wanted}"
    if "Weights only load failed" in text or isinstance(error, (KeyError, EOFError)):
        # A text file or a plain pickle: the unpickler stops at its first byte (KeyError).
        return f"cannot read it as a checkpoint (not a file that torch.save wrote); {wanted}"
    return f"cannot read it as a checkpoint ({first_line(error)}); {wanted}"


# What may change between a run and its resumption: its length, logging, checkpointing and
# what a non-finite value would do.
MAY_CHANGE = ("train.steps", "train.epochs", "train.resume", "train.checkpoint_every",
              "train.progress", "train.val_every", "train.on_nonfinite", "log.")  # fmt: skip


def check_same_config(checkpoint: dict[str, Any], cfg: Any, where: str) -> None:
    """Refuse to resume under a config that changes what trains (lr, data, seed, model, ...)."""
    from omegaconf import OmegaConf

    now = flatten(OmegaConf.to_container(cfg, resolve=True))
    saved = with_gained_keys(flatten(checkpoint.get("config") or {}), now)
    changed = [key for key in sorted(set(saved) | set(now))
               if saved.get(key) != now.get(key) and not key.startswith(MAY_CHANGE)]  # fmt: skip
    if changed:
        shown = "; ".join(f"{k}: {_change(saved.get(k), now.get(k))}" for k in changed[:3])
        raise ConfigError(
            f"{where}: the checkpoint was made with another config ({shown}); on resume only "
            "train.steps, train.epochs and the logging and checkpoint settings may change"
        )


def _change(old: Any, new: Any, width: int = 40) -> str:
    """ "old -> new", each cut to `width` characters around where they first differ (two long
    layer lists that share their start would otherwise read the same)."""
    a, b = repr(old), repr(new)
    if max(len(a), len(b)) <= width:
        return f"{a} -> {b}"
    differ = (i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y)
    at = next(differ, min(len(a), len(b)))  # or where the shorter one ends
    start = max(0, at - 25)

    def cut(text: str) -> str:
        part = text[start : start + width]
        return f"{'...' if start else ''}{part}{'...' if start + width < len(text) else ''}"

    return f"{cut(a)} -> {cut(b)}"


def with_gained_keys(saved: dict[str, Any], now: dict[str, Any]) -> dict[str, Any]:
    """`saved` (a flattened config of an earlier run) with every key of `now` that the
    schema gained since at its default: the key did not exist, so the run had the default."""
    from omegaconf import MISSING

    from runner.schema_paths import default_at

    filled = dict(saved)
    for key in set(now) - set(saved):
        default = default_at(key)
        if default is not MISSING:
            filled[key] = default
    return filled


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """{"a.b": value} for every leaf of nested dicts (lists are leaves)."""
    if isinstance(tree, dict):
        flat: dict[str, Any] = {}
        for key, value in tree.items():
            flat.update(flatten(value, f"{prefix}{key}."))
        return flat
    return {prefix.rstrip("."): tree}


def checkpoint_state(cfg: Any, setup: Setup, step: int) -> dict[str, Any]:
    """What checkpoint.pt holds at `step`: all that `restore` puts back, and the config."""
    from omegaconf import OmegaConf

    return {
        "model": setup.model.state_dict(),
        "optimizer": setup.optimizer.state_dict(),
        "scheduler": setup.scheduler.state_dict() if setup.scheduler is not None else None,
        "step": step,
        "rng": {
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if setup.device.type == "cuda" else None,
            "data": setup.generator.get_state(),
            # With the step, this replays the current epoch's shuffle: enough to resume mid-epoch.
            "data_epoch_start": setup.epoch_rng_state,
        },
        "config": OmegaConf.to_container(cfg, resolve=True),
        "nonfinite_skipped": setup.watch.skipped,
    }


def restore(setup: Setup, checkpoint: dict[str, Any], per_epoch: int, where: str) -> int:
    """Load `checkpoint` into `setup`; return the step it was taken at."""
    try:
        setup.model.load_state_dict(checkpoint["model"])
        setup.optimizer.load_state_dict(checkpoint["optimizer"])
        if setup.scheduler is not None and checkpoint["scheduler"] is not None:
            setup.scheduler.load_state_dict(checkpoint["scheduler"])
    except Exception as error:
        raise ConfigError(
            f"{where}: does not fit this config's model or optimizer ({first_line(error)})"
        ) from error
    step, rng = checkpoint.get("step"), checkpoint.get("rng")
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise ConfigError(f"{where}: its step must be a whole number >= 0, got {step!r}; "
                          "give a checkpoint.pt that a run wrote")  # fmt: skip
    try:
        setup.watch.skipped = int(checkpoint.get("nonfinite_skipped", 0))
        torch.set_rng_state(rng["torch"])
        if setup.device.type == "cuda" and rng.get("cuda") is not None:
            torch.cuda.set_rng_state_all(rng["cuda"])
        mid_epoch = step % per_epoch != 0 and rng.get("data_epoch_start") is not None
        # Mid-epoch: rewind the data stream to before this epoch's shuffle, which the loop
        # replays.
        setup.generator.set_state(rng["data_epoch_start"] if mid_epoch else rng["data"])
    except Exception as error:  # a hand-edited file: no RNG states, or not tensors
        raise ConfigError(f"{where}: its RNG states cannot be restored ({first_line(error)}); "
                          "give a checkpoint.pt that a run wrote") from error  # fmt: skip
    return step
