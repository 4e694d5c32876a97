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


def compose(
    overrides: Sequence[str] = (),
    config_name: str = "config",
    config_dir: str | Path | None = None,
) -> DictConfig:
    """Compose `conf/<config_name>.yaml` with Hydra overrides, as `python -m runner` would.

    `config_dir` adds a folder of the user's own YAML files in front of the shipped
    ones (what `--config-dir` does on the command line). The result has no `hydra`
    node; `cfg.choices` maps each config group to the option that was chosen.
    Hydra's own composition errors are raised as `ConfigError`.
    """
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.errors import HydraException, MissingConfigException
    from hydra.initialize import get_gh_backup, restore_gh_from_backup
    from yaml import YAMLError

    overrides = list(overrides)
    if config_dir is not None:
        overrides.append(f"hydra.searchpath=[file://{Path(config_dir).resolve()}]")
    # compose() may run inside a Hydra app (or another compose); keep its global state intact.
    outer = get_gh_backup()
    try:
        from hydra.core.global_hydra import GlobalHydra

        GlobalHydra.instance().clear()
        with initialize_config_dir(str(CONF_DIR), version_base="1.3", job_name="runner"):
            cfg = hydra_compose(config_name, overrides=overrides, return_hydra_config=True)
    except MissingConfigException as error:
        raise ConfigError(_missing_option_message(error)) from error
    except (HydraException, YAMLError) as error:
        raise ConfigError(_first_lines(str(error))) from error
    finally:
        restore_gh_from_backup(outer)
    choices = dict(cfg.hydra.runtime.choices)
    with open_dict(cfg):
        del cfg["hydra"]
    attach_choices(cfg, choices)
    return cfg


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
