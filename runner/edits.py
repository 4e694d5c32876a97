"""Direct edits of parameter values, after init and tying (`init.edits`).

The chapter sets values by hand once a net is built: `net[0].weight.data[:] += 1`,
`net[0].weight.data[0, 0] = 42`, DJL's `addi(7)`, `divi(9)`, `set(new NDIndex(0, 0), 2020)`.
An edit names parameters as an init rule does (`params` globs, `modules` classes,
`optional`), one operation (`add`, `sub`, `mul`, `div` or `set`, with its number) and
optionally an `index` (one integer per leading dimension, negative from the end), and
changes the values in place without recording a gradient, as `param.data += 1` does.

Edits run in order after every rule has filled its tensors and the model is tied, so an
edit of a tied name changes the one shared tensor, once, whichever of its names match.
Every edit is checked against the model's names and shapes before any tensor is filled.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from runner.errors import ConfigError, did_you_mean, is_number, one_of
from runner.init import Selector, owners_of, parse_selector, select

# Each operation as the in-place tensor method that does it (`param.data += v` is add_).
OPERATIONS = {"add": "add_", "sub": "sub_", "mul": "mul_", "div": "div_", "set": "fill_"}
EDIT_KEYS = ("params", "modules", "optional", "index", *OPERATIONS)


@dataclass(frozen=True)
class Edit(Selector):
    """One entry of `init.edits`."""

    operation: str  # a key of OPERATIONS
    value: float | int
    index: tuple[int, ...] = ()  # () edits every value
    optional: bool = False

    def describe(self) -> str:
        """E.g. "add(1)" or "[0, 0] set(42)": what `inspect` adds to a parameter's init."""
        where = f"[{', '.join(map(str, self.index))}] " if self.index else ""
        return f"{where}{self.operation}({self.value})"


def parse_edits(init_cfg: Mapping[str, Any], where: str) -> list[Edit]:
    """Read and check `init.edits` (a plain dict of the init group); `where` names its file."""
    edits = init_cfg.get("edits") or []
    if not isinstance(edits, list):
        raise ConfigError(f"{where}: edits must be a list, got {edits!r}")
    return [_parse_edit(edit, f"{where}: edits[{i}]") for i, edit in enumerate(edits)]


def _parse_edit(edit: Any, where: str) -> Edit:
    valid = one_of(OPERATIONS)
    if not isinstance(edit, Mapping):
        raise ConfigError(f"{where}: an edit is a mapping such as {{params: 0.weight, add: 1}}")
    args = dict(edit)
    for key in args:
        if key not in EDIT_KEYS:
            raise ConfigError(
                f"{where}: unknown key '{key}'; valid: {one_of(EDIT_KEYS)}"
                f"{did_you_mean(key, EDIT_KEYS)}"
            )
    params, modules, optional = parse_selector(args, where)
    index = args.pop("index", None)
    operations = [key for key in args if key in OPERATIONS]
    if len(operations) != 1:
        raise ConfigError(f"{where}: give exactly one operation of {valid}, got {operations}")
    operation = operations[0]
    value = args[operation]
    if not is_number(value):
        raise ConfigError(f"{where}: {operation} must be a number, got {value!r}")
    if not math.isfinite(value):  # a NaN weight would read as a diverged run at step 1
        raise ConfigError(f"{where}: {operation} must be a finite number, got {value}")
    if operation == "div" and value == 0:
        raise ConfigError(f"{where}: div must not be 0")
    return Edit(where, params, modules, operation, value, _index(index, where), optional)


def _index(index: Any, where: str) -> tuple[int, ...]:
    if index is None:
        return ()
    items = [index] if isinstance(index, int) and not isinstance(index, bool) else index
    if (
        not isinstance(items, list)
        or not items
        or not all(isinstance(i, int) and not isinstance(i, bool) for i in items)
    ):
        raise ConfigError(
            f"{where}: index must be a list of integers, one per leading dimension "
            f"(e.g. [0, 0]), got {index!r}"
        )
    return tuple(items)


def check_edits(model: nn.Module, edits: list[Edit]) -> None:
    """Every edit matches a parameter (unless `optional`) and its index fits each one's shape.
    Names and shapes are those of the untied model too, so this runs before anything is
    filled."""
    named = list(model.named_parameters(remove_duplicate=False))
    owners = owners_of(model, named)
    for edit in edits:
        for name, param in select(edit, named, owners, edit.optional):
            shape = tuple(param.shape)
            fits = len(edit.index) <= len(shape) and all(
                -size <= i < size for i, size in zip(edit.index, shape, strict=False)
            )
            if not fits:
                raise ConfigError(
                    f"{edit.where}: index {list(edit.index)} is outside {name} of shape "
                    f"{list(shape)}"
                )


def apply_edits(model: nn.Module, edits: list[Edit]) -> dict[str, list[str]]:
    """Apply `edits` in order, each to every tensor it matches once (a tied tensor under
    any of its names), without recording a gradient; return {name: descriptions} for every
    name of an edited tensor."""
    named = list(model.named_parameters(remove_duplicate=False))
    owners = owners_of(model, named)
    names_of: dict[int, list[str]] = {}
    for name, param in named:
        names_of.setdefault(id(param), []).append(name)
    applied: dict[str, list[str]] = {}
    with torch.no_grad():
        for edit in edits:
            done: set[int] = set()
            for _, param in select(edit, named, owners, optional=True):
                if id(param) in done:
                    continue
                done.add(id(param))
                target = param[edit.index] if edit.index else param
                getattr(target, OPERATIONS[edit.operation])(edit.value)
                for name in names_of[id(param)]:
                    applied.setdefault(name, []).append(edit.describe())
    return applied
