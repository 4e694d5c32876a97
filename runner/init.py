"""Init rules: which scheme fills which parameter, the last matching rule winning.

A rule selects parameters by glob on the full name (`params`, default all) and by
the class of the module that owns them (`modules`, default all), and names a
registered `scheme` with its arguments or a `_target_` callable `fn(tensor, **args)`
that fills the tensor in place. Parameters no rule matches keep PyTorch's default.
A rule that matches nothing is an error (a typo, usually) unless it says `optional: true`.
Every rule is checked against the model before any tensor is touched.
"""

from __future__ import annotations

import fnmatch
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from runner.errors import ConfigError, did_you_mean, first_line, one_of
from runner.layers import ALIASES
from runner.schemes import SCHEMES

INIT_KEYS = ("rules", "edits")
DEFAULT_INIT = "PyTorch default"  # what inspect shows for a parameter no rule fills


@dataclass(frozen=True)
class Selector:
    """Which parameters an entry of `init.rules` or `init.edits` names."""

    where: str  # "init/normal.yaml: rules[0]"
    params: tuple[str, ...]  # globs on the full name
    modules: tuple[str, ...] | None  # classes of the owning module; None: any

    def matches(self, name: str, module: nn.Module) -> bool:
        """True when `name` matches a `params` glob and `module`'s class is in `modules`."""
        if not any(fnmatch.fnmatchcase(name, pattern) for pattern in self.params):
            return False
        return self.modules is None or bool(_class_names(module) & set(self.modules))


@dataclass(frozen=True)
class InitRule(Selector):
    """One entry of `init.rules`."""

    scheme: str | None  # a name in SCHEMES, or None for a _target_ callable
    fill: Callable[..., None]
    args: dict[str, Any] = field(default_factory=dict)
    optional: bool = False  # True: matching nothing is fine (a bias rule on a bias-free model)

    def describe(self) -> str:
        """E.g. "normal(mean=0.0, std=0.01)"; what `inspect` shows as a parameter's init."""
        label = self.scheme or getattr(self.fill, "__qualname__", str(self.fill))
        return f"{label}({', '.join(f'{k}={v}' for k, v in self.args.items())})"


def parse_rules(init_cfg: Mapping[str, Any], where: str) -> list[InitRule]:
    """Read and check `init.rules` (a plain dict of the init group); `where` names its file."""
    from runner.config_values import check_keys

    check_keys(init_cfg, INIT_KEYS, where, allow_scalars=True)
    rules = init_cfg.get("rules") or []
    if not isinstance(rules, list):
        raise ConfigError(f"{where}: rules must be a list, got {rules!r}")
    return [_parse_rule(rule, f"{where}: rules[{i}]") for i, rule in enumerate(rules)]


def parse_selector(args: dict[str, Any], where: str) -> tuple[tuple, tuple | None, bool]:
    """Pop `params` (default all), `modules` and `optional` from an entry's `args`."""
    params = _string_list(args.pop("params", "*"), where, "params")
    modules = args.pop("modules", None)
    if modules is not None:
        # Aliases name their class: modules: [linear] is modules: [Linear].
        names = _string_list(modules, where, "modules")
        modules = tuple(ALIASES[m].__name__ if m in ALIASES else m for m in names)
    optional = args.pop("optional", False)
    if not isinstance(optional, bool):
        raise ConfigError(f"{where}: optional must be true or false, got {optional!r}")
    return params, modules, optional


def _parse_rule(rule: Any, where: str) -> InitRule:
    if not isinstance(rule, Mapping):
        raise ConfigError(f"{where}: a rule is a mapping with 'scheme:' or '_target_:'")
    args = dict(rule)
    params, modules, optional = parse_selector(args, where)
    scheme, target = args.pop("scheme", None), args.pop("_target_", None)
    if (scheme is None) == (target is None):
        raise ConfigError(f"{where}: give exactly one of 'scheme' or '_target_'")
    if scheme is not None:
        if scheme not in SCHEMES:
            raise ConfigError(
                f"{where}: unknown scheme '{scheme}'; valid: {one_of(SCHEMES, limit=30)}"
                f"{did_you_mean(scheme, SCHEMES)}"
            )
        _check_scheme_arguments(scheme, args, where)
        return InitRule(where, params, modules, scheme, SCHEMES[scheme].fill, args, optional)
    fill = _import_fill(target, args, where)
    return InitRule(where, params, modules, None, fill, args, optional)


def _string_list(value: Any, where: str, key: str) -> tuple[str, ...]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not items or not all(isinstance(v, str) for v in items):
        raise ConfigError(f"{where}: {key} must be a string or a list of strings, got {value!r}")
    return tuple(items)


def _check_scheme_arguments(scheme: str, args: Mapping[str, Any], where: str) -> None:
    accepted = SCHEMES[scheme].arguments()
    for key in args:
        if key not in accepted:
            valid = one_of(accepted) if accepted else "none"
            raise ConfigError(
                f"{where}: scheme {scheme} has no argument '{key}'; valid: {valid}"
                f"{did_you_mean(key, accepted)}"
            )
    for key, default in accepted.items():
        if default is inspect.Parameter.empty and key not in args:
            raise ConfigError(f"{where}: scheme {scheme} needs argument '{key}'")


def _import_fill(target: str, args: Mapping[str, Any], where: str) -> Callable[..., None]:
    from runner.config_values import import_object

    fill = import_object(target, where)
    if not callable(fill):
        raise ConfigError(f"{where}: _target_ '{target}' is not callable")
    try:
        inspect.signature(fill).bind(torch.empty(0), **args)
    except TypeError as error:
        raise ConfigError(
            f"{where}: _target_ {target} cannot take {dict(args)}: {error}"
        ) from error
    except ValueError:
        pass  # no introspectable signature (a builtin); let the call decide
    return fill


def _class_names(module: nn.Module) -> set[str]:
    cls = type(module)
    return {cls.__name__, f"{cls.__module__}.{cls.__qualname__}"}


def plan_init(model: nn.Module, rules: list[InitRule]) -> dict[str, InitRule]:
    """Map each parameter name to the last rule that matches it, checking every rule.

    Raises ConfigError for a rule that matches no parameter (listing the nearest names)
    unless it says `optional`, and for a scheme that cannot fill a tensor it matches
    (wrong rank, bad arguments).
    """
    named = list(model.named_parameters())
    owners = owners_of(model, named)
    plan: dict[str, InitRule] = {}
    for rule in rules:
        for name, param in select(rule, named, owners, rule.optional):
            _check_fits(rule, name, param, owners[name])
            plan[name] = rule
    return plan


def owners_of(model: nn.Module, named: list[tuple[str, torch.Tensor]]) -> dict[str, nn.Module]:
    """Each parameter name's owning module."""
    return {name: model.get_submodule(name.rpartition(".")[0]) for name, _ in named}


def select(selector: Selector, named: list, owners: dict[str, nn.Module], optional: bool) -> list:
    """The (name, parameter) pairs of `named` that `selector` matches. Unless `optional`,
    every glob and class must match something, and so must the entry."""
    matched = [(n, p) for n, p in named if selector.matches(n, owners[n])]
    if not optional:
        _check_each_selector(selector, named, owners)
        if not matched:
            raise ConfigError(_matches_nothing(selector, named, owners))
    return matched


def _check_each_selector(rule: Selector, named: list, owners: dict[str, nn.Module]) -> None:
    """Every glob in `params` and every class in `modules` must match something on its own:
    a typo in one entry of a list is still a typo."""
    names = [n for n, _ in named]
    for pattern in rule.params:
        if not fnmatch.filter(names, pattern):
            raise ConfigError(
                f"{rule.where}: params '{pattern}' matches no parameter; parameters are: "
                f"{one_of(names, limit=8)}{did_you_mean(pattern, names)}"
            )
    classes = set().union(*(_class_names(m) for m in owners.values())) if owners else set()
    for cls in rule.modules or ():
        if cls not in classes:
            shown = sorted({type(m).__name__ for m in owners.values()})
            raise ConfigError(
                f"{rule.where}: modules '{cls}' is not a class of this model's layers; "
                f"they are: {one_of(shown)}{did_you_mean(cls, shown)}"
            )


def apply_init(model: nn.Module, rules: list[InitRule]) -> dict[str, str]:
    """Fill every parameter that a rule matches, in `named_parameters` order (as `net.apply`
    would); return {parameter name: description of the rule applied}.
    """
    plan = plan_init(model, rules)
    with torch.no_grad():
        for name, param in model.named_parameters():
            rule = plan.get(name)
            if rule is None:
                continue
            try:
                if rule.scheme is not None and SCHEMES[rule.scheme].needs_module:
                    owner, _, attribute = name.rpartition(".")
                    rule.fill(param, module=model.get_submodule(owner), param_name=attribute)
                else:
                    rule.fill(param, **rule.args)
            except Exception as error:  # a _target_ of the user's, or arguments torch refuses
                label = rule.scheme or "_target_"
                raise ConfigError(
                    f"{rule.where}: {label} failed on {name} (shape {list(param.shape)}): "
                    f"{first_line(error)}"
                ) from error
    return {name: rule.describe() for name, rule in plan.items()}


def _check_fits(rule: InitRule, name: str, param: torch.Tensor, owner: nn.Module) -> None:
    if rule.scheme is None:
        return
    scheme = SCHEMES[rule.scheme]
    dims = param.dim()
    if dims < scheme.min_dims or (scheme.max_dims is not None and dims > scheme.max_dims):
        if scheme.max_dims is None:
            wanted = f"at least {scheme.min_dims}"
        elif scheme.max_dims == scheme.min_dims:
            wanted = f"exactly {scheme.min_dims}"
        else:
            wanted = f"{scheme.min_dims} to {scheme.max_dims}"
        raise ConfigError(
            f"{rule.where}: scheme {rule.scheme} needs a tensor with {wanted} dims, but it "
            f"matches {name} of shape {list(param.shape)}; narrow 'params' (e.g. '*.weight')"
        )
    if scheme.needs_module and not hasattr(owner, "reset_parameters"):
        raise ConfigError(
            f"{rule.where}: scheme default needs reset_parameters(), which "
            f"{type(owner).__name__} (owner of {name}) does not have"
        )
    if scheme.check is not None:
        arguments = {**scheme.arguments(), **rule.args}
        problem = scheme.check(arguments, param.shape)
        if problem:
            raise ConfigError(f"{rule.where}: scheme {rule.scheme}: {problem}")


def _matches_nothing(rule: Selector, named: list, owners: dict[str, nn.Module]) -> str:
    names = [n for n, _ in named]
    near = did_you_mean(rule.params[0], names)
    message = f"{rule.where}: params {list(rule.params)} match no parameter"
    if rule.modules is not None:
        classes = sorted({type(m).__name__ for m in owners.values()})
        message += f" in modules {list(rule.modules)} (the model's have: {one_of(classes)})"
    return f"{message}; parameters are: {one_of(names, limit=8)}{near}"
