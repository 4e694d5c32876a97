"""Training: losses fall, runs repeat bit for bit, files and TensorBoard tags are what users rely on."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from conftest import count_host_reads, run_cli
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch import nn

import runner
from runner.train import train

FAST = ["train.progress=off", "train.val_every=50"]


def run(tmp_path, *overrides: str, name: str = "run"):
    """Train the composed config into tmp_path/name; return (metrics, run dir)."""
    run_dir = tmp_path / name
    metrics = train(runner.compose([*FAST, *overrides]), run_dir)
    return metrics, run_dir


def events(run_dir) -> EventAccumulator:
    accumulator = EventAccumulator(
        str(run_dir / "tb"), size_guidance={"scalars": 0, "histograms": 0}
    )
    accumulator.Reload()
    return accumulator


def last(acc: EventAccumulator, tag: str) -> float:
    return acc.Scalars(tag)[-1].value


def test_regression_reaches_the_noise_floor(tmp_path):
    metrics, _ = run(tmp_path, "model.layers=[{type: linear, out_features: 1}]", "train.steps=600")
    assert metrics["initial_train_loss"] > 1.0
    assert metrics["final_train_loss"] < 2 * 0.01**2  # noise std 0.01
    assert metrics["final_val_loss"] < 2 * 0.01**2


@pytest.mark.parametrize("kind", ["regression", "classification", "teacher"])
def test_each_data_kind_learns(tmp_path, kind):
    metrics, _ = run(tmp_path, f"data={kind}", "train.steps=400", "log.every=0", "log.hist_every=0")
    assert metrics["final_train_loss"] < 0.2 * metrics["initial_train_loss"]
    assert metrics["final_val_loss"] < 0.2 * metrics["initial_val_loss"]


@pytest.mark.parametrize("policy", ["stop", "skip"])
def test_a_layer_with_a_tensor_of_no_values_trains_and_logs_the_others(tmp_path, policy):
    layer = "{_target_: conftest.WithEmptyWeight, in_features: 4, out_features: 8}"
    metrics, run_dir = run(tmp_path, f"model.layers=[{layer}, {{type: relu}}, {{type: linear, "
                           "out_features: 1}]", "train.steps=20", "log.every=1", "log.hist_every=1",
                           f"train.on_nonfinite={policy}")  # fmt: skip
    assert metrics["status"] == "ok" and metrics["steps"] == 20
    acc = events(run_dir)
    assert len(acc.Scalars("weights_norm/0.linear.weight")) == 21  # steps 0 to 20
    assert not [t for t in acc.Tags()["scalars"] + acc.Tags()["histograms"] if "empty" in t]


def test_same_config_same_bits(tmp_path):
    overrides = ["model=deep_mlp", "init=xavier", "optim=adam", "train.steps=60", "seed=3"]
    run(tmp_path, *overrides, name="a")
    run(tmp_path, *overrides, name="b")
    a = torch.load(tmp_path / "a" / "model.pt", weights_only=True)
    b = torch.load(tmp_path / "b" / "model.pt", weights_only=True)
    assert list(a) == list(b) and all(torch.equal(a[k], b[k]) for k in a)
    c = torch.load(
        run(tmp_path, *overrides[:-1], "seed=4", name="c")[1] / "model.pt", weights_only=True
    )
    assert not torch.equal(a["0.weight"], c["0.weight"])


def test_run_files_and_metrics(tmp_path):
    metrics, run_dir = run(tmp_path, "train.steps=20", "model=deep_mlp", "tying=hidden")
    saved = json.loads((run_dir / "metrics.json").read_text())
    assert saved == metrics
    assert saved["steps"] == 20 and saved["device"] == "cpu"
    assert (saved["params_unique"], saved["params_total"]) == (121, 193)
    for key in ("initial_train_loss", "initial_val_loss", "final_train_loss", "final_val_loss",
                "wall_time_s", "steps_per_s"):  # fmt: skip
        assert math.isfinite(saved[key]) and saved[key] > 0, key
    checkpoint = torch.load(run_dir / "checkpoint.pt", weights_only=False)
    assert checkpoint["step"] == 20
    assert set(checkpoint["rng"]) == {"torch", "cuda", "data", "data_epoch_start"}
    assert checkpoint["optimizer"]["param_groups"][0]["params"] == list(range(6))  # unique tensors
    assert checkpoint["config"]["tying"]["groups"] == [["2", "4"]]


def test_model_pt_loads_into_the_hand_written_model(tmp_path):
    _, run_dir = run(tmp_path, "train.steps=30")
    hand = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 1))
    hand.load_state_dict(torch.load(run_dir / "model.pt", weights_only=True))
    trained = runner.build_model(runner.compose([]))
    trained.load_state_dict(torch.load(run_dir / "model.pt", weights_only=True))
    x = torch.randn(5, 4)
    assert torch.equal(hand(x), trained(x))


def test_zero_steps_saves_the_initial_model(tmp_path):
    metrics, run_dir = run(tmp_path, "train.steps=0", "init=normal")
    initial = runner.build_model(runner.compose(["init=normal"]))
    saved = torch.load(run_dir / "model.pt", weights_only=True)
    assert all(torch.equal(saved[k], v) for k, v in initial.state_dict().items())
    assert metrics["steps"] == 0 and metrics["final_train_loss"] == metrics["initial_train_loss"]


def test_tied_and_untied_runs_have_the_same_tags_and_tied_grads_are_equal(tmp_path):
    common = ["model=deep_mlp", "train.steps=20", "log.every=10", "log.hist_every=10"]
    _, tied_dir = run(tmp_path, *common, "tying=hidden", name="tied")
    _, untied_dir = run(tmp_path, *common, name="untied")
    tied, untied = events(tied_dir), events(untied_dir)
    assert set(tied.Tags()["scalars"]) == set(untied.Tags()["scalars"])
    assert set(tied.Tags()["histograms"]) == set(untied.Tags()["histograms"])
    for prefix in ("grads", "weights"):
        a, b = tied.Histograms(f"{prefix}/2.weight")[-1], tied.Histograms(f"{prefix}/4.weight")[-1]
        assert a.histogram_value == b.histogram_value
    assert last(tied, "grads_norm/2.weight") == last(tied, "grads_norm/4.weight")
    assert last(untied, "grads_norm/2.weight") != last(untied, "grads_norm/4.weight")
    assert {"activations_std/4", "dead_relu/5", "update_ratio/4.bias"} <= set(
        tied.Tags()["scalars"]
    )


def test_statistics_match_the_saved_weights(tmp_path):
    _, run_dir = run(tmp_path, "model=deep_mlp", "train.steps=30", "log.every=30",
                     "log.hist_every=30", "train.val_every=0")  # fmt: skip
    acc = events(run_dir)
    final = torch.load(run_dir / "model.pt", weights_only=True)
    for name, value in final.items():
        assert last(acc, f"weights_norm/{name}") == pytest.approx(value.norm().item(), rel=1e-5)
        std = value.std().item() if value.numel() > 1 else 0.0  # one value: logged as 0, not NaN
        assert last(acc, f"weights_std/{name}") == pytest.approx(std, rel=1e-4)
        h = acc.Histograms(f"weights/{name}")[-1].histogram_value
        assert (h.min, h.max, h.num) == pytest.approx(
            (value.min().item(), value.max().item(), value.numel())
        )
        assert h.sum_squares == pytest.approx(value.square().sum().item(), rel=1e-5)
        expected, _ = np.histogram(value.numpy(), bins=64, range=(h.min, h.max))
        assert np.abs(np.array(h.bucket) - expected).sum() <= 2  # edge rounding only
    # Plain SGD: the update is lr * grad, so ||dw|| / ||w|| = lr * ||g|| / ||w_before||.
    for name in ("0.weight", "6.weight"):
        ratio = last(acc, f"update_ratio/{name}")
        expected = 0.03 * last(acc, f"grads_norm/{name}") / last(acc, f"weights_norm/{name}")
        assert ratio == pytest.approx(expected, rel=0.05)
    dead = last(acc, "dead_relu/1")
    assert 0.0 <= dead <= 1.0
    assert [e.step for e in acc.Scalars("loss/train")] == [0, 30]  # the init, then step 30


def test_hparams_and_config_text_are_in_the_run_dir(tmp_path):
    _, run_dir = run(tmp_path, "train.steps=10", "init=xavier")
    files = list((run_dir / "tb").rglob("events.out.tfevents.*"))
    assert len(files) == 1 and files[0].parent == run_dir / "tb"  # no timestamped sub-run
    acc = EventAccumulator(str(run_dir / "tb"))
    acc.Reload()
    assert "config/text_summary" in acc.Tags()["tensors"]
    hparams = acc.summary_metadata["_hparams_/session_start_info"].plugin_data.content
    assert b"xavier" in hparams


@pytest.mark.slow
def test_cli_run_prints_run_dir_and_tensorboard_line(tmp_path):
    result = run_cli("runner", f"hydra.run.dir={tmp_path}/cli", "train.steps=50", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert f"run dir: {tmp_path}/cli" in result.stdout
    assert f"tensorboard --logdir {tmp_path}/cli/tb" in result.stdout
    assert "device: cpu" in result.stderr + result.stdout
    assert {"model.pt", "checkpoint.pt", "metrics.json", "tb", ".hydra"} <= {
        p.name for p in (tmp_path / "cli").iterdir()
    }
    # The process ends without the interpreter's teardown (runner/__main__.py): what was
    # printed and logged last is still there, through pipes and files.
    assert result.stdout.endswith(f"tensorboard --logdir {tmp_path}/cli/tb\n")
    log_lines = (tmp_path / "cli" / "runner.log").read_text().splitlines()
    assert "loss train" in log_lines[-1] and "(50 steps," in log_lines[-1]


def test_progress_lines_when_not_a_terminal(tmp_path, caplog):
    caplog.set_level("INFO", logger="runner")
    train(runner.compose(["train.steps=40", "train.progress=lines"]), tmp_path / "lines")
    steps = [r.getMessage() for r in caplog.records if r.getMessage().startswith("step ")]
    assert len(steps) == 10 and steps[-1].startswith("step 40/40  loss ")
    assert "steps/s" in steps[-1]
    assert any(r.getMessage() == "device: cpu" for r in caplog.records)


def test_progress_bar_shows_steps_and_loss(tmp_path, capsys):
    train(runner.compose(["train.steps=100", "train.progress=bar"]), tmp_path / "bar")
    err = capsys.readouterr().err
    assert "100/100" in err and "loss=" in err and "step/s" in err


def test_lr_schedule_grad_clip_and_epochs(tmp_path):
    scheduler = "+optim.scheduler={_target_: torch.optim.lr_scheduler.StepLR, _partial_: true, step_size: 10, gamma: 0.5}"
    _, run_dir = run(tmp_path, "train.epochs=1", "train.batch_size=50", "log.every=10",
                     "train.grad_clip=0.001", scheduler.replace("+", "", 1))  # fmt: skip
    acc = events(run_dir)
    lrs = {e.step: e.value for e in acc.Scalars("lr")}
    # 1000 // 50 = 20 steps; the logged lr is the one each step used: halved after step 10.
    assert lrs == pytest.approx({10: 0.03, 20: 0.015})
    # Clipped to a global norm of 0.001: no parameter moved more than lr * 0.001.
    for tag in acc.Tags()["scalars"]:
        if tag.startswith("update_ratio/"):
            name = tag.split("/", 1)[1]
            moved = acc.Scalars(tag)[-1].value * acc.Scalars(f"weights_norm/{name}")[-1].value
            assert moved <= 0.015 * 0.001 * 1.01, tag


@pytest.mark.slow
def test_training_on_cuda_without_cuda_is_a_clear_error(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    result = run_cli("runner", f"hydra.run.dir={tmp_path}/gpu", "device=cuda", cwd=tmp_path)
    assert result.returncode == 2
    assert "device=cuda: CUDA is not available on this machine" in result.stderr
    assert "Traceback" not in result.stderr
    assert (
        not (tmp_path / "gpu" / "model.pt").exists()
        and not (tmp_path / "gpu" / "metrics.json").exists()
    )


def test_logging_intervals_of_zero_switch_logging_off(tmp_path):
    _, run_dir = run(
        tmp_path, "train.steps=10", "log.every=0", "log.hist_every=0", "train.val_every=5"
    )
    tags = events(run_dir).Tags()
    assert set(tags["scalars"]) == {"loss/val", "final/loss_train", "final/loss_val"}
    assert tags["histograms"] == []  # hparams and the config text are still there, once
    _, run_dir = run(tmp_path, "train.steps=10", "log.every=0", "log.hist_every=5", name="hists")
    tags = events(run_dir).Tags()
    assert (
        "weights/0.weight" in tags["histograms"] and "weights_norm/0.weight" not in tags["scalars"]
    )


def test_step_zero_logs_the_initialised_weights_and_losses(tmp_path):
    metrics, run_dir = run(
        tmp_path, "train.steps=0", "init=normal", "log.every=1", "log.hist_every=1"
    )
    acc = events(run_dir)
    initial = runner.build_model(runner.compose(["init=normal"])).state_dict()
    h = acc.Histograms("weights/0.weight")[0]
    assert h.step == 0 and h.histogram_value.num == 32
    assert h.histogram_value.max == pytest.approx(initial["0.weight"].max().item())
    assert acc.Scalars("weights_norm/2.weight")[0].value == pytest.approx(
        initial["2.weight"].norm().item()
    )
    assert acc.Scalars("loss/train")[0].value == pytest.approx(metrics["initial_train_loss"])
    assert acc.Scalars("loss/val")[0].value == pytest.approx(metrics["initial_val_loss"])


def test_batchnorm_and_dropout_models_train_deterministically(tmp_path):
    layers = (
        "model.layers=[{type: linear, out_features: 16}, {type: batchnorm1d}, {type: relu},"
        " {type: dropout, p: 0.3}, {type: linear, out_features: 1}]"
    )
    run(tmp_path, layers, "train.steps=0", name="init")
    saved = torch.load(tmp_path / "init" / "model.pt", weights_only=True)
    assert (
        torch.equal(saved["1.running_mean"], torch.zeros(16))
        and saved["1.num_batches_tracked"] == 0
    )
    run(tmp_path, layers, "train.steps=30", name="a")
    run(tmp_path, layers, "train.steps=30", "log.every=0", "log.hist_every=0", name="b")
    a = torch.load(tmp_path / "a" / "model.pt", weights_only=True)
    b = torch.load(tmp_path / "b" / "model.pt", weights_only=True)
    assert all(torch.equal(a[k], b[k]) for k in a)  # logging changes nothing that trains
    assert a["1.num_batches_tracked"] == 30


def test_true_w_and_b_make_the_chapters_data():
    from runner.config_values import to_plain
    from runner.data import make_data

    cfg = runner.compose(["data.true_w=[2,-3.4,1,0]", "data.true_b=4.2", "data.noise=0"])
    data = make_data(to_plain(cfg.data), (4,), 0, torch.device("cpu"), "data")
    expected = data.x_train @ torch.tensor([[2.0], [-3.4], [1.0], [0.0]]) + 4.2
    assert torch.allclose(data.y_train, expected)


def test_metrics_json_writes_null_for_a_missing_loss(tmp_path):
    _, run_dir = run(tmp_path, "train.steps=5", "data.n_val=0", "train.val_every=0")
    saved = json.loads((run_dir / "metrics.json").read_text())
    assert saved["final_val_loss"] is None and saved["initial_val_loss"] is None


def test_hparams_show_the_configured_lr_and_text_is_resolved(tmp_path):
    from tensorboard.plugins.hparams import plugin_data_pb2

    schedule = "optim.scheduler={_target_: torch.optim.lr_scheduler.CosineAnnealingLR, _partial_: true, T_max: 20}"
    _, run_dir = run(tmp_path, "train.steps=20", "data=classification", schedule)
    acc = EventAccumulator(str(run_dir / "tb"))
    acc.Reload()
    content = acc.summary_metadata["_hparams_/session_start_info"].plugin_data.content
    start = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info
    assert start.hparams["lr"].number_value == pytest.approx(0.03)
    text = acc.Tensors("config/text_summary")[0].tensor_proto.string_val[0].decode()
    assert "out_features: 3" in text and "${" not in text


def test_no_host_sync_on_steps_that_do_not_log(tmp_path, monkeypatch):
    from runner.loop import run_loop
    from runner.tensorboard import RunWriter
    from runner.train import prepare

    calls = count_host_reads(monkeypatch)
    # One host copy per logging step (train.on_nonfinite=stop's flag rides in it), read as
    # one NumPy array; none on other steps; one read of the non-finite record and the
    # weights at the end.
    for every, expected in ((0, {"tolist": 1}), (10, {"cpu": 2, "numpy": 2, "tolist": 1})):
        cfg = runner.compose(["model=deep_mlp", "tying=hidden", "train.steps=20", "train.val_every=0",
                              "train.progress=off", f"log.every={every}", "log.hist_every=0"])  # fmt: skip
        setup = prepare(cfg)
        calls.clear()
        run_loop(cfg, setup, RunWriter(tmp_path / f"tb{every}"), lambda step: None)
        assert calls == expected, every


@pytest.mark.parametrize("every, hooked", [(2, [0, 1, 0, 1, 0, 1, 0]), (1, [1] * 7)])
def test_layer_hooks_are_on_only_for_steps_that_log_and_gone_after_the_loop(
    tmp_path, monkeypatch, every, hooked
):
    from torch.nn.modules import module as torch_module

    from runner.loop import run_loop
    from runner.tensorboard import RunWriter
    from runner.train import prepare

    registered = []
    register = torch_module.register_module_forward_hook
    monkeypatch.setattr(torch_module, "register_module_forward_hook",
                        lambda hook: registered.append(hook) or register(hook))  # fmt: skip
    cfg = runner.compose(["model=deep_mlp", "train.steps=7", "train.val_every=0",
                          "train.progress=off", f"log.every={every}", "log.hist_every=0"])  # fmt: skip
    setup = prepare(cfg)
    model = setup.model
    before = dict(torch_module._global_forward_hooks)
    seen = []  # per training forward pass: how many forward hooks the runner added
    probe = torch_module.register_module_forward_pre_hook(
        lambda m, args: (
            seen.append(len(torch_module._global_forward_hooks) - len(before))
            if m is model
            else None
        )
    )
    try:
        run_loop(cfg, setup, RunWriter(tmp_path / "tb"), lambda step: None)
    finally:
        probe.remove()
    assert seen == hooked
    assert dict(torch_module._global_forward_hooks) == before  # nothing is left behind
    assert not any(m._forward_hooks for m in model.modules())  # the model comes back clean
    # Logging every step registers the hook once, not once a step.
    assert len(registered) == (3 if every == 2 else 1)


def test_an_in_place_relu_leaves_every_logged_number_as_without_it(tmp_path):
    """ReLU(inplace=True) overwrites the Linear's output: its activations at step 0 (the
    probe) and at later steps (the stash) are the values the Linear returned."""
    layers = ("model.layers=[{{type: linear, out_features: 16}}, {{type: relu, inplace: {}}}, "
              "{{type: linear, out_features: 1}}]")  # fmt: skip
    logging = ["train.steps=3", "log.every=1", "log.hist_every=1"]
    _, plain = run(tmp_path, layers.format("false"), *logging, name="plain")
    _, in_place = run(tmp_path, layers.format("true"), *logging, name="in_place")
    a, b = events(plain), events(in_place)
    assert a.Tags()["scalars"] == b.Tags()["scalars"]
    for tag in a.Tags()["scalars"]:
        assert [e.value for e in a.Scalars(tag)] == [e.value for e in b.Scalars(tag)], tag
    linear, relu = b.Scalars("activations_mean/0")[0], b.Scalars("activations_mean/1")[0]
    assert linear.step == relu.step == 0 and linear.value < relu.value  # before the ReLU
