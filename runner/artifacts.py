"""What a run leaves in its directory, each file written atomically (a temporary file beside
it, fsync, rename, fsync of the folder), so a run killed at any moment leaves either the old
file or the new one, never a truncated file that looks finished. A kill can leave a
temporary `.NAME.XXXXXXXX` behind; the next run into the same folder removes those.
A file that cannot be written (a full disk, a read-only folder) is an `OutputError` naming
it; the file that was there stays as it was.

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
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

MODEL_FILE, CHECKPOINT_FILE, METRICS_FILE = "model.pt", "checkpoint.pt", "metrics.json"
RUN_FILES = (MODEL_FILE, CHECKPOINT_FILE, METRICS_FILE, "run.json")
TEMP_SUFFIX = 8  # mkstemp's random part: ".model.pt." + 8 characters


def write_atomic(path: Path, write: Callable[[Any], None], binary: bool = True) -> None:
    """Call `write(file)` on a temporary file beside `path`, flush it to the disk, then rename
    it onto `path`: readers see the old file or the whole new one. An OSError on the way
    (ENOSPC, EACCES, EROFS) becomes an `OutputError` "cannot write PATH: REASON"; either way
    the temporary file is removed and `path` is untouched."""
    temporary = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        with os.fdopen(handle, "wb" if binary else "w") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())  # the bytes are on the disk before the name points at them
        os.chmod(temporary, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual mode
        os.replace(temporary, path)
    except BaseException as error:
        if temporary is not None:
            Path(temporary).unlink(missing_ok=True)
        cause = _os_error_in(error)
        if cause is None or not isinstance(error, Exception):
            raise
        from runner.errors import OutputError

        reason = cause.strerror or str(cause)
        raise OutputError(f"cannot write {path}: {reason}") from error
    _fsync_folder(path.parent)


def _os_error_in(error: BaseException) -> OSError | None:
    """The OSError behind `error`, if any: torch.save reports a failed write as a RuntimeError
    whose context is the OSError that the file raised."""
    seen = 0
    while error is not None and seen < 5:
        if isinstance(error, OSError):
            return error
        error, seen = error.__cause__ or error.__context__, seen + 1
    return None


def _fsync_folder(folder: Path) -> None:
    """Make the rename itself durable; best effort (some systems cannot open a folder)."""
    try:
        handle = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(handle)
    except OSError:
        pass
    finally:
        os.close(handle)


def remove_temporaries(folder: Path) -> list[Path]:
    """Delete the temporary files that a killed write of a run file left in `folder`
    (`.model.pt.XXXXXXXX` and the like); return them. Call it only where no other process
    is writing into `folder`."""
    removed = []
    for name in RUN_FILES:
        for leftover in folder.glob(f".{name}.{'?' * TEMP_SUFFIX}"):
            try:
                leftover.unlink()
            except OSError:
                continue  # a read-only folder: the run's first write says so, with the path
            removed.append(leftover)
    return removed


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def on_cpu(obj: Any, copies: dict | None = None) -> Any:
    """`obj` with every tensor moved to the CPU, nested dicts and lists included. Tensors that
    share storage (tied names in a state_dict) stay shared: each is copied once."""
    import torch  # here, not at the top: a sweep's launching process never loads torch

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
    import torch

    state = on_cpu(model.state_dict())
    write_atomic(run_dir / MODEL_FILE, lambda f: torch.save(state, f))


def save_checkpoint(run_dir: Path, checkpoint: dict[str, Any]) -> None:
    """checkpoint.pt: everything `train.resume` needs, on the CPU (loads on any machine)."""
    import torch

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
