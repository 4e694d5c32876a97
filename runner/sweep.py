"""Sweeps: each job records how it ended; the sweep keeps summary.csv and summary.md current.

A job of a multirun catches its own failure (a bad config, a diverging loss, any
error), writes `job.json` and goes back to Hydra as done, so the other jobs run on.
A job's status is ok, diverged (stopped on a NaN, `train.on_nonfinite=stop`), failed,
interrupted (Ctrl-C) or terminated (SIGTERM). Every job that ends rewrites the summary
from all the `job.json` files there are (each file written atomically); at the end
`SweepSummary` (a Hydra callback) writes it once more, prints it, and exits non-zero
when any job did not end "ok".
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from runner.artifacts import json_safe, write_atomic

JOB_FILE, SWEEP_FILE = "job.json", "sweep.json"
SUMMARY_CSV, SUMMARY_MD = "summary.csv", "summary.md"
LOCK_FILE = ".summary.lock"
# Written by a parallel sweep's launching process on Ctrl-C (runner/launchers.py): a job
# that starts after it records "interrupted" without training, and the sweep exits 130.
INTERRUPTED_FILE = ".interrupted"
# The sweep dir of the multirun this process launches (set when it starts).
current_sweep_dir: Path | None = None
COLUMNS = ("job", "status", "final_train_loss", "final_val_loss", "wall_time_s", "steps_per_s",
           "overrides", "error")  # fmt: skip


def record_job(
    job_dir: Path,
    sweep_dir: Path,
    overrides: list[str],
    status: str,
    error: str | None = None,
    metrics: dict[str, Any] | None = None,
) -> None:
    """Write this job's job.json, then the sweep's summary with every job that has ended."""
    metrics = metrics or {}
    row = {
        "sweep": _sweep_id(sweep_dir),
        "job": _job_name(job_dir, sweep_dir),
        "status": status,
        **{key: metrics.get(key) for key in COLUMNS[2:6]},
        "overrides": " ".join(overrides),
        "error": error,
    }
    text = json.dumps(json_safe(row), indent=2)
    write_atomic(job_dir / JOB_FILE, lambda f: f.write(text), binary=False)
    write_summary(sweep_dir)


def _job_name(job_dir: Path, sweep_dir: Path) -> str:
    """The job's folder relative to the sweep dir ("a/b" where hydra.sweep.subdir nests)."""
    try:
        return job_dir.resolve().relative_to(sweep_dir.resolve()).as_posix()
    except ValueError:  # a subdir that leaves the sweep dir
        return job_dir.name


def _sweep_id(sweep_dir: Path) -> str | None:
    try:
        return json.loads((sweep_dir / SWEEP_FILE).read_text())["id"]
    except (OSError, ValueError, KeyError):
        return None


def collect(sweep_dir: Path) -> list[dict[str, Any]]:
    """The job.json rows of every job of the current sweep that has ended, by job name
    (jobs an earlier sweep left in the same folder are not this sweep's)."""
    current, rows = _sweep_id(sweep_dir), []
    for path in sorted(sweep_dir.rglob(JOB_FILE)):  # (a hydra.sweep.subdir may nest: a/b)
        try:
            row = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue  # a job writing its file right now; the next summary has it
        if current is None or row.get("sweep") == current:
            rows.append(row)
    return rows


def write_summary(sweep_dir: Path) -> list[dict[str, Any]]:
    """Rewrite summary.csv and summary.md from the jobs that have ended; return their rows.

    Jobs of a parallel launcher end at the same moment: each reads every job.json and
    writes the summary under a lock on the sweep dir's .summary.lock, so the last writer
    has read every job.json written before it (without it, a slower writer holding an
    older read could overwrite a newer summary, and a sweep stopped by Ctrl-C, which
    gets no final rewrite, would keep it)."""
    with _summary_lock(sweep_dir):
        rows = collect(sweep_dir)
        table = io.StringIO()
        writer = csv.DictWriter(table, fieldnames=COLUMNS, extrasaction="ignore")  # not "sweep"
        writer.writeheader()
        writer.writerows(rows)
        csv_text, md_text = table.getvalue(), markdown(rows)
        write_atomic(sweep_dir / SUMMARY_CSV, lambda f: f.write(csv_text), binary=False)
        write_atomic(sweep_dir / SUMMARY_MD, lambda f: f.write(md_text), binary=False)
    return rows


@contextlib.contextmanager
def _summary_lock(sweep_dir: Path) -> Iterator[None]:
    """An exclusive flock on sweep_dir/.summary.lock while the summary is rewritten (none
    where there is no fcntl, Windows, or the file cannot be opened: writing reports that)."""
    try:
        import fcntl

        lock = open(sweep_dir / LOCK_FILE, "a")  # noqa: SIM115 (closed below)
    except (ImportError, OSError):
        yield
        return
    with lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        yield


CLAIM_FILE = ".job"  # in a job's folder: the number of the job that writes there
STARTED_PREFIX = ".started-"  # + a job's number: a file in the sweep dir, its job dir


def started_marker(sweep_dir: Path, num: int) -> Path:
    """The file that says job `num` began (a file, so the sweep dir's folders stay jobs)."""
    return sweep_dir / f"{STARTED_PREFIX}{num}"


def mark_started(sweep_dir: Path, num: int, job_dir: Path) -> None:
    """Note that job `num` began, writing into `job_dir` (runner/worker_deaths.py reads it
    when a worker dies, whatever hydra.sweep.subdir made of the job's folder)."""
    sweep_dir.mkdir(parents=True, exist_ok=True)
    text = str(job_dir.resolve())
    write_atomic(started_marker(sweep_dir, num), lambda f: f.write(text), binary=False)


def started_dir(sweep_dir: Path, num: int) -> Path | None:
    """The job dir that job `num` noted when it began, or None if it did not begin."""
    path = started_marker(sweep_dir, num)
    return Path(path.read_text(encoding="utf-8")) if path.is_file() else None


def claim_folder(job_dir: Path, num: int) -> int | None:
    """Make job `num` the one job that writes into `job_dir`: None if it is (now, or
    already: a job run again after its worker died), else the number of the job that
    claimed it first (a hydra.sweep.subdir that names two jobs alike; -1 if unreadable).
    The claim is a file made whole by a hard link, which fails if the name exists: of two
    jobs starting at once, one wins. (Where the file system has no hard links, by an
    exclusive create, whose number a simultaneous reader may not see yet: -1.)"""
    import os
    import tempfile

    claim = job_dir / CLAIM_FILE
    handle, temporary = tempfile.mkstemp(dir=job_dir, prefix=f"{CLAIM_FILE}.")
    try:
        with os.fdopen(handle, "w") as file:
            file.write(str(num))
        try:
            os.link(temporary, claim)
        except FileExistsError:
            raise
        except OSError:  # no hard links here
            with open(claim, "x", encoding="utf-8") as file:
                file.write(str(num))
        return None
    except FileExistsError:
        try:
            owner = int(claim.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return -1
        return None if owner == num else owner
    finally:
        os.unlink(temporary)


def shared_folders(sweep_dir: Path) -> int:
    """How many jobs of the current sweep began in a folder that an earlier one had noted
    (`claim_folder` refused them: they did not run)."""
    folders = []
    for marker in sweep_dir.glob(f"{STARTED_PREFIX}*"):
        with contextlib.suppress(OSError):
            folders.append(marker.read_text(encoding="utf-8"))
    return len(folders) - len(set(folders))


def mark_interrupted(sweep_dir: Path) -> None:
    """Tell the jobs of the sweep in `sweep_dir` that are still to start not to train."""
    (sweep_dir / INTERRUPTED_FILE).touch()


def was_interrupted(sweep_dir: Path) -> bool:
    """Whether Ctrl-C stopped the parallel sweep in `sweep_dir` (`mark_interrupted`)."""
    return (sweep_dir / INTERRUPTED_FILE).exists()


def markdown(rows: list[dict[str, Any]]) -> str:
    """The summary as a markdown table, numbers to 4 significant digits."""

    def cell(value: Any) -> str:
        if value is None:
            return ""
        if isinstance(value, float):
            return f"{value:.4g}"
        return str(value).replace("|", "\\|")

    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(cell(row.get(c)) for c in COLUMNS) + " |" for row in rows]
    return "\n".join(lines) + "\n"


class SweepSummary(Callback):
    """A multirun's start: a fresh sweep id in sweep.json (the jobs stamp their rows with it).
    Its end: the final summary, printed; exit code 1 if any job failed or diverged."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        import uuid

        global current_sweep_dir
        sweep_dir = current_sweep_dir = Path(str(config.hydra.sweep.dir))
        text = json.dumps({"id": uuid.uuid4().hex})
        write_atomic(sweep_dir / SWEEP_FILE, lambda f: f.write(text), binary=False)
        (sweep_dir / INTERRUPTED_FILE).unlink(missing_ok=True)  # an earlier sweep's
        for marker in sweep_dir.glob(f"{STARTED_PREFIX}*"):  # its jobs' notes too
            marker.unlink(missing_ok=True)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(str(config.hydra.sweep.dir))
        if not sweep_dir.is_dir():
            return
        rows = write_summary(sweep_dir)
        print(markdown(rows), end="")
        print(f"summary: {sweep_dir / SUMMARY_MD}")
        print(f"tensorboard --logdir {sweep_dir}")
        if was_interrupted(sweep_dir):
            sys.exit(130)  # runner/__main__.py prints the line
        unrecorded = shared_folders(sweep_dir)
        if unrecorded > 0:  # jobs that found their folder taken: one job.json for them all
            print(f"{unrecorded} of {len(rows) + unrecorded} jobs left no record: they shared "
                  "a job folder (see the errors above)", file=sys.stderr)  # fmt: skip
            sys.exit(1)
        failed = [row["status"] for row in rows if row["status"] != "ok"]
        if failed:
            counts = ", ".join(f"{failed.count(s)} {s}" for s in sorted(set(failed)))
            print(f"{len(failed)} of {len(rows)} jobs failed ({counts})", file=sys.stderr)
            sys.exit(1)
