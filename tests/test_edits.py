"""init.edits: the chapter's direct edits of parameter values, bit for bit with the
hand-written `param.data += 1`, after init and tying."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import runner


def chapter_init(m: nn.Module) -> None:
    """The chapter's custom init (conf/init/custom.yaml) on the weights, as written by hand."""
    for name, param in m.named_parameters():
        if "weight" in name:
            with torch.no_grad():
                param.uniform_(-10, 10)
                param *= param.abs() >= 5


def assert_same(net: nn.Module, hand: nn.Module) -> None:
    ours, theirs = net.state_dict(), hand.state_dict()
    assert list(ours) == list(theirs)
    for key in ours:
        assert torch.equal(ours[key], theirs[key]), key


def chapter_mlp() -> nn.Sequential:
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 1))


def test_init_direct_is_the_chapters_plus_one_and_42():
    net = runner.build_model(runner.compose(["init=direct"]))
    torch.manual_seed(0)
    hand = chapter_mlp()
    chapter_init(hand)
    hand[0].weight.data[:] += 1
    hand[0].weight.data[0, 0] = 42
    assert_same(net, hand)
    assert net[0].weight[0, 0] == 42 and net[0].weight.requires_grad


def test_djl_addi_divi_set_and_every_bias_plus_one():
    edits = ("init.edits=[{params: 0.weight, add: 7}, {params: 0.weight, div: 9}, "
             "{params: 0.weight, index: [0, 0], set: 2020}, {params: '*bias', add: 1}, "
             "{params: 2.weight, index: -1, mul: -2}, {params: 2.bias, sub: 0.5}]")  # fmt: skip
    net = runner.build_model(runner.compose(["init=constant", "init.val=0", edits]))
    hand = chapter_mlp()
    with torch.no_grad():
        for param in hand.parameters():  # init_constant with val 0: weights 0, biases 0
            param.zero_()
        w = hand[0].weight
        w.add_(7)
        w.div_(9)
        w[0, 0] = 2020
        for name, param in hand.named_parameters():
            if "bias" in name:
                param += 1
        hand[2].weight[-1] *= -2
        hand[2].bias -= 0.5
    assert_same(net, hand)
    assert net[0].weight[1, 1].item() == torch.tensor(7.0).div(9).item()  # DJL's 0.7777778


def test_an_edit_of_a_tied_name_changes_the_one_tensor_once():
    """Edits run after tying: the shared tensor is edited once, whichever names match, as a
    loop over `net.parameters()` would; a name that tying replaced still reaches it."""
    cfg = ["model=deep_mlp", "tying=hidden", "init=constant", "init.val=1"]
    net = runner.build_model(runner.compose([*cfg, "init.edits=[{params: '*weight', add: 1}]"]))
    assert net[2] is net[4]
    assert torch.all(net[2].weight == 2) and torch.all(net[0].weight == 2)
    net = runner.build_model(runner.compose([*cfg, "init.edits=[{params: 4.weight, mul: 3}]"]))
    assert torch.all(net[2].weight == 3) and torch.all(net[6].weight == 1)


def test_inspect_shows_each_edit_after_the_rule(capsys):
    from runner.inspect import main

    main(["init=direct", "model=deep_mlp", "tying=hidden", "init.edits=[{params: 4.bias, add: 1}]"])
    out = capsys.readouterr().out
    assert "zeroed_uniform(bound=10.0, threshold=5.0) " in out
    rows = [line for line in out.splitlines() if line.startswith(("2.bias ", "4.bias "))]
    assert len(rows) == 2 and all("PyTorch default + add(1)" in row for row in rows)


def test_edits_draw_nothing():
    """Edits use no random numbers: every tensor but the edited one keeps its values."""
    plain = runner.build_model(runner.compose(["init=custom"]))
    edited = runner.build_model(runner.compose(["init=direct"]))
    assert torch.equal(plain[2].weight, edited[2].weight)
    assert torch.equal(plain[0].bias, edited[0].bias)


@pytest.mark.parametrize(
    ("edits", "words"),
    [
        ("[{params: 0.weight, add: 1, set: 2}]", "give exactly one operation of add, sub, mul, div, set, got ['add', 'set']"),
        ("[{params: 0.weight}]", "give exactly one operation"),
        ("[{params: 0.wieght, add: 1}]", "params '0.wieght' matches no parameter; parameters are: 0.weight"),
        ("[{params: 0.weight, ad: 1}]", "unknown key 'ad'; valid: params, modules, optional, index, add"),
        ("[{params: 0.weight, add: abc}]", "add must be a number, got 'abc'"),
        ("[{params: 0.weight, add: true}]", "add must be a number, got True"),
        ("[{params: 0.weight, div: 0}]", "div must not be 0"),
        ("[{params: 0.weight, mul: inf}]", "mul must be a finite number, got inf"),
        ("[{params: 0.weight, set: nan}]", "set must be a finite number, got nan"),
        ("[{params: 0.weight, index: [9, 0], set: 2}]", "index [9, 0] is outside 0.weight of shape [8, 4]"),
        ("[{params: '*bias', index: [0, 0], set: 2}]", "index [0, 0] is outside 0.bias of shape [8]"),
        ("[{params: 0.weight, index: x, set: 2}]", "index must be a list of integers"),
        ("[{params: 0.weight, modules: [Conv2d], add: 1}]", "modules 'Conv2d' is not a class of this model's layers"),
    ],
)  # fmt: skip
def test_bad_edits_are_one_line_naming_the_entry(edits, words):
    with pytest.raises(runner.ConfigError) as error:
        runner.build_model(runner.compose([f"init.edits={edits}"]))
    message = str(error.value)
    assert "\n" not in message and "init/default.yaml: edits[0]: " in message
    assert words in message


def test_an_optional_edit_may_match_nothing():
    net = runner.build_model(
        runner.compose(["init.edits=[{params: '*.running_mean', add: 1, optional: true}]"])
    )
    assert_same(net, runner.build_model(runner.compose([])))
