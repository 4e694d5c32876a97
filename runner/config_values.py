"""What every reader of the composed config shares: the file a group's keys came from,
plain values, unknown-key checks, the input shape, and `_target_` imports that fail
with one line naming the file."""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from runner.errors import ConfigError, did_you_mean, one_of


def source(cfg: DictConfig, group: str) -> str:
    """Name the file a group's keys came from, e.g. "model/rgnet.yaml" (or "model config")."""
    choices = cfg.get("choices") if isinstance(cfg, DictConfig) else None
    option = choices.get(group) if choices else None
    return f"{group}/{option}.yaml" if option else f"{group} config"


def to_plain(node: Any) -> Any:
    """Resolve an OmegaConf node into plain dicts and lists (scalars pass through)."""
    if isinstance(node, (DictConfig, ListConfig)):
        return OmegaConf.to_container(node, resolve=True)
    return node


def check_keys(
    node: Mapping[str, Any], valid: Iterable[str], where: str, allow_scalars: bool = False
) -> None:
    """Raise ConfigError for keys of `node` outside `valid`.

    With `allow_scalars`, extra keys holding a single number, string or bool are
    accepted: a group file may define variables that its entries interpolate
    (`width: 256` ... `out_features: ${model.width}`).
    """
    valid = list(valid)
    for key, value in node.items():
        if key in valid:
            continue
        if allow_scalars and (value is None or isinstance(value, (int, float, str, bool))):
            continue
        raise ConfigError(
            f"{where}: unknown key '{key}'; valid keys: {one_of(valid)}{did_you_mean(key, valid)}"
        )


def input_shape(cfg: DictConfig) -> tuple[int, ...]:
    """The shape of one input sample: `data.in_shape` if given, else `(data.in_features,)`."""
    data = cfg.get("data") or {}
    where = source(cfg, "data")
    shape = to_plain(data.get("in_shape"))
    if shape is None:
        features = data.get("in_features", 4)
        shape = [features]
        key = "in_features"
    else:
        key = "in_shape"
        if not isinstance(shape, list) or not shape:
            raise ConfigError(f"{where}: {key} must be a non-empty list of sizes, got {shape!r}")
    for size in shape:
        if isinstance(size, bool) or not isinstance(size, int) or size <= 0:
            raise ConfigError(f"{where}: {key} must hold positive integers, got {size!r}")
    return tuple(shape)


def import_object(path: str, where: str) -> Any:
    """The object at a dotted `_target_` path ("torch.nn.init.constant_", "pkg.mod.Class").

    The longest importable module prefix is imported and the rest read as attributes.
    Failure is a ConfigError naming `where` (Hydra's own locate would also log the error).
    """
    import importlib

    parts = str(path).split(".")
    for cut in range(len(parts) - 1, 0, -1):
        module_name = ".".join(parts[:cut])
        try:
            found: Any = importlib.import_module(module_name)
        except ImportError as error:
            if error.name and not module_name.startswith(error.name):
                raise ConfigError(
                    f"{where}: importing _target_ '{path}' failed: {error}"
                ) from error
            continue
        owner = module_name
        for attribute in parts[cut:]:
            if not hasattr(found, attribute):
                raise ConfigError(f"{where}: cannot import _target_ '{path}': "
                                  f"{_no_attribute(found, owner, attribute)}")  # fmt: skip
            found, owner = getattr(found, attribute), f"{owner}.{attribute}"
        return found
    raise ConfigError(f"{where}: cannot import _target_ '{path}' (no such module or attribute)")


def _no_attribute(owner: Any, name: str, attribute: str) -> str:
    """Why `name.attribute` does not exist: "torch.optim has no 'Adma'; did you mean
    'torch.optim.Adam'?", then the module's own classes when they are few (as an optimizer's
    or a scheduler's module has)."""
    public = [n for n in dir(owner) if not n.startswith("_")]
    classes = [n for n in public if isinstance(getattr(owner, n, None), type)
               and str(getattr(getattr(owner, n), "__module__", "")).startswith(name)]  # fmt: skip
    close = [f"{name}.{n}" for n in difflib.get_close_matches(attribute, public, n=3, cutoff=0.5)]
    text = f"{name} has no '{attribute}'"
    if close:
        text += "; did you mean " + ", ".join(repr(c) for c in close) + "?"
    if 0 < len(classes) <= 30:
        text += f"; its classes: {one_of(sorted(classes, key=str.lower), limit=30)}"
    return text
