"""Sweeps, compare and reproduce, run as a user runs them (subprocesses, real Hydra launchers)."""

from __future__ import annotations

import csv
import json
import shutil

import pytest
from conftest import run_cli
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import runner

# For long runs beside another test's: two 2-thread torch processes on 2 cores each run
# several times slower than one.
ONE_THREAD = {"OMP_NUM_THREADS": "1"}
TINY = ["train.steps=12", "train.val_every=6", "log.every=3", "log.hist_every=6", "model=deep_mlp"]


def sweep(tmp_path, name: str, *overrides: str):
    """Run `python -m runner -m ...` into tmp_path/name; return (result, sweep dir)."""
    folder = tmp_path / name
    result = run_cli("runner", "-m", *TINY, *overrides, f"hydra.sweep.dir={folder}", cwd=tmp_path)
    return result, folder


def summary_rows(folder) -> list[dict]:
    with open(folder / "summary.csv") as file:
        return list(csv.DictReader(file))


@pytest.fixture(scope="module")
def grid(tmp_path_factory):
    """A finished 2 inits x 2 tyings sweep, shared by the tests that read it."""
    tmp_path = tmp_path_factory.mktemp("grid")
    return sweep(tmp_path, "grid", "init=default,xavier", "tying=none,hidden")


@pytest.mark.slow
def test_multirun_job_dirs_summary_and_tensorboard_names(grid):
    result, folder = grid
    assert result.returncode == 0, result.stderr
    names = {"init=default,tying=none", "init=default,tying=hidden", "init=xavier,tying=none",
             "init=xavier,tying=hidden"}  # fmt: skip
    jobs = {p.name for p in folder.iterdir() if p.is_dir()}
    assert len(jobs) == 4
    for name in names:  # each job dir is named by all of its overrides, "k=v" joined by ","
        assert sum(set(name.split(",")) <= set(job.split(",")) for job in jobs) == 1, name
    assert all("model=deep_mlp" in job.split(",") and "/" not in job for job in jobs)
    rows = summary_rows(folder)
    assert len(rows) == 4 and {r["status"] for r in rows} == {"ok"}
    assert {" ".join(sorted(o for o in r["overrides"].split() if o.startswith(("init=", "tying="))))
            for r in rows} == {" ".join(sorted(n.split(","))) for n in names}  # fmt: skip
    assert all(float(r["final_train_loss"]) > 0 and float(r["steps_per_s"]) > 0 for r in rows)
    assert (folder / "summary.md").read_text().startswith("| job | status |")
    assert f"summary: {folder / 'summary.md'}" in result.stdout
    for job in jobs:  # tensorboard --logdir <sweep dir> lists "<job>/tb" runs with per-layer tags
        accumulator = EventAccumulator(str(folder / job / "tb"))
        accumulator.Reload()
        assert "grads_norm/2.weight" in accumulator.Tags()["scalars"]
        record = json.loads((folder / job / "run.json").read_text())
        assert record["choices"]["model"] == "deep_mlp" and record["versions"]["torch"]


@pytest.mark.slow
def test_a_diverging_or_failing_job_does_not_stop_the_others(tmp_path):
    """N(0, 10^2) weights on the deep MLP blow up within two steps: under
    train.on_nonfinite=stop the job is "diverged" (metrics.json says so), under raise it is
    "failed"; the jobs with std 0.01 finish, and the sweep exits 1 naming both."""
    result, folder = sweep(tmp_path, "diverging", "init=normal", "init.rules.0.std=0.01,10",
                           "train.on_nonfinite=stop,raise")  # fmt: skip
    assert result.returncode == 1
    assert "2 of 4 jobs failed (1 diverged, 1 failed)" in result.stderr
    rows = {(r["overrides"].split()[-2], r["overrides"].split()[-1]): r
            for r in summary_rows(folder)}  # fmt: skip
    assert {key: row["status"] for key, row in rows.items()} == {
        ("init.rules.0.std=0.01", "train.on_nonfinite=stop"): "ok",
        ("init.rules.0.std=0.01", "train.on_nonfinite=raise"): "ok",
        ("init.rules.0.std=10", "train.on_nonfinite=stop"): "diverged",
        ("init.rules.0.std=10", "train.on_nonfinite=raise"): "failed",
    }
    diverged = rows["init.rules.0.std=10", "train.on_nonfinite=stop"]
    assert diverged["error"].startswith("training diverged: the loss is inf at step 2 "
                                        "(train.on_nonfinite=stop); last good checkpoint: none")  # fmt: skip
    assert "| diverged |" in (folder / "summary.md").read_text()
    job = folder / diverged["job"]
    assert json.loads((job / "metrics.json").read_text())["status"] == "diverged"
    assert not (job / "model.pt").exists()
    failed = folder / rows["init.rules.0.std=10", "train.on_nonfinite=raise"]["job"]
    assert not (failed / "model.pt").exists() and not (failed / "metrics.json").exists()


@pytest.mark.slow
def test_joblib_launcher_caps_threads_per_job(tmp_path):
    result, folder = sweep(
        tmp_path, "joblib", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "seed=0,1"
    )
    assert result.returncode == 0, result.stderr
    rows = summary_rows(folder)
    assert len(rows) == 2 and {r["status"] for r in rows} == {"ok"}
    import os

    for job in (p for p in folder.iterdir() if p.is_dir()):
        threads = json.loads((job / "run.json").read_text())["threads"]
        assert threads == max(1, (os.cpu_count() or 1) // 2)


@pytest.mark.slow
def test_submitit_local_launcher(tmp_path):
    result, folder = sweep(tmp_path, "submitit", "hydra/launcher=submitit_local", "seed=0,1")
    assert result.returncode == 0, result.stderr
    assert {r["status"] for r in summary_rows(folder)} == {"ok"} and len(summary_rows(folder)) == 2


@pytest.mark.slow
def test_experiment_shared_vs_unshared_runs_its_own_sweep(tmp_path):
    result, folder = sweep(tmp_path, "experiment", "experiment=shared_vs_unshared", "train.steps=4")
    assert result.returncode == 0, result.stderr
    rows = summary_rows(folder)
    assert len(rows) == 6  # tying none,hidden x seed 0,1,2
    assert all(" tying=" in f" {r['overrides']}" and " seed=" in f" {r['overrides']}" for r in rows)


def test_init_sweep_experiment_composes():
    cfg = runner.compose(["experiment=init_sweep"])
    assert cfg.choices.model == "deep_relu" and cfg.choices.data == "teacher"
    assert cfg.model.depth == 10 and cfg.train.steps == 300


@pytest.mark.slow
def test_compare_on_a_sweep_prints_tables_and_writes_plots(grid, tmp_path):
    _, folder = grid
    out = tmp_path / "plots"
    result = run_cli("runner.compare", str(folder), "--out", str(out), "--steps", "6,12")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split()[:3] == ["run", "status", "final"]
    assert any(line.startswith("init=xavier,tying=hidden ") and " ok " in line for line in lines)
    assert any(line.startswith("2.weight ") for line in lines)
    assert "|grad| @6" in result.stdout and "std(w) @12" in result.stdout
    for name in ("loss.png", "grad_norm_by_layer.png", "activation_std_by_layer.png"):
        data = (out / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000, name


def test_compare_on_a_folder_without_event_files_is_a_clear_error(tmp_path, capsys):
    from runner.compare import main

    with pytest.raises(SystemExit) as exit_info:
        main([str(tmp_path)])
    assert exit_info.value.code == 2
    assert "no TensorBoard event files" in capsys.readouterr().err


@pytest.mark.slow
def test_reproduce_a_run_prints_identical_and_finds_a_difference(tmp_path):
    run_dir = tmp_path / "run"
    first = run_cli("runner", f"hydra.run.dir={run_dir}", "model=deep_mlp", "tying=hidden",
                    "init=xavier", "train.steps=30", cwd=tmp_path)  # fmt: skip
    assert first.returncode == 0, first.stderr
    result = run_cli("runner.reproduce", str(run_dir), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "identical: final metrics and weights" in result.stdout
    assert (tmp_path / "run.reproduced" / "model.pt").is_file()

    tampered = tmp_path / "tampered"
    shutil.copytree(run_dir, tampered)
    metrics = json.loads((tampered / "metrics.json").read_text())
    metrics["final_train_loss"] = 123.0
    (tampered / "metrics.json").write_text(json.dumps(metrics))
    result = run_cli(
        "runner.reproduce", str(tampered), "--out", str(tmp_path / "again"), cwd=tmp_path
    )
    assert result.returncode == 1
    assert "different:" in result.stdout and "final_train_loss: 123.0 ->" in result.stdout

    result = run_cli("runner.reproduce", str(tampered), "--out", str(tmp_path / "again"))
    assert result.returncode == 2 and "already holds files" in result.stderr


def test_reproduce_on_a_folder_that_is_not_a_run(tmp_path, capsys):
    from runner.reproduce import main

    with pytest.raises(SystemExit) as exit_info:
        main([str(tmp_path)])
    assert exit_info.value.code == 2
    assert "not a finished run (missing run.json" in capsys.readouterr().err


def test_job_names_escape_slashes_and_cut_long_names():
    from runner.config import path_safe

    assert path_safe("note=a/b") != path_safe("note=a_b") and "/" not in path_safe("note=a/b")
    long = path_safe("model.layers=" + "x" * 500)
    assert len(long.encode()) <= 200 and long != path_safe("model.layers=" + "x" * 499)


def test_summary_is_rewritten_as_each_job_ends_and_ignores_an_earlier_sweep(tmp_path):
    from omegaconf import OmegaConf

    from runner.sweep import SweepSummary, record_job

    sweep_dir = tmp_path / "sweep"
    (sweep_dir / "old").mkdir(parents=True)
    record_job(sweep_dir / "old", sweep_dir, ["seed=9"], "failed", "from last week")
    SweepSummary().on_multirun_start(
        OmegaConf.create({"hydra": {"sweep": {"dir": str(sweep_dir)}}})
    )
    for i, status in enumerate(["ok", "failed"]):
        (sweep_dir / f"job{i}").mkdir()
        record_job(
            sweep_dir / f"job{i}", sweep_dir, [f"seed={i}"], status, None, {"final_train_loss": 0.5}
        )
        rows = summary_rows(sweep_dir)
        assert [r["job"] for r in rows] == [f"job{k}" for k in range(i + 1)]  # not "old"
    assert rows[0]["final_train_loss"] == "0.5" and rows[1]["status"] == "failed"


@pytest.mark.slow
def test_reproduce_a_run_made_with_config_dir_and_a_sweep_job(tmp_path):
    (tmp_path / "mine" / "model").mkdir(parents=True)
    (tmp_path / "mine" / "model" / "tiny.yaml").write_text(
        "# tiny\nlayers: [{type: linear, out_features: 1}]\n"
    )
    result = run_cli(
        "runner",
        "--config-dir",
        "mine",
        "model=tiny",
        "hydra.run.dir=r1",
        "train.steps=5",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads((tmp_path / "r1" / "run.json").read_text())["config_dir"] == str(
        tmp_path / "mine"
    )
    result = run_cli("runner.reproduce", "r1", cwd=tmp_path)
    assert result.returncode == 0 and "identical" in result.stdout, result.stderr

    result, folder = sweep(tmp_path, "sw", "seed=0,1", "+model.note=a/b")  # a model variable
    assert result.returncode == 0, result.stderr
    job = next(p for p in folder.iterdir() if p.is_dir() and "seed=1" in p.name)
    assert "model.note=a%2Fb" in job.name
    result = run_cli("runner.reproduce", str(job), cwd=tmp_path)
    assert result.returncode == 0 and "identical" in result.stdout, result.stderr
    assert (tmp_path / "sw.reproduced" / job.name / "model.pt").is_file()  # outside the sweep


def test_reproduce_warns_when_versions_differ_and_hash_follows_the_weights(tmp_path):
    import torch

    from runner.reproduce import differences, weights_digest
    from runner.train import train

    for name in ("a", "b"):
        train(runner.compose(["train.steps=3", "train.progress=off"]), tmp_path / name)
    assert differences(tmp_path / "a", tmp_path / "b")[0] == []
    record = json.loads((tmp_path / "b" / "run.json").read_text())
    record["versions"]["torch"] = "0.0.1"
    (tmp_path / "b" / "run.json").write_text(json.dumps(record))
    diffs, warnings = differences(tmp_path / "a", tmp_path / "b")
    assert diffs == [] and any(w.startswith("versions differ") for w in warnings)
    state = torch.load(tmp_path / "b" / "model.pt", weights_only=True)
    before = weights_digest(tmp_path / "b" / "model.pt")
    state["0.bias"][0] += 1e-6
    torch.save(state, tmp_path / "b" / "model.pt")
    assert weights_digest(tmp_path / "b" / "model.pt") != before
    assert any(
        d.startswith("final weights: sha256")
        for d in differences(tmp_path / "a", tmp_path / "b")[0]
    )


def test_compare_runs_of_different_models_and_without_layer_scalars(tmp_path, capsys):
    from runner.compare import main
    from runner.train import train

    train(runner.compose(["train.steps=4", "log.every=2", "train.progress=off"]), tmp_path / "mlp")
    train(
        runner.compose(["model=rgnet", "train.steps=4", "log.every=2", "train.progress=off"]),
        tmp_path / "rg",
    )
    main([str(tmp_path / "mlp"), str(tmp_path / "rg"), "--out", str(tmp_path / "plots")])
    out = capsys.readouterr().out
    header = out.split("\n\n")[1].splitlines()[0]  # the per-layer table: both runs side by side
    assert header.split()[1:] == ["mlp", "mlp", "rg", "rg"]
    assert "0.block 3.2.weight" in out and "\n2.weight " in out
    train(runner.compose(["train.steps=4", "log.every=0", "log.hist_every=0", "train.val_every=2",
                          "train.progress=off"]), tmp_path / "quiet")  # fmt: skip
    main([str(tmp_path / "quiet"), "--out", str(tmp_path / "plots2")])
    assert "no per-layer scalars" in capsys.readouterr().out


def test_compare_names_the_sweep_when_two_sweeps_share_job_names(tmp_path, capsys):
    from runner.compare import find_runs
    from runner.train import train

    for sweep_name in ("monday", "tuesday"):
        train(
            runner.compose(["train.steps=2", "train.progress=off"]),
            tmp_path / sweep_name / "seed=0",
        )
    labels = [run.label for run in find_runs([tmp_path / "monday", tmp_path / "tuesday"])]
    assert labels == ["monday/seed=0", "tuesday/seed=0"]


def test_compare_steps_must_be_whole_numbers(capsys):
    from runner.compare import parse_args

    assert parse_args(["runs", "--steps", "0,100"]).steps == [0, 100]
    for bad in ("abc", "0,-1", "1,x"):
        with pytest.raises(SystemExit):
            parse_args(["runs", "--steps", bad])
        assert f"argument --steps: '{bad}': give steps as 0,100,1000" in capsys.readouterr().err


def test_an_experiment_that_sweeps_warns_when_run_without_multirun(tmp_path, capsys):
    from runner.command_line import check_command_line

    check_command_line(["experiment=init_sweep", f"hydra.run.dir={tmp_path / 'one'}"])
    err = capsys.readouterr().err
    assert err.startswith("warning: the config sweeps init=default,normal,xavier")
    assert "without -m (--multirun) this runs one job" in err
    check_command_line(["-m", "experiment=init_sweep", f"hydra.sweep.dir={tmp_path / 'all'}"])
    check_command_line(["model=mlp", f"hydra.run.dir={tmp_path / 'plain'}"])
    assert capsys.readouterr().err == ""


def test_compare_refuses_a_run_given_twice_and_a_threshold_that_is_not_finite(tmp_path, capsys):
    from runner.compare import main, parse_args

    (tmp_path / "run" / "tb").mkdir(parents=True)
    with pytest.raises(SystemExit) as exit_info:
        main([str(tmp_path / "run"), str(tmp_path / "run") + "/"])
    assert exit_info.value.code == 2
    assert "run: given more than once; give each run or sweep once" in capsys.readouterr().err
    for bad in ("nan", "inf", "x"):
        with pytest.raises(SystemExit):
            parse_args(["runs", "--threshold", bad])
        assert "give a finite number" in capsys.readouterr().err


def test_reproduce_counts_a_key_the_schema_gained_as_its_default(tmp_path):
    from runner.reproduce import _config_differs

    old, new = tmp_path / "old.yaml", tmp_path / "new.yaml"
    new.write_text("seed: 0\ninit:\n  rules: []\n  edits: []\n")
    old.write_text("seed: 0\ninit:\n  rules: []\n")  # made before init.edits existed
    assert not _config_differs(old, new)
    new.write_text("seed: 0\ninit:\n  rules: []\n  edits: [{params: x, add: 1}]\n")
    assert _config_differs(old, new)


@pytest.mark.slow
def test_jobs_whose_subdir_names_them_alike_do_not_write_over_each_other(tmp_path):
    # s${seed} is one folder for init=default and init=xavier of one seed: the second job
    # to begin there must not replace the first's results.
    result, folder = sweep(tmp_path, "alike", "seed=0,1", "init=default,xavier",
                           "hydra.sweep.subdir=s${seed}")  # fmt: skip
    assert result.returncode == 1, result.stderr
    assert "2 of 4 jobs left no record: they shared a job folder" in result.stderr
    shown = result.stdout + result.stderr  # (the job logs its error with Hydra's logging)
    assert "job 1 not run: its folder" in shown and "is job 0's too" in shown
    rows = summary_rows(folder)
    assert sorted(r["job"] for r in rows) == ["s0", "s1"] and {r["status"] for r in rows} == {"ok"}
    for job in ("s0", "s1"):  # each folder's results are its first job's (init=default)
        record = json.loads((folder / job / "run.json").read_text())
        assert record["choices"]["init"] == "default"
        assert "init=default" in json.loads((folder / job / "job.json").read_text())["overrides"]
    assert "Traceback" not in shown


@pytest.mark.slow
def test_jobs_in_nested_folders_are_summarised_by_their_path(tmp_path):
    result, folder = sweep(tmp_path, "nested", "seed=0,1", "hydra.sweep.subdir=s${seed}/run")
    assert result.returncode == 0, result.stderr
    rows = summary_rows(folder)
    assert sorted(r["job"] for r in rows) == ["s0/run", "s1/run"]
    assert {r["status"] for r in rows} == {"ok"}
    from runner.compare import find_runs  # compare finds them at that depth too

    assert [run.label for run in find_runs([folder])] == ["s0/run", "s1/run"]


@pytest.fixture(scope="module")
def long_run(tmp_path_factory):
    """A finished run of 12000 quick steps with a checkpoint every 1500: reproducing it
    takes long enough to be stopped on the way."""
    folder = tmp_path_factory.mktemp("long") / "run"
    steps = ["train.steps=12000", "train.checkpoint_every=1500", "log.every=0",
             "log.hist_every=0", "train.val_every=0", "train.progress=off"]  # fmt: skip
    done = run_cli("runner", *steps, f"hydra.run.dir={folder}", cwd=folder.parent, env=ONE_THREAD)
    assert done.returncode == 0, done.stderr
    return folder


@pytest.mark.slow
@pytest.mark.parametrize(("sent", "code", "word"), [("SIGINT", 130, "interrupted"),
                                                    ("SIGHUP", 143, "terminated")])  # fmt: skip
def test_a_signal_to_reproduce_stops_the_new_run_with_a_checkpoint(long_run, tmp_path, sent,
                                                                    code, word):  # fmt: skip
    """reproduce runs the new run in a session of its own and passes Ctrl-C (a closed
    terminal: SIGHUP, as SIGTERM) on to it once: it saves its step, and reproduce prints
    how to go on and exits with the run's code (no run left over)."""
    import os
    import signal
    import subprocess
    import sys
    import time
    import uuid

    import torch
    from test_launchers import _processes_with

    again, marker = tmp_path / "again", f"RUNNER_TEST_{uuid.uuid4().hex}"
    command = subprocess.Popen(
        [sys.executable, "-m", "runner.reproduce", str(long_run), "--out", str(again)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
        env={**os.environ, **ONE_THREAD, marker: "1"},
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while not (again / "checkpoint.pt").is_file() and time.monotonic() < deadline:
            time.sleep(0.05)
        os.kill(command.pid, getattr(signal, sent))  # to reproduce alone, as `kill` does
        _, stderr = command.communicate(timeout=120)
    finally:
        for pid in _processes_with(marker):  # the new run too, should reproduce fail
            os.kill(pid, signal.SIGKILL)
    assert command.returncode == code, stderr
    resume = f"{word}; continue with train.resume={again / 'checkpoint.pt'}"
    assert stderr.strip().splitlines()[-1] == resume
    assert "Traceback" not in stderr and not (again / "model.pt").exists()
    assert 0 < torch.load(again / "checkpoint.pt", weights_only=True)["step"] < 12000
