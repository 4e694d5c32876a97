"""An interrupted run, resumed from its checkpoint, ends with the bits of one that ran straight through."""

from __future__ import annotations

import pytest
import torch

import runner
import runner.train as train_module
from runner.train import train

# Dropout draws from the global RNG, Adam keeps state, 1000 // 64 = 15 steps an epoch:
# the interruption at step 27 falls mid-epoch, so everything a checkpoint holds matters.
COMMON = [
    "model.layers=[{type: linear, out_features: 16}, relu, {type: dropout, p: 0.2}, {type: linear, out_features: 1}]",
    "optim=adam", "train.batch_size=64", "train.steps=40", "train.progress=off", "train.val_every=0",
    "log.every=0", "log.hist_every=0", "seed=5",
    "optim.scheduler={_target_: torch.optim.lr_scheduler.StepLR, _partial_: true, step_size: 7, gamma: 0.9}",
]  # fmt: skip


def weights(run_dir) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / "model.pt", weights_only=True)


def test_interrupted_and_resumed_equals_straight_through(tmp_path, monkeypatch):
    train(runner.compose(COMMON), tmp_path / "straight")

    class Interrupted(Exception):
        pass

    def crash_at_27(module_loss):  # the loss runs once a step: fail in step 27
        calls = {"n": 0}

        def loss(*args):
            calls["n"] += 1
            if calls["n"] == 27:
                raise Interrupted("pre-empted")
            return module_loss(*args)

        return loss

    real_prepare = train_module.prepare

    def prepare_that_crashes(cfg):
        setup = real_prepare(cfg)
        setup.loss_fn = crash_at_27(setup.loss_fn)
        return setup

    monkeypatch.setattr(train_module, "prepare", prepare_that_crashes)
    with pytest.raises(Interrupted):
        train(runner.compose([*COMMON, "train.checkpoint_every=10"]), tmp_path / "interrupted")
    monkeypatch.setattr(train_module, "prepare", real_prepare)
    checkpoint = torch.load(tmp_path / "interrupted" / "checkpoint.pt", weights_only=True)
    assert checkpoint["step"] == 20 and not (tmp_path / "interrupted" / "model.pt").exists()

    metrics = train(
        runner.compose([*COMMON, f"train.resume={tmp_path / 'interrupted' / 'checkpoint.pt'}"]),
        tmp_path / "resumed",
    )
    assert metrics["resumed_from_step"] == 20 and metrics["steps"] == 40
    straight, resumed = weights(tmp_path / "straight"), weights(tmp_path / "resumed")
    assert list(straight) == list(resumed)
    for name in straight:
        assert torch.equal(straight[name], resumed[name]), name


def test_resume_at_an_epoch_boundary(tmp_path):
    short = [c for c in COMMON if not c.startswith("train.steps")]
    train(runner.compose([*short, "train.steps=30"]), tmp_path / "first")  # 30 = 2 epochs of 15
    train(runner.compose([*short, "train.steps=45"]), tmp_path / "straight")
    resume = f"train.resume={tmp_path / 'first' / 'checkpoint.pt'}"
    train(runner.compose([*short, "train.steps=45", resume]), tmp_path / "resumed")
    straight, resumed = weights(tmp_path / "straight"), weights(tmp_path / "resumed")
    assert all(torch.equal(straight[k], resumed[k]) for k in straight)


@pytest.mark.parametrize(
    ("content", "words"),
    [(None, "no such file"), (b"not a checkpoint", "cannot read it as a checkpoint"),
     ("foreign", "not a runner checkpoint"), ("truncated", "cannot read it as a checkpoint"),
     ("other model", "the checkpoint was made with another config \\(choices.model: 'mlp' -> 'deep_mlp'")],
)  # fmt: skip
def test_bad_resume_paths_are_clear_errors(tmp_path, content, words):
    path = tmp_path / "checkpoint.pt"
    if content == "foreign":
        torch.save({"weights": torch.zeros(2)}, path)
    elif content in ("truncated", "other model"):
        train(runner.compose(["train.steps=3", "train.progress=off"]), tmp_path / "run")
        data = (tmp_path / "run" / "checkpoint.pt").read_bytes()
        path.write_bytes(data[: len(data) // 2] if content == "truncated" else data)
    elif content is not None:
        path.write_bytes(content)
    overrides = [f"train.resume={path}", "train.progress=off"]
    if content == "other model":
        overrides.append("model=deep_mlp")
    with pytest.raises(runner.ConfigError, match=words):
        train(runner.compose(overrides), tmp_path / "resumed")
    assert not (tmp_path / "resumed" / "model.pt").exists()


def test_resume_refuses_a_config_that_changes_training_but_allows_a_longer_run(tmp_path):
    train(runner.compose(["train.steps=4", "train.progress=off"]), tmp_path / "first")
    resume = f"train.resume={tmp_path / 'first' / 'checkpoint.pt'}"
    with pytest.raises(
        runner.ConfigError, match=r"another config \(optim.optimizer.lr: 0.03 -> 0.5\)"
    ):
        train(runner.compose([resume, "optim.optimizer.lr=0.5", "train.steps=8"]), tmp_path / "lr")
    metrics = train(runner.compose([resume, "train.steps=8", "train.progress=off", "log.every=2"]),
                    tmp_path / "longer")  # fmt: skip
    assert metrics["resumed_from_step"] == 4 and metrics["steps"] == 8


def test_a_checkpoint_from_before_a_new_key_resumes_while_the_key_keeps_its_default(tmp_path):
    """A checkpoint made before the schema gained a key (init.edits) has no such key: the
    key stood at its default then, so resuming with the default is the same config."""
    train(runner.compose(["train.steps=4", "train.progress=off"]), tmp_path / "first")
    checkpoint = torch.load(tmp_path / "first" / "checkpoint.pt", weights_only=True)
    del checkpoint["config"]["init"]["edits"]
    torch.save(checkpoint, tmp_path / "older.pt")
    resume = f"train.resume={tmp_path / 'older.pt'}"
    metrics = train(
        runner.compose([resume, "train.steps=6", "train.progress=off"]), tmp_path / "on"
    )
    assert metrics["resumed_from_step"] == 4
    edit = "init.edits=[{params: 0.weight, add: 1}]"
    with pytest.raises(runner.ConfigError, match=r"another config \(init.edits: \[\] -> "):
        train(runner.compose([resume, edit, "train.steps=6"]), tmp_path / "edited")


@pytest.mark.parametrize(
    ("edit", "words"),
    [({"step": "abc"}, "its step must be a whole number >= 0, got 'abc'"),
     ({"step": -5}, "its step must be a whole number >= 0, got -5"),
     ({"rng": {}}, "its RNG states cannot be restored")],
)  # fmt: skip
def test_a_hand_edited_checkpoint_is_a_clear_error(tmp_path, edit, words):
    train(runner.compose(["train.steps=3", "train.progress=off"]), tmp_path / "run")
    checkpoint = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    torch.save({**checkpoint, **edit}, tmp_path / "edited.pt")
    resume = f"train.resume={tmp_path / 'edited.pt'}"
    with pytest.raises(runner.ConfigError, match=words):
        train(runner.compose([resume, "train.steps=6", "train.progress=off"]), tmp_path / "on")


def interrupt_in_step(step: int, interrupt):
    """A `prepare` whose loss calls `interrupt()` in training step `step` (evaluations not counted)."""
    real_prepare = train_module.prepare

    def prepare(cfg):
        setup = real_prepare(cfg)
        loss, calls = setup.loss_fn, {"n": 0}

        def interrupting(*args):
            calls["n"] += setup.model.training
            if calls["n"] == step and setup.model.training:
                interrupt()
            return loss(*args)

        setup.loss_fn = interrupting
        return setup

    return prepare


def test_ctrl_c_ends_the_step_checkpoints_it_and_resumes_to_the_same_bits(tmp_path, monkeypatch):
    """The first Ctrl-C is held until step 7 ends (dropout has drawn, Adam has stepped): the
    checkpoint holds one whole step, so the resumed run equals one never interrupted."""
    import os
    import signal

    monkeypatch.setattr(train_module, "prepare",
                        interrupt_in_step(7, lambda: os.kill(os.getpid(), signal.SIGINT)))  # fmt: skip
    with pytest.raises(KeyboardInterrupt):
        train(runner.compose(COMMON), tmp_path / "stopped")
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # put back
    monkeypatch.undo()
    assert torch.load(tmp_path / "stopped" / "checkpoint.pt", weights_only=True)["step"] == 7
    assert not (tmp_path / "stopped" / "model.pt").exists()
    resume = f"train.resume={tmp_path / 'stopped' / 'checkpoint.pt'}"
    train(runner.compose([*COMMON, resume]), tmp_path / "resumed")
    train(runner.compose(COMMON), tmp_path / "straight")
    straight, resumed = weights(tmp_path / "straight"), weights(tmp_path / "resumed")
    assert all(torch.equal(straight[k], resumed[k]) for k in straight)


def test_an_interrupt_mid_step_keeps_the_last_whole_checkpoint(tmp_path, monkeypatch):
    """A KeyboardInterrupt that was not held (a second Ctrl-C, a worker thread) lands mid-step,
    where weights, optimizer and RNG disagree: no checkpoint of that state is written."""

    def interrupt():
        raise KeyboardInterrupt

    monkeypatch.setattr(train_module, "prepare", interrupt_in_step(7, interrupt))
    with pytest.raises(KeyboardInterrupt):
        train(runner.compose([*COMMON, "train.checkpoint_every=5"]), tmp_path / "stopped")
    assert torch.load(tmp_path / "stopped" / "checkpoint.pt", weights_only=True)["step"] == 5
    assert not (tmp_path / "stopped" / "model.pt").exists()


@pytest.mark.slow
def test_sigterm_checkpoints_exits_143_and_resume_gives_the_same_bits(tmp_path):
    """SLURM pre-emption: SIGTERM to `python -m runner` mid-run flushes TensorBoard, writes a
    checkpoint at the end of the current step and exits 143; `train.resume` then finishes
    with the bits of a run that was never stopped."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from conftest import REPO, run_cli
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    kept = [c for c in COMMON if not c.startswith(("train.steps", "log.every"))]
    common = [*kept, "log.every=25"]
    stopped = tmp_path / "stopped"
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    process = subprocess.Popen(
        [sys.executable, "-m", "runner", *common, "train.steps=1000000",
         "train.checkpoint_every=100", f"hydra.run.dir={stopped}"],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while not (stopped / "checkpoint.pt").exists():  # written whole (atomically) or not at all
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 143, err
    assert err.strip().splitlines()[-1] == (
        f"terminated; continue with train.resume={stopped / 'checkpoint.pt'}"
    )
    at = torch.load(stopped / "checkpoint.pt", weights_only=True)["step"]
    assert at >= 100 and not (stopped / "model.pt").exists()
    events = EventAccumulator(str(stopped / "tb"))
    events.Reload()  # flushed on the way out: the last logged step is the last one due
    assert events.Scalars("loss/train")[-1].step == at - at % 25

    end = f"train.steps={at + 15}"
    result = run_cli("runner", *common, end, f"train.resume={stopped / 'checkpoint.pt'}",
                     f"hydra.run.dir={tmp_path / 'resumed'}")  # fmt: skip
    assert result.returncode == 0, result.stderr
    train(runner.compose([*common, end]), tmp_path / "straight")
    straight, resumed = weights(tmp_path / "straight"), weights(tmp_path / "resumed")
    assert all(torch.equal(straight[k], resumed[k]) for k in straight)


def test_a_refused_resume_shows_where_long_values_differ(tmp_path):
    layers = (
        "model.layers=[{type: linear, out_features: 8}, relu, {type: linear, out_features: %d}]"
    )
    train(runner.compose([layers % 1, "train.steps=2", "train.progress=off"]), tmp_path / "first")
    resume = f"train.resume={tmp_path / 'first' / 'checkpoint.pt'}"
    with pytest.raises(runner.ConfigError) as error:
        train(runner.compose([resume, layers % 2, "train.steps=4", "data.out_features=2"]),
              tmp_path / "second")  # fmt: skip
    assert "'out_features': 1}] -> ...linear', 'out_features': 2}]" in str(error.value)
