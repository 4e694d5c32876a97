"""Look inside a model with one batch: each layer's output shape, activation and gradient stats.

A "layer" is every module that is not an `nn.Sequential`: the entries of the model
config. Tied modules run at several places; each call is reported at its own path.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class LayerCall:
    """One call of a layer in a forward pass (and, after a backward pass, its output's gradient)."""

    path: str
    module: nn.Module
    output: torch.Tensor  # a copy of the values it returned: a later in-place op (ReLU) keeps them
    grad: torch.Tensor | None = None  # d(loss)/d(output) of those values, after a backward pass

    @property
    def kind(self) -> str:
        """The layer's class name."""
        return type(self.module).__name__


def layer_paths(model: nn.Module, prefix: str = "") -> list[tuple[str, nn.Module]]:
    """Every (path, layer) in forward order, a tied layer once per place it is used."""
    found = []
    # _modules, not named_children(): named_children() skips a module's second place.
    for name, child in model._modules.items():
        path = f"{prefix}.{name}" if prefix else name
        if isinstance(child, nn.Sequential):
            found += layer_paths(child, path)
        elif child is not None:
            found.append((path, child))
    return found


def example_input(
    model: nn.Module, sample_shape: tuple[int, ...], batch: int, generator: torch.Generator
) -> torch.Tensor:
    """A batch of N(0, 1) inputs, or uniform token ids if the model starts with an embedding."""
    paths = layer_paths(model)
    first = paths[0][1] if paths else None
    device = next(model.parameters(), torch.empty(0)).device
    if isinstance(first, (nn.Embedding, nn.EmbeddingBag)):
        x = torch.randint(0, first.num_embeddings, (batch, *sample_shape), generator=generator)
    else:
        x = torch.randn((batch, *sample_shape), generator=generator)
    return x.to(device)


def record_calls(model: nn.Module, x: torch.Tensor, backward: bool = False) -> list[LayerCall]:
    """Run `model(x)` and return every layer call in order.

    With `backward`, also backpropagate a N(0, 1) cotangent from the output (drawn
    from a generator seeded with 0) so each call's `grad` holds the gradient signal
    reaching that layer. Each call's `output` is a copy, taken as the layer returned it.
    Runs on a copy in the model's own mode: the model's parameters, buffers (BatchNorm
    statistics), gradients and the RNG are left as they were.
    """
    model = copy.deepcopy(model)  # deepcopy keeps tied modules tied
    paths = layer_paths(model)
    places: dict[int, list[str]] = {}
    for path, module in paths:
        places.setdefault(id(module), []).append(path)
    calls: list[LayerCall] = []
    seen: dict[int, int] = {}

    def hook(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        index = seen.get(id(module), 0)
        seen[id(module)] = index + 1
        where = places[id(module)]
        path = where[index] if index < len(where) else f"{where[-1]} (call {index + 1})"
        if not isinstance(output, torch.Tensor):
            return
        call = LayerCall(path, module, output.detach().clone())
        if backward and output.requires_grad:
            # A hook registered before an in-place op (ReLU(inplace=True)) gets the gradient
            # of the values as they were; retain_grad would hold the in-place op's output's.
            output.register_hook(lambda grad, call=call: setattr(call, "grad", grad))
        calls.append(call)

    handles = [m.register_forward_hook(hook) for m in {id(m): m for _, m in paths}.values()]
    try:
        with torch.random.fork_rng(devices=[x.device] if x.device.type == "cuda" else []):
            if backward:
                output = model(x)
                cotangent = torch.randn(output.shape, generator=torch.Generator().manual_seed(0))
                output.backward(cotangent.to(output.device, output.dtype))
            else:
                with torch.no_grad():
                    model(x)
    finally:
        for handle in handles:
            handle.remove()
    return calls
