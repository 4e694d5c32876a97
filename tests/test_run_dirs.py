"""Time-stamped run and sweep dirs: each command gets a folder of its own, even when two
start in the same second (the default outputs/DATE/TIME)."""

from __future__ import annotations

import json

import pytest
from conftest import run_cli

from runner.errors import ConfigError
from runner.run_dirs import MAX_SUFFIX, claim_time_stamped, hydra_quoted, pinned

STAMPED = "${now:%Y-%m-%d}/${now:%H-%M-%S}"


def test_a_time_stamped_folder_is_made_once_and_the_next_command_gets_a_suffix(tmp_path):
    folder = str(tmp_path / "outputs" / "2026-11-24" / "01-02-03")
    raw = f"{tmp_path}/outputs/{STAMPED}"
    assert claim_time_stamped(folder, raw, "run") == f"hydra.run.dir='{folder}'"
    assert claim_time_stamped(folder, raw, "run") == f"hydra.run.dir='{folder}_1'"
    # "out/2026/": the next one is a sibling, out/2026_2, not a folder inside the first
    assert claim_time_stamped(folder + "/", raw, "sweep") == f"hydra.sweep.dir='{folder}_2'"
    assert sorted(p.name for p in (tmp_path / "outputs" / "2026-11-24").iterdir()) == [
        "01-02-03", "01-02-03_1", "01-02-03_2"]  # fmt: skip


def test_when_every_suffix_is_taken_the_command_is_refused(tmp_path):
    folder = tmp_path / "2026"
    for name in ["2026", *(f"2026_{k}" for k in range(1, MAX_SUFFIX + 1))]:
        (tmp_path / name).mkdir()
    with pytest.raises(
        ConfigError,
        match=r"hydra.run.dir=.*2026: it and .*2026_1 \.\.\. "
        r".*2026_99 exist already; give hydra.run.dir a new",
    ):
        claim_time_stamped(str(folder), f"{tmp_path}/${{now:%Y}}", "run")  # fmt: skip


def test_a_folder_not_named_by_the_time_is_left_to_hydra(tmp_path):
    # Named as the user wrote it: Hydra resolves it to the same folder, which the
    # finished-run check has already looked at.
    assert claim_time_stamped(str(tmp_path / "runs" / "a"), "runs/a", "run") is None
    assert claim_time_stamped(str(tmp_path / "$x"), "$x/${now:%H}", "run") is None  # "${" quoted
    assert claim_time_stamped(None, None, "run") is None
    assert not (tmp_path / "runs").exists()
    # Any other name is pinned quoted: spaces, "=", non-ASCII letters, quotes
    odd = str(tmp_path / "é x=1,'q'")
    assert claim_time_stamped(odd, "${now:%H}", "run") == f"hydra.run.dir={hydra_quoted(odd)}"


@pytest.mark.parametrize("folder", ["a\\b", "a\\\\b", "a'b", "a\\'b", "ab\\", "é x=1,'q'", "x,y=z"])
def test_a_quoted_folder_reads_back_as_itself(folder):
    # Hydra halves only the backslashes before a quote: a\b must not become a\\b.
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_override(f"hydra.run.dir={hydra_quoted(folder)}")
    assert parsed.value() == folder


def test_the_pin_replaces_the_command_lines_own_value():
    argv = ["-m", "seed=0,1", "hydra.sweep.dir=m/${now:%H}", "train.steps=3"]
    assert pinned(argv, "hydra.sweep.dir=m/01") == ["-m", "seed=0,1", "train.steps=3",
                                                    "hydra.sweep.dir=m/01"]  # fmt: skip
    assert pinned(["++hydra.run.dir=r/${now:%H}"], "hydra.run.dir=r/01") == ["hydra.run.dir=r/01"]
    assert pinned(argv, None) == argv


@pytest.mark.slow
def test_two_runs_named_by_one_time_stamp_get_two_folders(tmp_path):
    # ${now:%Y}: the second run starts in the same year, as two runs started in the same
    # second share the default ${now:%H-%M-%S}. A name the unquoted grammar refuses works.
    overrides = ["train.steps=3", "train.progress=off", 'hydra.run.dir="résultats/${now:%Y}"']
    first = run_cli("runner", *overrides, cwd=tmp_path)
    second = run_cli("runner", *overrides, "seed=1", cwd=tmp_path)
    assert first.returncode == 0 and second.returncode == 0, first.stderr + second.stderr
    names = [line.rsplit("/", 1)[1] for r in (first, second) for line in r.stdout.splitlines()
             if line.startswith("run dir: ")]  # fmt: skip
    year = names[0]
    assert year.isdigit() and names == [year, f"{year}_1"]  # (the year the first one began)
    for name, seed in ((year, 0), (f"{year}_1", 1)):
        folder = tmp_path / "résultats" / name
        record = json.loads((folder / "run.json").read_text())
        assert record["seed"] == seed and (folder / "model.pt").is_file()
        # run.json's command: the folder made for it in place of the time-stamped one
        assert record["command"][-1] == f"hydra.run.dir='résultats/{name}'"


@pytest.mark.slow
def test_two_sweeps_named_by_one_time_stamp_get_two_sweep_dirs(tmp_path):
    overrides = ["-m", "seed=0,1", "train.steps=2", "train.progress=off",
                 "hydra.sweep.dir=sweeps/${now:%Y}"]  # fmt: skip
    results = [run_cli("runner", *overrides, cwd=tmp_path) for _ in range(2)]
    assert all(r.returncode == 0 for r in results), results[1].stderr
    names = [line.split("/")[1] for r in results for line in r.stdout.splitlines()
             if line.startswith("summary: sweeps/")]  # fmt: skip
    year = names[0]
    assert year.isdigit() and names == [year, f"{year}_1"]
    for name in names:
        assert (tmp_path / "sweeps" / name / "summary.csv").read_text().count("\n") == 3  # 2 jobs
