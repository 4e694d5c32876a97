"""Synthetic data made on the training device from its own seeded generator.

Three kinds, each a `conf/data/*.yaml`:
- regression: the chapter's synthetic_data, y = Xw + b + eps, X ~ N(0, 1), eps ~ N(0, noise²);
- classification: Gaussian clusters, one per class, targets are class indices;
- teacher: y = teacher(X) + eps for a random tanh/ReLU MLP, the usual set-up for init studies.
The whole set lives on the device; batches are slices of a tensor shuffled once per
epoch, so no per-sample DataLoader work happens in the training loop.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from runner.errors import ConfigError, is_number, one_of, require_int

KINDS = ("regression", "classification", "teacher")
DATA_KEYS = (
    "kind", "in_features", "in_shape", "out_features", "n_train", "n_val", "noise",
    "true_w", "true_b", "n_classes", "spread", "teacher_width", "teacher_depth",
    "teacher_activation",
)  # fmt: skip
# Data draws use their own stream, apart from the init's, so changing one leaves the other.
DATA_SEED_OFFSET = 1_000_003


@dataclass
class Dataset:
    """Train and validation tensors on one device."""

    kind: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor

    @property
    def n_train(self) -> int:
        """Number of training samples."""
        return self.x_train.shape[0]


def make_data(
    data_cfg: Mapping[str, Any],
    sample_shape: tuple[int, ...],
    seed: int,
    device: torch.device,
    where: str,
) -> Dataset:
    """Draw the data set `data_cfg` describes on `device`; one seed gives the same bits."""
    from runner.config_values import check_keys

    check_keys(data_cfg, DATA_KEYS, where)
    kind = data_cfg.get("kind")
    if kind not in KINDS:
        raise ConfigError(f"{where}: kind must be one of {one_of(KINDS)}, got {kind!r}")
    n_train, n_val = _count(data_cfg, "n_train", where, 1), _count(data_cfg, "n_val", where, 0)
    noise = data_cfg.get("noise", 0.0)
    if not is_number(noise) or noise < 0:
        raise ConfigError(f"{where}: noise must be a number >= 0, got {noise!r}")
    generator = torch.Generator(device).manual_seed(seed + DATA_SEED_OFFSET)
    n = n_train + n_val
    x = torch.randn((n, *sample_shape), generator=generator, device=device)
    if kind == "regression":
        y = _regression(data_cfg, x, noise, generator, where)
    elif kind == "classification":
        x, y = _classification(data_cfg, sample_shape, n, generator, device, where)
    else:
        y = _teacher(data_cfg, x, noise, generator, where)
    return Dataset(kind, x[:n_train], y[:n_train], x[n_train:], y[n_train:])


def _count(data_cfg: Mapping[str, Any], key: str, where: str, minimum: int) -> int:
    return require_int(data_cfg.get(key), f"{where}: {key}", minimum)


def _flat(x: torch.Tensor) -> torch.Tensor:
    return x.reshape(x.shape[0], -1)


def _regression(data_cfg, x, noise, generator, where) -> torch.Tensor:
    features = _flat(x).shape[1]
    outputs = _count(data_cfg, "out_features", where, 1)
    w = data_cfg.get("true_w")
    if w is None:
        w = torch.randn((features, outputs), generator=generator, device=x.device)
    else:
        if not isinstance(w, list) or not all(is_number(v) for v in w):
            raise ConfigError(f"{where}: true_w must be a list of numbers, got {w!r}")
        if len(w) != features or outputs != 1:
            raise ConfigError(
                f"{where}: true_w has {len(w)} values; it needs one per input feature "
                f"({features}) and out_features=1"
            )
        w = torch.tensor(w, dtype=x.dtype, device=x.device).reshape(-1, 1)
    b = data_cfg.get("true_b")
    if b is None:
        b = torch.randn((outputs,), generator=generator, device=x.device)
    elif is_number(b):
        b = torch.full((outputs,), float(b), device=x.device)
    else:
        raise ConfigError(f"{where}: true_b must be a number or null, got {b!r}")
    eps = torch.randn((x.shape[0], outputs), generator=generator, device=x.device) * noise
    return _flat(x) @ w + b + eps


def _classification(data_cfg, sample_shape, n, generator, device, where):
    classes = _count(data_cfg, "n_classes", where, 2)
    if data_cfg.get("out_features") != classes:
        raise ConfigError(f"{where}: out_features must equal n_classes ({classes})")
    spread = data_cfg.get("spread", 3.0)
    if not is_number(spread) or spread <= 0:
        raise ConfigError(f"{where}: spread must be a number > 0, got {spread!r}")
    centers = torch.randn((classes, *sample_shape), generator=generator, device=device) * spread
    y = torch.randint(0, classes, (n,), generator=generator, device=device)
    x = centers[y] + torch.randn((n, *sample_shape), generator=generator, device=device)
    return x, y


def _teacher(data_cfg, x, noise, generator, where) -> torch.Tensor:
    width = _count(data_cfg, "teacher_width", where, 1)
    depth = _count(data_cfg, "teacher_depth", where, 1)
    outputs = _count(data_cfg, "out_features", where, 1)
    activation = {"tanh": torch.tanh, "relu": torch.relu}.get(data_cfg.get("teacher_activation"))
    if activation is None:
        raise ConfigError(f"{where}: teacher_activation must be tanh or relu")
    h = _flat(x)
    for i in range(depth + 1):
        fan_out = outputs if i == depth else width
        # Unit-variance weights scaled by 1/sqrt(fan_in): targets of order one at any depth.
        w = torch.randn((h.shape[1], fan_out), generator=generator, device=x.device)
        h = h @ (w / math.sqrt(h.shape[1]))
        if i < depth:
            h = activation(h)
    eps = torch.randn(h.shape, generator=generator, device=x.device) * noise
    return h + eps
