"""Start-up runs without garbage collection; jobs train with the collector on and their own
objects unfrozen (runner/start_up.py)."""

from __future__ import annotations

import json
import textwrap

from conftest import run_cli

# Run as `python -m watch_jobs ARGS`: `python -m runner ARGS` with each job's collector
# state printed as the job's training starts.
WATCH_JOBS = textwrap.dedent("""
    import gc, json, runpy, sys

    import runner.train

    def watched(*args, **kwargs):
        cfg = args[0]  # gc.get_objects() lists only objects that are not frozen
        print("JOB " + json.dumps({"collector_on": gc.isenabled(),
                                   "frozen": gc.get_freeze_count(),
                                   "config_unfrozen": any(o is cfg for o in gc.get_objects()),
                                   "dynamo_imported": "torch._dynamo" in sys.modules}))
        return train(*args, **kwargs)

    train, runner.train.train = runner.train.train, watched
    sys.argv = ["runner", *sys.argv[1:]]
    runpy.run_module("runner", run_name="__main__", alter_sys=True)
""")


def _jobs(tmp_path, *overrides: str) -> list[dict]:
    (tmp_path / "watch_jobs.py").write_text(WATCH_JOBS)
    result = run_cli("watch_jobs", *overrides, "model=mlp", "train.steps=2", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    return [json.loads(line[4:]) for line in result.stdout.splitlines() if line.startswith("JOB ")]


def test_a_run_trains_with_the_collector_on_and_its_imports_frozen(tmp_path):
    (job,) = _jobs(tmp_path, f"hydra.run.dir={tmp_path / 'run'}")
    assert job["collector_on"] and job["config_unfrozen"]
    assert job["dynamo_imported"]  # imported before the freeze, not by the optimizer after it
    assert job["frozen"] > 100_000  # torch's and Hydra's objects: never scanned again


def test_a_sequential_sweep_freezes_nothing_of_its_jobs(tmp_path):
    """The freeze happens once, before Hydra composes the first job: a job's config, model
    and optimizer stay collectable after it ends."""
    jobs = _jobs(tmp_path, "-m", "seed=0,1,2", f"hydra.sweep.dir={tmp_path / 'sweep'}")
    assert len(jobs) == 3
    assert all(job["collector_on"] and job["config_unfrozen"] for job in jobs)
    assert jobs[0]["frozen"] > 100_000
    # A frozen object can still be freed (its count drops), but none is added after job 0.
    frozen = [job["frozen"] for job in jobs]
    assert frozen == sorted(frozen, reverse=True)


def test_commands_that_train_nothing_here_import_no_torch_and_end_with_the_collector_on(tmp_path):
    """--cfg and --info train nothing; a joblib sweep trains in its workers, not here."""
    probe = textwrap.dedent("""
        import atexit, gc, runpy, sys
        atexit.register(lambda: print("END", gc.isenabled(), "torch" in sys.modules))
        sys.argv = ["runner", *sys.argv[1:]]
        runpy.run_module("runner", run_name="__main__", alter_sys=True)
    """)
    (tmp_path / "probe_end.py").write_text(probe)
    joblib = ["-m", "seed=0,1", "model=mlp", "train.steps=2", "hydra/launcher=joblib",
              "hydra.launcher.n_jobs=2", f"hydra.sweep.dir={tmp_path / 'sweep'}"]  # fmt: skip
    for args in (["--cfg", "job"], ["--info"], joblib):
        result = run_cli("probe_end", *args, cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        assert result.stdout.splitlines()[-1] == "END True False"
