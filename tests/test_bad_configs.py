"""Every bad config fails before any work with one line naming the file or key and what is valid."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import run_cli, write_files

import runner

# A user's own config folder (used with --config-dir): name -> YAML text.
USER_FILES = {
    "model/typo.yaml": "# bad type\nlayers:\n  - {type: lineer, out_features: 8}\n",
    "model/unknown_block.yaml": "# bad block\nblocks:\n  block1: [relu]\nlayers: [{type: blok1}]\n",
    "model/loop.yaml": "# a block in itself\nblocks:\n  a: [{type: b}]\n  b: [{type: a}]\nlayers: [{type: a}]\n",
    "model/self.yaml": "# a block in itself\nblocks:\n  a: [relu, {type: a}]\nlayers: [{type: a}]\n",
    "model/no_out.yaml": "# missing out_features\nlayers:\n  - {type: linear}\n",
    "model/bad_arg.yaml": "# misspelt argument\nlayers:\n  - {type: linear, out_feature: 3}\n",
    "model/no_layers.yaml": "# forgot layers\nlayer:\n  - {type: relu}\n",
    "model/zero_repeat.yaml": "# repeat 0\nlayers:\n  - {type: relu, repeat: 0}\n",
    "model/misfit.yaml": "# explicit size that does not fit\nlayers:\n  - {type: linear, in_features: 5, out_features: 2}\n",
    "model/bad_target.yaml": "# not importable\nlayers:\n  - {_target_: mypkg.Nope}\n",
    "model/yaml_error.yaml": "# broken YAML\nlayers: [{type: linear, out_features: 3}\n",
    "init/bad_scheme.yaml": "# unknown scheme\nrules:\n  - {scheme: xaiver_uniform}\n",
    "init/neg_std.yaml": "# negative std\nrules:\n  - {scheme: normal, std: -0.1}\n",
    "init/sparsity.yaml": "# sparsity > 1\nrules:\n  - {params: '*.weight', scheme: sparse, sparsity: 1.5}\n",
    "init/bad_key.yaml": "# unknown argument\nrules:\n  - {scheme: normal, sigma: 0.1}\n",
    "init/no_match.yaml": "# a typo in params\nrules:\n  - {params: '0.wieght', scheme: zeros}\n",
    "init/bias_xavier.yaml": "# xavier on 1-D biases\nrules:\n  - {scheme: xavier_uniform}\n",
    "init/bad_gain.yaml": "# unknown nonlinearity\nrules:\n  - {params: '*.weight', scheme: xavier_uniform, gain: relu6}\n",
    "init/no_val.yaml": "# constant needs val\nrules:\n  - {scheme: constant}\n",
    "tying/no_match.yaml": "# a typo in a path\ngroups:\n  - ['2', '44']\n",
    "tying/shapes.yaml": "# different shapes\ngroups:\n  - ['0', '2']\n",
    "tying/types.yaml": "# different types\ngroups:\n  - ['1', '2']\n",
    "tying/twice.yaml": "# one path in two groups\ngroups:\n  - ['2', '4']\n  - ['4.weight', '2.weight']\n",
    "tying/single.yaml": "# one member only\ngroups:\n  - ['2']\n",
    "tying/mixed.yaml": "# a module and a parameter\ngroups:\n  - ['2', '4.weight']\n",
    "model/convs.yaml": "# two convs alike but for padding\nlayers:\n  - {type: conv2d, out_channels: 3, kernel_size: 3, padding: 1}\n  - {type: conv2d, out_channels: 3, kernel_size: 3}\n",
    "tying/convs.yaml": "# tie the two convs\ngroups:\n  - ['0', '1']\n",
    "model/bad_name.yaml": "# a template with another field\nlayers:\n  - {type: relu, repeat: 2, name: 'r{i}{n}'}\n",
    "model/emb_late.yaml": "# embedding after a float layer\nlayers:\n  - {type: linear, out_features: 3}\n  - {type: embedding, num_embeddings: 5, embedding_dim: 2}\n",
}

# (overrides, words the one-line message must hold)
CASES = {
    "unknown layer type": (
        ["model=typo"],
        ["model/typo.yaml", "layers[0]", "unknown layer type 'lineer'", "'linear'"],
    ),
    "unknown block": (
        ["model=unknown_block"],
        ["'blok1'", "blocks [block1]", "did you mean 'block1'"],
    ),
    "block recursion": (["model=loop"], ["model/loop.yaml", "uses itself", "a -> b -> a"]),
    "block uses itself": (["model=self"], ["blocks.a[1]", "uses itself (a -> a)"]),
    "missing layer argument": (
        ["model=no_out"],
        ["layers[0]", "missing required argument 'out_features'"],
    ),
    "unknown layer argument": (
        ["model=bad_arg"],
        ["no argument 'out_feature'", "did you mean 'out_features'"],
    ),
    "unknown model key": (
        ["model=no_layers"],
        ["model/no_layers.yaml", "unknown key 'model.layer'", "did you mean 'layers'"],
    ),
    "repeat zero": (["model=zero_repeat"], ["repeat must be an integer >= 1, got 0"]),
    "size that does not fit": (
        ["model=misfit"],
        ["layers[0]", "does not accept an input of shape (2, 4)"],
    ),
    "target not importable": (["model=bad_target"], ["cannot import _target_ 'mypkg.Nope'"]),
    "YAML syntax error": (
        ["model=yaml_error"],
        ["yaml_error.yaml: YAML syntax error", "(line 2, column 9)"],
    ),
    "unknown model option": (["model=mpl"], ["model=mpl", "valid:", "did you mean 'mlp'"]),
    "unknown init option": (["init=xavir"], ["init=xavir", "did you mean 'xavier'"]),
    "unknown scheme": (
        ["init=bad_scheme"],
        ["init/bad_scheme.yaml", "rules[0]", "unknown scheme 'xaiver_uniform'", "'xavier_uniform'"],
    ),
    "negative std": (["init=neg_std"], ["rules[0]", "std must be a number >= 0, got -0.1"]),
    "sparsity outside [0, 1]": (["init=sparsity"], ["sparsity must be in [0, 1], got 1.5"]),
    "unknown scheme argument": (["init=bad_key"], ["no argument 'sigma'", "mean, std"]),
    "init rule matches nothing": (
        ["init=no_match"],
        ["init/no_match.yaml", "params '0.wieght' matches no parameter", "'0.weight'"],
    ),
    "scheme of wrong rank": (
        ["init=bias_xavier"],
        ["needs a tensor with at least 2 dims", "0.bias", "'*.weight'"],
    ),
    "unknown gain": (["init=bad_gain"], ["unknown nonlinearity 'relu6'", "'relu'"]),
    "missing scheme argument": (["init=no_val"], ["scheme constant needs argument 'val'"]),
    "tying entry matches nothing": (
        ["model=deep_mlp", "tying=no_match"],
        ["tying/no_match.yaml", "'44' matches no module", "did you mean '4'"],
    ),
    "tied shapes differ": (
        ["model=deep_mlp", "tying=shapes"],
        ["cannot tie '0' and '2'", "same type, settings and shapes"],
    ),
    "tied types differ": (
        ["model=deep_mlp", "tying=types"],
        ["cannot tie '1' and '2'", "ReLU", "Linear"],
    ),
    "one path in two groups": (
        ["model=deep_mlp", "tying=twice"],
        ["groups[1]", "already tied in", "groups[0]"],
    ),
    "group of one": (["model=deep_mlp", "tying=single"], ["two or more members"]),
    "module and parameter mixed": (
        ["model=deep_mlp", "tying=mixed"],
        ["mixes module paths and parameter paths"],
    ),
    "tied settings differ": (
        ["model=convs", "tying=convs", "data.in_shape=[3,6,6]"],
        ["cannot tie '0' and '1'", "padding=(1, 1)", "same type, settings and shapes"],
    ),
    "rule only on tied-away parameters": (
        ["model=deep_mlp", "tying=hidden", "init.rules=[{params: '4.*', scheme: zeros}]"],
        [
            "rules[0]: sets only 4.weight, 4.bias, which tying replaces by",
            "write the rule for the owner",
        ],
    ),
    "_target_ init that fails": (
        ["init.rules=[{_target_: torch.nn.init.xavier_uniform_}]"],
        ["rules[0]: _target_ failed on 0.bias (shape [8])", "fewer than 2 dimensions"],
    ),
    "trunc_normal with std 0": (
        ["init.rules=[{params: '*.weight', scheme: trunc_normal, std: 0}]"],
        ["std must be a number > 0, got 0"],
    ),
    "kaiming with a gain-only name": (
        ["init.rules=[{params: '*.weight', scheme: kaiming_normal, nonlinearity: identity}]"],
        ["nonlinearity must be one of", "got 'identity'"],
    ),
    "negative gain": (
        ["init.rules=[{params: '*.weight', scheme: xavier_uniform, gain: -1}]"],
        ["gain must be > 0, got -1"],
    ),
    "one glob of a list matches nothing": (
        ["init.rules=[{params: ['*.weight', '0.wieght'], scheme: zeros}]"],
        ["params '0.wieght' matches no parameter", "did you mean '0.weight'"],
    ),
    "unknown module class in a rule": (
        ["init.rules=[{modules: [Linear, Lineer], scheme: zeros}]"],
        ["modules 'Lineer' is not a class of this model's layers", "did you mean 'Linear'"],
    ),
    "name template with another field": (
        ["model=bad_name"],
        ["name 'r{i}{n}' is not a template of {i} alone"],
    ),
    "interpolation that does not resolve": (
        ["model=deep_relu", "model.width=${nope}"],
        ["model.width: Interpolation key 'nope' not found"],
    ),
    "override Hydra cannot apply": (
        ["init=normal", "~init.rules.0"],
        ["overrides", "~init.rules.0"],
    ),
    "embedding after a float layer": (
        ["model=emb_late"],
        ["layers[1]: embedding needs token ids", "float32"],
    ),
    "zero input size": (
        ["data.in_features=0"],
        ["data/regression.yaml", "in_features", "positive"],
    ),
    "unknown top-level key": (
        ["modle=mlp"],
        ["command line: unknown key 'modle'", "valid keys: model", "did you mean 'model'"],
    ),
}


@pytest.fixture(scope="module")
def user_conf(tmp_path_factory) -> Path:
    return write_files(tmp_path_factory.mktemp("user_conf"), USER_FILES)


@pytest.mark.parametrize("case", list(CASES))
def test_bad_config_raises_one_clear_line(case, user_conf):
    overrides, words = CASES[case]
    with pytest.raises(runner.ConfigError) as error:
        runner.build_model(runner.compose(overrides, config_dir=user_conf))
    message = str(error.value)
    assert "\n" not in message
    for word in words:
        assert word in message, f"{case}: {word!r} not in {message!r}"


CLI_CASES = ["unknown layer type", "block recursion", "negative std", "init rule matches nothing",
             "tied shapes differ", "unknown model option", "YAML syntax error"]  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("case", CLI_CASES)
def test_cli_prints_one_line_and_exits_non_zero(case, user_conf):
    overrides, words = CASES[case]
    result = run_cli("runner.inspect", "--config-dir", str(user_conf), *overrides)
    assert result.returncode == 2
    assert result.stdout == ""  # nothing that could pass for a result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr
    for word in words:
        assert word in lines[0]


def test_missing_config_dir_is_a_clear_error(tmp_path):
    with pytest.raises(runner.ConfigError, match="--config-dir .*nowhere: no such folder"):
        runner.compose([], config_dir=tmp_path / "nowhere")


@pytest.mark.parametrize(
    ("override", "words"),
    [("inspect.batch_size=1", "inspect.batch_size must be an integer >= 2, got 1"),
     ("inspect.probe_batch=abc", "inspect.probe_batch must be an integer, got 'abc'")],
)  # fmt: skip
def test_inspect_options_are_checked(override, words, capsys):
    from runner.inspect import main

    with pytest.raises(SystemExit) as exit_info:
        main([override])
    assert exit_info.value.code == 2
    captured = capsys.readouterr()
    assert captured.out == "" and words in captured.err


@pytest.mark.slow
def test_hydra_full_error_shows_the_traceback(user_conf):
    result = run_cli("runner.inspect", "--config-dir", str(user_conf), "model=typo",
                     env={"HYDRA_FULL_ERROR": "1"})  # fmt: skip
    assert result.returncode != 0
    assert "Traceback" in result.stderr and "unknown layer type 'lineer'" in result.stderr


@pytest.mark.slow
def test_device_cuda_without_cuda_is_a_clear_error():
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    result = run_cli("runner.inspect", "device=cuda")
    assert result.returncode == 2 and result.stdout == ""
    assert "device=cuda: CUDA is not available" in result.stderr


@pytest.mark.slow
def test_unknown_parameter_path_is_a_clear_error():
    result = run_cli("runner.inspect", "model=rgnet", "inspect.param=0.1.0.bais")
    assert result.returncode == 2 and result.stdout == ""
    assert "inspect.param=0.1.0.bais" in result.stderr and "'0.block 1.0.bias'" not in result.stdout


SCHEDULER = "optim.scheduler={_target_: torch.optim.lr_scheduler."
TRAIN_CASES = {
    "nan lr": (
        ["optim.optimizer.lr=nan"],
        "optim/sgd.yaml: optim.optimizer.lr must be a finite number, got nan",
    ),
    "infinite noise": (
        ["data.noise=inf"],
        "data/regression.yaml: data.noise must be a finite number, got inf",
    ),
    "nan in a list": (["data.true_w=[1,nan,1,1]"], "data.true_w[1] must be a finite number"),
    "nan grad_clip": (["train.grad_clip=nan"], "train.grad_clip must be a finite number, got nan"),
    "too many bins": (
        ["log.hist_bins=100000000000"],
        "log.hist_bins must be at most 1,000,000, got 100,000,000,000",
    ),
    "data beyond memory": (
        ["data.n_train=100000000000"],
        "data/regression.yaml: the data does not fit in memory",
    ),
    "scheduler on a metric": (
        [SCHEDULER + "ReduceLROnPlateau, _partial_: true}"],
        "optim/sgd.yaml: scheduler: ReduceLROnPlateau steps on a metric",
    ),
    "scheduler too short": (
        [SCHEDULER + "OneCycleLR, _partial_: true, max_lr: 0.1, total_steps: 3}", "train.steps=5"],
        "OneCycleLR has total_steps=3 but the run trains 5 steps; set total_steps to at least 5",
    ),
    "scheduler without step": (
        ["optim.scheduler={_target_: torch.nn.ReLU, _partial_: true}"],
        "optim/sgd.yaml: scheduler: ReLU has no step()",
    ),
    "scheduler without _partial_": (
        [SCHEDULER + "StepLR, step_size: 2}"],
        "Error in call to target 'torch.optim.lr_scheduler.StepLR': TypeError(",
    ),
    "negative grad_clip": (
        ["train.grad_clip=-1"],
        "train.grad_clip must be a number > 0 or null, got -1",
    ),
    "text grad_clip": (
        ["train.grad_clip=abc"],
        "command line: train.grad_clip must be a number or null, got 'abc'",
    ),
    "negative steps": (["train.steps=-1"], "train.steps must be an integer >= 0, got -1"),
    "zero batch": (["train.batch_size=0"], "train.batch_size must be an integer >= 1, got 0"),
    "batch larger than the data": (
        ["train.batch_size=5000"],
        "larger than the 1000 training samples",
    ),
    "batchnorm with batch 1": (
        [
            "model.layers=[{type: linear, out_features: 4}, batchnorm1d, {type: linear, out_features: 1}]",
            "train.batch_size=1",
        ],
        "BatchNorm needs at least 2 samples",
    ),
    "unknown progress": (
        ["train.progress=fancy"],
        "train.progress must be one of auto, bar, lines, off",
    ),
    "text true_b": (["data.true_b=abc"], "true_b must be a number or null, got 'abc'"),
    "nested true_w": (["data.true_w=[[1,2],[3,4]]"], "true_w must be a list of numbers"),
    "wrong true_w length": (
        ["data.true_w=[1,2]"],
        "true_w has 2 values; it needs one per input feature (4)",
    ),
    "text spread": (
        ["data=classification", "data.spread=abc"],
        "command line: data.spread must be a number, got 'abc'",
    ),
    "seed out of range": (["seed=18446744073709551615"], "seed must be an integer in [0, 2^62)"),
    "model output does not fit classes": (
        ["data=classification", "model.layers=[{type: linear, out_features: 2}]"],
        "the model outputs (2,) per sample but data/classification.yaml needs (3,); "
        "set data.n_classes=2 or the last layer's out_features",
    ),
    "model output does not fit regression targets": (
        ["model=mlp_named", "data.in_features=20"],
        "model/mlp_named.yaml: the model outputs (10,) per sample but data/regression.yaml "
        "needs (1,); set data.out_features=10 or the last layer's out_features",
    ),
    "model that cannot take the data": (
        ["model.layers=[{type: embedding, num_embeddings: 5, embedding_dim: 2}]"],
        "the model cannot take data/regression.yaml's input (4,) (torch.float32)",
    ),
    "unknown optimizer target": (
        ["optim.optimizer._target_=torch.optim.Nope"],
        "optim/sgd.yaml: optimizer:",
    ),
    "unknown data key": (["+data.nosie=0.1"], "command line: unknown key 'data.nosie'"),
}


@pytest.mark.parametrize("case", list(TRAIN_CASES))
def test_bad_training_config_fails_in_prepare_before_any_work(case):
    from runner.train import prepare

    overrides, words = TRAIN_CASES[case]
    with pytest.raises(runner.ConfigError) as error:
        prepare(runner.compose(overrides))
    assert "\n" not in str(error.value) and words in str(error.value), str(error.value)


def test_a_schedule_that_fails_mid_run_ends_it_with_one_line(tmp_path):
    from runner.train import train

    cfg = runner.compose([SCHEDULER + "StepLR, _partial_: true, step_size: 0}", "train.steps=5",
                          "train.progress=off"])  # fmt: skip
    with pytest.raises(runner.ConfigError) as error:
        train(cfg, tmp_path / "run")
    assert str(error.value) == (
        "optim/sgd.yaml: scheduler: StepLR.step() failed after step 1: integer modulo by zero"
    )
