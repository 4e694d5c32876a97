"""From a composed config to the initialised, tied `nn.Module`: architecture, init, tying.

Everything the config says is parsed and checked against the model before the
first parameter is filled, so a bad config fails fast with one clear line.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from omegaconf import DictConfig
from torch import nn

from runner.config_values import input_shape, source, to_plain
from runner.edits import apply_edits, check_edits, parse_edits
from runner.errors import ConfigError
from runner.init import DEFAULT_INIT, InitRule, apply_init, parse_rules, plan_init
from runner.model import build_architecture
from runner.tying import ResolvedGroup, apply_tying, parse_groups, replaced_names, resolve_groups

# Seeds are offset per stream (data, shuffling); this bound keeps every offset seed valid.
MAX_SEED = 2**62


@dataclass
class BuiltModel:
    """The module with what was decided while building it (for `inspect` and logging)."""

    module: nn.Module
    input_shape: tuple[int, ...]  # one sample, no batch dimension
    output_shape: tuple[int, ...]
    init: dict[str, str] = field(default_factory=dict)  # parameter name -> rule applied
    tying: list[ResolvedGroup] = field(default_factory=list)


def build(cfg: DictConfig) -> BuiltModel:
    """Build `cfg.model`, fill it by `cfg.init.rules`, tie it by `cfg.tying.groups`, then
    apply `cfg.init.edits` (runner/edits.py).

    Layer construction and every random init draw from PyTorch's global generator,
    seeded with `cfg.seed` inside `torch.random.fork_rng` (the caller's RNG state is
    left as it was): one seed gives identical bits, and parameters that no rule
    touches equal those of the hand-written model built after `torch.manual_seed(seed)`.
    Tying comes last: a tied model is the untied one, built and initialised, with each
    group's first member put in the others' places (their draws are made and dropped), so
    tied and untied runs of one seed share every other layer's values.
    """
    seed = cfg.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < MAX_SEED:
        raise ConfigError(f"seed must be an integer in [0, 2^62), got {seed!r}")
    model_cfg = to_plain(cfg.get("model"))
    if not isinstance(model_cfg, dict):
        raise ConfigError("model: no model config was composed (choose one with model=NAME)")
    init_cfg = to_plain(cfg.get("init")) or {}
    rules = parse_rules(init_cfg, source(cfg, "init"))
    edits = parse_edits(init_cfg, source(cfg, "init"))
    groups = parse_groups(to_plain(cfg.get("tying")) or {}, source(cfg, "tying"))
    shape = input_shape(cfg)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        module, output_shape = build_architecture(model_cfg, shape, source(cfg, "model"))
        plan = plan_init(module, rules)  # init and tying both checked before anything is filled
        replaced = replaced_names(module, resolve_groups(module, groups))
        _check_rules_survive_tying(plan, replaced)
        check_edits(module, edits)
        applied = apply_init(module, rules)
    tying = apply_tying(module, groups)
    # A tied name shows the rule of the owner whose tensor it now is.
    for name, owner in replaced.items():
        applied.pop(name, None)
        if owner in applied:
            applied[name] = applied[owner]
    for name, changes in apply_edits(module, edits).items():  # the chapter's param.data += 1
        applied[name] = " + ".join([applied.get(name, DEFAULT_INIT), *changes])
    return BuiltModel(module, shape, output_shape, applied, tying)


def _check_rules_survive_tying(plan: dict[str, InitRule], replaced: dict[str, str]) -> None:
    """A rule whose every parameter tying replaces by its owner's would do nothing: an error."""
    for rule in {id(r): r for r in plan.values()}.values():
        names = [name for name, winner in plan.items() if winner is rule]
        if names and all(name in replaced for name in names):
            owners = sorted({replaced[name] for name in names})
            raise ConfigError(
                f"{rule.where}: sets only {', '.join(names)}, which tying replaces by "
                f"{', '.join(owners)} (the first member of a group owns the tensor and its init); "
                "write the rule for the owner"
            )


def build_model(cfg: DictConfig) -> nn.Module:
    """The initialised, tied module that `cfg` describes (see `build`)."""
    return build(cfg).module
