"""Layer types a model config can name, and how their input sizes are inferred.

A layer entry's `type` is a lower-case alias below, any `torch.nn` class name, or
a block name (handled in `runner.model`); `_target_` takes any importable
`nn.Module` class, such as the chapter's `MyLinear` defined here.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

# Lower-case aliases users type in YAML, each the torch.nn class it builds.
ALIASES: dict[str, type[nn.Module]] = {
    "linear": nn.Linear,
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "leaky_relu": nn.LeakyReLU,
    "dropout": nn.Dropout,
    "layernorm": nn.LayerNorm,
    "batchnorm1d": nn.BatchNorm1d,
    "batchnorm2d": nn.BatchNorm2d,
    "flatten": nn.Flatten,
    "conv1d": nn.Conv1d,
    "conv2d": nn.Conv2d,
    "embedding": nn.Embedding,
    "identity": nn.Identity,
}

# Constructor arguments that are input sizes, and how each is read off the shape of
# one input sample (no batch dimension): features are the last dim, channels the first.
INPUT_SIZE_ARGS: dict[str, Callable[[tuple[int, ...]], int]] = {
    "in_features": lambda shape: shape[-1],
    "in_units": lambda shape: shape[-1],
    "normalized_shape": lambda shape: shape[-1],
    "in_channels": lambda shape: shape[0],
    "num_features": lambda shape: shape[0],
}


def torch_nn_class(name: str) -> type[nn.Module] | None:
    """The `torch.nn` module class called `name` (alias or class name), or None."""
    if name in ALIASES:
        return ALIASES[name]
    found = getattr(nn, name, None)
    if isinstance(found, type) and issubclass(found, nn.Module):
        return found
    return None


def torch_nn_class_names() -> list[str]:
    """Every public `torch.nn` module class name, for suggestions in error messages."""
    return sorted(
        name
        for name in dir(nn)
        if not name.startswith("_")
        and isinstance(getattr(nn, name), type)
        and issubclass(getattr(nn, name), nn.Module)
    )


def constructor_parameters(cls: type[nn.Module]) -> tuple[list[str], list[str], bool]:
    """Return (all keyword names, required names, accepts **kwargs) of `cls.__init__`."""
    signature = inspect.signature(cls.__init__)
    names, required, var_keyword = [], [], False
    for parameter in list(signature.parameters.values())[1:]:  # skip self
        if parameter.kind is inspect.Parameter.VAR_KEYWORD:
            var_keyword = True
        elif parameter.kind is not inspect.Parameter.VAR_POSITIONAL:
            names.append(parameter.name)
            if parameter.default is inspect.Parameter.empty:
                required.append(parameter.name)
    return names, required, var_keyword


def infer_input_sizes(
    cls: type[nn.Module], kwargs: dict, sample_shape: tuple[int, ...]
) -> dict[str, int]:
    """Input-size arguments of `cls` that `kwargs` leaves out, read off `sample_shape`."""
    names, _, _ = constructor_parameters(cls)
    return {
        name: read(sample_shape)
        for name, read in INPUT_SIZE_ARGS.items()
        if name in names and name not in kwargs
    }


class MyLinear(nn.Module):
    """The chapter's custom layer: relu(X @ W + b) with W of shape (in_units, units).

    The book's version reads `self.weight.data` in `forward`, which hides the weights
    from autograd; this one keeps them in the graph so they train.
    """

    def __init__(self, in_units: int, units: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(in_units, units))
        self.bias = nn.Parameter(torch.randn(units))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(torch.matmul(x, self.weight) + self.bias)
