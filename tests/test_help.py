"""`--help` answers: the runner lists every group and option with its description, and each
companion command shows its usage with examples."""

from __future__ import annotations

import pytest
from conftest import run_cli

from runner.config import CONF_DIR
from runner.help import description, groups

COMPANIONS = ("inspect", "compare", "reproduce", "bench")


def test_runner_help_lists_every_group_option_and_command():
    done = run_cli("runner", "--help")
    assert done.returncode == 0, done.stderr
    text = done.stdout
    listed = groups(CONF_DIR)
    assert [g for g, _, _ in listed] == ["model", "init", "tying", "data", "optim", "experiment"]
    lines = text.splitlines()
    for group, default, what in listed:
        header = f"  {group:<11} {what} [default: {default}]"
        assert header in lines
        section = lines[lines.index(header) + 1 :]  # the group's options follow its line
        for path in (CONF_DIR / group).glob("*.yaml"):
            words = " ".join(description(path).split()[:4])
            assert words, f"{path} has no description line"
            line = next(x for x in section if x.strip().startswith(path.stem + " "))
            assert words in line, (group, path.stem, line)
    for tool in COMPANIONS:
        assert f"python -m runner.{tool}" in text
    assert "Traceback" not in done.stderr


def test_help_does_not_run_anything(tmp_path):
    done = run_cli("runner", "--help", cwd=tmp_path)
    assert done.returncode == 0
    assert not (tmp_path / "outputs").exists()


@pytest.mark.parametrize("tool", COMPANIONS)
def test_every_companion_command_has_help_with_examples(tool):
    done = run_cli(f"runner.{tool}", "--help")
    assert done.returncode == 0, done.stderr
    assert f"usage: python -m runner.{tool}" in done.stdout
    examples = done.stdout.split("examples:", 1)
    assert len(examples) == 2, done.stdout
    assert f"python -m runner.{tool}" in examples[1]
