"""Composing the config tree with Hydra, and the helpers every config reader shares.

`compose()` is the Python API's way in (tests, notebooks, `runner.inspect`); the
training entry point composes through `@hydra.main` with the same `CONF_DIR`.
Both leave the chosen option of each group in `cfg.choices`, so error messages
can name the file a key came from (`model/rgnet.yaml: layers[1]...`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict

from runner.errors import ConfigError, did_you_mean, one_of

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
    that was chosen. Composition errors and interpolations that do not resolve are
    raised as `ConfigError`.
    """
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException, MissingConfigException
    from hydra.initialize import get_gh_backup, restore_gh_from_backup
    from yaml import YAMLError

    overrides = list(overrides)
    if config_dir is not None:
        if not Path(config_dir).is_dir():
            raise ConfigError(f"--config-dir {config_dir}: no such folder")
        overrides.append(f"hydra.searchpath=[file://{Path(config_dir).resolve()}]")
    # compose() may run inside a Hydra app (or another compose); keep its global state intact.
    outer = get_gh_backup()
    try:
        GlobalHydra.instance().clear()
        with initialize_config_dir(str(CONF_DIR), version_base="1.3", job_name="runner"):
            cfg = hydra_compose(config_name, overrides=overrides, return_hydra_config=True)
    except MissingConfigException as error:
        raise ConfigError(_missing_option_message(error)) from error
    except YAMLError as error:
        raise ConfigError(_yaml_message(error)) from error
    except HydraException as error:
        raise ConfigError(_override_message(error, overrides, config_name, config_dir)) from error
    except Exception as error:  # Hydra lets a few plain TypeErrors and ValueErrors through
        raise ConfigError(f"overrides {overrides}: {_first_lines(str(error))}") from error
    finally:
        restore_gh_from_backup(outer)
    choices = dict(cfg.hydra.runtime.choices)
    with open_dict(cfg):
        del cfg["hydra"]
    attach_choices(cfg, choices)
    check_resolves(cfg)
    return cfg


def check_resolves(cfg: DictConfig) -> None:
    """Raise ConfigError naming the key if an interpolation such as ${model.width} fails."""
    from omegaconf.errors import OmegaConfBaseException

    try:
        OmegaConf.to_container(cfg, resolve=True)
    except OmegaConfBaseException as error:
        key = getattr(error, "full_key", None)
        message = _first_lines(str(error)).split("; full_key:")[0]
        raise ConfigError(f"{key}: {message}" if key else message) from error


def attach_choices(cfg: DictConfig, choices: Mapping[str, Any]) -> None:
    """Record in `cfg.choices` which option of each of our config groups was composed."""
    picked = {group: choices.get(group) for group in GROUPS if choices.get(group) is not None}
    with open_dict(cfg):
        cfg.choices = picked


def _missing_option_message(error: Exception) -> str:
    text = str(error)
    match = re.search(r"Could not find '([^']+)'", text)
    options = getattr(error, "options", None)
    if match and options:
        group, _, option = match.group(1).rpartition("/")
        return (
            f"{group}={option}: no such config ({group}/{option}.yaml); "
            f"valid: {one_of(sorted(options))}{did_you_mean(option, options)}"
        )
    return _first_lines(text)


def _yaml_message(error: Exception) -> str:
    mark = getattr(error, "problem_mark", None)
    if mark is None:
        return f"YAML error: {_first_lines(str(error))}"
    problem = getattr(error, "problem", None) or "syntax error"
    where = f"{problem} (line {mark.line + 1}, column {mark.column + 1})"
    context, context_mark = getattr(error, "context", None), getattr(error, "context_mark", None)
    if context and context_mark:
        where = (
            f"{context} (line {context_mark.line + 1}, column {context_mark.column + 1}): {where}"
        )
    return f"{mark.name}: YAML syntax error: {where}"


def _override_message(
    error: Exception, overrides: list[str], config_name: str, config_dir: str | Path | None
) -> str:
    """Hydra's "Could not override 'a.b'" made to list the keys that do exist at a."""
    match = re.match(r"Could not override '([^']+)'", str(error))
    if not match:
        override = getattr(error, "override", None)
        prefix = f"override '{override}': " if override else ""
        return prefix + _first_lines(str(error))
    key = match.group(1)
    parent, _, leaf = key.rpartition(".")
    rest = [o for o in overrides if not o.lstrip("+~").startswith(f"{key}=")]
    try:
        base = compose(rest, config_name, config_dir) if rest != overrides else None
        node = OmegaConf.select(base, parent) if (base is not None and parent) else base
    except ConfigError:
        node = None
    keys = [k for k in node if k != "choices"] if isinstance(node, DictConfig) else []
    valid = f"; valid keys{' of ' + parent if parent else ''}: {one_of(keys)}" if keys else ""
    near = did_you_mean(leaf, keys)
    return f"{key}: no such key in the config{valid}{near} (to add a new key, write +{key}=...)"


def _first_lines(text: str) -> str:
    # Hydra and PyYAML messages span lines; keep what names the problem on one line.
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    kept = [line for line in lines if not line.startswith(("See https://", "Config search path"))]
    return "; ".join(kept[:4])


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
        try:
            for attribute in parts[cut:]:
                found = getattr(found, attribute)
        except AttributeError:
            break
        return found
    raise ConfigError(f"{where}: cannot import _target_ '{path}' (no such module or attribute)")
