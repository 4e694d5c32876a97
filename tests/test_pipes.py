"""`python -m runner ... | head`: the reader leaves, the run goes on, no traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from conftest import REPO

from runner.pipes import ReaderSafeStream


def test_a_write_after_the_reader_left_goes_to_devnull_without_an_error():
    read_end, write_end = os.pipe()
    stream = ReaderSafeStream(open(write_end, "w"))  # noqa: SIM115 (closed below)
    stream.write("read\n")
    stream.flush()
    assert os.read(read_end, 100) == b"read\n"
    os.close(read_end)
    stream.write("nobody reads this\n")
    stream.flush()  # the pipe refuses: the stream turns to os.devnull
    assert os.path.samestat(os.fstat(stream.fileno()), os.stat(os.devnull))
    stream.writelines(["and ", "this\n"])
    stream.flush()
    stream.close()


def _first_line_then_leave(args: list[str], tmp_path) -> tuple[str, int, str]:
    """Run `python -m <args>`, read its first stdout line, close the pipe as `head -1`
    does, and wait: (that line, exit code, stderr)."""
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    errors = tmp_path / "stderr.txt"  # a file: a pipe nobody reads could fill and block it
    with errors.open("w") as stderr:
        process = subprocess.Popen([sys.executable, "-m", *args], stdout=subprocess.PIPE,
                                   stderr=stderr, text=True, cwd=REPO, env=env)  # fmt: skip
        first = process.stdout.readline()
        process.stdout.close()
        code = process.wait(timeout=300)
    return first, code, errors.read_text()


@pytest.mark.slow
def test_a_run_whose_reader_left_trains_to_the_end_and_saves_everything(tmp_path):
    run_dir = tmp_path / "run"
    first, code, error = _first_line_then_leave(
        ["runner", "train.steps=300", f"hydra.run.dir={run_dir}"], tmp_path
    )
    assert "device: cpu" in first
    assert (code, error) == (0, "")
    assert json.loads((run_dir / "metrics.json").read_text())["steps"] == 300
    # The run's log file has what the console no longer showed.
    assert "step 300/300" in (run_dir / "runner.log").read_text()


@pytest.mark.slow
def test_a_joblib_sweep_whose_reader_left_runs_every_job_quietly(tmp_path):
    sweep = tmp_path / "sweep"
    first, code, error = _first_line_then_leave(
        ["runner", "-m", "hydra/launcher=joblib", "seed=0,1,2", "train.steps=200",
         f"hydra.sweep.dir={sweep}"],
        tmp_path,
    )  # fmt: skip
    assert first
    assert code == 0
    assert "Traceback" not in error and "Logging error" not in error, error
    rows = (sweep / "summary.csv").read_text().splitlines()[1:]
    assert len(rows) == 3 and all(",ok," in row for row in rows), rows
