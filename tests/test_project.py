"""The project's own promises: CI runs the README's commands, every config documents itself."""

from __future__ import annotations

import re

from conftest import REPO


def readme_commands() -> list[str]:
    text = (REPO / "README.md").read_text()
    quick_start = text.split("## Set up", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```bash\n(.+?)\n```", quick_start)


def test_ci_runs_the_readme_test_command():
    install_and_run, install_and_test = readme_commands()
    assert "python -m runner" in install_and_run
    assert "pytest" in install_and_test
    ci_lines = (REPO / ".ci" / "run").read_text().splitlines()
    assert install_and_test in ci_lines


def test_every_yaml_opens_with_a_line_saying_what_it_is():
    files = sorted((REPO / "conf").rglob("*.yaml"))
    assert len(files) >= 20
    for path in files:
        lines = path.read_text().splitlines()
        if lines[0].startswith("# @package"):  # Hydra's directive must come first
            lines = lines[1:]
        assert lines[0].startswith("# ") and len(lines[0]) > 20, path


def test_shipped_options_build():
    import runner

    groups = {
        g: sorted(p.stem for p in (REPO / "conf" / g).glob("*.yaml")) for g in ("model", "init")
    }
    needs = {"mlp_named": ["data.in_features=20"], "shared_block": ["data.in_features=20"]}
    for model in groups["model"]:
        runner.build_model(runner.compose([f"model={model}", *needs.get(model, [])]))
    for init in groups["init"]:
        runner.build_model(runner.compose([f"init={init}"]))  # every init works on the mlp
