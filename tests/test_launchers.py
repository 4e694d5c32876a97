"""A joblib sweep's workers are forked from a server that has imported the runner already."""

from __future__ import annotations

import json
import textwrap

from conftest import run_cli

from runner.launchers import JOBLIB_LAUNCHER, start_joblib_workers_from_argv

# Run with `python -m` (as `python -m runner` is): a worker imports the main module by name.
PROBE = textwrap.dedent("""
    import json, sys

    from joblib import Parallel, delayed

    from runner.launchers import JOBLIB_LAUNCHER, start_joblib_workers


    def worker_state():
        import os, sys
        return {"preloaded": "torch._dynamo" in sys.modules, "pid": os.getpid()}


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
    # Loky's own workers (the launcher's default) start bare and import it all per worker.
    spawned = _probe(tmp_path, "loky")
    assert spawned["started"] is False
    assert not any(state["preloaded"] for state in spawned["states"])


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
