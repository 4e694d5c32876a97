"""StepStats against statistics computed by hand for one training step."""

from __future__ import annotations

import pytest
import torch
from conftest import assert_same_numbers, cut_and_alone

import runner
from runner.reductions import STACK_LIMIT, TINY_LIMIT
from runner.stats import StepStats


def test_one_step_of_statistics_equals_hand_computation():
    net = runner.build_model(runner.compose(["model=deep_mlp", "tying=hidden", "seed=2"]))
    x, y = torch.randn(64, 4), torch.randn(64, 1)
    before = {n: p.detach().clone() for n, p in net.named_parameters(remove_duplicate=False)}
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
    stats = StepStats(net, hist_bins=8)

    stats.start(activations=True)
    outputs = {}
    handles = [net[i].register_forward_hook(lambda m, a, o, i=i: outputs.setdefault(i, []).append(o.detach()))
               for i in range(7)]  # fmt: skip
    loss = torch.nn.functional.mse_loss(net(x), y)
    for handle in handles:
        handle.remove()
    optimizer.zero_grad()
    loss.backward()
    grads = {n: p.grad.clone() for n, p in net.named_parameters(remove_duplicate=False)}
    stats.before_update(scalars=True, histograms=True)
    optimizer.step()
    record = stats.finish(scalars=True, histograms=True, extra={"loss/train": loss})
    s = record.scalars

    assert s["loss/train"] == pytest.approx(loss.item())
    # Layer 2 and 4 are one module: its first call is "2", its second "4".
    for path, out in (
        ("1", outputs[1][0]),
        ("2", outputs[2][0]),
        ("4", outputs[2][1]),
        ("5", outputs[5][0]),
    ):
        assert s[f"activations_mean/{path}"] == pytest.approx(out.mean().item(), abs=1e-7)
        assert s[f"activations_std/{path}"] == pytest.approx(out.std().item(), rel=1e-6)
    relu = outputs[1][0]
    assert s["dead_relu/1"] == pytest.approx((relu <= 0).all(dim=0).float().mean().item())
    assert "dead_relu/2" not in s  # only rectifiers have dead units
    for name, param in net.named_parameters(remove_duplicate=False):
        grad, old, new = grads[name], before[name], param.detach()
        assert s[f"grads_norm/{name}"] == pytest.approx(grad.norm().item(), rel=1e-6)
        if grad.numel() > 1:
            assert s[f"grads_std/{name}"] == pytest.approx(grad.std().item(), rel=1e-5)
            assert s[f"weights_std/{name}"] == pytest.approx(new.std().item(), rel=1e-5)
        assert s[f"weights_norm/{name}"] == pytest.approx(new.norm().item(), rel=1e-6)
        # ||dw|| / ||w before the step||
        assert s[f"update_ratio/{name}"] == pytest.approx(
            ((new - old).norm() / old.norm()).item(), rel=1e-5
        )
    assert s["grads_norm/2.weight"] == s["grads_norm/4.weight"]  # one tensor, two names

    h = record.histograms["weights/0.weight"]
    w = net[0].weight.detach()
    assert (h.min, h.max, h.num) == pytest.approx((w.min().item(), w.max().item(), 32))
    assert h.sum == pytest.approx(w.sum().item(), abs=1e-6)
    assert h.sum_squares == pytest.approx(w.square().sum().item(), rel=1e-6)
    width = (h.max - h.min) / 8
    assert h.bucket_limits == pytest.approx(
        [h.min + width * (k + 1) for k in range(8)]
    )  # right edges
    expected = torch.histc(w, bins=8, min=h.min, max=h.max)
    assert h.bucket_counts == pytest.approx(expected.tolist())
    g = record.histograms["grads/4.bias"]
    assert g.sum == pytest.approx(grads["4.bias"].sum().item(), abs=1e-6)


def test_every_kind_of_group_measures_the_gradients_before_clipping_and_the_new_weights():
    # Small groups are copied before the update and reduced with the weights after it; a
    # group of two 600 x 600 weights is too big for that and is reduced where it is taken,
    # as is the one tensor of more than STACK_LIMIT values (1800 x 600).
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(8, 600), torch.nn.Linear(600, 600),
                              torch.nn.Linear(600, 600), torch.nn.Linear(600, 1800),
                              torch.nn.Linear(1800, 1))  # fmt: skip
    assert net[3].weight.numel() >= STACK_LIMIT
    before = {n: p.detach().clone() for n, p in net.named_parameters()}
    optimizer = torch.optim.SGD(net.parameters(), lr=0.5)
    stats = StepStats(net, hist_bins=16)
    torch.nn.functional.mse_loss(net(torch.randn(4, 8)), torch.randn(4, 1)).backward()
    grads = {n: p.grad.clone() for n, p in net.named_parameters()}
    stats.before_update(scalars=True, histograms=True)
    torch.nn.utils.clip_grad_norm_(net.parameters(), 1e-3)  # in place, after the statistics
    optimizer.step()
    record = stats.finish(scalars=True, histograms=True, extra={})
    s = record.scalars
    for name, param in net.named_parameters():
        new, old = param.detach(), before[name]
        # Against float64: float32's own norm of a million values is off in the 5th digit.
        assert s[f"grads_norm/{name}"] == pytest.approx(
            grads[name].double().norm().item(), rel=1e-6
        )
        assert s[f"weights_norm/{name}"] == pytest.approx(new.double().norm().item(), rel=1e-6)
        ratio = ((new - old).norm() / old.norm()).item()
        assert s[f"update_ratio/{name}"] == pytest.approx(ratio, rel=1e-4)
        for kind, tensor in (("grads", grads[name]), ("weights", new)):
            h = record.histograms[f"{kind}/{name}"]
            assert (h.min, h.max) == (tensor.min().item(), tensor.max().item())
            assert h.num == tensor.numel() == sum(h.bucket_counts)
            expected = torch.histc(tensor, bins=16, min=h.min, max=h.max).tolist()
            # A value within rounding of a bin edge may be counted on either side of it.
            assert sum(abs(a - b) for a, b in zip(h.bucket_counts, expected, strict=True)) <= 4


def test_fast_event_checksum_equals_tensorboards_own():
    import os

    from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import masked_crc32c as reference

    from runner.tensorboard import masked_crc32c

    for size in (0, 1, 7, 64, 1000, 10_001):
        data = os.urandom(size)
        assert masked_crc32c(data) == reference(data)


def test_held_statistics_open_no_writer_and_come_first_in_the_event_file(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from runner.stats import StepRecord
    from runner.tensorboard import RunWriter

    writer = RunWriter(tmp_path / "tb")
    writer.hold(0, StepRecord(scalars={"loss/train": 3.0}))
    assert not (tmp_path / "tb").exists()  # the first step does not wait for TensorBoard
    writer.record(10, StepRecord(scalars={"loss/train": 2.0}))
    writer.close()
    acc = EventAccumulator(str(tmp_path / "tb"))
    acc.Reload()
    assert [(e.step, e.value) for e in acc.Scalars("loss/train")] == [(0, 3.0), (10, 2.0)]
    # Held and never followed by a write: written when the run closes its writer.
    alone = RunWriter(tmp_path / "alone")
    alone.hold(0, StepRecord(scalars={"loss/train": 5.0}))
    alone.close()
    acc = EventAccumulator(str(tmp_path / "alone"))
    acc.Reload()
    assert [(e.step, e.value) for e in acc.Scalars("loss/train")] == [(0, 5.0)]


@pytest.mark.parametrize(
    "kinds",
    [["linear", "relu", "linear", "relu"],  # rectifiers evenly spaced: counted on a view
     ["linear", "relu", "relu6", "linear", "relu"]],  # unevenly: counted on every row
)  # fmt: skip
def test_dead_units_of_outputs_reduced_on_the_device_are_each_rectifiers_own(kinds):
    # 64 x 200 outputs: above TINY_LIMIT, so they are reduced on the device, not the host.
    torch.manual_seed(0)
    make = {"linear": lambda: torch.nn.Linear(200, 200), "relu": torch.nn.ReLU,
            "relu6": torch.nn.ReLU6}  # fmt: skip
    net = torch.nn.Sequential(*[make[kind]() for kind in kinds])
    with torch.no_grad():
        net[0].bias[:30] -= 100.0  # units 0-29 never on after the first ReLU
    x = torch.randn(64, 200)
    outputs = []
    handles = [m.register_forward_hook(lambda m, a, o: outputs.append(o.detach().clone()))
               for m in net]  # fmt: skip
    stats = StepStats(net, hist_bins=8)
    stats.start(activations=True)
    net(x).sum().backward()
    for handle in handles:
        handle.remove()
    stats.before_update(scalars=True, histograms=False)
    s = stats.finish(scalars=True, histograms=False, extra={}).scalars
    for i, kind in enumerate(kinds):
        if kind == "linear":
            assert f"dead_relu/{i}" not in s
        else:
            dead = (outputs[i] <= 0).all(dim=0).sum().item() / 200  # units never on
            assert s[f"dead_relu/{i}"] == dead
    assert s["dead_relu/1"] >= 30 / 200


@pytest.mark.parametrize("batch", [64, 5300])  # copied into the stash; >= STACK_LIMIT: as is
def test_measuring_layer_outputs_leaves_them_as_the_model_made_them(batch):
    # The stash's copies are overwritten by their centred squares once reduced; an output
    # of STACK_LIMIT values or more is reduced where it is, and must stay as it was.
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(200, 200), torch.nn.ReLU(), torch.nn.Linear(200, 200))
    outputs = []  # the outputs themselves, as the next layers and backward see them
    handles = [m.register_forward_hook(lambda m, a, o: outputs.append(o)) for m in net]
    stats = StepStats(net, hist_bins=8)
    stats.start(activations=True)
    net(torch.randn(batch, 200)).square().mean().backward()
    for handle in handles:
        handle.remove()
    assert (outputs[0].numel() >= STACK_LIMIT) == (batch == 5300)
    copies = [o.detach().clone() for o in outputs]
    stats.before_update(scalars=True, histograms=False)
    s = stats.finish(scalars=True, histograms=False, extra={}).scalars
    for i, (output, copy) in enumerate(zip(outputs, copies, strict=True)):
        assert torch.equal(output, copy)
        assert s[f"activations_mean/{i}"] == pytest.approx(copy.double().mean().item(), abs=1e-7)
        assert s[f"activations_std/{i}"] == pytest.approx(copy.double().std().item(), rel=1e-6)


def test_bfloat16_parameters_are_measured_in_float32_copies():
    # Gradients and weights are copied into float32 buffers, converting as they go: a big
    # group row by row, a tiny one (the biases) at once.
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(200, 200), torch.nn.Linear(200, 3)).bfloat16()
    stats = StepStats(net, hist_bins=8)
    net(torch.randn(16, 200, dtype=torch.bfloat16)).float().square().sum().backward()
    grads = {n: p.grad.double() for n, p in net.named_parameters()}
    stats.before_update(scalars=True, histograms=True)
    record = stats.finish(scalars=True, histograms=True, extra={})
    for name, param in net.named_parameters():
        s = record.scalars
        assert s[f"grads_norm/{name}"] == pytest.approx(grads[name].norm().item(), rel=1e-6)
        assert s[f"weights_norm/{name}"] == pytest.approx(param.double().norm().item(), rel=1e-6)
        h = record.histograms[f"weights/{name}"]
        assert (h.min, h.max) == (param.min().item(), param.max().item())
        assert h.num == param.numel() == h.bucket_counts.sum()


def test_update_ratios_of_consecutive_logging_steps_are_each_steps_own():
    # A step that follows the last one measured takes w_before from the buffers that hold
    # that step's new weights (two sets of them, alternating); a gap takes a fresh
    # snapshot. Every kind of group: tiny (biases), paired (600 x 8), alone (the big one).
    torch.manual_seed(1)
    net = torch.nn.Sequential(torch.nn.Linear(8, 600), torch.nn.ReLU(),
                              torch.nn.Linear(600, 1800), torch.nn.Linear(1800, 1))  # fmt: skip
    assert net[2].weight.numel() >= STACK_LIMIT
    optimizer = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    stats = StepStats(net, hist_bins=8)
    for step in range(1, 8):
        x, y = torch.randn(16, 8), torch.randn(16, 1)
        before = {n: p.detach().clone() for n, p in net.named_parameters()}
        optimizer.zero_grad()
        torch.nn.functional.mse_loss(net(x), y).backward()
        if step == 4:  # not a logging step: the weights move without being measured
            optimizer.step()
            continue
        stats.before_update(scalars=True, histograms=step % 2 == 0, step=step)
        optimizer.step()
        s = stats.finish(scalars=True, histograms=step % 2 == 0, extra={}, step=step).scalars
        for name, param in net.named_parameters():
            new, old = param.detach().double(), before[name].double()
            expected = ((new - old).norm() / old.norm()).item()
            assert s[f"update_ratio/{name}"] == pytest.approx(expected, rel=1e-4), (step, name)
            assert s[f"weights_norm/{name}"] == pytest.approx(new.norm().item(), rel=1e-6)


def test_parameters_and_outputs_of_no_values_get_no_tags_and_the_others_theirs():
    # A custom module may hold a tensor of no values (a (3, 0) weight): it has no norm,
    # std or histogram, so it gets no tags, and the step's other numbers are unchanged.
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
    net.register_parameter("empty", torch.nn.Parameter(torch.empty(3, 0)))
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
    stats = StepStats(net, hist_bins=8)
    for step in range(3):  # consecutive logging steps: the alternating buffers too
        stats.start(activations=True)
        loss = net(torch.randn(5, 4)).square().mean()
        loss.backward()
        stats.before_update(scalars=True, histograms=True, step=step)
        optimizer.step()
        record = stats.finish(scalars=True, histograms=True, extra={}, step=step)
        assert not [tag for tag in [*record.scalars, *record.histograms] if "empty" in tag]
        assert record.scalars["weights_norm/2.weight"] == pytest.approx(net[2].weight.norm().item())
        assert record.histograms["grads/0.bias"].num == 3
    # A layer of no units: its output (5, 0) and the next layer's (2, 0) weight are empty.
    narrow = torch.nn.Sequential(torch.nn.Linear(4, 0), torch.nn.ReLU(), torch.nn.Linear(0, 2))
    stats = StepStats(narrow, hist_bins=8)
    stats.start(activations=True)
    narrow(torch.randn(5, 4)).sum().backward()
    stats.before_update(scalars=True, histograms=True)
    scalars = stats.finish(scalars=True, histograms=True, extra={}).scalars
    assert "activations_mean/2" in scalars and "activations_mean/0" not in scalars
    assert "weights_norm/2.bias" in scalars and "weights_norm/2.weight" not in scalars
    only_empty = torch.nn.Module()
    only_empty.register_parameter("empty", torch.nn.Parameter(torch.empty(0)))
    stats = StepStats(only_empty, hist_bins=8)
    stats.before_update(scalars=True, histograms=True)
    assert stats.finish(scalars=True, histograms=True, extra={}) is not None


def test_a_tensor_holding_an_infinity_has_an_infinite_norm():
    # Its centred squares are NaN (inf - inf); its norm and sum of squares are inf, as a
    # direct sum gives, on the device path (a big tensor) and the host path (a bias).
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(100, 200), torch.nn.Linear(200, 1))
    assert net[0].weight.numel() > TINY_LIMIT  # reduced on the device
    with torch.no_grad():
        net[0].weight[3, 7] = float("inf")
        net[0].bias[0] = float("-inf")
    stats = StepStats(net, hist_bins=8)
    stats.before_update(scalars=True, histograms=True)
    record = stats.finish(scalars=True, histograms=True, extra={})
    for name in ("0.weight", "0.bias"):
        assert record.scalars[f"weights_norm/{name}"] == float("inf"), name
        assert record.histograms[f"weights/{name}"].sum_squares == float("inf"), name
    assert record.scalars["weights_norm/1.weight"] == pytest.approx(net[1].weight.norm().item())


def test_update_ratio_of_a_big_tensor_is_float32_exact():
    # Both norms of the ratio are cascade sums: vector_norm's float32 accumulation put the
    # ratio of a 1 M-value weight about 1e-5 off. On a step that follows a measured one,
    # ||w_before|| is that step's ||w|| (from its moments), as exact.
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(1024, 1024), torch.nn.Linear(1024, 1))
    optimizer = torch.optim.SGD(net.parameters(), lr=0.001)
    stats = StepStats(net, hist_bins=8)
    for step in (1, 2):
        before = net[0].weight.detach().double().clone()
        optimizer.zero_grad()
        net(torch.randn(64, 1024)).square().mean().backward()
        stats.before_update(scalars=True, histograms=False, step=step)
        optimizer.step()
        record = stats.finish(scalars=True, histograms=False, extra={}, step=step)
        new = net[0].weight.detach().double()
        expected = ((new - before).norm() / before.norm()).item()
        assert record.scalars["update_ratio/0.weight"] == pytest.approx(expected, rel=3e-7)


def test_small_weights_of_several_shapes_cut_into_rows_measure_as_each_alone(monkeypatch):
    # Their sizes share a divisor of 4096 values (runner/param_layout.py): one group of
    # rows, each weight 2 to 4 of them. Over consecutive logging steps and a gap, each
    # weight's numbers equal those of the layout that reduces each shape on its own.
    cut, alone, groups = cut_and_alone(monkeypatch, "cpu")
    assert [(g.row, g.spans) for g in groups] == [(4096, (2, 4, 3))]
    assert_same_numbers(cut, alone)
