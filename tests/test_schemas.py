"""The typed schemas: every shipped option fits its group's schema, a wrong type or an
unknown key fails at compose time with one line naming the file, the key path and what is
valid, and the generated config reference lists every key."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
from conftest import REPO, run_cli, write_files
from omegaconf import DictConfig, OmegaConf

import runner
from runner import config as runner_config
from runner import schema_paths, schemas
from runner.command_line import check_command_line
from runner.config import GROUPS
from runner.config_reference import config_reference

SCHEMA_OF = {"model": schemas.ModelSchema, "init": schemas.InitSchema,
             "tying": schemas.TyingSchema, "data": schemas.DataSchema,
             "optim": schemas.OptimSchema}  # fmt: skip
SHIPPED = {
    group: sorted(p.stem for p in (REPO / "conf" / group).glob("*.yaml"))
    for group in (*GROUPS, "experiment")
}

# A user's own config folder (--config-dir): name -> YAML text.
USER_FILES = {
    "model/not_a_list.yaml": "# layers of the wrong type\nlayers: 3\n",
    "model/list_key.yaml": "# a misspelt key holding a list\nlayers: [relu]\nlayres: [relu]\n",
    "model/no_layers.yaml": "# variables only\nwidth: 3\n",
    "model/variables.yaml": "# variables are fine\nwidth: 3\nlayers:\n  - {type: linear, out_features: '${model.width}'}\n",
    "init/not_a_rule.yaml": "# a rule that is not a mapping\nrules: [3]\n",
    "init/not_an_edit.yaml": "# an edit that is not a mapping\nrules: []\nedits: [{add: 1}, 3]\n",
    "init/both_bad.yaml": "# neither is a mapping\nrules: [3]\nedits: [3]\n",
    "tying/flat.yaml": "# a group that is not a list\ngroups: ['2', '4']\n",
    "data/text_size.yaml": "# a size that is text\nkind: regression\nout_features: 1\nn_train: many\nn_val: 10\n",
    "data/typo.yaml": "# a misspelt key\nkind: regression\nout_features: 1\nn_train: 10\nn_val: 10\nnosie: 0.1\n",
    "data/no_out.yaml": "# out_features left out\nkind: regression\nn_train: 10\nn_val: 10\n",
    "optim/extra.yaml": "# a key outside optimizer and scheduler\noptimizer: {_target_: torch.optim.SGD, lr: 0.1}\nlr: 0.1\n",
    "optim/text_optimizer.yaml": "# optimizer that is not a mapping\noptimizer: sgd\n",
    "experiment/typo.yaml": "# @package _global_\n# a misspelt top-level key\ntrian:\n  steps: 3\n",
}

# (overrides, words the one-line message must hold)
CASES = {
    "train type": (["train.batch_size=abc"],
                   ["command line: train.batch_size must be an integer, got 'abc'"]),
    "train unknown key": (["train.bach_size=3"],
                          ["command line: unknown key 'train.bach_size'", "valid keys of train: steps",
                           "did you mean 'batch_size'"]),
    "train added key": (["+train.foo=1"],
                        ["command line: unknown key 'train.foo'", "valid keys of train: steps"]),
    "train optional float": (["train.grad_clip=abc"],
                             ["train.grad_clip must be a number or null, got 'abc'"]),
    "train bool": (["train.compile=maybe"], ["train.compile must be true or false, got 'maybe'"]),
    "train a value": (["train=5"], ["train must be a mapping with keys steps, epochs"]),
    "train deleted key": (["~train.steps"], ["train.steps cannot be deleted"]),
    "log type": (["log.every=often"], ["command line: log.every must be an integer, got 'often'"]),
    "top-level type": (["seed=abc"], ["command line: seed must be an integer, got 'abc'"]),
    "top-level unknown key": (["+sead=1"], ["unknown key 'sead'", "valid keys: model, init"]),
    "model file type": (["model=not_a_list"],
                        ["model/not_a_list.yaml: model.layers must be a list, got 3"]),
    "model file list key": (["model=list_key"],
                            ["model/list_key.yaml: unknown key 'model.layres'",
                             "did you mean 'layers'", "variables holding one value"]),
    "model missing layers": (["model=no_layers"],
                             ["model/no_layers.yaml: model.layers is missing; it must be a list"]),
    "model variable typo": (["model=deep_relu", "model.widht=3"],
                            ["command line: unknown key 'model.widht'", "valid keys of model: layers, blocks, width, depth",
                             "did you mean 'width'", "+model.widht="]),
    "model variable that is a list": (["+model.foo=[1,2]"],
                                      ["command line: unknown key 'model.foo'", "got [1, 2]"]),
    "init rule type": (["init=not_a_rule"], ["init/not_a_rule.yaml: init.rules[0] must be a mapping"]),
    "init edit type": (["init=not_an_edit"],
                       ["init/not_an_edit.yaml: init.edits[1] must be a mapping"]),
    "init rule or edit type": (["init=both_bad"],
                               ["init/both_bad.yaml: init.rules[0] or init.edits[0] must be a mapping"]),
    "init edits override": (["init.edits=[3]"], ["command line: init.edits[0] must be a mapping"]),
    "init rules override": (["init.rules=[3]"], ["command line: init.rules[0] must be a mapping"]),
    "tying group type": (["tying=flat"], ["tying/flat.yaml: tying.groups[0] must be a list"]),
    "data file type": (["data=text_size"],
                       ["data/text_size.yaml: data.n_train must be an integer, got 'many'"]),
    "data file unknown key": (["data=typo"],
                              ["data/typo.yaml: unknown key 'data.nosie'", "did you mean 'noise'"]),
    "data missing value": (["data=no_out"],
                           ["data/no_out.yaml: data.out_features is missing; it must be an integer"]),
    "data list type": (["data.in_shape=[a]"], ["data.in_shape[0] must be an integer, got 'a'"]),
    "optim file unknown key": (["optim=extra"],
                               ["optim/extra.yaml: unknown key 'optim.lr'", "valid keys of optim: optimizer, scheduler"]),
    "optim file type": (["optim=text_optimizer"],
                        ["optim/text_optimizer.yaml: optim.optimizer must be a mapping, got 'sgd'"]),
    "experiment unknown key": (["experiment=typo"],
                               ["experiment/typo.yaml: unknown key 'trian'", "did you mean 'train'"]),
}  # fmt: skip


@pytest.fixture(scope="module")
def user_conf(tmp_path_factory) -> Path:
    return write_files(tmp_path_factory.mktemp("user_conf"), USER_FILES)


@pytest.mark.parametrize(("group", "option"), [(g, o) for g in GROUPS for o in SHIPPED[g]])
def test_every_shipped_option_composes_against_its_schema(group, option):
    cfg = runner.compose([f"{group}={option}"])
    assert OmegaConf.get_type(cfg) is schemas.RunSchema
    assert OmegaConf.get_type(cfg[group]) is SCHEMA_OF[group]


@pytest.mark.parametrize("experiment", SHIPPED["experiment"])
def test_every_experiment_composes_against_the_run_schema(experiment):
    cfg = runner.compose([f"experiment={experiment}"])
    assert OmegaConf.get_type(cfg) is schemas.RunSchema
    assert all(OmegaConf.get_type(cfg[g]) is SCHEMA_OF[g] for g in GROUPS)


def test_the_inspect_config_adds_its_own_schema():
    cfg = runner.compose([], config_name="inspect")
    assert OmegaConf.get_type(cfg) is schemas.InspectSchema
    assert OmegaConf.get_type(cfg.inspect) is schemas.InspectOptionsSchema
    with pytest.raises(runner.ConfigError, match="inspect.batch_size must be an integer, got 'x'"):
        runner.compose(["inspect.batch_size=x"], config_name="inspect")


def test_a_mapping_replaces_a_null_target_node():
    # OmegaConf cannot merge a mapping into a null typed Optional[Dict]: these stay untyped.
    cfg = runner.compose(["optim.scheduler={_target_: torch.optim.lr_scheduler.StepLR, step_size: 2}",
                          "train.loss={_target_: torch.nn.L1Loss}"])  # fmt: skip
    assert cfg.optim.scheduler.step_size == 2 and cfg.train.loss._target_ == "torch.nn.L1Loss"


def test_values_take_the_declared_types():
    cfg = runner.compose(
        ["train.grad_clip=1", "data.true_w=[2, -3, 1, 0]", "tying.groups=[[2, 4]]"]
    )
    assert cfg.train.grad_clip == 1.0 and isinstance(cfg.train.grad_clip, float)
    assert list(cfg.data.true_w) == [2.0, -3.0, 1.0, 0.0]
    assert list(cfg.tying.groups[0]) == [2, 4]  # tying.py reads numbers as paths


def test_variables_of_model_init_and_tying_stay_allowed(user_conf):
    cfg = runner.compose(["model=variables", "+model.depth=2", "init=constant", "init.val=3"],
                         config_dir=user_conf)  # fmt: skip
    assert cfg.model.width == 3 and cfg.model.depth == 2 and cfg.init.val == 3
    assert runner.compose(["model=deep_relu", "model.width=8"]).model.width == 8


def test_a_variable_is_checked_against_its_file_or_by_composing_again(monkeypatch, tmp_path):
    # Composing costs 0.15 s; a variable that the chosen file declares needs no second one.
    calls = []
    compose_with_hydra = runner_config.compose_with_hydra
    monkeypatch.setattr(runner_config, "compose_with_hydra",
                        lambda *args: calls.append(args[0]) or compose_with_hydra(*args))  # fmt: skip
    assert runner.compose(["model=deep_relu", "model.width=8"]).model.width == 8
    assert len(calls) == 1
    # Declared by the user's own file (--config-dir): no second composition either.
    conf = write_files(tmp_path, {
        "model/mine.yaml": "# a variable\nunits: 3\nlayers:\n  - {type: linear, out_features: '${model.units}'}\n",
        "model/derived.yaml": "# a defaults list: its keys may come from the file it extends\n"
                              "defaults: [mine]\nextra: 1\n",
        "experiment/wide.yaml": "# @package _global_\n# adds a model variable\nmodel:\n  extra: 4\n",
    })  # fmt: skip
    calls.clear()
    assert runner.compose(["model=mine", "model.units=5"], config_dir=conf).model.units == 5
    assert len(calls) == 1
    # Not plain to see in the file: composed again without the override, and accepted.
    calls.clear()
    cfg = runner.compose(["model=derived", "model.units=6"], config_dir=conf)
    assert cfg.model.units == 6 and len(calls) == 2 and "model.units=6" not in calls[1]
    calls.clear()
    cfg = runner.compose(["model=mine", "experiment=wide", "model.extra=7"], config_dir=conf)
    assert cfg.model.extra == 7 and len(calls) == 2
    # A typo is composed again and refused, as before.
    with pytest.raises(runner.ConfigError, match="unknown key 'model.unitz'"):
        runner.compose(["model=mine", "model.unitz=5"], config_dir=conf)


@pytest.mark.parametrize("case", list(CASES))
def test_a_value_that_does_not_fit_is_one_line_at_compose_time(case, user_conf):
    overrides, words = CASES[case]
    with pytest.raises(runner.ConfigError) as error:
        runner.compose(overrides, config_dir=user_conf)
    message = str(error.value)
    assert "\n" not in message
    for word in words:
        assert word in message, f"{case}: {word!r} not in {message!r}"


@pytest.mark.slow
@pytest.mark.parametrize("case", ["train type", "train added key", "data file unknown key",
                                  "model file list key", "experiment unknown key"])  # fmt: skip
def test_cli_prints_the_schema_error_in_one_line(case, user_conf):
    overrides, words = CASES[case]
    result = run_cli("runner.inspect", "--config-dir", str(user_conf), *overrides)
    assert result.returncode == 2 and result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for word in words:
        assert word in lines[0]


# runner/__main__.py composes the command line with check_command_line before @hydra.main runs,
# whose own report of a bad config spans lines and exits 1.
MAIN_CHECKS_FIRST = "check_command_line" in (REPO / "runner" / "__main__.py").read_text()


@pytest.mark.slow
@pytest.mark.skipif(not MAIN_CHECKS_FIRST, reason="runner/__main__.py does not call it yet")
@pytest.mark.parametrize(
    ("args", "words"),
    [(["train.batch_size=abc"], "command line: train.batch_size must be an integer, got 'abc'"),
     (["+train.foo=1"], "command line: unknown key 'train.foo'"),
     (["-m", "seed=0,abc"], "command line: seed must be an integer, got 'abc'")],
)  # fmt: skip
def test_python_m_runner_prints_one_line_and_exits_2(args, words, tmp_path):
    result = run_cli("runner", *args, f"hydra.run.dir={tmp_path}", f"hydra.sweep.dir={tmp_path}")
    assert result.returncode == 2 and result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert lines == [f"error: {lines[0][7:]}"] and words in lines[0], result.stderr
    assert not any(tmp_path.iterdir())  # no job started


@pytest.mark.parametrize(
    ("argv", "words"),
    [(["train.batch_size=abc"], "train.batch_size must be an integer"),
     (["-m", "init=normal,xavier,nope"], "init=nope: no such config"),
     (["-m", "experiment=init_sweep", "seed=0,1,abc"], "seed must be an integer, got 'abc'"),
     (["--config-name", "inspect", "inspect.batch_size=x"], "inspect.batch_size must be"),
     (["--cfg", "job", "train.bach_size=1"], "did you mean 'batch_size'"),
     (["--resolve", "--hydra-help"], "--resolve resolves what --cfg prints")],
)  # fmt: skip
def test_the_command_line_is_checked_before_hydra_runs(argv, words):
    with pytest.raises(runner.ConfigError, match=re.escape(words)):
        check_command_line(argv)


def test_a_multirun_is_checked_with_a_few_jobs_not_the_grid(monkeypatch):
    import runner.command_line

    composed = []
    real = runner.command_line.compose
    monkeypatch.setattr(
        runner.command_line, "compose", lambda o, *a: composed.append(o) or real(o, *a)
    )
    check_command_line(["-m", "seed=range(0,50)", "init=normal,xavier,kaiming", "train.steps=2"])
    # Each option of the swept group once; the fifty seeds are all integers: one of them is enough.
    assert sorted(job[1] for job in composed) == ["init=kaiming", "init=normal", "init=xavier"]
    assert all("train.steps=2" in job for job in composed)


def test_hydra_mode_multirun_is_checked_and_planned_as_a_sweep(tmp_path):
    # hydra.mode=MULTIRUN, on the command line or in a config, is -m without the flag (as a
    # run, seed=0,1 would be Hydra's "Ambiguous value" error).
    plan = check_command_line(["hydra.mode=MULTIRUN", "hydra/launcher=joblib", "seed=0,1"])
    assert not plan.trains_here and "joblib" in plan.launcher._target_  # jobs train in workers
    assert check_command_line(["hydra.mode=MULTIRUN", "seed=0,1"]).trains_here  # basic launcher
    assert check_command_line(["++hydra.mode=2", "seed=0,1"]).trains_here  # its value, forced
    with pytest.raises(runner.ConfigError, match="init=nope: no such config"):
        check_command_line(["hydra.mode=MULTIRUN", "init=normal,nope"])
    experiment = tmp_path / "experiment" / "sweep_mode.yaml"
    experiment.parent.mkdir()
    experiment.write_text("# @package _global_\nhydra:\n  mode: MULTIRUN\n"
                          "  sweeper:\n    params:\n      init: normal,nope\n")  # fmt: skip
    with pytest.raises(runner.ConfigError, match="init=nope: no such config"):
        check_command_line(["--config-dir", str(tmp_path), "experiment=sweep_mode"])
    # Set in a config, with a sweep on the command line: the mode is read without the sweep.
    (tmp_path / "experiment" / "mode_only.yaml").write_text(
        "# @package _global_\nhydra:\n  mode: MULTIRUN\n"
    )
    with pytest.raises(runner.ConfigError, match="seed must be an integer, got 'abc'"):
        check_command_line(["--config-dir", str(tmp_path), "experiment=mode_only", "seed=0,abc"])
    # --cfg prints one job's config (Hydra composes it as a run): a sweep is Hydra's error.
    with pytest.raises(runner.ConfigError, match="Ambiguous value for argument 'seed=0,1'"):
        check_command_line(["--cfg", "job", "hydra.mode=MULTIRUN", "seed=0,1"])


def test_flags_that_compose_nothing_are_left_to_hydra():
    for argv in (["--help"], ["--info"], ["--hydra-help"], ["--config-path", "/elsewhere"]):
        check_command_line(argv)  # no error, nothing composed


def _leaf_keys(node: DictConfig, prefix: str = "") -> list[str]:
    """Every key of a composed config that holds a value, down to the free-form nodes
    (layer and `_target_` arguments are documented by the key that holds them)."""
    keys = []
    for key in node:
        path = f"{prefix}{key}"
        child = node._get_node(key)
        if isinstance(child, DictConfig) and schemas.is_schema(OmegaConf.get_type(child)):
            keys += _leaf_keys(child, f"{path}.")
        elif path != "choices":
            keys.append(path)
    return keys


def test_the_reference_lists_every_key_of_the_composed_config():
    reference = config_reference()
    documented = re.findall(r"^\| `([^`]+)` \|", reference, flags=re.MULTILINE)
    assert len(documented) == len(set(documented))
    assert set(_leaf_keys(runner.compose([]))) <= set(documented)
    # ... and nothing else: the inspect config holds every key a schema declares.
    assert set(documented) == set(_leaf_keys(runner.compose([], config_name="inspect")))
    for group in (*GROUPS, "train", "log", "inspect", "experiment"):
        assert f"### `{group}`" in reference


def _fields(schema: type, prefix: str = ""):
    for field in dataclasses.fields(schema):
        yield f"{prefix}{field.name}", field
        declared = schema_paths.type_at(f"{prefix}{field.name}")
        if dataclasses.is_dataclass(declared):
            yield from _fields(declared, f"{prefix}{field.name}.")


def test_every_schema_key_has_a_description():
    for path, field in _fields(schemas.InspectSchema):
        assert len(field.metadata.get("help", "")) > 10, path


def test_readme_config_reference_is_the_generated_one():
    """README's config reference is `config_reference()`'s output, so it cannot drift."""
    text = (REPO / "README.md").read_text()
    block = text.split("<!-- config-reference:start -->\n", 1)[1]
    block = block.split("\n<!-- config-reference:end -->", 1)[0]
    assert block == config_reference().strip()
