"""Faults during a run: NaN/inf (train.on_nonfinite), writes killed mid-way, a full disk
and a read-only folder. Signals are in test_resume.py, safety in test_safety.py."""

from __future__ import annotations

import errno
import json
import math
import os
import random
import subprocess
import sys
import time

import pytest
import torch
from conftest import count_host_reads
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import runner
import runner.train as train_module
from runner import artifacts
from runner.errors import OutputError, TrainingDiverged, exit_on_user_error
from runner.train import train

QUIET = ["train.progress=off", "train.val_every=0", "log.hist_every=0"]


def with_loss(monkeypatch, change):
    """Make `prepare` wrap the loss: change(step, out, y, loss_fn) gives the loss of training
    step `step` (evaluations pass through)."""
    real_prepare = train_module.prepare

    def prepare(cfg):
        setup = real_prepare(cfg)
        loss_fn, calls = setup.loss_fn, {"n": 0}

        def changed(out, y):
            if not setup.model.training:
                return loss_fn(out, y)
            calls["n"] += 1
            return change(calls["n"], out, y, loss_fn)

        setup.loss_fn = changed
        return setup

    monkeypatch.setattr(train_module, "prepare", prepare)


def nan_at(step: int):
    def change(n, out, y, loss_fn):
        loss = loss_fn(out, y)
        return loss * math.nan if n == step else loss

    return change


class InfGradient(torch.autograd.Function):
    """Identity forward; an infinite gradient backward: a finite loss with a bad gradient."""

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        return grad * math.inf


def test_stop_names_the_first_bad_step_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    """NaN at step 13, a non-logging step: seen at the step-15 checkpoint, which is not
    written; metrics.json says diverged, no model.pt, TensorBoard flushed."""
    with_loss(monkeypatch, nan_at(13))
    run_dir = tmp_path / "run"
    cfg = runner.compose([*QUIET, "train.steps=40", "train.checkpoint_every=5", "log.every=10"])
    with pytest.raises(TrainingDiverged) as error:
        train(cfg, run_dir)
    assert error.value.stopped
    assert str(error.value).startswith(
        "training diverged: the loss is nan at step 13 (train.on_nonfinite=stop); "
        f"last good checkpoint: {run_dir / 'checkpoint.pt'} at step 10; "
    )
    checkpoint = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    assert checkpoint["step"] == 10
    assert all(torch.isfinite(v).all() for v in checkpoint["model"].values())
    assert not (run_dir / "model.pt").exists()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["status"] == "diverged" and metrics["diverged_at_step"] == 13
    assert metrics["stopped_at_step"] == 15 and metrics["last_good_checkpoint_step"] == 10
    assert metrics["final_train_loss"] is None and metrics["initial_train_loss"] > 0
    events = EventAccumulator(str(run_dir / "tb"))
    events.Reload()
    assert [e.step for e in events.Scalars("loss/train")] == [0, 10]


def test_a_non_finite_gradient_on_a_logging_step_counts(tmp_path, monkeypatch):
    def change(n, out, y, loss_fn):
        return loss_fn(InfGradient.apply(out) if n == 10 else out, y)

    with_loss(monkeypatch, change)
    cfg = runner.compose([*QUIET, "train.steps=20", "log.every=5", "model=deep_mlp"])
    with pytest.raises(TrainingDiverged, match=r"the gradient of \S+ is (inf|nan) at step 10 "):
        train(cfg, tmp_path / "run")


def test_raise_fails_without_bookkeeping(tmp_path, monkeypatch):
    with_loss(monkeypatch, nan_at(3))
    cfg = runner.compose([*QUIET, "train.steps=10", "log.every=5", "train.on_nonfinite=raise"])
    with pytest.raises(TrainingDiverged, match=r"the loss is nan at step 3 \(train.on_nonfinite=raise\); a smaller") as error:  # fmt: skip
        train(cfg, tmp_path / "run")
    assert not error.value.stopped
    assert {p.name for p in (tmp_path / "run").iterdir()} == {"run.json", "tb"}


def test_skip_drops_the_bad_update_and_goes_on(tmp_path, monkeypatch):
    """Adam counts its updates: with one skipped step it made steps - 1."""
    with_loss(monkeypatch, nan_at(4))
    optimizers = []
    real_prepare = train_module.prepare
    monkeypatch.setattr(train_module, "prepare",
                        lambda cfg: optimizers.append(s := real_prepare(cfg)) or s)  # fmt: skip
    cfg = runner.compose([*QUIET, "train.steps=10", "log.every=5", "optim=adam",
                          "train.on_nonfinite=skip"])  # fmt: skip
    metrics = train(cfg, tmp_path / "run")
    assert metrics["status"] == "ok" and metrics["nonfinite_skipped"] == 1
    assert math.isfinite(metrics["final_train_loss"])
    state = optimizers[0].optimizer.state
    assert {int(s["step"]) for s in state.values()} == {9}
    events = EventAccumulator(str(tmp_path / "run" / "tb"))
    events.Reload()
    assert [(e.step, e.value) for e in events.Scalars("nonfinite/skipped")] == [(5, 1), (10, 1)]


def test_on_nonfinite_must_be_a_known_policy():
    from runner.setup_checks import check_settings

    with pytest.raises(runner.ConfigError, match=r"train\.on_nonfinite.*stop, skip, raise"):
        check_settings(runner.compose(["train.on_nonfinite=ignore"]))


def test_stop_costs_no_host_sync_on_steps_that_do_not_log(tmp_path, monkeypatch):
    """600 steps (two folds of the loss buffer on the device) and one host read at the end."""
    from runner.loop import run_loop
    from runner.tensorboard import RunWriter
    from runner.train import prepare

    cfg = runner.compose([*QUIET, "train.steps=600", "log.every=0", "model=deep_mlp"])
    setup = prepare(cfg)
    calls = count_host_reads(monkeypatch)
    run_loop(cfg, setup, RunWriter(tmp_path / "tb"), lambda step: None)
    assert calls == {"tolist": 1}


@pytest.mark.parametrize("bad_at", [1, 255, 256, 257, 600])
def test_the_record_names_the_first_bad_loss_across_buffer_folds(bad_at):
    from runner.faults import NonFinite, NonFiniteWatch

    watch = NonFiniteWatch("stop", torch.nn.Linear(2, 1), torch.device("cpu"))
    watch.start(100)  # a run resumed at step 100
    for step in range(1, 700):
        loss = {bad_at: math.inf, bad_at + 1: math.nan}.get(step, 0.5)
        watch.observe(torch.tensor(loss))
    with pytest.raises(NonFinite) as found:
        watch.verify(799)
    assert (found.value.step, found.value.what) == (100 + bad_at, "the loss is inf")
    watch.start(0)
    for _ in range(300):
        watch.observe(torch.tensor(0.5))
    watch.verify(300)  # all finite: no error


# --- writes: killed, full, read-only ---------------------------------------------------------

WRITER = """
import sys, torch
from pathlib import Path
from runner import artifacts
folder = Path(sys.argv[1])
step = torch.load(folder / "checkpoint.pt", weights_only=True)["step"] if (folder / "checkpoint.pt").exists() else 0
print("ready", flush=True)
while True:
    step += 1
    artifacts.save_checkpoint(folder, {"step": step, "model": {"w": torch.full((2_000_000,), float(step))}})
"""


@pytest.mark.slow
def test_a_kill_during_a_save_leaves_the_old_or_the_new_checkpoint(tmp_path):
    """SIGKILL at random moments of a process that saves an 8 MB checkpoint over and over:
    checkpoint.pt always loads whole and is one save's content; leftovers are temp files,
    which `remove_temporaries` (run at every run's start) deletes."""
    chance, last, leftovers = random.Random(6), 0, 0
    for _ in range(6):
        process = subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path)],
                                   stdout=subprocess.PIPE, text=True)  # fmt: skip
        assert process.stdout.readline() == "ready\n"
        time.sleep(chance.uniform(0.3, 1.2))
        process.kill()
        process.wait()
        checkpoint = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
        step = checkpoint["step"]
        assert step >= last and torch.equal(
            checkpoint["model"]["w"], torch.full((2_000_000,), float(step))
        )
        last = step
        leftovers += len(list(tmp_path.glob(".checkpoint.pt.*")))
    assert last > 6  # it saved between kills
    assert leftovers >= 1  # some kill landed mid-save (each one is ~all saving)
    assert artifacts.remove_temporaries(tmp_path) and not list(tmp_path.glob(".checkpoint.pt.*"))
    assert {p.name for p in tmp_path.iterdir()} == {"checkpoint.pt"}


@pytest.fixture
def earlier_run(tmp_path):
    """A finished run's folder and the bytes of its files."""
    run_dir = tmp_path / "run"
    train(runner.compose([*QUIET, "train.steps=3"]), run_dir)
    return run_dir, {
        n: (run_dir / n).read_bytes() for n in ("model.pt", "checkpoint.pt", "metrics.json")
    }


def test_a_full_disk_is_one_line_and_the_earlier_files_stay(earlier_run, monkeypatch, capsys):
    """ENOSPC in the middle of writing model.pt (torch.save reports it as a RuntimeError)."""
    run_dir, before = earlier_run
    real_save = torch.save

    class FillsUp:
        """The temp file on a disk with 200 bytes left."""

        def __init__(self, file):
            self.file, self.left = file, 200

        def write(self, data):
            if len(data) > self.left:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            self.left -= len(data)
            return self.file.write(data)

        def flush(self):
            self.file.flush()

    def save_until_full(obj, file, *args, **kwargs):
        if "0.weight" in obj:  # model.pt's state_dict (a checkpoint nests it under "model")
            file = FillsUp(file)
        return real_save(obj, file, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save_until_full)
    with pytest.raises(SystemExit) as exit_info:
        exit_on_user_error(train)(runner.compose([*QUIET, "train.steps=5"]), run_dir)
    assert exit_info.value.code == 1
    assert (
        capsys.readouterr().err
        == f"error: cannot write {run_dir / 'model.pt'}: No space left on device\n"
    )
    assert {n: (run_dir / n).read_bytes() for n in before} == before
    assert not list(run_dir.glob(".model.pt.*"))


def test_a_read_only_folder_is_one_line_and_the_earlier_files_stay(earlier_run, monkeypatch):
    """Simulated: tests run as root, for whom chmod does not stop writes."""
    run_dir, before = earlier_run

    def refused(*args, **kwargs):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))

    monkeypatch.setattr(artifacts.tempfile, "mkstemp", refused)
    with pytest.raises(
        OutputError, match=rf"^cannot write {run_dir / 'run.json'}: Permission denied$"
    ):
        train(runner.compose([*QUIET, "train.steps=5"]), run_dir)
    assert {n: (run_dir / n).read_bytes() for n in before} == before


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a read-only folder anyway")
def test_a_really_read_only_folder(earlier_run):
    run_dir, before = earlier_run
    run_dir.chmod(0o555)
    try:
        with pytest.raises(OutputError, match="cannot write .*: Permission denied"):
            train(runner.compose([*QUIET, "train.steps=5"]), run_dir)
    finally:
        run_dir.chmod(0o755)
    assert {n: (run_dir / n).read_bytes() for n in before} == before


def test_ctrl_c_while_the_finished_run_saves_leaves_a_checkpoint_to_resume(tmp_path, monkeypatch):
    """Every step ran, then Ctrl-C during the final saves: checkpoint.pt holds the last step."""

    def interrupted(run_dir, model):
        raise KeyboardInterrupt

    monkeypatch.setattr(artifacts, "save_model", interrupted)
    run_dir = tmp_path / "run"
    cfg = runner.compose([*QUIET, "train.steps=12", "log.every=5"])
    with pytest.raises(KeyboardInterrupt):
        train(cfg, run_dir)
    saved = torch.load(run_dir / artifacts.CHECKPOINT_FILE, weights_only=True)
    assert saved["step"] == 12
    assert not (run_dir / artifacts.METRICS_FILE).exists()


def test_a_norm_that_overflows_float32_does_not_stop_a_finite_run(tmp_path):
    """Weights of std 1e18 (finite, fed zeros, so they never move): their float32 sum of
    squares overflows and the logged norm is inf, but the tensor holds no infinity, so the
    run ends as it does without logging: ok, with the same bits."""
    overrides = ["model=deep_relu", "model.depth=3", "train.steps=5", *QUIET,
                 'init.rules=[{params: "0.0.*", scheme: zeros}, '
                 '{params: "1.0.weight", scheme: normal, mean: 0.0, std: 1e18}]']  # fmt: skip
    logged = train(runner.compose([*overrides, "log.every=1"]), tmp_path / "logged")
    quiet = train(runner.compose([*overrides, "log.every=0"]), tmp_path / "quiet")
    assert logged["status"] == quiet["status"] == "ok"
    a = torch.load(tmp_path / "logged" / "model.pt", weights_only=True)
    b = torch.load(tmp_path / "quiet" / "model.pt", weights_only=True)
    assert all(torch.equal(a[k], b[k]) for k in a)
