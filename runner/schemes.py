"""Init schemes: each a small function that fills one tensor in place, its formula in its docstring.

fan_in and fan_out are those of `torch.nn.init`: for a weight of shape
(out, in, *kernel), fan_in = in·∏kernel and fan_out = out·∏kernel. `gain` is a
number, a nonlinearity name ("relu", "tanh", ...) or {nonlinearity, param}, read
with `torch.nn.init.calculate_gain`. Random draws use PyTorch's global generator,
which `runner.build` seeds from `seed`, so one seed gives one set of bits.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from runner.scheme_arguments import (
    dirac_ok,
    gain_ok,
    kaiming_ok,
    non_negative,
    numbers,
    resolve_gain,
    sparse_ok,
    trunc_normal_ok,
    uniform_ok,
    variance_scaling_ok,
    zeroed_uniform_ok,
)

# std of N(0, 1) truncated to [-2, 2]; dividing by it keeps the requested variance.
TRUNCATED_NORMAL_STD = 0.87962566103423978


@dataclass(frozen=True)
class Scheme:
    """A registered scheme: the function, the tensor ranks it fills, and its argument check."""

    fill: Callable[..., None]
    min_dims: int = 0
    max_dims: int | None = None
    check: Callable[[dict[str, Any], torch.Size], str | None] | None = None
    needs_module: bool = False  # `default` calls the owning module's reset_parameters

    def arguments(self) -> dict[str, Any]:
        """The scheme's keyword arguments and defaults (inspect.Parameter.empty: required)."""
        parameters = list(inspect.signature(self.fill).parameters.values())[1:]
        return {p.name: p.default for p in parameters if p.name not in ("module", "param_name")}


SCHEMES: dict[str, Scheme] = {}


def register(name: str, min_dims: int = 0, max_dims: int | None = None, check=None, **flags):
    """Decorator adding a fill function to `SCHEMES` under `name`."""

    def decorate(fill: Callable[..., None]) -> Callable[..., None]:
        SCHEMES[name] = Scheme(fill, min_dims, max_dims, check, **flags)
        return fill

    return decorate


# -- fan computation ------------------------------------------------------------------------


def fans(tensor: torch.Tensor) -> tuple[int, int]:
    """(fan_in, fan_out) of a weight of shape (out, in, *kernel): in·∏kernel, out·∏kernel."""
    receptive = math.prod(tensor.shape[2:])
    return tensor.shape[1] * receptive, tensor.shape[0] * receptive


def fan(tensor: torch.Tensor, mode: str) -> float:
    """fan_in, fan_out, or fan_avg = (fan_in + fan_out) / 2."""
    fan_in, fan_out = fans(tensor)
    return {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2}[mode]


# -- the schemes ----------------------------------------------------------------------------


@register("uniform", check=uniform_ok)
def uniform(tensor: torch.Tensor, a: float = 0.0, b: float = 1.0) -> None:
    """w ~ U(a, b)."""
    nn.init.uniform_(tensor, a, b)


@register(
    "normal", check=lambda args, shape: numbers(args, "mean") or non_negative("std")(args, shape)
)
def normal(tensor: torch.Tensor, mean: float = 0.0, std: float = 1.0) -> None:
    """w ~ N(mean, std²)."""
    nn.init.normal_(tensor, mean, std)


@register("trunc_normal", check=trunc_normal_ok)
def trunc_normal(
    tensor: torch.Tensor, mean: float = 0.0, std: float = 1.0, a: float = -2.0, b: float = 2.0
) -> None:
    """w ~ N(mean, std²) conditioned on a <= w <= b (a and b are absolute bounds)."""
    nn.init.trunc_normal_(tensor, mean, std, a, b)


@register("constant", check=lambda args, shape: numbers(args, "val"))
def constant(tensor: torch.Tensor, val: float) -> None:
    """w = val everywhere."""
    nn.init.constant_(tensor, val)


@register("ones")
def ones(tensor: torch.Tensor) -> None:
    """w = 1 everywhere."""
    nn.init.ones_(tensor)


@register("zeros")
def zeros(tensor: torch.Tensor) -> None:
    """w = 0 everywhere."""
    nn.init.zeros_(tensor)


@register("eye", min_dims=2, max_dims=2)
def eye(tensor: torch.Tensor) -> None:
    """w = I (the identity, for a 2-D weight; rectangular weights get ones on the diagonal)."""
    nn.init.eye_(tensor)


@register("dirac", min_dims=3, max_dims=5, check=dirac_ok)
def dirac(tensor: torch.Tensor, groups: int = 1) -> None:
    """A conv kernel that passes each input channel through unchanged (per group)."""
    nn.init.dirac_(tensor, groups)


@register("xavier_uniform", min_dims=2, check=gain_ok)
def xavier_uniform(tensor: torch.Tensor, gain: Any = 1.0) -> None:
    """w ~ U(-bound, bound), bound = gain·√(6 / (fan_in + fan_out)) (Glorot & Bengio, 2010)."""
    nn.init.xavier_uniform_(tensor, resolve_gain(gain))


@register("xavier_normal", min_dims=2, check=gain_ok)
def xavier_normal(tensor: torch.Tensor, gain: Any = 1.0) -> None:
    """w ~ N(0, std²), std = gain·√(2 / (fan_in + fan_out))."""
    nn.init.xavier_normal_(tensor, resolve_gain(gain))


@register("kaiming_uniform", min_dims=2, check=kaiming_ok)
def kaiming_uniform(
    tensor: torch.Tensor, a: float = 0.0, mode: str = "fan_in", nonlinearity: str = "leaky_relu"
) -> None:
    """w ~ U(-bound, bound), bound = gain·√(3 / fan), gain = calculate_gain(nonlinearity, a).

    He et al. (2015); mode picks fan = fan_in (forward variance) or fan_out (backward).
    """
    nn.init.kaiming_uniform_(tensor, a, mode, nonlinearity)


@register("kaiming_normal", min_dims=2, check=kaiming_ok)
def kaiming_normal(
    tensor: torch.Tensor, a: float = 0.0, mode: str = "fan_in", nonlinearity: str = "leaky_relu"
) -> None:
    """w ~ N(0, std²), std = gain / √fan, gain = calculate_gain(nonlinearity, a)."""
    nn.init.kaiming_normal_(tensor, a, mode, nonlinearity)


@register("orthogonal", min_dims=2, check=gain_ok)
def orthogonal(tensor: torch.Tensor, gain: Any = 1.0) -> None:
    """w = gain·Q, Q with orthonormal rows or columns (W·Wᵀ = gain²·I when rows <= columns)."""
    nn.init.orthogonal_(tensor, resolve_gain(gain))


@register("sparse", min_dims=2, max_dims=2, check=sparse_ok)
def sparse(tensor: torch.Tensor, sparsity: float, std: float = 0.01) -> None:
    """In each column, ceil(sparsity·rows) entries are 0, the rest ~ N(0, std²) (Martens, 2010)."""
    nn.init.sparse_(tensor, sparsity, std)


@register("variance_scaling", min_dims=2, check=variance_scaling_ok)
def variance_scaling(
    tensor: torch.Tensor,
    scale: float = 1.0,
    mode: str = "fan_in",
    distribution: str = "truncated_normal",
) -> None:
    """Var(w) = scale / fan(mode). truncated_normal: N(0, σ²) cut at ±2σ with σ = √(scale/fan)
    / 0.8796 so the variance stays scale/fan; normal: σ = √(scale/fan); uniform: U(±√(3·scale/fan)).
    """
    variance = scale / fan(tensor, mode)
    if distribution == "truncated_normal":
        std = math.sqrt(variance) / TRUNCATED_NORMAL_STD
        nn.init.trunc_normal_(tensor, 0.0, std, -2 * std, 2 * std)
    elif distribution == "normal":
        nn.init.normal_(tensor, 0.0, math.sqrt(variance))
    else:
        bound = math.sqrt(3 * variance)
        nn.init.uniform_(tensor, -bound, bound)


@register("lecun_normal", min_dims=2)
def lecun_normal(tensor: torch.Tensor) -> None:
    """variance_scaling(scale=1, mode=fan_in, distribution=truncated_normal): Var(w) = 1/fan_in."""
    variance_scaling(tensor, 1.0, "fan_in", "truncated_normal")


@register("lecun_uniform", min_dims=2)
def lecun_uniform(tensor: torch.Tensor) -> None:
    """variance_scaling(scale=1, mode=fan_in, distribution=uniform): w ~ U(±√(3/fan_in))."""
    variance_scaling(tensor, 1.0, "fan_in", "uniform")


@register("zeroed_uniform", check=zeroed_uniform_ok)
def zeroed_uniform(tensor: torch.Tensor, bound: float = 10.0, threshold: float = 5.0) -> None:
    """The chapter's custom init: w ~ U(-bound, bound), then w = 0 where |w| < threshold."""
    with torch.no_grad():
        tensor.uniform_(-bound, bound)
        tensor.mul_(tensor.abs() >= threshold)


@register("default", needs_module=True)
def default(tensor: torch.Tensor, module: nn.Module, param_name: str) -> None:
    """PyTorch's own init for the module: `module.reset_parameters()`, kept for this tensor only."""
    with torch.no_grad():
        others = {
            n: p.clone() for n, p in module.named_parameters(recurse=False) if n != param_name
        }
        module.reset_parameters()
        for name, value in others.items():
            getattr(module, name).copy_(value)
