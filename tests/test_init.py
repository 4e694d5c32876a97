"""Init rules and schemes: statistics against the formulas, the chapter's examples bit for bit."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import runner

WIDE = ["model=deep_relu", "model.depth=2", "model.width=512", "data.in_features=256"]


def built_with(rules: str, *extra: str) -> nn.Module:
    """The model built with `init.rules` given as a Hydra override list."""
    return runner.build_model(runner.compose([*WIDE, f"init.rules={rules}", *extra]))


def weight(net: nn.Module) -> torch.Tensor:
    """The first hidden layer's weight: 512 x 256 (fan_in 256, fan_out 512)."""
    return net.get_parameter("0.0.weight").detach()


def test_xavier_uniform_bound_with_gain_by_name():
    w = weight(built_with("[{params: '*.weight', scheme: xavier_uniform, gain: relu}]"))
    bound = math.sqrt(2) * math.sqrt(6 / (256 + 512))
    assert w.abs().max() <= bound
    assert w.abs().max() > 0.99 * bound
    assert w.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.02)


def test_xavier_normal_std():
    w = weight(built_with("[{params: '*.weight', scheme: xavier_normal, gain: 2.0}]"))
    assert w.std().item() == pytest.approx(2.0 * math.sqrt(2 / (256 + 512)), rel=0.02)


def test_kaiming_normal_std_is_gain_over_sqrt_fan_in():
    net = built_with("[{params: '*.weight', scheme: kaiming_normal, nonlinearity: relu}]")
    assert weight(net).std().item() == pytest.approx(math.sqrt(2) / math.sqrt(256), rel=0.02)
    assert weight(net).mean().item() == pytest.approx(0, abs=0.002)
    fan_out = built_with(
        "[{params: '*.weight', scheme: kaiming_normal, mode: fan_out, nonlinearity: tanh}]"
    )
    assert weight(fan_out).std().item() == pytest.approx((5 / 3) / math.sqrt(512), rel=0.02)


def test_kaiming_uniform_bound():
    w = weight(built_with("[{params: '*.weight', scheme: kaiming_uniform, a: 0.2}]"))
    gain = math.sqrt(2 / (1 + 0.2**2))  # leaky_relu with slope a
    bound = gain * math.sqrt(3 / 256)
    assert w.abs().max() <= bound and w.abs().max() > 0.99 * bound


def test_orthogonal_rows_are_orthonormal_times_gain():
    net = built_with("[{params: '*.weight', scheme: orthogonal, gain: 3.0}]", "model.width=64")
    w = weight(net)  # 64 x 256: rows <= columns
    assert torch.allclose(w @ w.T, 9.0 * torch.eye(64), atol=1e-4)


def test_constants_are_exact():
    net = runner.build_model(runner.compose(["init=constant"]))  # DJL's ConstantInitializer(42)
    assert torch.equal(net[0].weight, torch.full((8, 4), 42.0))
    assert torch.equal(net[2].bias, torch.zeros(1))
    net = runner.build_model(runner.compose(["init=constant", "init.val=1"]))  # init_constant
    assert torch.equal(net[2].weight, torch.ones(1, 8))
    net = built_with("[{scheme: ones}, {params: '*.bias', scheme: zeros}]")
    assert torch.equal(weight(net), torch.ones(512, 256))
    assert torch.equal(net.get_parameter("2.bias"), torch.zeros(1))


def test_custom_scheme_values_are_zero_or_between_five_and_ten():
    net = runner.build_model(runner.compose([*WIDE, "init=custom"]))
    for name, param in net.named_parameters():
        if name.endswith("weight"):
            magnitude = param.detach().abs()
            assert bool(((magnitude == 0) | ((magnitude >= 5) & (magnitude <= 10))).all()), name
    zero_fraction = (weight(net) == 0).float().mean().item()
    assert zero_fraction == pytest.approx(0.5, abs=0.02)  # P(|U(-10,10)| < 5) = 1/2


def test_normal_uniform_and_truncated_normal():
    w = weight(built_with("[{scheme: normal, mean: 1.0, std: 0.01}]"))
    assert w.mean().item() == pytest.approx(1.0, abs=1e-3)
    assert w.std().item() == pytest.approx(0.01, rel=0.02)
    w = weight(built_with("[{scheme: uniform, a: -3.0, b: -1.0}]"))
    assert w.min() >= -3.0 and w.max() <= -1.0 and w.mean().item() == pytest.approx(-2.0, abs=0.01)
    w = weight(built_with("[{scheme: trunc_normal, std: 1.0, a: -0.5, b: 0.25}]"))
    assert w.min() >= -0.5 and w.max() <= 0.25
    w = weight(built_with("[{scheme: trunc_normal, mean: 0.0, std: 1.0, a: -2.0, b: 2.0}]"))
    assert w.std().item() == pytest.approx(0.87962566103423978, rel=0.02)  # N(0,1) cut at +-2
    assert w.mean().item() == pytest.approx(0.0, abs=0.01)
    assert w.abs().max() > 1.95


def test_sparse_zeroes_a_fraction_of_each_column():
    w = weight(built_with("[{params: '*.weight', scheme: sparse, sparsity: 0.25, std: 0.1}]"))
    zeros_per_column = (w == 0).sum(dim=0)
    assert bool((zeros_per_column == math.ceil(0.25 * 512)).all())


def test_eye_and_dirac(tmp_path):
    net = built_with("[{params: '1.0.weight', scheme: eye}]")
    assert torch.equal(net.get_parameter("1.0.weight"), torch.eye(512))
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "conv.yaml").write_text(
        "# a conv that can pass its input through\n"
        "layers: [{type: conv1d, out_channels: 4, kernel_size: 3, padding: 1}]\n"
    )
    conv = runner.build_model(runner.compose(
        ["model=conv", "data.in_shape=[4,9]",
         "init.rules=[{params: '*.weight', scheme: dirac}, {params: '*.bias', scheme: zeros}]"],
        config_dir=tmp_path,
    ))  # fmt: skip
    x = torch.randn(2, 4, 9)
    assert torch.allclose(conv(x), x)


@pytest.mark.parametrize(
    ("distribution", "mode", "fan"),
    [("truncated_normal", "fan_in", 256), ("normal", "fan_out", 512), ("uniform", "fan_avg", 384)],
)
def test_variance_scaling_variance_is_scale_over_fan(distribution, mode, fan):
    rule = f"[{{params: '*.weight', scheme: variance_scaling, scale: 2.0, mode: {mode}, distribution: {distribution}}}]"
    w = weight(built_with(rule))
    assert w.var().item() == pytest.approx(2.0 / fan, rel=0.03)
    sigma = math.sqrt(2.0 / fan)
    if distribution == "truncated_normal":  # cut at 2 std of the widened normal
        assert w.abs().max() <= 2 * sigma / 0.87962566103423978 + 1e-6
    elif distribution == "uniform":
        assert w.abs().max() <= math.sqrt(3) * sigma
    else:
        assert w.abs().max() > 3 * sigma  # an untruncated normal of 131k draws goes past 3 std


def test_lecun_schemes():
    w = weight(built_with("[{params: '*.weight', scheme: lecun_normal}]"))
    assert w.var().item() == pytest.approx(1 / 256, rel=0.03)
    sigma = math.sqrt(1 / 256) / 0.87962566103423978
    assert w.abs().max() <= 2 * sigma + 1e-6
    w = weight(built_with("[{params: '*.weight', scheme: lecun_uniform}]"))
    assert w.abs().max() <= math.sqrt(3 / 256)
    assert w.var().item() == pytest.approx(1 / 256, rel=0.03)


def test_last_matching_rule_wins_and_unmatched_keep_pytorch_default():
    net = runner.build_model(runner.compose([
        "model=deep_mlp", "seed=5",
        "init.rules=[{scheme: ones}, {params: '2.*', scheme: zeros}, {params: '0.bias', modules: [linear], scheme: constant, val: 3}]",
    ]))  # fmt: skip
    assert torch.equal(net[0].weight, torch.ones(8, 4)) and torch.equal(net[4].bias, torch.ones(8))
    assert torch.equal(net[0].bias, torch.full((8,), 3.0))
    assert torch.equal(net[2].weight, torch.zeros(8, 8)) and torch.equal(
        net[2].bias, torch.zeros(8)
    )

    partial = runner.build_model(runner.compose(["model=deep_mlp", "seed=5",
                                                 "init.rules=[{params: '6.*', scheme: zeros}]"]))  # fmt: skip
    default = runner.build_model(runner.compose(["model=deep_mlp", "seed=5"]))
    torch.manual_seed(5)
    hand = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(),
                         nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 1))  # fmt: skip
    for name in ["0.weight", "0.bias", "2.weight", "4.bias"]:
        assert torch.equal(partial.get_parameter(name), hand.get_parameter(name)), name
        assert torch.equal(default.get_parameter(name), hand.get_parameter(name)), name


def test_same_seed_same_bits_other_seed_other_bits():
    def state(seed: int) -> dict:
        return runner.build_model(
            runner.compose(["model=rgnet", "init=xavier", f"seed={seed}"])
        ).state_dict()

    a, b, c = state(1), state(1), state(2)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["0.block 0.0.weight"], c["0.block 0.0.weight"])


def test_chapter_init_normal_bit_for_bit():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 1))

    def init_normal(m):
        if type(m) == nn.Linear:  # noqa: E721 (the chapter's own test)
            nn.init.normal_(m.weight, mean=0, std=0.01)
            nn.init.zeros_(m.bias)

    net.apply(init_normal)
    built = runner.build_model(runner.compose(["init=normal", "seed=0"]))
    for (name, a), (_, b) in zip(built.state_dict().items(), net.state_dict().items(), strict=True):
        assert torch.equal(a, b), name


def test_chapter_custom_init_bit_for_bit():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 1))

    def init_weight_(tensor):
        with torch.no_grad():
            tensor.uniform_(-10, 10)
            tensor *= (tensor.abs() >= 5).float()

    for name, param in net.named_parameters():
        if "weight" in name:
            init_weight_(param)
    built = runner.build_model(runner.compose(["init=custom", "seed=0"]))
    for (name, a), (_, b) in zip(built.state_dict().items(), net.state_dict().items(), strict=True):
        assert torch.equal(a, b), name


def test_djl_mixed_xavier_first_constant_one_last():
    torch.manual_seed(0)
    hand = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 1))
    nn.init.xavier_uniform_(hand[0].weight)
    nn.init.constant_(hand[2].weight, 1)
    net = runner.build_model(runner.compose(["init=mixed", "seed=0"]))
    for (name, a), (_, b) in zip(net.state_dict().items(), hand.state_dict().items(), strict=True):
        assert torch.equal(a, b), name


def test_target_callable_and_user_function(tmp_path, monkeypatch):
    net = runner.build_model(runner.compose(
        ["init.rules=[{params: '*.bias', _target_: torch.nn.init.constant_, val: 0.5}]"]
    ))  # fmt: skip
    assert torch.equal(net[0].bias, torch.full((8,), 0.5))
    (tmp_path / "my_inits.py").write_text(
        "import torch\n"
        "def init_weight_(tensor, low=-10.0):\n"
        "    with torch.no_grad():\n"
        "        tensor.uniform_(low, -low)\n"
        "        tensor *= (tensor.abs() >= 5).float()\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    net = runner.build_model(runner.compose(
        ["init.rules=[{params: '*weight', _target_: my_inits.init_weight_, low: -8.0}]"]
    ))  # fmt: skip
    values = net[0].weight.detach().abs()
    assert bool(((values == 0) | ((values >= 5) & (values <= 8))).all())


def test_default_scheme_restores_pytorch_init_for_chosen_parameters_only():
    net = runner.build_model(runner.compose(
        ["init.rules=[{scheme: zeros}, {params: '0.bias', scheme: default}]"]
    ))  # fmt: skip
    assert torch.equal(net[0].weight, torch.zeros(8, 4))  # reset_parameters did not touch it
    bias = net[0].bias.detach()
    assert bool((bias != 0).all()) and bias.abs().max() <= 1 / math.sqrt(4)


def test_gain_with_parameter():
    w = weight(
        built_with(
            "[{params: '*.weight', scheme: xavier_normal, gain: {nonlinearity: leaky_relu, param: 0.2}}]"
        )
    )
    gain = math.sqrt(2 / (1 + 0.2**2))
    assert w.std().item() == pytest.approx(gain * math.sqrt(2 / 768), rel=0.02)
