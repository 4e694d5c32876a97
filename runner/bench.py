"""`python -m runner.bench`: the runner against a plain PyTorch loop, measured in one run.

Four measurements, each a median over repetitions and a ratio against its plain
counterpart taken in the same run, so a busy machine slows both alike:
- steps/s of the training loop per logging mode (repetitions interleaved: plain,
  then each runner mode, then plain again ...; the ratio is the median of the paired ratios);
- time to the first training step of `python -m runner` (process start to the end of
  step 1) against `python -c "import torch"` and against a plain script's first step;
- peak memory of a run against the plain loop (separate processes: peak RSS; on CUDA
  also the allocator's peak);
- jobs per minute of a sweep of tiny jobs with `hydra/launcher=joblib` (2 workers)
  against the same sweep run sequentially.
The result is a markdown table (README keeps the latest, with the machine it came from).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from runner.errors import exit_on_ctrl_c, tool_parser

EXAMPLES = """examples:
  python -m runner.bench                       # the default workload on the CPU (about 3 min)
  python -m runner.bench --device cuda --width 4096 --depth 8 --batch 1024
  python -m runner.bench --only throughput --repeats 11 --out bench.md
"""
PARTS = ("throughput", "startup", "memory", "sweep")
TARGETS = {"logging off": 0.97, "default logging": 0.90, "scalars every step": None,
           "everything every step": 0.50}  # fmt: skip


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line: the workload's sizes, the parts to run and how often."""
    parser = tool_parser("bench", __doc__.split("\n\n")[0], EXAMPLES)
    parser.add_argument("--width", type=int, default=256, help="hidden units (default 256)")
    parser.add_argument("--depth", type=int, default=4, help="hidden blocks (default 4)")
    parser.add_argument("--in-features", type=int, default=64, help="inputs (default 64)")
    parser.add_argument("--samples", type=int, default=8192, help="training samples")
    parser.add_argument("--batch", type=int, default=256, help="batch size (default 256)")
    parser.add_argument("--steps", type=int, default=300, help="steps per timed repetition")
    parser.add_argument("--repeats", type=int, default=7, help="repetitions (medians of them)")
    parser.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N (default cpu)")
    parser.add_argument("--only", choices=PARTS, action="append", help="run only these parts")
    parser.add_argument("--sweep-jobs", type=int, default=8, help="jobs in the sweep part")
    parser.add_argument("--sweep-steps", type=int, default=2000,
                        help="steps of each sweep job (model=mlp; default 2000)")  # fmt: skip
    parser.add_argument("--out", type=Path, help="also write the markdown table to this file")
    parser.add_argument("--child", help=argparse.SUPPRESS)  # memory: "plain" or a mode
    args = parser.parse_args(argv)
    for name in ("width", "depth", "in_features", "samples", "batch", "steps", "repeats"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.batch > args.samples:
        parser.error(f"--batch {args.batch} is larger than --samples {args.samples}")
    return args


def workload_of(args: argparse.Namespace):
    """The Workload the arguments describe."""
    from runner.bench_workload import Workload

    return Workload(args.width, args.depth, args.in_features, args.samples, args.batch,
                    args.steps, device=args.device)  # fmt: skip


def throughput(args: argparse.Namespace) -> list[str]:
    """Steps/s of the plain loop and of the runner in each logging mode, interleaved."""
    from runner.bench_workload import MODES, PlainLoop, RunnerLoop

    workload = workload_of(args)
    with tempfile.TemporaryDirectory(prefix="runner-bench-") as tmp:
        plain = PlainLoop(workload)
        runners = {mode: RunnerLoop(workload, mode, Path(tmp, f"m{i}")) for i, mode in
                   enumerate(MODES)}  # fmt: skip
        plain.run()  # warm-up: first-call costs (allocator, kernels, lazy imports) not timed
        for runner in runners.values():
            runner.run()
        plain_rates: list[float] = []
        rates: dict[str, list[float]] = {mode: [] for mode in MODES}
        ratios: dict[str, list[float]] = {mode: [] for mode in MODES}
        for _ in range(args.repeats):
            for mode, runner in runners.items():
                # Plain right before each runner mode: each ratio compares neighbours in time.
                plain_rate = workload.steps / plain.run()
                rate = workload.steps / runner.run()
                plain_rates.append(plain_rate)
                rates[mode].append(rate)
                ratios[mode].append(rate / plain_rate)
        for runner in runners.values():
            runner.close()
    lines = ["| loop | steps/s (median) | runner / plain (median of paired ratios) | target |",
             "|---|---:|---:|---|",
             f"| plain PyTorch loop | {statistics.median(plain_rates):.0f} | 1 | |"]  # fmt: skip
    for mode in MODES:
        target = TARGETS[mode]
        lines.append(
            f"| runner, {mode} | {statistics.median(rates[mode]):.0f} | "
            f"{statistics.median(ratios[mode]):.3f} | {f'>= {target}' if target else ''} |"
        )
    return lines


PLAIN_FIRST_STEP = """
import time, torch
from runner.bench_workload import PlainLoop, Workload
PlainLoop(Workload(*{sizes}, steps=1, device={device!r})).run()
print(time.time())
"""


def _spawn_seconds(command: list[str], first_step_file: Path | None = None) -> float:
    """Seconds from spawning `command` to its first step: the time it prints last
    (plain script), the `first_step_at` of its metrics.json (runner), or its exit."""
    started = time.time()
    done = subprocess.run(command, capture_output=True, text=True, env=_child_env())
    ended = time.time()
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{done.stderr[-2000:]}")
    if first_step_file is not None:
        return json.loads(first_step_file.read_text())["first_step_at"] - started
    printed = done.stdout.split()
    return (float(printed[-1]) if printed else ended) - started


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("HYDRA_FULL_ERROR", None)
    return env


def startup(args: argparse.Namespace) -> list[str]:
    """Time to first step: `python -m runner` against `import torch` and a plain script."""
    workload = workload_of(args)
    sizes = (workload.width, workload.depth, workload.in_features, workload.samples,
             workload.batch)  # fmt: skip
    times: dict[str, list[float]] = {"import torch": [], "plain": [], "runner": []}
    with tempfile.TemporaryDirectory(prefix="runner-bench-") as tmp:
        for i in range(max(1, min(5, args.repeats // 2))):
            times["import torch"].append(_spawn_seconds([sys.executable, "-c", "import torch"]))
            code = PLAIN_FIRST_STEP.format(sizes=sizes, device=workload.device)
            times["plain"].append(_spawn_seconds([sys.executable, "-c", code]))
            run_dir = Path(tmp, f"run{i}")
            command = [sys.executable, "-m", "runner", *workload.overrides(10, 100),
                       "train.steps=1", f"hydra.run.dir={run_dir}"]  # fmt: skip
            times["runner"].append(_spawn_seconds(command, run_dir / "metrics.json"))
    torch_s, plain_s, runner_s = (statistics.median(times[k]) for k in times)
    return ["| process start to ... (median) | seconds | runner / this | target |",
            "|---|---:|---:|---|",
            f"| `python -c \"import torch\"` exits | {torch_s:.2f} | {runner_s / torch_s:.2f} "
            "| <= 2 |",
            f"| plain script's first step | {plain_s:.2f} | {runner_s / plain_s:.2f} | |",
            f"| `python -m runner` first step | {runner_s:.2f} | 1 | |"]  # fmt: skip


def _peak_memory(args: argparse.Namespace, child: str) -> dict[str, float]:
    command = [sys.executable, "-m", "runner.bench", "--child", child, "--width", str(args.width),
               "--depth", str(args.depth), "--in-features", str(args.in_features), "--samples",
               str(args.samples), "--batch", str(args.batch), "--steps", str(args.steps),
               "--device", args.device]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, env=_child_env(), check=True)
    return json.loads(done.stdout.splitlines()[-1])


def memory_child(args: argparse.Namespace) -> None:
    """In a fresh process: train the plain loop or the runner in one mode, print peak memory."""
    import resource

    import torch

    from runner.bench_workload import PlainLoop, RunnerLoop

    workload = workload_of(args)
    with tempfile.TemporaryDirectory(prefix="runner-bench-") as tmp:
        loop = PlainLoop(workload) if args.child == "plain" else RunnerLoop(
            workload, args.child, Path(tmp))  # fmt: skip
        loop.run()
    peak = {"rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if torch.device(args.device).type == "cuda":
        peak["cuda_mb"] = torch.cuda.max_memory_allocated() / 2**20
    print(json.dumps(peak))


def memory(args: argparse.Namespace) -> list[str]:
    """Peak memory of the plain loop and the runner (default logging), medians of up to 3
    processes (one per repetition)."""
    runs = {name: [_peak_memory(args, name) for _ in range(min(3, args.repeats))]
            for name in ("plain", "default logging")}  # fmt: skip
    lines = ["| peak memory (median of processes) | plain | runner, default logging | "
             "runner / plain | target |", "|---|---:|---:|---:|---|"]  # fmt: skip
    for key, label in (("rss_mb", "process RSS, MiB"), ("cuda_mb", "CUDA allocated, MiB")):
        if key in runs["plain"][0]:
            plain, runner = (statistics.median(r[key] for r in runs[n]) for n in runs)
            lines.append(
                f"| {label} | {plain:.0f} | {runner:.0f} | {runner / plain:.2f} | <= 1.2 |"
            )
    return lines


def sweep(args: argparse.Namespace) -> list[str]:
    """Jobs per minute of a sweep of tiny jobs: sequential against joblib with 2 workers,
    the two alternating, medians of up to 3 pairs (one per 3 repetitions)."""
    seeds = ",".join(str(s) for s in range(args.sweep_jobs))
    base = [sys.executable, "-m", "runner", "-m", f"seed={seeds}", "model=mlp",
            f"train.steps={args.sweep_steps}", "train.progress=off"]  # fmt: skip
    joblib = ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"]
    launchers = {"sequential (basic launcher)": [], "joblib, 2 workers": joblib}
    rates: dict[str, list[float]] = {name: [] for name in launchers}
    with tempfile.TemporaryDirectory(prefix="runner-bench-") as tmp:
        for i in range(max(1, min(3, args.repeats // 3))):
            for name, extra in launchers.items():
                sweep_dir = Path(tmp, f"{'joblib' if extra else 'sequential'}{i}")
                command = [*base, *extra, f"hydra.sweep.dir={sweep_dir}"]
                started = time.perf_counter()
                subprocess.run(command, capture_output=True, env=_child_env(), check=True)
                rates[name].append(args.sweep_jobs / ((time.perf_counter() - started) / 60))
    sequential, parallel = (statistics.median(r) for r in rates.values())
    ratio = statistics.median(p / s for s, p in zip(*rates.values(), strict=True))
    return [f"| sweep of {args.sweep_jobs} jobs, mlp x {args.sweep_steps} steps (whole command, "
            f"median of {len(rates['joblib, 2 workers'])}) | jobs/min | vs sequential | target |",
            "|---|---:|---:|---|",
            f"| sequential (basic launcher) | {sequential:.1f} | 1 | |",
            f"| joblib, 2 workers | {parallel:.1f} | {ratio:.2f} | >= 1.6 |"]  # fmt: skip


def machine(args: argparse.Namespace) -> str:
    """One line naming the machine, the torch build and the workload."""
    import torch

    device = args.device
    if device.startswith("cuda"):
        device = f"{device} ({torch.cuda.get_device_name(torch.device(device))})"
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (f"Machine: {cpu}, {os.cpu_count()} cores, torch {torch.__version__}, "
            f"{torch.get_num_threads()} threads, device {device}. Workload: {args.depth} x "
            f"{args.width} ReLU MLP, {args.in_features} inputs, {args.samples} samples, batch "
            f"{args.batch}, SGD, {args.steps} steps x {args.repeats} repetitions.")  # fmt: skip


@exit_on_ctrl_c
def main(argv: Sequence[str] | None = None) -> None:
    """Run the chosen parts and print one markdown table per part."""
    args = parse_args(argv)
    if args.child:
        memory_child(args)
        return
    from runner.device import resolve_device
    from runner.errors import exit_on_user_error

    exit_on_user_error(resolve_device)(args.device)
    parts = {"throughput": throughput, "startup": startup, "memory": memory, "sweep": sweep}
    out = [machine(args), ""]
    print(out[0], flush=True)
    for name in args.only or PARTS:
        lines = parts[name](args)
        print("\n" + "\n".join(lines), flush=True)
        out += [*lines, ""]
    if args.out:
        args.out.write_text("\n".join(out))


if __name__ == "__main__":
    from runner.pipes import survive_closed_readers

    survive_closed_readers()  # `| head`: no traceback when the reader leaves
    main()
