"""A joblib sweep's workers are forked from a server that has imported the runner already."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
from conftest import REPO, run_cli

from runner.launchers import JOBLIB_LAUNCHER, start_joblib_workers_from_argv

# Run with `python -m` (as `python -m runner` is): a worker imports the main module by name.
PROBE = textwrap.dedent("""
    import json, sys

    from joblib import Parallel, delayed

    from runner.launchers import JOBLIB_LAUNCHER, start_joblib_workers


    def worker_state():
        import gc, os, sys
        return {"preloaded": "torch._dynamo" in sys.modules, "pid": os.getpid(),
                "collector_on": gc.isenabled(), "frozen": gc.get_freeze_count()}


    if __name__ == "__main__":
        started = sys.argv[1] == "forkserver" and start_joblib_workers({"_target_": JOBLIB_LAUNCHER})
        states = Parallel(n_jobs=2, backend="loky")(delayed(worker_state)() for _ in range(4))
        print(json.dumps({"started": started, "states": states}))
""")


def _probe(tmp_path, mode: str) -> dict:
    (tmp_path / "probe_workers.py").write_text(PROBE)
    result = run_cli("probe_workers", mode, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.splitlines()[-1])


def test_joblib_workers_start_with_the_runner_imported(tmp_path):
    forked = _probe(tmp_path, "forkserver")
    assert forked["started"] is True
    assert all(state["preloaded"] for state in forked["states"])
    assert 1 <= len({state["pid"] for state in forked["states"]}) <= 2  # 2 workers, reused
    # The server froze what it imported (runner/start_up.py): a collection in a worker (loky
    # makes one after a job) does not scan it. The collector is back on for the jobs.
    assert all(state["collector_on"] for state in forked["states"])
    assert all(state["frozen"] > 100_000 for state in forked["states"])
    # Loky's own workers (the launcher's default) start bare and import it all per worker.
    spawned = _probe(tmp_path, "loky")
    assert spawned["started"] is False
    assert not any(state["preloaded"] or state["frozen"] for state in spawned["states"])


def test_only_a_joblib_multirun_command_line_starts_the_server_before_composing(monkeypatch):
    started = []
    monkeypatch.setattr("runner.launchers.start_joblib_workers", started.append)
    for argv in (["seed=0,1", "hydra/launcher=joblib"],  # not a multirun
                 ["-m", "seed=0,1"],  # the basic launcher (or one an experiment picks)
                 ["-m", "hydra/launcher=joblib", "--cfg", "job"],  # prints, launches nothing
                 ["--multirun", "hydra/launcher=submitit_local"]):  # fmt: skip
        start_joblib_workers_from_argv(argv)
    assert started == []
    start_joblib_workers_from_argv(["--multirun", "seed=0,1", "hydra/launcher=joblib"])
    assert started == [{"_target_": JOBLIB_LAUNCHER}]


def _press_ctrl_c(
    argv: list[str], cwd, *when, ignored: bool = False, env: dict | None = None
) -> subprocess.CompletedProcess:
    """Run `python -m ARGV` in a process group of its own, as a terminal runs a job, and
    press Ctrl-C (SIGINT to the group) at each of `when`: seconds to wait, or a function
    that returns once it is time. `ignored`: started with SIGINT ignored, as a script's
    background job is. Killed if it is still running at the end."""
    command = subprocess.Popen(
        [sys.executable, "-m", *argv], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, start_new_session=True, env={**os.environ, **(env or {})},
        preexec_fn=(lambda: signal.signal(signal.SIGINT, signal.SIG_IGN)) if ignored else None,
    )  # fmt: skip
    try:
        for moment in when:
            moment() if callable(moment) else time.sleep(moment)
            os.killpg(command.pid, signal.SIGINT)
        stdout, stderr = command.communicate(timeout=120)
    finally:
        if command.poll() is None:
            os.killpg(command.pid, signal.SIGKILL)
    return subprocess.CompletedProcess(argv, command.returncode, stdout, stderr)


def _checkpoints(folder, count: int):
    """A moment for `_press_ctrl_c`: once `count` jobs of the sweep in `folder` are in their
    training loops (each has written a periodic checkpoint)."""

    def wait() -> None:
        deadline = time.monotonic() + 120
        while len(list(folder.glob("*/checkpoint.pt"))) < count and time.monotonic() < deadline:
            time.sleep(0.05)

    return wait


@pytest.mark.slow
def test_ctrl_c_stops_a_joblib_sweep_with_one_line_and_exit_130(tmp_path):
    """Ctrl-C reaches the whole process group: each running job ends its step, checkpoints
    and records "interrupted" (joblib does not kill it first); the jobs still to start
    record it without training; the summary lists all four, and the command prints one
    line, no traceback, and exits 130."""
    folder = tmp_path / "sweep"
    sweep = _press_ctrl_c(
        ["runner", "-m", "seed=0,1,2,3", "model=mlp", "train.steps=100000",
         "train.progress=off", "train.checkpoint_every=200", "hydra/launcher=joblib",
         "hydra.launcher.n_jobs=2", f"hydra.sweep.dir={folder}"], REPO, _checkpoints(folder, 2),
    )  # fmt: skip
    stderr = sweep.stderr
    assert sweep.returncode == 130, stderr
    assert "Traceback" not in stderr
    assert stderr.strip().splitlines()[-1].startswith("interrupted; the sweep stopped")
    with open(folder / "summary.csv") as file:
        rows = {row["job"]: row for row in csv.DictReader(file)}
    assert len(rows) == 4 and {row["status"] for row in rows.values()} == {"interrupted"}
    running = {path.parent.name for path in folder.glob("*/checkpoint.pt")}
    assert len(running) == 2
    for job, row in rows.items():  # a running job saved its step and says how to go on
        if job in running:
            assert f"continue with train.resume={folder / job / 'checkpoint.pt'}" in stderr
        else:
            assert row["error"] == "interrupted (Ctrl-C) before it started"


TRAIN = ("runner", "train.steps=100000", "train.progress=off")
SWEEP = ("runner", "-m", "seed=0,1", "train.steps=100000", "train.progress=off")
JOBLIB = (*SWEEP, "hydra/launcher=joblib")
STARTING = {  # a name: (command, seconds after its start to press Ctrl-C)
    "run-0.3": (TRAIN, 0.3),
    "sweep-0.15": (SWEEP, 0.15),
    "sweep-0.6": (SWEEP, 0.6),
    "joblib-0.15": (JOBLIB, 0.15),
    "joblib-0.4": (JOBLIB, 0.4),
    "inspect-0.5": (("runner.inspect",), 0.5),
    "bench-0.3": (("runner.bench", "--only", "throughput"), 0.3),
    "bench-2.0": (("runner.bench", "--only", "throughput"), 2.0),
}


@pytest.mark.slow
@pytest.mark.parametrize(("argv", "delay"), STARTING.values(), ids=STARTING.keys())
def test_ctrl_c_while_a_command_starts_prints_one_line_and_exits_130(tmp_path, argv, delay):
    """Ctrl-C during the imports and the config check: one line, exit 130, and no folder
    made. (Raised inside numpy's import within torch's, a KeyboardInterrupt was swallowed
    and the whole sweep ran, or the next import failed with a traceback.) Not earlier than
    0.1 s: before runner's first line runs, Python's own start-up prints a traceback."""
    command = _press_ctrl_c(argv, tmp_path, delay)
    stdout, stderr = command.stdout, command.stderr
    assert command.returncode == 130, stdout + stderr
    assert "Traceback" not in stdout + stderr and "Fatal Python error" not in stderr
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("interrupted"), stderr
    if last in ("interrupted", "interrupted; the sweep stopped before any job started"):
        assert not (tmp_path / "outputs").exists() and not (tmp_path / "multirun").exists()


@pytest.mark.slow
def test_a_run_started_with_ctrl_c_ignored_keeps_ignoring_it(tmp_path):
    """A script's background job (`python -m runner ... &`) starts with SIGINT ignored: the
    script's Ctrl-C is not for it, before or after the imports."""
    command = _press_ctrl_c(
        ["runner", "train.steps=8000", "log.every=0", "log.hist_every=0", "train.progress=off",
         "hydra.run.dir=run"], tmp_path, 0.3, 1.5,  # while it imports, and while it trains
        ignored=True, env={"OMP_NUM_THREADS": "1"},  # (one thread: beside another test's run)
    )  # fmt: skip
    stderr = command.stderr
    assert command.returncode == 0, stderr
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["steps"] == 8000


@pytest.mark.slow
def test_a_joblib_sweep_started_with_ctrl_c_ignored_keeps_ignoring_it(tmp_path):
    """As a run does: the sweep, its worker server and its jobs all keep ignoring SIGINT."""
    folder = tmp_path / "sweep"
    command = _press_ctrl_c(
        ["runner", "-m", "seed=0,1", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
         "train.steps=6000", "train.checkpoint_every=100", "log.every=0", "log.hist_every=0",
         "train.progress=off", f"hydra.sweep.dir={folder}"], tmp_path,
        0.3, _checkpoints(folder, 2), ignored=True,  # while it imports; while both jobs train
    )  # fmt: skip
    stderr = command.stderr
    assert command.returncode == 0, stderr
    with open(folder / "summary.csv") as file:
        assert [row["status"] for row in csv.DictReader(file)] == ["ok", "ok"]


def _processes_with(marker: str) -> list[int]:
    """Live processes whose environment holds `marker` (the sweep's, inherited by its server
    and workers); a zombie's environment reads empty."""
    pids = []
    for entry in os.listdir("/proc"):
        try:
            with open(f"/proc/{entry}/environ", "rb") as file:
                if marker.encode() in file.read():
                    pids.append(int(entry))
        except (OSError, ValueError):
            continue
    return pids


@pytest.mark.slow
@pytest.mark.skipif(not os.path.isdir("/proc"), reason="reads /proc")
def test_a_finished_joblib_sweep_leaves_no_worker_or_server_behind(tmp_path):
    marker = f"RUNNER_TEST_SWEEP={os.getpid()}-{time.monotonic_ns()}"
    result = run_cli("runner", "-m", "seed=0,1,2", "model=mlp", "train.steps=20",
                     "train.progress=off", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
                     f"hydra.sweep.dir={tmp_path / 'sweep'}", cwd=tmp_path,
                     env={marker.split("=")[0]: marker.split("=")[1]})  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "summary:" in result.stdout and result.stdout.endswith(f"{tmp_path / 'sweep'}\n")
    with open(tmp_path / "sweep" / "summary.csv") as file:
        assert [row["status"] for row in csv.DictReader(file)] == ["ok"] * 3
    assert _processes_with(marker) == []


KILLER = textwrap.dedent("""
    import os

    import torch


    class Killer(torch.nn.Module):
        # Passes its input on; in a training step, ends its process at once, as the
        # kernel's out-of-memory killer would: always when die is true, and in the first
        # job to make the file `once` (a passing memory peak).

        def __init__(self, die: bool = False, once: str = "") -> None:
            super().__init__()
            self.die, self.once = die, once

        def forward(self, x):
            if self.training and torch.is_grad_enabled():
                if self.die:
                    os._exit(3)
                if self.once and not os.path.exists(self.once):
                    open(self.once, "w").close()
                    os._exit(9)
            return x
""")
KILLER_MODEL = (
    "# a model whose first layer kills its process (die: always; once: the first job)\n"
    "die: false   # true: the job dies\n"
    'once: ""     # a file: the first job to make it dies\n'
    'layers:\n  - {_target_: killer.Killer, die: "${model.die}", once: "${model.once}"}\n'
    "  - {type: linear, out_features: 1}\n"
)


def _killer_sweep(tmp_path, *overrides: str) -> subprocess.CompletedProcess:
    """A joblib sweep (2 workers) of the killer model; no traceback, no process left."""
    (tmp_path / "killer.py").write_text(KILLER)
    (tmp_path / "conf" / "model").mkdir(parents=True)
    (tmp_path / "conf" / "model" / "killer.yaml").write_text(KILLER_MODEL)
    marker = f"RUNNER_TEST_SWEEP={os.getpid()}-{time.monotonic_ns()}"
    result = run_cli("runner", "-m", "--config-dir", "conf", "model=killer", *overrides,
                     "train.progress=off", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
                     "hydra.sweep.dir=sweep", cwd=tmp_path,
                     env={"PYTHONPATH": str(tmp_path),
                          marker.split("=")[0]: marker.split("=")[1]})  # fmt: skip
    assert "Traceback" not in result.stderr, result.stderr
    assert _processes_with(marker) == []
    return result


def _summary(tmp_path) -> list[dict]:
    with open(tmp_path / "sweep" / "summary.csv") as file:
        return list(csv.DictReader(file))


@pytest.mark.slow
def test_a_dead_worker_fails_its_own_job_and_the_sweep_goes_on(tmp_path):
    """A job whose worker process dies every time is recorded as failed; the jobs that ran
    beside it run again and end, the later ones run, and the sweep ends with its summary
    and exit 1."""
    result = _killer_sweep(tmp_path, "model.die=false,true", "seed=0,1,2", "train.steps=30")
    assert result.returncode == 1, result.stderr
    assert result.stderr.strip().splitlines()[-1] == "3 of 6 jobs failed (3 failed)"
    rows = _summary(tmp_path)
    assert len(rows) == 6

    def row(die: bool, seed: int) -> dict:
        (found,) = [r for r in rows if f"model.die={die} seed={seed} " in r["overrides"]]
        return found

    for seed in (0, 1, 2):
        ok, dead = row(False, seed), row(True, seed)
        assert ok["status"] == "ok" and float(ok["final_train_loss"]) > 0
        assert dead["status"] == "failed"
        assert dead["error"].startswith("its worker process died (exit codes {EXIT(3)})")
    finished = list((tmp_path / "sweep").glob("*/model.pt"))
    assert len(finished) == 3 and all("die=False" in str(path) for path in finished)


@pytest.mark.slow
def test_jobs_killed_beside_a_dead_worker_run_again_and_the_sweep_goes_on(tmp_path):
    """A worker dies once (a passing memory peak): the jobs that had begun run again alone
    and end ok, the jobs not begun run in parallel after them, and the sweep exits 0."""
    result = _killer_sweep(tmp_path, f"model.once={tmp_path / 'died'}", "seed=0,1,2,3,4",
                           "train.steps=200")  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "died").is_file()  # a worker did die
    rows = _summary(tmp_path)
    assert sorted(row["overrides"].split("seed=")[1][0] for row in rows) == list("01234")
    assert all(row["status"] == "ok" for row in rows)
    assert len(list((tmp_path / "sweep").glob("*/model.pt"))) == 5
