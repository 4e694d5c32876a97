"""The markdown reference of the config (README's "Config reference"): every group and
key with its type, default and description, read from the schemas' dataclasses, so the
documentation cannot drift from what is checked."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator
from typing import Any, get_args, get_origin

from omegaconf import MISSING

from runner.schemas import InspectSchema, RunSchema, hints, strip_optional, takes_variables


def config_reference() -> str:
    """The markdown reference of the config: every group and key with its type, default and
    a one-line description, generated from the schemas of runner/schemas.py."""
    lines = [
        "Generated from `runner/schemas.py` by `runner.config_reference.config_reference()`.",
        "Types are checked when the config is composed; ranges and names before training.",
        "",
    ]
    sections = [("top level", "The settings outside any group (conf/config.yaml).", RunSchema, "")]
    sections += [(f"`{name}`", _doc(schema), schema, f"{name}.")
                 for name, schema in _sections(InspectSchema, "")]  # fmt: skip
    for title, doc, schema, prefix in sections:
        lines += [f"#### {title}", "", doc, ""]
        if takes_variables(schema):
            lines += ["Other keys of this group are variables holding one value, for its own "
                      "interpolations.", ""]  # fmt: skip
        lines += ["| key | type | default | description |", "|---|---|---|---|"]
        lines += [*_rows(schema, prefix), ""]
    lines += [
        "#### `experiment`",
        "",
        "A study (conf/experiment/*.yaml, `# @package _global_`): it sets keys of the groups "
        "above and Hydra's sweeper, and has no keys of its own.",
        "",
    ]
    return "\n".join(lines)


def _sections(schema: type, prefix: str) -> Iterator[tuple[str, type]]:
    for field in dataclasses.fields(schema):
        tp = hints(schema)[field.name]
        if dataclasses.is_dataclass(tp):
            yield f"{prefix}{field.name}", tp
            yield from _sections(tp, f"{prefix}{field.name}.")


def _rows(schema: type, prefix: str) -> Iterator[str]:
    for field in dataclasses.fields(schema):
        tp = hints(schema)[field.name]
        if dataclasses.is_dataclass(tp):
            continue  # a section of its own
        help_text = field.metadata.get("help", "")
        yield (
            f"| `{prefix}{field.name}` | {_cell(_type_name(tp))} | {_cell(_default(field))} "
            f"| {_cell(help_text)} |"
        )


def _doc(schema: type) -> str:
    # The docstring's first line less its "`name`: " lead, which the section title shows.
    first = (schema.__doc__ or "").strip().splitlines()[0]
    text = re.sub(r"^`[\w.]+`: ", "", first)
    return text[:1].upper() + text[1:]


def _type_name(tp: Any) -> str:
    inner = strip_optional(tp)
    if inner is not tp:
        return f"{_type_name(inner)} or null"
    if get_origin(inner) is list:
        (item,) = get_args(inner) or (Any,)
        return "list" if item is Any else f"list of {_type_name(item)}"
    if get_origin(inner) is dict:
        return "mapping"
    return {int: "int", float: "float", str: "str", bool: "bool"}.get(inner, "any")


def _default(field: dataclasses.Field) -> str:
    if field.default_factory is not dataclasses.MISSING:
        return _yaml_value(field.default_factory())
    if field.default is MISSING:
        return "required"
    return _yaml_value(field.default)


def _yaml_value(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, dict)):
        return "[]" if value == [] else "{}" if value == {} else repr(value)
    return str(value)


def _cell(text: str) -> str:
    # A "|" inside a cell would end it.
    return text.replace("|", "\\|")


if __name__ == "__main__":
    from runner.pipes import survive_closed_readers

    survive_closed_readers()  # `| head`: no traceback when the reader leaves
    print(config_reference())
