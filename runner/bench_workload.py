"""The benchmark's workload, run two ways: a plain hand-written PyTorch loop and the runner.

Both train the same ReLU MLP (`depth` hidden Linear(width)-ReLU blocks, then Linear(1))
on the same kind of data: regression on `samples` Gaussian inputs held on the device,
shuffled once per epoch, sliced into batches, SGD. The plain loop is what a researcher
would write in a notebook; it is the speed limit the runner is measured against.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

# Logging settings per benchmark mode: (log.every, log.hist_every).
MODES = {
    "logging off": (0, 0),
    "default logging": (10, 100),
    "scalars every step": (1, 0),
    "everything every step": (1, 1),
}


@dataclass(frozen=True)
class Workload:
    """What one timed run trains."""

    width: int = 256
    depth: int = 4
    in_features: int = 64
    samples: int = 8192
    batch: int = 256
    steps: int = 300
    lr: float = 0.005
    device: str = "cpu"

    def overrides(self, every: int, hist_every: int) -> list[str]:
        """The runner's command-line overrides for this workload and logging mode."""
        return [
            "model=deep_relu", f"model.width={self.width}", f"model.depth={self.depth}",
            "data=regression", f"data.in_features={self.in_features}",
            f"data.n_train={self.samples}", "data.n_val=256", "optim=sgd",
            f"optim.optimizer.lr={self.lr}", f"train.batch_size={self.batch}",
            f"train.steps={self.steps}", "train.val_every=0", "train.progress=off",
            f"log.every={every}", f"log.hist_every={hist_every}", f"device={self.device}",
        ]  # fmt: skip


def synchronize(device: torch.device) -> None:
    """Wait for queued kernels, so a timer read after it covers the work (CUDA is async)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class PlainLoop:
    """The hand-written loop: model, data and optimizer built once, `run` times `steps` steps."""

    def __init__(self, workload: Workload, seed: int = 0) -> None:
        self.device = torch.device(workload.device)
        torch.manual_seed(seed)
        layers: list[nn.Module] = []
        width_in = workload.in_features
        for _ in range(workload.depth):
            layers += [nn.Linear(width_in, workload.width), nn.ReLU()]
            width_in = workload.width
        layers.append(nn.Linear(width_in, 1))
        self.model = nn.Sequential(*layers).to(self.device)
        self.x = torch.randn(workload.samples, workload.in_features, device=self.device)
        w = torch.randn(workload.in_features, 1, device=self.device)
        self.y = self.x @ w + 0.01 * torch.randn(workload.samples, 1, device=self.device)
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=workload.lr)
        self.loss_fn = nn.MSELoss()
        self.workload = workload

    def run(self) -> float:
        """Train `workload.steps` steps; return the seconds they took."""
        batch, per_epoch = self.workload.batch, self.workload.samples // self.workload.batch
        synchronize(self.device)
        started = time.perf_counter()
        for step in range(self.workload.steps):
            k = step % per_epoch
            if k == 0:
                order = torch.randperm(self.workload.samples, device=self.device)
                x_epoch, y_epoch = self.x[order], self.y[order]
            x, y = x_epoch[k * batch : (k + 1) * batch], y_epoch[k * batch : (k + 1) * batch]
            loss = self.loss_fn(self.model(x), y)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
        synchronize(self.device)
        return time.perf_counter() - started


class RunnerLoop:
    """The runner's own loop (`runner.loop.run_loop`) on the composed config of one mode,
    writing TensorBoard events into `log_dir` as a run would."""

    def __init__(self, workload: Workload, mode: str, log_dir: Path) -> None:
        from runner.config import compose
        from runner.tensorboard import RunWriter
        from runner.train import prepare

        self.cfg = compose(workload.overrides(*MODES[mode]))
        self.setup = prepare(self.cfg)
        self.writer = RunWriter(log_dir)

    def run(self) -> float:
        """Train the config's steps through `run_loop`; return the seconds they took."""
        from runner.loop import run_loop

        self.setup.done_step = self.setup.start_step = 0
        synchronize(self.setup.device)
        started = time.perf_counter()
        run_loop(self.cfg, self.setup, self.writer, lambda step: None)
        self.writer.flush()
        synchronize(self.setup.device)
        return time.perf_counter() - started

    def close(self) -> None:
        """Close the event file."""
        self.writer.close()
