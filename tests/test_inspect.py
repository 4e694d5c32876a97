"""`python -m runner.inspect`: what a user sees about a model's layers and parameters."""

from __future__ import annotations

import re

import pytest
import torch
from conftest import run_cli

import runner
from runner import report
from runner.inspect import main


def inspect_output(capsys, *overrides: str) -> str:
    main(list(overrides))
    return capsys.readouterr().out


def test_tree_table_counts_and_probe_for_the_mlp(capsys):
    out = inspect_output(capsys)
    assert out.startswith(
        "model=mlp init=default tying=none data=regression optim=sgd seed=0 device=cpu"
    )
    assert "(0): Linear(in_features=4, out_features=8, bias=True) -> (2, 8)" in out
    assert "(2): Linear(in_features=8, out_features=1, bias=True) -> (2, 1)" in out
    assert re.search(r"^0\.weight\s+\(8, 4\)\s+float32\s+cpu\s+PyTorch default\s+-", out, re.M)
    assert "parameters: 49 unique, 49 total" in out
    assert "signal propagation at init (batch of 256" in out
    assert re.search(
        r"activation std, first -> last layer: .* \(x.*, (stable|vanishing|exploding)\)", out
    )


def test_statistics_in_the_table_are_the_parameters(capsys):
    out = inspect_output(capsys, "init=constant", "init.val=1")
    row = next(line for line in out.splitlines() if line.startswith("2.weight"))
    # mean std min max zero of a weight of ones, and the rule that set it
    assert row.split()[-5:] == ["1", "0", "1", "1", "0"]
    assert "constant(val=1)" in row


def test_table_describes_a_tensor_of_no_values_with_dashes_and_keeps_the_numbers():
    net = torch.nn.Linear(2, 2)
    net.register_parameter("empty", torch.nn.Parameter(torch.empty(3, 0)))
    lines = report.parameter_table(net, {}).splitlines()
    assert lines[-1].split()[-5:] == ["-"] * 5
    weight = next(line for line in lines if line.startswith("weight")).split()
    assert float(weight[-3]) == pytest.approx(net.weight.min().item(), rel=1e-3)  # not a str


def test_tied_model_marks_sharing_and_counts(capsys):
    out = inspect_output(capsys, "model=deep_mlp", "tying=hidden", "init=normal")
    assert (
        "(4): Linear(in_features=8, out_features=8, bias=True) -> (2, 8)  [same module as 2]" in out
    )
    assert re.search(r"^2\.weight .* normal\(mean=0\.0, std=0\.01\)\s+4\.weight", out, re.M)
    assert "parameters: 121 unique, 193 total (72 counted again through tying)" in out
    assert re.search(r"^4\s+Linear\s+\(256, 8\)", out, re.M)  # the second use is probed too


def test_param_by_path_is_the_chapters_rgnet_0_1_0_bias(capsys):
    out = inspect_output(capsys, "model=rgnet", "inspect.param=0.1.0.bias")
    rgnet = runner.build_model(runner.compose(["model=rgnet"]))
    assert "0.1.0.bias: Parameter of shape (8,), torch.float32" in out
    assert str(rgnet[0][1][0].bias.data) in out
    assert "(block 3): Sequential(2, 4) {" in out and "} -> (2, 1)" in out


def test_module_path_prints_its_state_dict(capsys):
    out = inspect_output(capsys, "inspect.param=2")
    net = runner.build_model(runner.compose([]))
    assert f"state_dict: {net[2].state_dict()}" in out


def test_empty_path_prints_the_whole_state_dict(capsys):
    out = inspect_output(capsys, "inspect.param=")
    net = runner.build_model(runner.compose([]))
    assert f"the whole model: Sequential\n{net}\nstate_dict: {net.state_dict()}" in out


def test_backward_shows_the_gradient_of_the_summed_output(capsys):
    """The chapter's Y = net(X).sum(); Y.backward(): d Y / d (last bias) is the batch size,
    and the first weight's gradient is a real one (the ReLU's dead units give zero rows)."""
    assert ".grad: None" in inspect_output(capsys, "inspect.param=2.bias")
    out = inspect_output(capsys, "inspect.param=2.bias", "inspect.backward=true")
    assert ".grad: tensor([2.])" in out
    out = inspect_output(capsys, "inspect.param=2.bias", "inspect.backward=true",
                         "inspect.batch_size=5")  # fmt: skip
    assert ".grad: tensor([5.])" in out
    out = inspect_output(capsys, "inspect.param=0.weight", "inspect.backward=true")
    grad = out.split(".grad: ", 1)[1].split("\n\n", 1)[0]
    assert grad.startswith("tensor([[") and grad.count("[") == 9  # (8, 4) values, not None


def test_djl_edition_tree_shapes(capsys):
    out = inspect_output(capsys, "model=rgnet_djl")
    assert "(0): Linear(in_features=4, out_features=32, bias=True) -> (2, 32)" in out
    assert "(1): Linear(in_features=16, out_features=10, bias=True) -> (2, 10)" in out
    assert out.count("Sequential(2, 16) {") == 3  # blocks 1-3 take the 16 outputs of the previous


def test_probe_tells_vanishing_from_stable_with_depth(capsys):
    normal = inspect_output(capsys, "model=deep_relu", "init=normal")
    kaiming = inspect_output(capsys, "model=deep_relu", "init=kaiming")
    assert "vanishing)" in normal.split("activation std, first -> last layer:")[1].splitlines()[0]
    assert "stable)" in kaiming.split("activation std, first -> last layer:")[1].splitlines()[0]


def test_probe_gradient_column_is_the_backpropagated_signal():
    from runner.probe import example_input, record_calls

    net = runner.build_model(runner.compose([]))
    x = example_input(net, (4,), 64, torch.Generator().manual_seed(1))
    calls = record_calls(net, x, backward=True)
    cotangent = torch.randn(64, 1, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(calls[2].grad, cotangent)  # the output layer gets the cotangent
    assert torch.allclose(calls[1].grad, cotangent @ net[2].weight.detach())  # through W2
    relu_mask = (calls[0].output > 0).float()
    assert torch.allclose(calls[0].grad, (cotangent @ net[2].weight.detach()) * relu_mask)


def test_inspect_on_conv_batchnorm_and_embedding_models(tmp_path, capsys):
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "conv.yaml").write_text(
        "# conv, batchnorm\nlayers: [{type: conv2d, out_channels: 4, kernel_size: 3}, batchnorm2d, relu, flatten,"
        " {type: linear, out_features: 1}]\n"
    )
    (tmp_path / "model" / "tokens.yaml").write_text(
        "# embedding first\nlayers: [{type: embedding, num_embeddings: 11, embedding_dim: 3}, flatten,"
        " {type: linear, out_features: 1}]\n"
    )
    main(["--config-dir", str(tmp_path), "model=conv", "data.in_shape=[2,5,5]"])
    out = capsys.readouterr().out
    assert re.search(r"^  \(1\): BatchNorm2d\(4, .*\) -> \(2, 4, 3, 3\)$", out, re.M)
    assert "(3): Flatten(start_dim=1, end_dim=-1) -> (2, 36)" in out and "nan" not in out
    main(["--config-dir", str(tmp_path), "model=tokens", "data.in_shape=[6]"])
    out = capsys.readouterr().out
    assert "(0): Embedding(11, 3) -> (2, 6, 3)" in out and "(2): Linear(in_features=18" in out


def test_find_path_counts_by_position_and_names():
    rgnet = runner.build_model(runner.compose(["model=rgnet"]))
    assert report.find_path(rgnet, "0.1.0.bias") is rgnet[0][1][0].bias
    assert report.find_path(rgnet, "0.block 1.0.bias") is rgnet[0][1][0].bias
    with pytest.raises(runner.ConfigError, match="did you mean"):
        report.find_path(rgnet, "0.block 1.0.bais")
    assert report.find_path(rgnet, "-1") is rgnet[-1]  # net[-1]
    assert report.find_path(rgnet, "0.-4") is rgnet[0][0]
    assert report.find_path(rgnet, "") is rgnet
    for bad in ("-3", "0.-5", "0.4"):
        with pytest.raises(runner.ConfigError, match="no module or parameter"):
            report.find_path(rgnet, bad)


def test_find_path_takes_a_childs_name_before_a_position():
    """Paths are names, as in state_dict keys and init and tying globs: a child named "1"
    is "1" wherever it stands; a position is used only where no child has that name."""
    from collections import OrderedDict

    from torch import nn

    net = nn.Sequential(
        OrderedDict([("stem", nn.Linear(2, 2)), ("2", nn.ReLU()), ("1", nn.Tanh())])
    )
    assert isinstance(report.find_path(net, "1"), nn.Tanh)  # the child "1", not net[1]
    assert isinstance(report.find_path(net, "2"), nn.ReLU)
    assert isinstance(report.find_path(net, "0"), nn.Linear)  # no child "0": position 0


def test_probe_leaves_model_and_rng_untouched():
    from runner.probe import example_input, record_calls

    net = runner.build_model(runner.compose(["model=deep_mlp", "tying=hidden"]))
    before = {k: v.clone() for k, v in net.state_dict().items()}
    torch.manual_seed(9)
    expected = torch.rand(2)
    torch.manual_seed(9)
    calls = record_calls(net, example_input(net, (4,), 8, torch.Generator()), backward=True)
    assert torch.equal(torch.rand(2), expected)
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    assert all(p.grad is None for p in net.parameters())
    assert [c.path for c in calls] == [str(i) for i in range(7)]
    assert all(c.grad is not None for c in calls)


@pytest.mark.slow
def test_cli_runs_from_any_folder_writes_nothing_and_takes_config_dir(tmp_path):
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "mine.yaml").write_text(
        "# my net\nlayers:\n  - {type: linear, out_features: 3}\n  - {type: gelu}\n"
    )
    before = set(tmp_path.rglob("*"))
    result = run_cli("runner.inspect", "--config-dir", str(tmp_path), "model=mine", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "(1): GELU(approximate='none') -> (2, 3)" in result.stdout
    assert "parameters: 15 unique, 15 total" in result.stdout
    assert set(tmp_path.rglob("*")) == before


@pytest.mark.slow
def test_cli_help_shows_examples():
    result = run_cli("runner.inspect", "--help")
    assert result.returncode == 0
    assert "inspect.param=0.1.0.bias" in result.stdout and "--config-dir" in result.stdout


def test_probe_keeps_outputs_and_gradients_before_an_in_place_relu():
    """ReLU(inplace=True) overwrites the Linear's output: the probe reports the values and
    the gradient of what the Linear returned, as for a ReLU that is not in place."""
    from torch import nn

    from runner.probe import record_calls

    torch.manual_seed(0)
    in_place = nn.Sequential(nn.Linear(4, 8), nn.ReLU(inplace=True), nn.Linear(8, 1))
    plain = nn.Sequential(in_place[0], nn.ReLU(), in_place[2])
    x = torch.randn(16, 4)
    ours, theirs = record_calls(in_place, x, backward=True), record_calls(plain, x, backward=True)
    assert (ours[0].output < 0).any()
    for a, b in zip(ours, theirs, strict=True):
        assert torch.equal(a.output, b.output) and torch.equal(a.grad, b.grad), a.path


def test_backward_without_a_path_is_a_clear_error():
    with pytest.raises(SystemExit) as exit_info:
        main(["inspect.backward=true"])
    assert exit_info.value.code == 2
