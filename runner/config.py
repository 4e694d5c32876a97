"""Composing the config tree with Hydra, and the helpers every config reader shares.

`compose()` is the Python API's way in (tests, notebooks, `runner.inspect`); the
training entry point composes through `@hydra.main` with the same `CONF_DIR`.
Both leave the chosen option of each group in `cfg.choices`, so error messages
can name the file a key came from (`model/rgnet.yaml: layers[1]...`).

Both compose against the typed schemas of runner/schemas.py (registered in Hydra's
ConfigStore when this module is imported, before `@hydra.main` composes): a value of
the wrong type or an unknown key fails the composition. Hydra's multi-line reports
become one-line `ConfigError`s (runner/config_errors.py), naming the file (or the
command line), the key path and the expected type or the valid keys. `check_config`
adds what Hydra lets through (keys added with `+`, required values left unset,
interpolations that do not resolve); runner/command_line.py composes `python -m
runner`'s command line before `@hydra.main` does, so it prints the same one line.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict

from runner import schema_paths, schemas
from runner.config_errors import (
    first_lines,
    missing_option_message,
    override_message,
    schema_message,
    unknown_key,
    yaml_message,
)
from runner.config_values import source
from runner.errors import ConfigError, brief

# The config groups a run is composed from (DESIGN.md, "The user's contract").
GROUPS = ("model", "init", "tying", "data", "optim")


def _find_conf_dir() -> Path:
    # A wheel ships the YAML inside the package; a source checkout keeps it at the top level.
    here = Path(__file__).resolve().parent
    for candidate in (here / "conf", here.parent / "conf"):
        if (candidate / "config.yaml").is_file():
            return candidate
    raise RuntimeError(f"runner's conf/ folder is missing (looked beside {here})")


CONF_DIR = _find_conf_dir()

MAX_NAME = 200  # bytes; file systems refuse names past 255


def path_safe(text: str) -> str:
    """A sweep job's dir name from its overrides: "%" and "/" escaped as in URLs (so two
    different override sets never share a name), and a long name cut with a hash of the rest."""
    import hashlib

    name = str(text).replace("%", "%25").replace("/", "%2F") or "job"
    if len(name.encode()) > MAX_NAME:
        digest = hashlib.sha256(name.encode()).hexdigest()[:12]
        name = name.encode()[: MAX_NAME - 13].decode(errors="ignore") + "~" + digest
    return name


OmegaConf.register_new_resolver("path_safe", path_safe, replace=True)
# Before any composition: conf/config.yaml's defaults name the schema stored here.
schemas.register()


def compose(
    overrides: Sequence[str] = (),
    config_name: str = "config",
    config_dir: str | Path | None = None,
) -> DictConfig:
    """Compose `conf/<config_name>.yaml` with Hydra overrides, as `python -m runner` would.

    `config_dir` adds a folder of the user's own YAML files to the search path, as
    `--config-dir` does on the command line: new option names become choosable (a
    file named like a shipped one is shadowed by it, as with Hydra's own flag). The
    result has no `hydra` node; `cfg.choices` maps each config group to the option
    that was chosen. Composition errors, values that do not fit the schema, unknown
    keys and interpolations that do not resolve are raised as `ConfigError`.
    """
    overrides = list(overrides)
    cfg = compose_with_hydra(overrides, config_name, config_dir)
    check_no_new_variables(cfg, overrides, config_name, config_dir)
    return job_config(cfg, overrides)


def compose_with_hydra(
    overrides: list[str], config_name: str, config_dir: str | Path | None
) -> DictConfig:
    """Hydra's composition (the `hydra` node kept), its errors made one-line ConfigErrors."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException, MissingConfigException
    from hydra.initialize import get_gh_backup, restore_gh_from_backup
    from yaml import YAMLError

    overrides = list(overrides)
    if config_dir is not None:
        if not Path(config_dir).is_dir():
            what = "is a file, not a folder" if Path(config_dir).is_file() else "no such folder"
            raise ConfigError(f"--config-dir {config_dir}: {what}")
        overrides.append(f"hydra.searchpath=[file://{Path(config_dir).resolve()}]")
    # compose() may run inside a Hydra app (or another compose); keep its global state intact.
    outer = get_gh_backup()
    try:
        GlobalHydra.instance().clear()
        with initialize_config_dir(str(CONF_DIR), version_base="1.3", job_name="runner"):
            return hydra_compose(config_name, overrides=overrides, return_hydra_config=True)
    except MissingConfigException as error:
        raise ConfigError(missing_option_message(error)) from error
    except YAMLError as error:
        raise ConfigError(yaml_message(error)) from error
    except HydraException as error:
        message = schema_message(error, config_dir) or override_message(
            error, overrides, config_name, config_dir
        )
        raise ConfigError(message) from error
    except Exception as error:  # Hydra lets a few plain TypeErrors and ValueErrors through
        raise ConfigError(f"overrides {overrides}: {first_lines(str(error))}") from error
    finally:
        restore_gh_from_backup(outer)


def check_no_new_variables(
    cfg: DictConfig, overrides: list[str], config_name: str, config_dir: str | Path | None
) -> None:
    """Refuse `model.widht=3` (no +) where the file has no variable `widht`.

    The model, init and tying nodes stay open for their files' variables, so Hydra lets
    such an override add a key, and a typo would go unnoticed. A variable that the chosen
    option's own file declares is taken as it is; only for another one (a typo, or a
    variable that an experiment adds) is the config composed again without it (0.15 s).
    """
    suspects = {}
    choices = cfg.hydra.runtime.choices
    deleting = any(o.startswith("~") for o in overrides)  # `~model.width model.width=3`
    declared: dict[str, set[str]] = {}  # group -> its option file's keys, each file read once
    for override in overrides:
        key = override.split("=", 1)[0]
        group, _, leaf = key.partition(".")
        schema = schema_paths.type_at(group) if leaf and "." not in leaf else None
        plain = not key.startswith(("+", "~"))
        if plain and schemas.takes_variables(schema) and leaf not in schemas.keys_of(schema):
            option = choices.get(group)
            if group not in declared:
                declared[group] = _file_keys(group, option, config_dir) if option else set()
            if deleting or leaf not in declared[group]:
                suspects[key] = override
    if not suspects:
        return
    base = compose_with_hydra([o for o in overrides if o not in suspects.values()],
                               config_name, config_dir)  # fmt: skip
    for key in suspects:
        group, _, leaf = key.partition(".")
        if leaf not in base[group]:
            hint = f" (to add a variable, write +{key}=...)"
            raise ConfigError(unknown_key("command line", key, list(base[group]), hint))


def _file_keys(group: str, option: str, config_dir: str | Path | None) -> set[str]:
    """The top-level keys of `<group>/<option>.yaml`, the file Hydra picked (the shipped one
    first, then --config-dir's); none where they are not plain to see: no such file, a
    defaults list or a package header (keys may land elsewhere), a file that does not
    parse (the composition reports it)."""
    text, loaded = read_option_file(f"{group}/{option}", config_dir)
    plain = isinstance(loaded, dict) and "defaults" not in loaded and "@package" not in text
    return set(loaded) if plain else set()


def read_option_file(config: str, config_dir: str | Path | None) -> tuple[str, Any]:
    """(text, parsed YAML) of `<config>.yaml` ("init/mine"), the shipped file first, then
    --config-dir's; ("", None) where there is none or it does not read or parse."""
    import yaml

    for folder in (CONF_DIR, config_dir):
        path = Path(folder, f"{config}.yaml") if folder is not None else None
        if path is None or not path.is_file():
            continue
        try:
            text = path.read_text(encoding="utf-8")
            return text, yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
        except (OSError, UnicodeDecodeError, yaml.YAMLError):
            return "", None
    return "", None


def job_config(cfg: DictConfig, overrides: Sequence[str]) -> DictConfig:
    """What a job sees: the `hydra` node removed, `choices` attached, the whole tree checked."""
    choices = dict(cfg.hydra.runtime.choices)
    with open_dict(cfg):
        del cfg["hydra"]
    attach_choices(cfg, choices)
    check_config(cfg, overrides)
    return cfg


def check_config(cfg: DictConfig, overrides: Sequence[str] = ()) -> None:
    """The checks that follow Hydra's own, each a one-line ConfigError.

    Keys the schema does not declare (`+train.foo=1` gets past Hydra, and the model,
    init and tying groups take variables, which must hold one value each), required
    values left unset (`model.layers`), and interpolations that do not resolve.
    `overrides` (the command line's) let a message name the command line as the source.
    """
    for path, node_type, value in schema_paths.undeclared_keys(cfg):
        hint = ""
        if schemas.takes_variables(node_type):
            hint = f" (other keys of {path.rpartition('.')[0]} are variables holding one value, "
            hint += f"got {brief(value)})"
        origin = _origin(cfg, path, overrides)
        raise ConfigError(unknown_key(origin, path, schemas.keys_of(node_type), hint))
    for path in schema_paths.unset_keys(cfg):
        expected = schema_paths.type_at(path)
        what = f"; it must be {schema_paths.describe(expected)}" if expected is not None else ""
        raise ConfigError(f"{_origin(cfg, path, overrides)}: {path} is missing{what}")
    check_resolves(cfg)


def _origin(cfg: DictConfig, path: str, overrides: Sequence[str]) -> str:
    """Where a key most likely came from: the command line if an override sets it (or a
    node above it), else its group's file."""
    for override in overrides:
        key = override.split("=", 1)[0].lstrip("+~").split("@")[0]
        if key in GROUPS:
            continue  # `model=mine` picks a file; the key came from that file
        if path == key or path.startswith((f"{key}.", f"{key}[")):
            return "command line"
    group = re.split(r"[.\[]", path, maxsplit=1)[0]
    return source(cfg, group) if group in GROUPS else "the config"


def check_resolves(cfg: DictConfig) -> None:
    """Raise ConfigError naming the key if an interpolation such as ${model.width} fails."""
    from omegaconf.errors import OmegaConfBaseException

    try:
        OmegaConf.to_container(cfg, resolve=True)
    except OmegaConfBaseException as error:
        message = first_lines(str(error)).split("; full_key:")[0]
        # The error names the key whose resolution started the chain (a layer's
        # out_features: ${model.width}); the user must fix the one that names the missing key.
        missing = re.search(r"Interpolation key '([^']+)' not found", message)
        key = _first_reference(cfg, missing.group(1), "") if missing else None
        key = key or getattr(error, "full_key", None)
        raise ConfigError(f"{key}: {message}" if key else message) from error


def _first_reference(node: DictConfig | ListConfig, name: str, prefix: str) -> str | None:
    """The path of the first value whose own text interpolates `name` (`${name}`), unresolved."""
    keys = range(len(node)) if isinstance(node, ListConfig) else list(node.keys())
    for key in keys:
        path = f"{prefix}[{key}]" if isinstance(node, ListConfig) else f"{prefix}{key}"
        child = node._get_node(key)
        if isinstance(child, (DictConfig, ListConfig)):
            if not (child._is_none() or child._is_missing() or child._is_interpolation()):
                inner = f"{path}." if isinstance(child, DictConfig) else path
                found = _first_reference(child, name, inner)
                if found:
                    return found
        elif "${" + name in str(child._value()):
            return path
    return None


def attach_choices(cfg: DictConfig, choices: Mapping[str, Any]) -> None:
    """Record in `cfg.choices` which option of each of our config groups was composed."""
    picked = {group: choices.get(group) for group in GROUPS if choices.get(group) is not None}
    with open_dict(cfg):
        cfg.choices = picked
