"""On CUDA: no host sync in a step that does not log, one per logging step; bf16 and compile.

Skipped where there is no CUDA device (CPU CI); run them on a GPU machine with
`pytest tests/test_cuda.py`.
"""

from __future__ import annotations

import warnings

import pytest
import torch

import runner
from runner.tensorboard import RunWriter
from runner.train import prepare

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

BASE = ["device=cuda", "model=deep_relu", "model.depth=4", "model.width=512",
        "data.in_features=64", "data.n_train=4096", "train.batch_size=256",
        "train.val_every=0", "train.progress=off"]  # fmt: skip


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


def test_steps_that_do_not_log_never_sync(tmp_path):
    _loop(tmp_path, ["train.steps=64", "log.every=0", "log.hist_every=0"], "error")


def test_a_logging_step_syncs_once(tmp_path):
    syncs = _loop(tmp_path, ["train.steps=40", "log.every=10", "log.hist_every=20"], "warn")
    assert len(syncs) == 4, [str(w.message) for w in syncs]


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
