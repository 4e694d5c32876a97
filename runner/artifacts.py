"""What a run leaves in its directory, each file written atomically (temp file, then rename),
so an interrupted run never leaves a truncated file that looks finished.

- model.pt: a plain `state_dict` (tied names share storage), loadable with
  `torch.load(path, weights_only=True)` into the hand-written model;
- checkpoint.pt: model, optimizer, scheduler, step and RNG states, enough to resume;
- metrics.json: losses, counts, timings and the device.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

MODEL_FILE, CHECKPOINT_FILE, METRICS_FILE = "model.pt", "checkpoint.pt", "metrics.json"


def write_atomic(path: Path, write: Callable[[Any], None], binary: bool = True) -> None:
    """Call `write(file)` on a temporary file beside `path`, then rename it onto `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(handle, "wb" if binary else "w") as file:
            write(file)
        os.chmod(temporary, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual mode
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def on_cpu(obj: Any, copies: dict | None = None) -> Any:
    """`obj` with every tensor moved to the CPU, nested dicts and lists included. Tensors that
    share storage (tied names in a state_dict) stay shared: each is copied once."""
    copies = {} if copies is None else copies
    if isinstance(obj, torch.Tensor):
        if obj.device.type == "cpu":
            return obj
        key = (obj.data_ptr(), obj.dtype, tuple(obj.shape), obj.stride())
        if key not in copies:
            copies[key] = obj.detach().cpu()
        return copies[key]
    if isinstance(obj, dict):
        return type(obj)((k, on_cpu(v, copies)) for k, v in obj.items())
    if isinstance(obj, (list, tuple)):
        return type(obj)(on_cpu(v, copies) for v in obj)
    return obj


def save_model(run_dir: Path, model: torch.nn.Module) -> None:
    """model.pt: the chapter's torch.save(net.state_dict(), ...), on the CPU."""
    state = on_cpu(model.state_dict())
    write_atomic(run_dir / MODEL_FILE, lambda f: torch.save(state, f))


def save_checkpoint(run_dir: Path, checkpoint: dict[str, Any]) -> None:
    """checkpoint.pt: everything `train.resume` needs, on the CPU (loads on any machine)."""
    state = on_cpu(checkpoint)
    write_atomic(run_dir / CHECKPOINT_FILE, lambda f: torch.save(state, f))


def json_safe(value: Any) -> Any:
    """NaN and infinities (a diverged run, an empty split) as null: strict JSON has no NaN."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    return value


def save_metrics(run_dir: Path, metrics: dict[str, Any]) -> None:
    """metrics.json, indented for people."""
    text = json.dumps(json_safe(metrics), indent=2, allow_nan=False)
    write_atomic(run_dir / METRICS_FILE, lambda f: f.write(text), binary=False)
