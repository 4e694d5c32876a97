"""Tying groups: several places in the model use one module or one Parameter.

A group lists paths (globs allowed). Module paths ("2", "4") put one module
instance at every place, as the chapter's `nn.Sequential(shared, relu, shared)`;
parameter paths ("2.weight", "4.weight") make the layers share one `Parameter`.
The first member owns the tensor and keeps its init. Because members are the
same object, gradients from every use add up in one `.grad`, `parameters()`
yields the tensor once, and `state_dict()` still lists every name.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from torch import nn

from runner.errors import ConfigError, did_you_mean, one_of

TYING_KEYS = ("groups",)


@dataclass(frozen=True)
class TyingGroup:
    """One entry of `tying.groups`: the paths to make one."""

    where: str  # "tying/hidden.yaml: groups[0]"
    patterns: tuple[str, ...]


@dataclass(frozen=True)
class ResolvedGroup:
    """A group matched against a model: its kind and concrete member paths, owner first."""

    group: TyingGroup
    kind: str  # "module" or "parameter"
    members: tuple[str, ...]


def parse_groups(tying_cfg: Mapping[str, Any], where: str) -> list[TyingGroup]:
    """Read and check `tying.groups` (a plain dict of the tying group); `where` names its file."""
    from runner.config_values import check_keys

    check_keys(tying_cfg, TYING_KEYS, where, allow_scalars=True)
    groups = tying_cfg.get("groups") or []
    if not isinstance(groups, list):
        raise ConfigError(f"{where}: groups must be a list of lists of paths, got {groups!r}")
    parsed = []
    for i, group in enumerate(groups):
        here = f"{where}: groups[{i}]"
        if not isinstance(group, list) or not all(isinstance(p, (str, int)) for p in group):
            raise ConfigError(f"{here}: a group is a list of module or parameter paths")
        parsed.append(TyingGroup(here, tuple(str(p) for p in group)))
    return parsed


def resolve_groups(model: nn.Module, groups: list[TyingGroup]) -> list[ResolvedGroup]:
    """Match every group against the (untied) model and check it can be tied.

    Raises ConfigError for a path that matches nothing (with the nearest names), a
    group mixing module and parameter paths or with fewer than two members, members
    of different type or shape, and a path (or a parameter under it) in two groups.
    """
    resolved = [_resolve(model, group) for group in groups]
    seen: dict[str, TyingGroup] = {}
    for entry in resolved:
        for name in _covered_names(model, entry):
            if name in seen:
                raise ConfigError(
                    f"{entry.group.where}: '{name}' is already tied in {seen[name].where}; "
                    "a path may be in one group only"
                )
            seen[name] = entry.group
    return resolved


def apply_tying(model: nn.Module, groups: list[TyingGroup]) -> list[ResolvedGroup]:
    """Tie `model` in place as `groups` say; return the groups with their concrete members."""
    resolved = resolve_groups(model, groups)
    for entry in resolved:
        owner_path, *others = entry.members
        if entry.kind == "module":
            owner = model.get_submodule(owner_path)
            for path in others:
                parent, _, child = path.rpartition(".")
                # One instance at both places: the chapter's Sequential(shared, relu, shared).
                setattr(model.get_submodule(parent), child, owner)
        else:
            owner = model.get_parameter(owner_path)
            for path in others:
                module_path, _, attribute = path.rpartition(".")
                setattr(model.get_submodule(module_path), attribute, owner)
    return resolved


def _resolve(model: nn.Module, group: TyingGroup) -> ResolvedGroup:
    module_names = [name for name, _ in model.named_modules() if name]
    param_names = [name for name, _ in model.named_parameters()]
    members: list[str] = []
    kinds = set()
    for pattern in group.patterns:
        # fnmatch's * crosses dots; a match inside another match is that module's own child,
        # so "0.block *" means the blocks, not also the layers within them.
        found = _outermost(fnmatch.filter(module_names, pattern))
        kind = "module"
        if not found:
            found, kind = fnmatch.filter(param_names, pattern), "parameter"
        if not found:
            raise ConfigError(
                f"{group.where}: '{pattern}' matches no module or parameter; modules are "
                f"{one_of(module_names, limit=8)}"
                f"{did_you_mean(pattern, module_names + param_names)}"
            )
        kinds.add(kind)
        members += [name for name in found if name not in members]
    if len(kinds) > 1:
        raise ConfigError(f"{group.where}: mixes module paths and parameter paths; use one kind")
    if len(members) < 2:
        raise ConfigError(f"{group.where}: ties {members} only; a group needs two or more members")
    kind = kinds.pop()
    _check_alike(model, group, kind, members)
    return ResolvedGroup(group, kind, tuple(members))


def _outermost(paths: list[str]) -> list[str]:
    return [p for p in paths if not any(p.startswith(q + ".") for q in paths if q != p)]


def _check_alike(model: nn.Module, group: TyingGroup, kind: str, members: list[str]) -> None:
    def signature(path: str) -> tuple:
        if kind == "parameter":
            param = model.get_parameter(path)
            return ("Parameter", tuple(param.shape), param.dtype)
        module = model.get_submodule(path)
        tensors = tuple((k, tuple(v.shape), v.dtype) for k, v in module.state_dict().items())
        # repr holds the settings that shapes do not show (padding, stride, dropout p, ...)
        return (repr(module), tensors)

    owner = signature(members[0])
    for path in members[1:]:
        if signature(path) != owner:
            first, other = _describe(model, kind, members[0]), _describe(model, kind, path)
            raise ConfigError(
                f"{group.where}: cannot tie '{members[0]}' and '{path}': {first} vs {other}; "
                "tied members need the same type, settings and shapes"
            )
    for a in members:
        for b in members:
            if kind == "module" and b.startswith(a + "."):
                raise ConfigError(
                    f"{group.where}: '{b}' lies inside '{a}'; a module cannot share itself"
                )


def _describe(model: nn.Module, kind: str, path: str) -> str:
    if kind == "parameter":
        return f"shape {list(model.get_parameter(path).shape)}"
    return " ".join(repr(model.get_submodule(path)).split())  # one line, however nested


def _covered_names(model: nn.Module, entry: ResolvedGroup) -> list[str]:
    """The member paths of a group and every parameter name they tie."""
    names = list(entry.members)
    if entry.kind == "module":
        for path in entry.members:
            names += [f"{path}.{n}" for n, _ in model.get_submodule(path).named_parameters()]
    return names


def replaced_names(model: nn.Module, resolved: list[ResolvedGroup]) -> dict[str, str]:
    """For the untied `model`: each parameter name that tying will point at another tensor,
    mapped to the owner's name whose tensor it will share.
    """
    replaced = {}
    for entry in resolved:
        owner, *others = entry.members
        if entry.kind == "parameter":
            replaced.update({path: owner for path in others})
            continue
        names = [n for n, _ in model.get_submodule(owner).named_parameters()]
        for path in others:
            replaced.update({f"{path}.{n}": f"{owner}.{n}" for n in names})
    return replaced


def tied_names(model: nn.Module) -> dict[str, list[str]]:
    """For each parameter name, the other names that refer to the same tensor."""
    by_tensor: dict[int, list[str]] = {}
    for name, param in model.named_parameters(remove_duplicate=False):
        by_tensor.setdefault(id(param), []).append(name)
    return {name: [o for o in names if o != name] for names in by_tensor.values() for name in names}


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(unique, total) element counts: a tied tensor counts once in unique, at each use in total."""
    unique = sum(p.numel() for p in model.parameters())
    total = sum(p.numel() for _, p in model.named_parameters(remove_duplicate=False))
    return unique, total
