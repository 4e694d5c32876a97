"""Hydra's and OmegaConf's multi-line reports, turned into one line for the user.

Each message names where the value came from (a config file such as `data/regression.yaml`,
or `command line`), the key path, and what would be valid: the expected type from the
schemas of runner/schemas.py, the valid keys, or the options of a group.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from runner import schema_paths, schemas
from runner.errors import ConfigError, brief, did_you_mean, one_of


def schema_message(error: Exception, config_dir: str | Path | None = None) -> str | None:
    """One line for a value that does not fit the schema, or a key it does not declare:
    "data/mine.yaml: data.n_train must be an integer, got 'abc'". None for other errors.
    `config_dir` (--config-dir) is where a user's file may be read to name a list."""
    from omegaconf.errors import (
        ConfigAttributeError,
        ConfigKeyError,
        ConfigTypeError,
        OmegaConfBaseException,
    )

    # An override's error is the cause; a file's is re-raised inside Hydra's except block.
    cause = error.__cause__ or error.__context__
    full_key = getattr(cause, "full_key", None)
    if not isinstance(cause, OmegaConfBaseException) or full_key in (None, ""):
        return None
    text = str(error)
    loaded = re.match(r"In '([^']+)': ", text)
    override = re.match(r"(?:Error merging override|Could not override) '?([^'\s]+)", text)
    if loaded:
        origin = f"{loaded.group(1)}.yaml"
        list_key = list_in_file(loaded.group(1), str(full_key), config_dir)
    elif override:
        origin = "command line"
        list_key = override.group(1).split("=", 1)[0].lstrip("+~")
    else:
        return None
    path = str(full_key)
    if path.isdigit() and list_key:  # OmegaConf names an item of a list merged in by index alone
        path = list_key if loaded else f"{list_key}[{path}]"
    if isinstance(cause, ConfigTypeError) and "deletion" in str(cause):
        return f"{origin}: {path} cannot be deleted: the schema declares it; set it instead"
    parent, _, leaf = path.rpartition(".")
    if isinstance(cause, (ConfigKeyError, ConfigAttributeError)):
        node_type = schema_paths.type_at(parent) if parent else schemas.RunSchema
        if not schemas.is_schema(node_type):
            return None  # a key missing from a free-form node: override_message lists its keys
        hint = ""
        if override and schemas.takes_variables(node_type):
            hint = f" (to add a variable, write +{path}=...)"
        return unknown_key(origin, path, schemas.keys_of(node_type), hint)
    expected = schema_paths.type_at(path.split(" or ")[0])  # the lists it may be in take one type
    if expected is None:
        return f"{origin}: {path}: {first_lines(str(getattr(cause, 'msg', cause)))}"
    got = getattr(cause, "value", None)
    from runner.config_values import to_plain

    shown = f", got {brief(to_plain(got))}" if got is not None else ""
    return f"{origin}: {path} must be {schema_paths.describe(expected)}{shown}"


def unknown_key(origin: str, path: str, valid: Sequence[str], hint: str = "") -> str:
    """The one line for a key no schema declares, with the valid keys and the nearest ones."""
    parent, _, leaf = path.rpartition(".")
    of = f" of {parent}" if parent else ""
    return (
        f"{origin}: unknown key '{path}'; valid keys{of}: {one_of(valid, limit=30)}"
        f"{did_you_mean(leaf, valid)}{hint}"
    )


def list_in_file(config: str, index: str, config_dir: str | Path | None) -> str | None:
    """Which list of lists or mappings (tying.groups, init.rules, init.edits) the file
    `config` ("init/mine") holds an item `index` of: OmegaConf names a bad item of a list
    merged in by its index alone. The group's only such key, or the one of them that the
    file gives with that many items; several: "init.rules or init.edits"."""
    group = config.split("/")[0]
    schema = schema_paths.type_at(group)
    if not schemas.is_schema(schema) or not index.isdigit():
        return None
    keys = [key for key in schemas.keys_of(schema) if schema_paths.is_list_of_containers(
        schema_paths.type_at(f"{group}.{key}"))]  # fmt: skip
    if len(keys) > 1:
        from runner.config import read_option_file  # config.py imports this module

        loaded = read_option_file(config, config_dir)[1]
        loaded = loaded if isinstance(loaded, dict) else {}
        given = [k for k in keys
                 if isinstance(loaded.get(k), list) and len(loaded[k]) > int(index)]  # fmt: skip
        keys = given or keys
    if not keys:
        return None
    return " or ".join(f"{group}.{key}[{index}]" for key in keys)


def missing_option_message(error: Exception) -> str:
    text = str(error)
    match = re.search(r"Could not find '([^']+)'", text)
    options = getattr(error, "options", None)
    if match and options:
        group, _, option = match.group(1).rpartition("/")
        return (
            f"{group}={option}: no such config ({group}/{option}.yaml); "
            f"valid: {one_of(sorted(options))}{did_you_mean(option, options)}"
        )
    return first_lines(text)


def yaml_message(error: Exception) -> str:
    mark = getattr(error, "problem_mark", None)
    if mark is None:
        return f"YAML error: {first_lines(str(error))}"
    problem = getattr(error, "problem", None) or "syntax error"
    where = f"{problem} (line {mark.line + 1}, column {mark.column + 1})"
    context, context_mark = getattr(error, "context", None), getattr(error, "context_mark", None)
    if context and context_mark:
        where = (
            f"{context} (line {context_mark.line + 1}, column {context_mark.column + 1}): {where}"
        )
    return f"{mark.name}: YAML syntax error: {where}"


def override_message(
    error: Exception, overrides: list[str], config_name: str, config_dir: str | Path | None
) -> str:
    """Hydra's "Could not override 'a.b'" made to list the keys that do exist at a."""
    match = re.match(r"Could not override '([^']+)'", str(error))
    twice = re.match(r"Multiple values for ([\w/.]+)\.", str(error))
    added = [o for o in overrides if twice and o.startswith(f"+{twice.group(1)}=")]
    if added:  # `+experiment=x` where the defaults list already has `experiment: null`
        group, option = added[0][1:].split("=", 1)
        return (f"command line: {added[0]}: {group} is already in {config_name}.yaml's defaults; "
                f"write {group}={option} (without +)")  # fmt: skip
    if not str(error).strip():  # Hydra's ConfigCompositionException: the message is its cause's
        return _cause_message(error)
    if not match:
        override = getattr(error, "override", None)
        prefix = f"override '{override}': " if override else ""
        return prefix + first_lines(str(error))
    key = match.group(1)
    parent, _, leaf = key.rpartition(".")
    rest = [o for o in overrides if not o.lstrip("+~").startswith(f"{key}=")]
    from runner.config import compose  # config.py imports this module

    try:
        base = compose(rest, config_name, config_dir) if rest != overrides else None
        node = OmegaConf.select(base, parent) if (base is not None and parent) else base
    except ConfigError:
        node = None
    keys = [k for k in node if k != "choices"] if isinstance(node, DictConfig) else []
    valid = f"; valid keys{' of ' + parent if parent else ''}: {one_of(keys)}" if keys else ""
    near = did_you_mean(leaf, keys)
    return f"{key}: no such key in the config{valid}{near} (to add a new key, write +{key}=...)"


def _cause_message(error: BaseException) -> str:
    """The first cause with a message, with the key it names (OmegaConf's full_key): an
    interpolation that does not parse (`${bad grammar`) reaches Hydra's error that way."""
    from omegaconf.errors import GrammarParseError

    cause = error.__cause__ or error.__context__
    while cause is not None and not str(cause).strip():
        cause = cause.__cause__ or cause.__context__
    if cause is None:
        return f"the config does not compose ({type(error).__name__})"
    text = str(getattr(cause, "msg", None) or cause).splitlines()[0].strip()
    key = getattr(cause, "full_key", None)
    where = f"{key}: " if key else ""
    if isinstance(cause, GrammarParseError):
        return f"{where}a ${{...}} interpolation does not parse ({text}); check its brackets"
    return f"{where}{text}"


def first_lines(text: str) -> str:
    # Hydra and PyYAML messages span lines; keep what names the problem on one line.
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    kept = [line for line in lines if not line.startswith(("See https://", "Config search path"))]
    return "; ".join(kept[:4])
