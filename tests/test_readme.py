"""Every command the README shows runs, in order, in one fresh folder, so the README cannot rot.

- ```console blocks: `$ command` lines are run as written; the lines after one are
  output it must print, in order (a line `...` stands for any number of lines).
- ```bash blocks: every command is run and must succeed; `python -m runner` trainings
  get `train.steps=20` unless they set it (tiny step counts), `runner.bench` runs its
  throughput part only with tiny sizes (its own test runs every part).
- ```python blocks run as scripts in the same folder, after the commands above them.
Skipped: set-up commands (pip, pytest, ruff), servers (tensorboard), the scripts that
regenerate docs/img (tested on their own), and SLURM.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass

import pytest
from conftest import REPO

SKIP = ("pip ", "pytest", "ruff ", "tensorboard ", "bash docs/", "python docs/")
TINY_STEPS = "train.steps=20"


@dataclass
class Step:
    kind: str  # "command" or "python"
    text: str
    expected: list[str] | None = None  # output lines to find, for console blocks
    line: int = 0


def readme_steps(text: str) -> list[Step]:
    """The README's commands and scripts, in document order."""
    steps: list[Step] = []
    for match in re.finditer(r"^```(\w+)[^\n]*\n(.*?)^```", text, re.M | re.S):
        kind, body = match.group(1), match.group(2)
        line = text.count("\n", 0, match.start()) + 1
        if kind == "python":
            steps.append(Step("python", body, line=line))
        elif kind == "bash":
            for command in _logical_lines(body):
                steps.append(Step("command", _tiny(command), line=line))
        elif kind == "console":
            for chunk in re.split(r"^\$ ", body, flags=re.M)[1:]:
                command, *output = chunk.rstrip("\n").split("\n")
                steps.append(Step("command", command, [o.rstrip() for o in output], line))
    return [s for s in steps if not (s.kind == "command" and s.text.startswith(SKIP))
            and "submitit_slurm" not in s.text]  # fmt: skip


def _logical_lines(body: str) -> list[str]:
    joined = re.sub(r"\s*\\\n\s*", " ", body)
    lines = [line.split(" #", 1)[0].strip() for line in joined.splitlines()]
    return [line for line in lines if line and not line.startswith("#")]


def _tiny(command: str) -> str:
    words = shlex.split(command)
    flags = [w for w in words[3:] if w.startswith("--")]  # --help, --cfg: nothing trains
    if words[:3] == ["python", "-m", "runner"] and "train.steps=" not in command and not flags:
        return f"{command} {TINY_STEPS}"
    if words[:3] == ["python", "-m", "runner.bench"]:
        return f"{command} --only throughput --steps 10 --repeats 1"
    return command


def _same(want: str, got: str) -> bool:
    # A line ending in "..." shows the start of the line only (a hash, a path).
    return got == want or (want.endswith("...") and got.startswith(want[:-3]))


def _matches(expected: list[str], actual: list[str]) -> bool:
    """The expected lines appear in order; `...` skips any number of actual lines."""
    at = 0
    for i, want in enumerate(expected):
        if want == "...":
            continue
        if i > 0 and expected[i - 1] == "...":
            while at < len(actual) and not _same(want, actual[at]):
                at += 1
        if at >= len(actual) or not _same(want, actual[at]):
            return False
        at += 1
    return True


STEPS = readme_steps((REPO / "README.md").read_text())


@pytest.mark.slow
def test_readme_commands_run_and_print_what_it_shows(tmp_path):
    assert len(STEPS) >= 20, "the README tutorial lost its commands"
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    (tmp_path / "docs").symlink_to(REPO / "docs")  # docs/examples: the custom-init section
    for step in STEPS:
        if step.kind == "python":
            argv = [sys.executable, "-c", step.text]
        else:
            argv = ["bash", "-c", step.text.replace("python ", f"{sys.executable} ", 1)]
        done = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, env=env,
                              timeout=600)  # fmt: skip
        where = f"README.md line {step.line}: {step.text[:120]}"
        if step.expected is not None and step.expected and step.expected[-1].startswith("[exit"):
            code = int(step.expected.pop()[len("[exit ") : -1])
            assert done.returncode == code, f"{where}\n{done.stdout}\n{done.stderr}"
        else:
            assert done.returncode == 0, f"{where}\n{done.stdout}\n{done.stderr[-3000:]}"
        if step.expected:
            actual = [line.rstrip() for line in (done.stdout + done.stderr).splitlines()]
            assert _matches(step.expected, actual), (
                f"{where}\nexpected:\n"
                + "\n".join(step.expected)
                + "\nactual:\n"
                + "\n".join(actual)
            )


def test_readme_parser_reads_blocks_in_order():
    text = "```bash\npython -m runner a=1 \\\n  b=2   # note\n```\n```console\n$ x\nout\n...\nend\n```\n"
    steps = readme_steps(text)
    assert [s.text for s in steps] == [f"python -m runner a=1 b=2 {TINY_STEPS}", "x"]
    assert steps[1].expected == ["out", "...", "end"]
    assert _matches(["a", "...", "c"], ["a", "b", "b2", "c"])
    assert not _matches(["a", "c"], ["a", "b", "c"])
    assert _matches(["...", "identical: ..."], ["x", "identical: sha256 12ab"])
