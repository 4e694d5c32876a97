"""A composed config against the schemas of runner/schemas.py: the keys no schema declares,
required values left unset, the declared type (and default) at a key path, and a type in
words for error messages ("an integer", "a list of numbers or null")."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator
from typing import Any, get_args, get_origin

from omegaconf import MISSING, DictConfig, ListConfig, OmegaConf

from runner.schemas import InspectSchema, hints, is_schema, keys_of, strip_optional, takes_variables

# -- checking a composed config -------------------------------------------------------------


def undeclared_keys(node: DictConfig, prefix: str = "") -> Iterator[tuple[str, type, Any]]:
    """(path, schema, value) of each key of a composed config that its schema does not
    declare, depth first. Hydra lets `+train.foo=1` add one; a variable (one value) of a
    group that takes variables passes. The runner's own `choices` at the top passes too."""
    node_type = OmegaConf.get_type(node)
    if not is_schema(node_type):
        return  # free-form: `_target_` kwargs, layer arguments
    declared = keys_of(node_type)
    for key in node:
        path, child = f"{prefix}{key}", node._get_node(key)
        nested = isinstance(child, (DictConfig, ListConfig))
        if key in declared:
            if _is_dict_value(child):
                yield from undeclared_keys(child, f"{path}.")
            continue
        if prefix == "" and key == "choices":
            continue
        if nested or not takes_variables(node_type):
            yield path, node_type, OmegaConf.to_container(child) if nested else child._value()


def unset_keys(node: DictConfig, prefix: str = "") -> Iterator[str]:
    """Paths of required values left unset ("???"), in config order. Unlike
    OmegaConf.missing_keys this resolves no interpolation, so a layer's `${data.out_features}`
    does not fail before the unset `data.out_features` itself is named."""
    for key in node:
        path = f"{prefix}{key}"
        if OmegaConf.is_missing(node, key):
            yield path
            continue
        child = node._get_node(key)
        if _is_dict_value(child):
            yield from unset_keys(child, f"{path}.")


def _is_dict_value(node: Any) -> bool:
    # A mapping to walk into: not null, unset ("???") or an interpolation to another node.
    if not isinstance(node, DictConfig):
        return False
    return not (node._is_none() or node._is_missing() or node._is_interpolation())


# -- looking up a key path -------------------------------------------------------------------


def type_at(path: str) -> Any:
    """The declared type at a key path such as "train.batch_size" or "data.true_w[0]", or
    None where the tree is free-form (layer arguments, `_target_` kwargs) or has no such key."""
    # InspectSchema is the run's schema plus `inspect`: one root answers for both configs.
    current: Any = InspectSchema
    for part in re.findall(r"[^.\[\]]+", path):
        current = strip_optional(current)
        if dataclasses.is_dataclass(current):
            current = hints(current).get(part)
        elif get_origin(current) is list and part.isdigit():
            current = (get_args(current) or (Any,))[0]
        elif get_origin(current) is dict:
            current = (get_args(current) or (str, Any))[1]
        else:
            return None
        if current is None or current is Any:
            return None
    return current


def default_at(path: str) -> Any:
    """The schema's default at a dotted key path such as "init.edits" (a fresh list or dict
    for those), or MISSING where the path is not a declared key or has no default."""
    owner: Any = InspectSchema
    parent, _, leaf = path.rpartition(".")
    for part in parent.split(".") if parent else []:
        owner = strip_optional(hints(owner).get(part)) if dataclasses.is_dataclass(owner) else None
    if not dataclasses.is_dataclass(owner):
        return MISSING
    for field in dataclasses.fields(owner):
        if field.name == leaf:
            if field.default_factory is not dataclasses.MISSING:
                return field.default_factory()
            return field.default
    return MISSING


def is_list_of_containers(tp: Any) -> bool:
    """True for a list whose items are lists or mappings (`tying.groups`, `init.rules`)."""
    inner = strip_optional(tp)
    if get_origin(inner) is not list:
        return False
    (item,) = get_args(inner) or (Any,)
    return get_origin(item) in (list, dict) or dataclasses.is_dataclass(item)


def describe(tp: Any) -> str:
    """What a value of type `tp` must be, in words: "an integer", "a list of numbers or null"."""
    inner = strip_optional(tp)
    text = _describe(inner)
    return f"{text} or null" if inner is not tp else text


def _describe(tp: Any) -> str:
    if dataclasses.is_dataclass(tp):
        return f"a mapping with keys {', '.join(keys_of(tp))}"
    if get_origin(tp) is list:
        (item,) = get_args(tp) or (Any,)
        return "a list" if item is Any else f"a list of {_plural(item)}"
    if get_origin(tp) is dict or tp is dict:
        return "a mapping"
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false"}.get(
        tp, "a value"
    )


def _plural(tp: Any) -> str:
    if get_origin(tp) is list:
        return "lists"
    if get_origin(tp) is dict or dataclasses.is_dataclass(tp):
        return "mappings"
    return {int: "integers", float: "numbers", str: "strings", bool: "booleans"}.get(tp, "values")
