"""On CUDA: no host sync in a step that does not log, one per logging step; bf16 and compile.

Skipped where there is no CUDA device (CPU CI); run them on a GPU machine with
`pytest tests/test_cuda.py`.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from conftest import assert_same_numbers, cut_and_alone

import runner
from runner.tensorboard import RunWriter
from runner.train import prepare

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

BASE = ["device=cuda", "model=deep_relu", "model.depth=4", "data.in_features=64",
        "data.n_train=4096", "train.batch_size=256", "train.val_every=0",
        "train.progress=off"]  # fmt: skip
# 512 wide: each hidden weight group too big to pair; 256 wide: the four weights share one
# group of rows (runner/param_layout.py), whose bounds and means are made on the device.
WIDTHS = ["model.width=512", "model.width=256"]


def _loop(tmp_path, overrides: list[str], sync_mode: str):
    """Run the loop with the sync debug mode on for exactly the training steps; return the
    sync warnings (mode "warn"), or raise on the first sync (mode "error")."""
    from runner.loop import run_loop

    cfg = runner.compose([*BASE, *overrides])
    setup = prepare(cfg)
    setup.watch.verify = lambda step: None  # the end-of-run check reads the host by design
    writer = RunWriter(tmp_path / "tb")
    torch.cuda.synchronize()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode(sync_mode)
        try:
            run_loop(cfg, setup, writer, lambda step: None)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    writer.close()
    return [w for w in caught if "synchroniz" in str(w.message)]


@pytest.mark.parametrize("width", WIDTHS)
def test_steps_that_do_not_log_never_sync(tmp_path, width):
    _loop(tmp_path, [width, "train.steps=64", "log.every=0", "log.hist_every=0"], "error")


@pytest.mark.parametrize("width", WIDTHS)
def test_a_logging_step_syncs_once(tmp_path, width):
    syncs = _loop(tmp_path, [width, "train.steps=40", "log.every=10", "log.hist_every=20"], "warn")
    assert len(syncs) == 4, [str(w.message) for w in syncs]


def test_statistics_on_cuda_equal_the_cpus():
    # The same step measured on the GPU (scatter_add_ counts, bounds and means made on the
    # device) and on the CPU (bincount, bounds read on the host): histograms count for
    # count, the rest within float32 rounding. 256 wide: the weights share rows.
    from runner.stats import StepStats

    def measure(device: str) -> tuple:
        torch.manual_seed(0)
        net = torch.nn.Sequential(torch.nn.Linear(64, 256), torch.nn.ReLU(),
                                  torch.nn.Linear(256, 256), torch.nn.ReLU(),
                                  torch.nn.Linear(256, 256), torch.nn.Linear(256, 1)).to(device)  # fmt: skip
        optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
        stats = StepStats(net, hist_bins=64)
        generator = torch.Generator().manual_seed(1)
        records = []
        for step in range(3):
            x, y = (
                torch.randn(128, 64, generator=generator),
                torch.randn(128, 1, generator=generator),
            )
            stats.start(activations=True)
            loss = torch.nn.functional.mse_loss(net(x.to(device)), y.to(device))
            optimizer.zero_grad()
            loss.backward()
            stats.before_update(scalars=True, histograms=True, step=step)
            optimizer.step()
            records.append(stats.finish(scalars=True, histograms=True, extra={}, step=step))
        return records, stats._params._groups

    (gpu, groups), (cpu, _) = measure("cuda"), measure("cpu")
    assert any(group.merged for group in groups)
    for ours, theirs in zip(gpu, cpu, strict=True):
        assert ours.scalars.keys() == theirs.scalars.keys()
        for tag, value in theirs.scalars.items():
            # Different kernels (cuBLAS, reduction orders): the networks themselves differ
            # in the last bits, so compare loosely; the histograms' counts must agree
            # wherever no value sits within rounding of an edge.
            assert ours.scalars[tag] == pytest.approx(value, rel=1e-4, abs=1e-6), tag
        for tag, h in theirs.histograms.items():
            mine = ours.histograms[tag]
            assert mine.num == h.num, tag
            assert abs(mine.bucket_counts - h.bucket_counts).sum() <= 4, tag


@pytest.mark.parametrize("extra", [["train.amp=bf16"], ["train.compile=true"],
                                   ["train.amp=bf16", "train.compile=true"]])  # fmt: skip
def test_amp_and_compile_train_tied_models_with_logging(tmp_path, extra):
    cfg = runner.compose(["device=cuda", "model=deep_mlp", "tying=hidden", "train.steps=50",
                          "train.val_every=0", "train.progress=off", "log.every=5", *extra])  # fmt: skip
    from runner.loop import run_loop

    setup = prepare(cfg)
    x, y = setup.data.x_train, setup.data.y_train
    before = setup.forward(x, y, setup.loss_fn).item()
    writer = RunWriter(tmp_path / "tb")
    run_loop(cfg, setup, writer, lambda step: None)
    writer.close()
    assert setup.model[2] is setup.model[4]
    assert setup.forward(x, y, setup.loss_fn).item() < before
    assert all(p.dtype == torch.float32 and p.is_cuda for p in setup.model.parameters())


def test_weights_cut_into_rows_on_cuda_measure_as_each_alone(monkeypatch):
    # On the GPU a merged group's per-tensor bounds and means are made on the device
    # (runner/binning.py, runner/reductions.py): the same numbers as the layout that reduces
    # each shape on its own, on the same device.
    cut, alone, groups = cut_and_alone(monkeypatch, "cuda")
    assert [(g.row, g.spans) for g in groups] == [(4096, (2, 4, 3))]
    assert_same_numbers(cut, alone)
