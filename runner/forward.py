"""How a training step's forward pass runs: `train.amp` (autocast) and `train.compile`.

- `train.amp: bf16` runs the forward pass and the loss under `torch.autocast` in
  bfloat16; the parameters, their gradients and the optimizer stay in float32. bf16 has
  float32's range, so no loss scaling (and no GradScaler, whose inf check syncs the host
  every step) is needed. Evaluation stays in full precision.
- `train.compile: true` runs the steps through `torch.compile(model)`. The compiled
  module shares the model's parameters (tied ones included), so the optimizer, the
  checkpoints and `model.pt` are unchanged. A step that logs activations runs the eager
  model, since its forward hooks are registered for that step only: the compiled graph
  never sees a hook, so it is traced once and never recompiled.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import torch
from torch import nn

from runner.errors import ConfigError

AMP_DTYPES = {"bf16": torch.bfloat16}


def check_amp(amp: str | None) -> None:
    """`train.amp` is null or one of AMP_DTYPES' names."""
    if amp is not None and amp not in AMP_DTYPES:
        raise ConfigError(f"train.amp must be null or one of {', '.join(AMP_DTYPES)}, got {amp!r}")


class Forward:
    """`forward(x, y, loss_fn, hooked)` -> the step's loss, as `train.amp` and
    `train.compile` say."""

    def __init__(
        self, model: nn.Module, device: torch.device, amp: str | None = None, compile: bool = False
    ) -> None:
        check_amp(amp)
        self.model = model
        self.device_type = device.type
        self.dtype = AMP_DTYPES[amp] if amp else None
        self.compiled: Callable | None = torch.compile(model) if compile else None

    def __call__(
        self, x: torch.Tensor, y: torch.Tensor, loss_fn: Callable, hooked: bool = False
    ) -> torch.Tensor:
        """`loss_fn(model(x), y)` of one batch; `hooked`: forward hooks are on for this step,
        so the eager model runs it."""
        net = self.model if hooked or self.compiled is None else self.compiled
        with self._autocast():
            return loss_fn(net(x), y)

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=self.dtype)
