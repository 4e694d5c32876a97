"""Which torch device a run uses: `device: auto|cpu|cuda|cuda:N|mps`."""

from __future__ import annotations

import re

import torch

from runner.errors import ConfigError

VALID_DEVICES = "auto, cpu, cuda, cuda:N, mps"


def resolve_device(name: str) -> torch.device:
    """`auto` picks CUDA, then MPS, then the CPU; an absent explicit device is a ConfigError."""
    name = str(name)
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name == "mps":
        if not torch.backends.mps.is_available():
            raise ConfigError(
                "device=mps: this machine has no MPS (Apple GPU); use device=auto or cpu"
            )
        return torch.device("mps")
    match = re.fullmatch(r"cuda(?::(\d+))?", name)
    if not match:
        raise ConfigError(f"device={name}: not a device; valid: {VALID_DEVICES}")
    if not torch.cuda.is_available():
        raise ConfigError(
            f"device={name}: CUDA is not available on this machine; use device=auto or cpu"
        )
    index = int(match.group(1) or 0)
    if index >= torch.cuda.device_count():
        raise ConfigError(
            f"device={name}: this machine has {torch.cuda.device_count()} CUDA device(s), "
            f"cuda:0 to cuda:{torch.cuda.device_count() - 1}"
        )
    return torch.device(name)
