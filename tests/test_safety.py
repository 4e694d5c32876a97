"""Safety: checkpoints that hold pickled code are refused, and reproduce refuses a config
whose `_target_`s lie outside torch, runner and the run's own project."""

from __future__ import annotations

import json
import os
import subprocess

import pytest
import torch

import runner
from runner.train import train

QUIET = ["train.progress=off", "train.val_every=0", "log.hist_every=0"]


class Payload:
    """Unpickling it would create a folder: proof of whether code ran."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (str(self.marker),))


def test_a_checkpoint_holding_pickled_code_is_refused_and_not_run(tmp_path):
    marker = tmp_path / "it_ran"
    path = tmp_path / "checkpoint.pt"
    torch.save({"model": {}, "optimizer": {}, "scheduler": None, "step": 1, "rng": {},
                "config": Payload(marker)}, path)  # fmt: skip
    with pytest.raises(runner.ConfigError, match=r"refused: the file holds pickled code or objects \((posix|nt)\.mkdir\)"):  # fmt: skip
        train(runner.compose([*QUIET, f"train.resume={path}"]), tmp_path / "run")
    assert not marker.exists()


def fake_run(folder, cwd, saved_targets, overrides=()):
    """The files reproduce reads from a run dir; the saved config holds `saved_targets`."""
    (folder / ".hydra").mkdir(parents=True)
    (folder / "run.json").write_text(json.dumps({"cwd": str(cwd), "overrides": list(overrides)}))
    losses = {f"l{i}": {"_target_": t} for i, t in enumerate(saved_targets)}
    (folder / ".hydra" / "config.yaml").write_text(json.dumps({"train": losses, "optim": {
        "optimizer": {"_target_": "torch.optim.SGD", "_partial_": True}}}))  # fmt: skip
    for name in ("metrics.json", "model.pt"):
        (folder / name).write_text("{}")
    return folder


def test_reproduce_refuses_targets_outside_torch_runner_and_the_project(
    tmp_path, capsys, monkeypatch
):
    from runner import reproduce
    from runner.target_safety import custom_targets

    (tmp_path / "mylosses.py").write_text("import torch\nHalf = torch.nn.MSELoss\n")
    (tmp_path / "os.py").write_text("")  # a project cannot vouch for the standard library
    ours = fake_run(tmp_path / "outputs" / "ours", tmp_path, ["mylosses.Half", "runner.x.Y"])
    assert custom_targets(ours, reproduce.run_record(ours)) == []
    theirs = fake_run(tmp_path / "outputs" / "theirs", tmp_path, ["os.system", "mylosses.Half"],
                      ["+train.l9={_target_: builtins.exec}", "train.l0._target_=subprocess.run"])  # fmt: skip
    assert custom_targets(theirs, reproduce.run_record(theirs)) == [
        "builtins.exec",
        "os.system",
        "subprocess.run",
    ]
    # A run dir cannot vouch for modules it ships itself.
    shipped = fake_run(tmp_path / "shipped", tmp_path / "shipped", ["evil.go"])
    (tmp_path / "shipped" / "evil.py").write_text("")
    assert custom_targets(shipped, reproduce.run_record(shipped)) == ["evil.go"]

    with pytest.raises(SystemExit) as exit_info:
        reproduce.main([str(theirs)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "builtins.exec, os.system, subprocess.run" in err
    assert "--allow-custom-targets" in err
    ran = []
    monkeypatch.setattr(reproduce, "rerun", lambda run_dir, out: ran.append(out) or
                        subprocess.CompletedProcess([], 1, "", "stopped here"))  # fmt: skip
    with pytest.raises(SystemExit) as exit_info:
        reproduce.main([str(theirs), "--allow-custom-targets", "--out", str(tmp_path / "again")])
    assert exit_info.value.code == 1 and ran  # past the check, into the re-run
