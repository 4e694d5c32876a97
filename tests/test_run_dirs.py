"""Time-stamped run and sweep dirs: each command gets a folder of its own, even when two
start in the same second (the default outputs/DATE/TIME)."""

from __future__ import annotations

import json
from datetime import datetime

import pytest
from conftest import run_cli

from runner.run_dirs import claim_time_stamped, pinned

STAMPED = "${now:%Y-%m-%d}/${now:%H-%M-%S}"


def test_a_time_stamped_folder_is_made_once_and_the_next_command_gets_a_suffix(tmp_path):
    folder = str(tmp_path / "outputs" / "2026-11-24" / "01-02-03")
    raw = f"{tmp_path}/outputs/{STAMPED}"
    assert claim_time_stamped(folder, raw, "run") == f"hydra.run.dir={folder}"
    assert claim_time_stamped(folder, raw, "run") == f"hydra.run.dir={folder}_1"
    assert claim_time_stamped(folder, raw, "sweep") == f"hydra.sweep.dir={folder}_2"
    assert sorted(p.name for p in (tmp_path / "outputs" / "2026-11-24").iterdir()) == [
        "01-02-03", "01-02-03_1", "01-02-03_2"]  # fmt: skip


def test_a_folder_not_named_by_the_time_is_left_to_hydra(tmp_path):
    # Named as the user wrote it: Hydra resolves it to the same folder, which the
    # finished-run check has already looked at.
    assert claim_time_stamped(str(tmp_path / "runs" / "a"), "runs/a", "run") is None
    assert claim_time_stamped(str(tmp_path / "x y"), "x y/${now:%H}", "run") is None  # quoting
    assert claim_time_stamped(None, None, "run") is None
    assert not (tmp_path / "runs").exists()


def test_the_pin_replaces_the_command_lines_own_value():
    argv = ["-m", "seed=0,1", "hydra.sweep.dir=m/${now:%H}", "train.steps=3"]
    assert pinned(argv, "hydra.sweep.dir=m/01") == ["-m", "seed=0,1", "train.steps=3",
                                                    "hydra.sweep.dir=m/01"]  # fmt: skip
    assert pinned(["++hydra.run.dir=r/${now:%H}"], "hydra.run.dir=r/01") == ["hydra.run.dir=r/01"]
    assert pinned(argv, None) == argv


@pytest.mark.slow
def test_two_runs_named_by_one_time_stamp_get_two_folders_and_keep_their_command(tmp_path):
    # ${now:%Y}: the second run starts in the same year, as two runs started in the same
    # second share the default ${now:%H-%M-%S}.
    overrides = ["train.steps=3", "train.progress=off", "hydra.run.dir=out/${now:%Y}"]
    first = run_cli("runner", *overrides, cwd=tmp_path)
    second = run_cli("runner", *overrides, "seed=1", cwd=tmp_path)
    assert first.returncode == 0 and second.returncode == 0, first.stderr + second.stderr
    year = str(datetime.now().year)
    for name, seed, result in ((year, 0, first), (f"{year}_1", 1, second)):
        folder = tmp_path / "out" / name
        assert f"run dir: {folder}" in result.stdout
        record = json.loads((folder / "run.json").read_text())
        assert record["seed"] == seed and (folder / "model.pt").is_file()
        # run.json keeps the command as typed, not the pinned folder
        assert record["command"][3:] == overrides + (["seed=1"] if seed else [])


@pytest.mark.slow
def test_two_sweeps_named_by_one_time_stamp_get_two_sweep_dirs(tmp_path):
    overrides = ["-m", "seed=0,1", "train.steps=2", "train.progress=off",
                 "hydra.sweep.dir=sweeps/${now:%Y}"]  # fmt: skip
    results = [run_cli("runner", *overrides, cwd=tmp_path) for _ in range(2)]
    assert all(r.returncode == 0 for r in results), results[1].stderr
    year = str(datetime.now().year)
    for name, result in ((year, results[0]), (f"{year}_1", results[1])):
        folder = tmp_path / "sweeps" / name
        assert f"summary: sweeps/{name}/summary.md" in result.stdout
        assert (folder / "summary.csv").read_text().count("\n") == 3  # header + 2 jobs
