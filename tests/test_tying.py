"""Tied modules and parameters behave as the chapter's shared layers."""

from __future__ import annotations

import io

import torch
from torch import nn

import runner
from runner.tying import count_parameters


def tied_deep_mlp(*extra: str) -> nn.Module:
    return runner.build_model(runner.compose(["model=deep_mlp", "tying=hidden", *extra]))


def test_tied_members_are_one_object_and_a_change_shows_in_both():
    net = tied_deep_mlp()
    assert net[2] is net[4] and net[2].weight is net[4].weight
    assert bool((net[2].weight.data[0] == net[4].weight.data[0]).all())
    net[2].weight.data[0, 0] = 100  # the chapter's check that they are one object
    assert net[4].weight.data[0, 0] == 100


def test_owner_keeps_its_init():
    untied = runner.build_model(runner.compose(["model=deep_mlp", "seed=4"]))
    tied = tied_deep_mlp("seed=4")
    assert torch.equal(tied[4].weight, untied[2].weight)
    assert torch.equal(tied[6].weight, untied[6].weight)  # the others are untouched


def test_tied_net_is_the_untied_net_built_and_initialised_then_tied():
    """The hand-written recipe the README gives: every layer made (and initialised) in
    order under the seed as if untied, then the first member put at the other places. The
    second use's draws are made and dropped, so a tied and an untied run of one seed start
    from the same layers 0, 2 and 6, and differ only by the tie."""

    def init_normal(m: nn.Module) -> None:
        if type(m) is nn.Linear:
            nn.init.normal_(m.weight, mean=0, std=0.01)
            nn.init.zeros_(m.bias)

    for init in ("default", "normal"):
        net = tied_deep_mlp(f"init={init}", "seed=3")
        torch.manual_seed(3)
        hand = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(),
                             nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 1))  # fmt: skip
        if init == "normal":
            hand.apply(init_normal)
        hand[4] = hand[2]
        ours, theirs = net.state_dict(), hand.state_dict()
        assert list(ours) == list(theirs)
        assert all(torch.equal(ours[k], theirs[k]) for k in ours), init


def test_chapter_twin_linear_gradient_adds_up():
    net = runner.build_model(runner.compose(
        ["model=twin_linear", "tying=twin", "data.in_features=1", "init=constant", "init.val=3"]
    ))  # fmt: skip
    assert net[0] is net[1]
    y = net(torch.ones(1, 1)).sum()
    assert y.item() == 9.0
    y.backward()
    assert net[0].weight.grad.item() == 6.0  # 3 from each use


def test_tied_gradient_is_the_sum_over_uses():
    tied = tied_deep_mlp("init=normal", "init.rules.0.std=0.5")
    untied = runner.build_model(runner.compose(["model=deep_mlp"]))
    untied.load_state_dict(tied.state_dict())  # same values, separate tensors
    x = torch.randn(16, 4)
    tied(x).pow(2).mean().backward()
    untied(x).pow(2).mean().backward()
    expected = untied[2].weight.grad + untied[4].weight.grad
    assert torch.allclose(tied[2].weight.grad, expected, atol=1e-7)
    assert torch.allclose(tied[2].bias.grad, untied[2].bias.grad + untied[4].bias.grad, atol=1e-7)


def test_parameters_once_optimizer_sees_no_duplicate_state_dict_keeps_names():
    net = tied_deep_mlp()
    params = list(net.parameters())
    assert len(params) == len({id(p) for p in params}) == 6
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)  # would hold a duplicate twice
    assert sum(len(g["params"]) for g in optimizer.param_groups) == 6
    assert list(net.state_dict()) == [f"{i}.{k}" for i in (0, 2, 4, 6) for k in ("weight", "bias")]


def test_save_and_load_keep_the_sharing():
    net = tied_deep_mlp()
    buffer = io.BytesIO()
    torch.save(net.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    assert state["2.weight"].data_ptr() == state["4.weight"].data_ptr()
    buffer = io.BytesIO()
    torch.save(net, buffer)  # the whole module pickles with its sharing
    buffer.seek(0)
    again = torch.load(buffer, weights_only=False)
    assert again[2] is again[4]


def test_counts_report_unique_and_total():
    assert count_parameters(tied_deep_mlp()) == (121, 193)
    untied = runner.build_model(runner.compose(["model=deep_mlp"]))
    assert count_parameters(untied) == (193, 193)


def test_parameter_level_tying_shares_weights_only():
    net = runner.build_model(runner.compose(["model=deep_mlp", "tying=hidden_weight"]))
    assert net[2] is not net[4]
    assert net[2].weight is net[4].weight and net[2].bias is not net[4].bias
    assert count_parameters(net) == (193 - 64, 193)


def test_djl_shared_block():
    net = runner.build_model(runner.compose(
        ["model=shared_block", "tying=shared_block", "data.in_features=20"]
    ))  # fmt: skip
    assert net[2] is net[3]
    assert torch.equal(net[2][0].weight, net[3][0].weight)
    assert net(torch.empty(2, 20).uniform_(-10, 10)).shape == (2, 10)


def test_tied_model_loads_strictly_into_the_hand_written_shared_net(tmp_path):
    net = tied_deep_mlp("init=normal")
    shared = nn.Linear(8, 8)
    hand = nn.Sequential(
        nn.Linear(4, 8), nn.ReLU(), shared, nn.ReLU(), shared, nn.ReLU(), nn.Linear(8, 1)
    )
    torch.save(net.state_dict(), tmp_path / "tied.params")
    hand.load_state_dict(torch.load(tmp_path / "tied.params", weights_only=True), strict=True)
    x = torch.randn(3, 4)
    assert torch.equal(net(x), hand(x)) and hand[2] is hand[4]


def test_a_glob_ties_the_outermost_matches(tmp_path):
    (tmp_path / "tying").mkdir()
    (tmp_path / "tying" / "all_blocks.yaml").write_text(
        "# every block1 is one\ngroups:\n  - ['0.block *']\n"
    )
    net = runner.build_model(
        runner.compose(["model=rgnet", "tying=all_blocks"], config_dir=tmp_path)
    )
    assert net[0][0] is net[0][1] is net[0][2] is net[0][3]
    assert count_parameters(net) == (40 + 36 + 5, 4 * (40 + 36) + 5)


def test_glob_groups_tie_every_match(tmp_path):
    (tmp_path / "tying").mkdir()
    (tmp_path / "tying" / "blocks.yaml").write_text(
        "# the second Linear of every block1 is one module\ngroups:\n  - ['0.block *.2']\n"
    )
    net = runner.build_model(runner.compose(["model=rgnet", "tying=blocks"], config_dir=tmp_path))
    assert net[0][0][2] is net[0][1][2] is net[0][3][2]
    assert net[0][0][0] is not net[0][1][0]
