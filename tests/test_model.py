"""Architecture from config: the built tree equals the same net written by hand."""

from __future__ import annotations

import torch
from torch import nn

import runner
from runner.layers import MyLinear


def block1() -> nn.Sequential:
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 4), nn.ReLU())


def block2() -> nn.Sequential:
    net = nn.Sequential()
    for i in range(4):
        net.add_module(f"block {i}", block1())
    return net


class ChapterMLP(nn.Module):
    """The chapter's save/load MLP class."""

    def __init__(self) -> None:
        super().__init__()
        self.hidden = nn.Linear(20, 256)
        self.output = nn.Linear(256, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.output(torch.relu(self.hidden(x)))


def hand_written(name: str) -> nn.Module:
    """The nets of the chapter (both editions), written by hand."""
    if name == "mlp":
        return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 1))
    if name == "rgnet":
        return nn.Sequential(block2(), nn.Linear(4, 1))
    if name == "rgnet_djl":
        djl_block1 = lambda: nn.Sequential(  # noqa: E731
            nn.Linear(4, 32), nn.ReLU(), nn.Linear(32, 16), nn.ReLU()
        )
        first = djl_block1()
        rest = [nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 16), nn.ReLU())
                for _ in range(3)]  # fmt: skip
        return nn.Sequential(nn.Sequential(first, *rest), nn.Linear(16, 10))
    if name == "deep_mlp":
        return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(),
                             nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 1))  # fmt: skip
    if name == "deep_relu":
        hidden = [nn.Sequential(nn.Linear(4 if i == 0 else 256, 256), nn.ReLU()) for i in range(10)]
        return nn.Sequential(*hidden, nn.Linear(256, 1))
    if name == "mlp_named":
        return ChapterMLP()
    if name == "my_linear":
        return nn.Sequential(MyLinear(4, 8), MyLinear(8, 1))
    raise KeyError(name)


def shapes(module: nn.Module) -> dict[str, tuple]:
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


MODELS = ["mlp", "rgnet", "rgnet_djl", "deep_mlp", "deep_relu", "mlp_named", "my_linear"]


def overrides_for(name: str) -> list[str]:
    return [f"model={name}"] + (["data.in_features=20"] if name == "mlp_named" else [])


def test_state_dict_keys_and_shapes_equal_hand_written():
    for name in MODELS:
        built = runner.build_model(runner.compose(overrides_for(name)))
        assert shapes(built) == shapes(hand_written(name)), name
        assert list(built.state_dict()) == list(hand_written(name).state_dict()), name


def test_state_dict_loads_strictly_both_ways_and_gives_same_outputs(tmp_path):
    for name in MODELS:
        built = runner.build_model(runner.compose(overrides_for(name)))
        path = tmp_path / f"{name}.params"
        torch.save(built.state_dict(), path)  # the chapter's torch.save(net.state_dict(), ...)
        clone = hand_written(name)
        clone.load_state_dict(torch.load(path, weights_only=True), strict=True)
        x = torch.randn(3, 20 if name == "mlp_named" else 4)
        assert torch.equal(built(x), clone(x)), name
        torch.save(clone.state_dict(), path)
        again = runner.build_model(runner.compose(overrides_for(name) + ["seed=7"]))
        again.load_state_dict(torch.load(path, weights_only=True), strict=True)
        assert torch.equal(again(x), clone(x)), name


def test_default_init_equals_hand_written_under_the_same_seed():
    built = runner.build_model(runner.compose(["model=rgnet", "seed=3"]))
    torch.manual_seed(3)
    reference = hand_written("rgnet")
    for (name, a), (_, b) in zip(
        built.state_dict().items(), reference.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name


def test_build_leaves_callers_rng_untouched():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    runner.build_model(runner.compose(["model=deep_mlp", "init=normal"]))
    assert torch.equal(torch.rand(3), expected)


def test_chapter_parameter_access_by_index_and_name():
    rgnet = runner.build_model(runner.compose(["model=rgnet"]))
    # rgnet[0][1][0].bias: block2's second block1, its first Linear
    assert rgnet[0][1][0].bias is rgnet.get_parameter("0.block 1.0.bias")
    assert type(rgnet[0][1][0].bias) is nn.Parameter
    net = runner.build_model(runner.compose([]))
    assert list(net[2].state_dict()) == ["weight", "bias"]
    assert [n for n, _ in net.named_parameters()] == ["0.weight", "0.bias", "2.weight", "2.bias"]
    assert net(torch.rand(2, 4)).shape == (2, 1)


def test_input_sizes_are_inferred_for_conv_norm_and_embedding(tmp_path):
    conf = tmp_path / "model"
    conf.mkdir()
    (conf / "conv.yaml").write_text(
        "# a small conv net\n"
        "layers:\n"
        "  - {type: conv2d, out_channels: 6, kernel_size: 3}\n"
        "  - {type: batchnorm2d}\n"
        "  - relu\n"
        "  - {type: flatten}\n"
        "  - {type: layernorm}\n"
        "  - {type: linear, out_features: 5}\n"
    )
    (conf / "seq.yaml").write_text(
        "# tokens through an embedding and a conv1d over time\n"
        "layers:\n"
        "  - {type: embedding, num_embeddings: 50, embedding_dim: 6}\n"
        "  - {type: Flatten}\n"
        "  - {type: Unflatten, dim: 1, unflattened_size: [1, 42]}\n"
        "  - {type: conv1d, out_channels: 3, kernel_size: 5}\n"
        "  - {type: batchnorm1d}\n"
    )
    conv = runner.build_model(
        runner.compose(["model=conv", "data.in_shape=[3,8,8]"], config_dir=tmp_path)
    )
    assert shapes(conv)["0.weight"] == (6, 3, 3, 3)
    assert shapes(conv)["1.weight"] == (6,)
    assert shapes(conv)["4.weight"] == (6 * 6 * 6,)
    assert shapes(conv)["5.weight"] == (5, 216)
    assert conv(torch.randn(2, 3, 8, 8)).shape == (2, 5)
    seq = runner.build_model(
        runner.compose(["model=seq", "data.in_shape=[7]"], config_dir=tmp_path)
    )
    assert shapes(seq)["3.weight"] == (3, 1, 5)
    assert shapes(seq)["4.weight"] == (3,)
    assert seq(torch.randint(0, 50, (2, 7))).shape == (2, 3, 38)


def test_model_variables_set_width_and_depth():
    net = runner.build_model(runner.compose(["model=deep_relu", "model.depth=2", "model.width=16"]))
    assert shapes(net)["1.0.weight"] == (16, 16) and shapes(net)["2.weight"] == (1, 16)
    assert "3.weight" not in shapes(net)


def test_shape_inference_leaves_batchnorm_statistics_untouched(tmp_path):
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "bn.yaml").write_text(
        "# linear then batchnorm\nlayers: [{type: linear, out_features: 3}, batchnorm1d]\n"
    )
    net = runner.build_model(runner.compose(["model=bn"], config_dir=tmp_path))
    assert net[1].num_batches_tracked.item() == 0
    assert torch.equal(net[1].running_mean, torch.zeros(3))


def test_blocks_nest_to_any_depth_and_repeat_names(tmp_path):
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "nest.yaml").write_text(
        "# blocks in blocks\n"
        "blocks:\n"
        "  a: [{type: linear, out_features: 3}, tanh]\n"
        "  b: [{type: a, repeat: 2, name: 'a{i}'}]\n"
        "  c: [{type: b}, {type: b, name: second}]\n"
        "layers: [{type: c, repeat: 2, name: 'c {i}'}, {type: linear, out_features: 2, name: head}]\n"
    )
    net = runner.build_model(runner.compose(["model=nest"], config_dir=tmp_path))
    keys = list(net.state_dict())
    assert keys[:2] == ["c 0.0.a0.0.weight", "c 0.0.a0.0.bias"]
    assert "c 1.second.a1.0.weight" in keys and keys[-1] == "head.bias"
    assert len(keys) == 2 * 2 * 2 * 2 + 2


def test_any_torch_nn_class_and_target_class():
    cfg = runner.compose(["model=my_linear"])
    net = runner.build_model(cfg)
    assert isinstance(net[0], MyLinear) and net[0].weight.shape == (4, 8)
    x = torch.randn(5, 4)
    net(x).sum().backward()  # MyLinear's weights are in the graph (unlike the book's .data)
    assert net[0].weight.grad is not None
