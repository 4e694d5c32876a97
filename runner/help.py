"""`python -m runner --help`: the config groups, their options and the companion commands.

Hydra prints `hydra.help.template`; conf/config.yaml sets it to `${runner_help:}`, this
module's resolver, so the text is made from the shipped YAML files themselves: each
group's line in config.yaml's defaults list, and each option's first comment line.
Adding a YAML file adds it to the help; nothing is written twice.
"""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

from omegaconf import OmegaConf

# A defaults-list entry of config.yaml: "  - model: mlp   # architecture (conf/model/*.yaml)".
DEFAULT_ENTRY = re.compile(r"^\s*-\s*(\w+):\s*(\S+)\s*#\s*(.*)$")
WIDTH = 100

COMMANDS = (
    ("python -m runner.inspect [overrides]", "the model's tree, parameter table and signal probe"),
    ("python -m runner.compare DIR...", "tables and plots comparing runs and sweeps"),
    ("python -m runner.reproduce RUN_DIR", "rerun a saved run; check the weights are identical"),
    ("python -m runner.bench", "speed and memory against a plain PyTorch loop"),
)
EXAMPLES = (
    "python -m runner model=rgnet init=xavier            # one run; files in outputs/DATE/TIME",
    "python -m runner tying=hidden train.steps=200 seed=1",
    "python -m runner -m init=normal,xavier,kaiming seed=0,1,2   # a sweep: 9 jobs",
    "python -m runner -m experiment=init_sweep hydra/launcher=joblib",
    "python -m runner --cfg job model=rgnet              # print the composed config, run nothing",
)


def description(path: Path) -> str:
    """The one-line description every config file opens with (after `# @package`)."""
    for line in path.read_text().splitlines():
        if line.startswith("# @package"):
            continue
        return line.lstrip("# ").strip() if line.startswith("#") else ""
    return ""


def groups(conf_dir: Path) -> list[tuple[str, str, str]]:
    """(group, default option, what the group is for), in config.yaml's defaults order."""
    found = []
    for line in (conf_dir / "config.yaml").read_text().splitlines():
        match = DEFAULT_ENTRY.match(line)
        if match and (conf_dir / match.group(1)).is_dir():
            found.append(match.groups())
    return found


def app_help(conf_dir: Path) -> str:
    """The text of `python -m runner --help` for the configs in `conf_dir`.

    It goes through `string.Template` in Hydra, so a literal dollar sign is doubled."""
    lines = [
        "runner: train a network described in YAML and log every layer's parameters,",
        "gradients and activations to TensorBoard.",
        "",
        "Usage:",
        "  python -m runner [GROUP=OPTION ...] [KEY=VALUE ...]   one run",
        "  python -m runner -m GROUP=A,B KEY=1,2 ...              a sweep: a job per combination",
        "",
        "Config groups (GROUP=OPTION; add your own with --config-dir DIR: DIR/GROUP/NAME.yaml):",
    ]
    for group, default, what in groups(conf_dir):
        lines.append(f"  {group:<11} {what} [default: {default}]")
        options = sorted((conf_dir / group).glob("*.yaml"))
        pad = max((len(p.stem) for p in options), default=0) + 2
        for path in options:
            text = textwrap.shorten(description(path), WIDTH - pad - 6, placeholder=" ...")
            lines.append(f"      {path.stem:<{pad}}{text}")
    lines += [
        "",
        "Settings (KEY=VALUE): seed, device, train.*, log.* and every key of the chosen options;",
        "`python -m runner --cfg job` prints them all. Run files: outputs/DATE/TIME/ (run.json,",
        "tb/, model.pt, checkpoint.pt, metrics.json); `tensorboard --logdir outputs` shows them.",
        "",
        "Companion commands (each has --help):",
        *(f"  {command:<40} {what}" for command, what in COMMANDS),
        "",
        "Examples:",
        *(f"  {example}" for example in EXAMPLES),
        "",
        "Hydra's own flags (--multirun, --cfg, --config-dir ...): python -m runner --hydra-help",
    ]
    return "\n".join(lines).replace("$", "$$")


def _resolve_help() -> str:
    from runner.config import CONF_DIR

    return app_help(CONF_DIR)


OmegaConf.register_new_resolver("runner_help", _resolve_help, replace=True)
