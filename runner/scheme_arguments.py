"""The arguments of the init schemes (runner/schemes.py), checked before anything is
filled: each check returns what is wrong, in words, or None. A gain is a number, a
nonlinearity name or {nonlinearity, param}, read with `torch.nn.init.calculate_gain`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from runner.errors import did_you_mean, is_number, one_of

NONLINEARITIES = (
    "linear", "identity", "conv1d", "conv2d", "conv3d", "conv_transpose1d",
    "conv_transpose2d", "conv_transpose3d", "sigmoid", "tanh", "relu", "leaky_relu", "selu",
)  # fmt: skip
FAN_MODES = ("fan_in", "fan_out", "fan_avg")
DISTRIBUTIONS = ("truncated_normal", "normal", "uniform")


def resolve_gain(gain: Any) -> float:
    """A gain given as a number, a nonlinearity name, or {nonlinearity: ..., param: ...}."""
    if is_number(gain):
        return float(gain)
    if isinstance(gain, str):
        name, param = gain, None
    elif isinstance(gain, Mapping) and "nonlinearity" in gain:
        name, param = gain["nonlinearity"], gain.get("param")
    else:
        raise ValueError(f"gain must be a number or a nonlinearity name, got {gain!r}")
    if name == "identity":
        name = "linear"
    if name not in NONLINEARITIES:
        raise ValueError(
            f"gain: unknown nonlinearity '{name}'; valid: {one_of(NONLINEARITIES, limit=20)}"
            f"{did_you_mean(name, NONLINEARITIES)}"
        )
    return nn.init.calculate_gain(name, param)


def numbers(args: dict[str, Any], *keys: str) -> str | None:
    """Each of `keys` is a number (not a bool)."""
    for key in keys:
        if not is_number(args[key]):
            return f"{key} must be a number, got {args[key]!r}"
    return None


def non_negative(key: str):
    """A check that `key` is a number >= 0 (a std)."""

    def check(args: dict[str, Any], shape: torch.Size) -> str | None:
        if not is_number(args[key]) or args[key] < 0:
            return f"{key} must be a number >= 0, got {args[key]!r}"
        return None

    return check


def among(args: dict[str, Any], key: str, valid: tuple[str, ...]) -> str | None:
    """`key` is one of `valid` (a mode, a distribution)."""
    if args[key] not in valid:
        return f"{key} must be one of {one_of(valid)}, got {args[key]!r}"
    return None


def gain_ok(args: dict[str, Any], shape: torch.Size) -> str | None:
    """`gain` resolves (`resolve_gain`) to a number > 0."""
    try:
        gain = resolve_gain(args["gain"])
    except ValueError as error:
        return str(error)
    return None if gain > 0 else f"gain must be > 0, got {args['gain']!r}"


def uniform_ok(args: dict[str, Any], shape: torch.Size) -> str | None:
    """U(a, b): numbers with a < b."""
    bad = numbers(args, "a", "b")
    if not bad and args["a"] >= args["b"]:
        bad = f"needs a < b, got a={args['a']}, b={args['b']}"
    return bad


def trunc_normal_ok(args: dict[str, Any], shape: torch.Size) -> str | None:
    """N(mean, std) cut to [a, b]: std > 0, a < b."""
    if not is_number(args["std"]) or args["std"] <= 0:
        return f"std must be a number > 0, got {args['std']!r}"
    return uniform_ok(args, shape) or numbers(args, "mean")


def kaiming_ok(args: dict[str, Any], shape: torch.Size) -> str | None:
    """He init: a number `a`, mode fan_in or fan_out, a nonlinearity calculate_gain takes."""
    problem = numbers(args, "a") or among(args, "mode", FAN_MODES[:2])
    if problem:
        return problem
    try:  # the names calculate_gain itself accepts ("identity" is ours, for gain: only)
        nn.init.calculate_gain(args["nonlinearity"], args["a"])
    except ValueError:
        valid = [n for n in NONLINEARITIES if n != "identity"]
        return (
            f"nonlinearity must be one of {one_of(valid, limit=20)}, got {args['nonlinearity']!r}"
        )
    return None


def sparse_ok(args: dict[str, Any], shape: torch.Size) -> str | None:
    """sparsity in [0, 1], std >= 0."""
    if not is_number(args["sparsity"]) or not 0 <= args["sparsity"] <= 1:
        return f"sparsity must be in [0, 1], got {args['sparsity']!r}"
    return non_negative("std")(args, shape)


def dirac_ok(args: dict[str, Any], shape: torch.Size) -> str | None:
    """groups: a positive integer that divides the output channels."""
    groups = args["groups"]
    if isinstance(groups, bool) or not isinstance(groups, int) or groups < 1:
        return f"groups must be a positive integer, got {groups!r}"
    if shape[0] % groups:
        return f"groups={groups} does not divide the {shape[0]} output channels"
    return None


def variance_scaling_ok(args: dict[str, Any], shape: torch.Size) -> str | None:
    """scale > 0, a fan mode and a distribution of FAN_MODES and DISTRIBUTIONS."""
    if not is_number(args["scale"]) or args["scale"] <= 0:
        return f"scale must be > 0, got {args['scale']!r}"
    return among(args, "mode", FAN_MODES) or among(args, "distribution", DISTRIBUTIONS)


def zeroed_uniform_ok(args: dict[str, Any], shape: torch.Size) -> str | None:
    """The chapter's U(-bound, bound) with |w| < threshold zeroed: 0 <= threshold <= bound."""
    bad = numbers(args, "bound", "threshold")
    if bad:
        return bad
    if not 0 <= args["threshold"] <= args["bound"]:
        got = f"threshold={args['threshold']}, bound={args['bound']}"
        return f"needs 0 <= threshold <= bound, got {got}"
    return None
