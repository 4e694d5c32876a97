"""`train.amp: bf16` and `train.compile: true`: what they change in a step, and what they keep."""

from __future__ import annotations

import pytest
import torch

import runner
from runner.tensorboard import RunWriter
from runner.train import prepare

TINY = ["model=deep_mlp", "tying=hidden", "train.steps=30", "train.val_every=0",
        "train.progress=off", "log.every=5", "log.hist_every=10"]  # fmt: skip


def _train(tmp_path, *overrides: str):
    from runner.loop import run_loop

    cfg = runner.compose([*TINY, *overrides])
    setup = prepare(cfg)
    writer = RunWriter(tmp_path / "tb")
    run_loop(cfg, setup, writer, lambda step: None)
    writer.close()
    return setup


def test_bf16_autocast_runs_layers_in_bf16_and_keeps_float32_weights(tmp_path):
    cfg = runner.compose([*TINY, "train.amp=bf16"])
    setup = prepare(cfg)
    seen = []
    handle = setup.model[2].register_forward_hook(lambda m, a, out: seen.append(out.dtype))
    loss = setup.forward(setup.data.x_train[:8], setup.data.y_train[:8], setup.loss_fn, True)
    handle.remove()
    assert seen == [torch.bfloat16, torch.bfloat16]  # layer 2 is also layer 4 (tied)
    assert loss.dtype == torch.float32  # mse_loss runs in float32 under autocast
    trained = _train(tmp_path, "train.amp=bf16")
    assert all(p.dtype == torch.float32 for p in trained.model.parameters())
    assert trained.model[2] is trained.model[4]
    x, y = trained.data.x_train, trained.data.y_train
    start = prepare(cfg).forward(x, y, trained.loss_fn).item()
    end = trained.forward(x, y, trained.loss_fn).item()
    full = (
        _train(tmp_path / "full").forward(x, y, trained.loss_fn).item()
    )  # the same run in float32
    assert end < 0.97 * start  # it trains
    assert end == pytest.approx(full, rel=0.05)  # and as full precision does


def test_amp_off_is_bit_identical_to_the_plain_forward(tmp_path):
    cfg = runner.compose(TINY)
    setup = prepare(cfg)
    x, y = setup.data.x_train[:16], setup.data.y_train[:16]
    assert torch.equal(setup.forward(x, y, setup.loss_fn), setup.loss_fn(setup.model(x), y))


@pytest.mark.slow
def test_compiled_steps_match_eager_and_keep_tying_and_logging(tmp_path):
    import torch._dynamo

    torch._dynamo.reset()
    eager = _train(tmp_path / "eager")
    compiled = _train(tmp_path / "compiled", "train.compile=true")
    assert compiled.model[2] is compiled.model[4]
    for (name, a), b in zip(eager.model.state_dict().items(), compiled.model.state_dict().values(),
                            strict=True):  # fmt: skip
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5, msg=name)
    # The compiled module holds the model's own parameters: nothing to copy back.
    assert {id(p) for p in compiled.forward.compiled.parameters()} == {
        id(p) for p in compiled.model.parameters()
    }
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "compiled" / "tb"))
    events.Reload()
    assert [e.step for e in events.Scalars("activations_std/4")] == [5, 10, 15, 20, 25, 30]
    assert "weights/2.weight" in events.Tags()["histograms"]
