"""runner: a config-driven PyTorch experiment runner for studying parameters.

The Python API: `runner.compose(overrides=[...])` returns the composed config,
`runner.build_model(cfg)` the initialised, tied `torch.nn.Module`. Names are
imported on first use, so `import runner` stays cheap.
"""

from __future__ import annotations

from typing import Any

__all__ = ["compose", "build", "build_model", "ConfigError"]

_EXPORTS = {
    "compose": "runner.config",
    "build": "runner.builder",
    "build_model": "runner.builder",
    "ConfigError": "runner.errors",
}


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'runner' has no attribute {name!r}")
