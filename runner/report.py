"""Text views of a model for `runner.inspect`: the tree with output shapes, the parameter
table, parameter counts, one tensor by path, and the signal-propagation probe.
"""

from __future__ import annotations

import math

import torch
from tabulate import tabulate
from torch import nn

from runner.errors import ConfigError, did_you_mean, one_of
from runner.init import DEFAULT_INIT
from runner.probe import LayerCall
from runner.tying import count_parameters, tied_names

# Ratios of last to first layer's std beyond which the probe calls a signal vanishing/exploding.
VANISHING, EXPLODING = 1e-2, 1e2


def module_tree(model: nn.Module, calls: list[LayerCall], input_shape: tuple[int, ...]) -> str:
    """The module tree, DJL style: each container with its input shape, each layer with its
    output shape ("Linear(in_features=4, out_features=8, bias=True) -> (2, 8)").
    Modules used at several places are marked with the place that owns them.
    """
    outputs = {call.path: tuple(call.output.shape) for call in calls}
    owners: dict[int, str] = {}
    lines = [f"{type(model).__name__}{input_shape} {{"]

    def walk(module: nn.Module, prefix: str, depth: int, shape: tuple) -> tuple:
        for name, child in module._modules.items():
            path = f"{prefix}.{name}" if prefix else name
            pad = "  " * depth
            shared = f"  [same module as {owners[id(child)]}]" if id(child) in owners else ""
            owners.setdefault(id(child), path)
            if isinstance(child, nn.Sequential):
                lines.append(f"{pad}({name}): Sequential{shape} {{{shared}")
                shape = walk(child, path, depth + 1, shape)
                lines.append(f"{pad}}} -> {shape}")
            else:
                shape = outputs.get(path, shape)
                lines.append(f"{pad}({name}): {child!r} -> {shape}{shared}")
        return shape

    final = walk(model, "", 1, input_shape)
    lines.append(f"}} -> {final}")
    return "\n".join(lines)


def parameter_table(model: nn.Module, init: dict[str, str]) -> str:
    """One row per parameter name (tied names included): shape, dtype, device, the init rule
    applied, the names it is tied with, and mean / std / min / max / fraction of zeros.
    """
    tied = tied_names(model)
    rows = []
    for name, param in model.named_parameters(remove_duplicate=False):
        values = param.detach().float()
        std = values.std().item() if values.numel() > 1 else 0.0
        numbers = ([values.mean().item(), std, values.min().item(), values.max().item(),
                    (values == 0).float().mean().item()] if values.numel()
                   else [None] * 5)  # a tensor of no values: nothing to describe  # fmt: skip
        rows.append([
            name, tuple(param.shape), str(param.dtype).removeprefix("torch."), str(param.device),
            init.get(name, DEFAULT_INIT), ", ".join(tied[name]) or "-", *numbers,
        ])  # fmt: skip
    headers = ["name", "shape", "dtype", "device", "init", "tied with",
               "mean", "std", "min", "max", "zero"]  # fmt: skip
    return tabulate(rows, headers, floatfmt=".4g", disable_numparse=[0], missingval="-")


def parameter_counts(model: nn.Module) -> str:
    """ "parameters: 129 unique, 201 total (72 counted again through tying)"."""
    unique, total = count_parameters(model)
    extra = f" ({total - unique:,} counted again through tying)" if total != unique else ""
    return f"parameters: {unique:,} unique, {total:,} total{extra}"


def find_path(model: nn.Module, path: str) -> nn.Module | torch.Tensor:
    """The module or tensor at a dotted path ("" is the model). A step is a child's or a
    tensor's name, as in `state_dict` keys and init and tying globs; a number that names no
    child of an `nn.Sequential` counts by position, as indexing does (negative from the end):
    "0.1.0.bias" is the chapter's rgnet[0][1][0].bias even though rgnet[0]'s children are
    "block 0" ... "block 3", and "-1" is net[-1].
    """
    node: nn.Module | torch.Tensor = model
    for step in path.split(".") if path else []:
        if isinstance(node, nn.Module) and step in node._modules:
            node = node._modules[step]
        elif isinstance(node, nn.Module) and step in {**node._parameters, **node._buffers}:
            node = {**node._parameters, **node._buffers}[step]
        elif isinstance(node, nn.Sequential) and _is_position(step, len(node)):
            node = node[int(step)]
        else:
            names = [n for n, _ in model.named_modules() if n] + list(model.state_dict())
            raise ConfigError(
                f"inspect.param={path}: no module or parameter at '{step}'; "
                f"valid paths include {one_of(names, limit=8)}{did_you_mean(path, names)}"
            )
    return node


def _is_position(step: str, length: int) -> bool:
    """True when `step` is an integer (possibly negative) that indexes `length` children."""
    digits = step[1:] if step.startswith("-") else step
    return digits.isdigit() and -length <= int(step) < length


def show_path(model: nn.Module, path: str) -> str:
    """A parameter as the chapter prints `net[2].bias` (and its `.data`, `.grad`), or a
    module's `state_dict()` as `print(net[2].state_dict())` does ("": the whole model's).
    """
    node = find_path(model, path)
    if isinstance(node, nn.Module):
        label = path or "the whole model"
        return f"{label}: {type(node).__name__}\n{node}\nstate_dict: {node.state_dict()}"
    kind = type(node).__name__
    return (
        f"{path}: {kind} of shape {tuple(node.shape)}, {node.dtype}\n{node}\n"
        f".data: {node.data}\n.grad: {node.grad}"
    )


def probe_table(calls: list[LayerCall]) -> str:
    """Per layer call: output shape, activation mean and std, and the std of the gradient
    that reaches its output, followed by a line saying whether signals vanish or explode.
    """
    rows = []
    for call in calls:
        out = call.output.detach().float()
        grad = call.grad
        rows.append([
            call.path, call.kind, tuple(out.shape), out.mean().item(), out.std().item(),
            grad.float().std().item() if grad is not None else float("nan"),
        ])  # fmt: skip
    table = tabulate(
        rows,
        ["layer", "type", "output", "act mean", "act std", "grad std"],
        floatfmt=".4g",
        disable_numparse=[0],
    )
    return f"{table}\n{_verdict(rows)}"


def _verdict(rows: list[list]) -> str:
    def trend(label: str, first: float, last: float) -> str:
        line = f"{label}: {first:.3g} -> {last:.3g}"
        if not (math.isfinite(first) and math.isfinite(last)) or first == 0:
            return line
        ratio = last / first
        state = "vanishing" if ratio < VANISHING else "exploding" if ratio > EXPLODING else "stable"
        return f"{line} (x{ratio:.3g}, {state})"

    if not rows:
        return ""
    forward = trend("activation std, first -> last layer", rows[0][4], rows[-1][4])
    # Gradients flow from the last layer back to the first.
    backward = trend("gradient std, last -> first layer", rows[-1][5], rows[0][5])
    return f"{forward}\n{backward}"
