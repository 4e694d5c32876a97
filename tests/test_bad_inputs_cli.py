"""Bad inputs, each run as a user would: `python -m runner...` in a subprocess, in its own folder.

Every case must exit non-zero with one line, "error: ...", that names the file or key and
says what would be valid; no traceback (unless HYDRA_FULL_ERROR=1); and nothing left behind
that could pass for a finished run (a model.pt, or a metrics.json that says "ok").

A subprocess costs up to about three seconds (torch's import), so a session fixture runs the
selected cases once, two at a time, and each parametrised test checks its cached result.
`python tests/test_bad_inputs_cli.py [ID...]` prints what each case shows.
"""

from __future__ import annotations

import json
import pickle
import shutil
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
from conftest import run_cli

pytestmark = pytest.mark.slow

WORKERS = 2  # CI has two cores
HAS_CUDA = torch.cuda.is_available()
# What the commands print when they succeed: a run's dir, reproduce's verdict, a table, a plot.
LOOKS_LIKE_SUCCESS = ("run dir:", "tensorboard --logdir", "identical", "|", "wrote ")


def _checkpoint_bytes() -> bytes:
    """A checkpoint.pt as a run writes it (the keys resume needs), for cutting short."""
    import io

    buffer = io.BytesIO()
    state = {"model": {"0.weight": torch.zeros(8, 4)}, "optimizer": {}, "scheduler": None,
             "step": 3, "rng": {"torch": torch.get_rng_state()}}  # fmt: skip
    torch.save(state, buffer)
    return buffer.getvalue()


def _truncated(path: Path) -> None:
    data = _checkpoint_bytes()
    path.write_bytes(data[: len(data) // 2])


def _foreign(path: Path) -> None:
    torch.save({"weight": torch.ones(3), "epoch": 7}, path)  # a .pt file from elsewhere


def _pickled_object(path: Path) -> None:
    import argparse

    torch.save(argparse.Namespace(lr=0.1), path)  # an object a weights_only load refuses


def _plain_pickle(path: Path) -> None:
    path.write_bytes(pickle.dumps({"lr": 0.1}, protocol=4))  # pickle's, not torch.save's


def _not_a_run(path: Path) -> None:
    """A folder that looks a little like a run dir: a config, but no run.json or results."""
    (path / ".hydra").mkdir(parents=True)
    (path / ".hydra/config.yaml").write_text("seed: 0\n")
    (path / "notes.txt").write_text("not a run\n")


def _no_events(path: Path) -> None:
    """A sweep-like folder whose job dirs have no tb/ folder."""
    for job in ("a", "b"):
        (path / job).mkdir(parents=True)
        (path / job / "run.log").write_text("")


def _empty_tb(path: Path) -> None:
    """A run dir whose tb/ holds no event file."""
    (path / "tb").mkdir(parents=True)


# A user's own config folder, written into the case's folder as conf/ (--config-dir {tmp}/conf).
USER_CONF = {
    "init/grammar.yaml": '# an interpolation that does not parse\nstd: "${bad grammar"\n'
    'rules:\n  - {params: "*.weight", scheme: normal, std: "${init.std}"}\n',
    "model/yaml_error.yaml": "# broken YAML\nlayers: [{type: linear, out_features: 3}\n",
    "model/typo.yaml": "# bad type\nlayers:\n  - {type: lineer, out_features: 8}\n",
    "model/loop.yaml": "# a block in itself\nblocks:\n  a: [{type: b}]\n  b: [{type: a}]\nlayers: [{type: a}]\n",
    "model/not_a_list.yaml": "# layers of the wrong type\nlayers: 3\n",
    "model/no_layers.yaml": "# forgot layers\nlayer:\n  - {type: relu}\n",
    "init/bad_scheme.yaml": "# unknown scheme\nrules:\n  - {scheme: xaiver_uniform}\n",
    "init/neg_std.yaml": "# negative std\nrules:\n  - {scheme: normal, std: -0.1}\n",
    "init/bad_key.yaml": "# unknown argument\nrules:\n  - {scheme: normal, sigma: 0.1}\n",
    "init/no_match.yaml": "# a typo in params\nrules:\n  - {params: '0.wieght', scheme: zeros}\n",
    "init/unknown_key.yaml": "# a misspelt key\nrule:\n  - {scheme: zeros}\n",
    "tying/no_match.yaml": "# a typo in a path\ngroups:\n  - ['2', '44']\n",
    "tying/shapes.yaml": "# different shapes\ngroups:\n  - ['0', '2']\n",
    "tying/twice.yaml": "# one path in two groups\ngroups:\n  - ['2', '4']\n  - ['4.weight', '2.weight']\n",
    "tying/unknown_key.yaml": "# a misspelt key\ngroup:\n  - ['2', '4']\n",
    "data/text_size.yaml": "# a size that is text\nkind: regression\nout_features: 1\nn_train: many\nn_val: 10\n",
    "data/typo.yaml": "# a misspelt key\nkind: regression\nout_features: 1\nn_train: 10\nn_val: 10\nnosie: 0.1\n",
    "optim/extra.yaml": "# a key outside optimizer and scheduler\noptimizer: {_target_: torch.optim.SGD, lr: 0.1}\nlr: 0.1\n",
    "experiment/typo.yaml": "# @package _global_\n# a misspelt top-level key\ntrian:\n  steps: 3\n",
    "experiment/sweeps_hydra.yaml": "# @package _global_\n# a Hydra setting in the grid\n"
    "hydra:\n  sweeper:\n    params:\n      hydra.job.chdir: true,false\n      seed: 0,1\n",
}
CONF = ("--config-dir", "{tmp}/conf")
# A finished run's files as reproduce checks them (their contents matter only where a case
# breaks one).
FAKE_RUN = {"run/run.json": '{"overrides": ["train.steps=1"]}\n',
            "run/metrics.json": '{"status": "ok"}\n', "run/model.pt": "weights\n",
            "run/.hydra/config.yaml": "seed: 0\n"}  # fmt: skip


@dataclass(frozen=True)
class Case:
    """One bad input: the command after `python -m`, the words its one line must hold (the
    file or key, and what would be valid), and files to make in the case's folder first.
    "{tmp}" in argv and words stands for that folder. A training command (`runner`) gets
    `hydra.run.dir={tmp}/run` unless it names its own."""

    id: str
    argv: tuple[str, ...]
    words: tuple[str, ...]
    files: dict[str, str | Callable[[Path], None]] = field(default_factory=dict)
    needs_no_cuda: bool = False
    logs: bool = False  # the run started: log lines may come before the error

    def command(self, tmp: Path) -> list[str]:
        argv = [arg.replace("{tmp}", str(tmp)) for arg in self.argv]
        if argv[0] == "runner" and not any(a.startswith("hydra.run.dir=") for a in argv):
            argv.append(f"hydra.run.dir={tmp}/run")
        return argv


def train(case_id: str, *overrides: str, words: tuple[str, ...], **kw) -> Case:
    return Case(case_id, ("runner", *overrides), words, **kw)


def inspect(case_id: str, *overrides: str, words: tuple[str, ...], **kw) -> Case:
    return Case(case_id, ("runner.inspect", *overrides), words, **kw)


CASES = [
    # --- YAML and config options (a group's option that does not exist) ---
    train("yaml-syntax-error", *CONF, "model=yaml_error",
          words=("model/yaml_error.yaml", "YAML syntax error", "line 2")),
    train("interpolation-does-not-parse", *CONF, "init=grammar",
          words=("std: a ${...} interpolation does not parse", "token recognition error")),
    inspect("inspect-interpolation-does-not-parse", *CONF, "init=grammar",
            words=("std: a ${...} interpolation does not parse",)),
    train("unknown-model-option", "model=mpl", words=("model=mpl", "valid:", "did you mean 'mlp'")),
    train("unknown-init-option", "init=xavir", words=("init=xavir", "valid:", "'xavier'")),
    train("unknown-tying-option", "tying=hiden", words=("tying=hiden", "valid:", "'hidden'")),
    train("unknown-data-option", "data=regresion",
          words=("data=regresion", "valid:", "'regression'")),
    train("unknown-optim-option", "optim=adma", words=("optim=adma", "valid:", "'adam'")),
    train("unknown-experiment-option", "experiment=init_swep",
          words=("experiment=init_swep", "valid:", "'init_sweep'")),
    train("two-commands", "--cfg", "job", "-m", "seed=0,1",
          words=("command line: --multirun (-m) and --cfg (-c) together", "give one of")),
    train("resolve-without-cfg", "--resolve", "seed=1",
          words=("command line: --resolve", "--cfg job, --cfg hydra or --cfg all")),
    train("plus-on-a-group-in-the-defaults", "+experiment=init_sweep",
          words=("command line: +experiment=init_sweep", "write experiment=init_sweep")),
    # --- unknown keys, in each group ---
    train("unknown-top-level-key", "+sead=1", words=("unknown key 'sead'", "valid keys:", "seed")),
    train("unknown-train-key", "train.bach_size=3",
          words=("unknown key 'train.bach_size'", "did you mean 'batch_size'")),
    train("unknown-model-key", *CONF, "model=no_layers",
          words=("model/no_layers.yaml", "unknown key 'model.layer'", "did you mean 'layers'")),
    train("unknown-init-key", *CONF, "init=unknown_key",
          words=("init/unknown_key.yaml", "'init.rule'", "rules")),
    train("unknown-tying-key", *CONF, "tying=unknown_key",
          words=("tying/unknown_key.yaml", "'tying.group'", "groups")),
    train("unknown-data-key", *CONF, "data=typo",
          words=("data/typo.yaml", "unknown key 'data.nosie'", "did you mean 'noise'")),
    train("unknown-optim-key", *CONF, "optim=extra",
          words=("optim/extra.yaml", "unknown key 'optim.lr'", "optimizer, scheduler")),
    train("unknown-experiment-key", *CONF, "experiment=typo",
          words=("experiment/typo.yaml", "unknown key 'trian'", "did you mean 'train'")),
    # --- values of the wrong type ---
    train("text-for-integer", "train.batch_size=abc",
          words=("command line", "train.batch_size must be an integer", "'abc'")),
    train("text-in-data-file", *CONF, "data=text_size",
          words=("data/text_size.yaml", "data.n_train must be an integer", "'many'")),
    train("text-for-bool", "train.compile=maybe",
          words=("train.compile must be true or false", "'maybe'")),
    train("number-for-layers", *CONF, "model=not_a_list",
          words=("model/not_a_list.yaml", "model.layers must be a list", "got 3")),
    # --- sizes ---
    train("negative-layer-size", "model.layers=[{type: linear, out_features: -3}]",
          words=("model/mlp.yaml", "layers[0]", "out_features must be an integer >= 1", "got -3")),
    train("zero-layer-size", "model.layers=[{type: linear, out_features: 0}, relu, linear]",
          words=("model/mlp.yaml", "layers[0]", "out_features must be an integer >= 1", "got 0")),
    train("zero-kernel-size", "data.in_shape=[3,8,8]",
          "model.layers=[{type: conv2d, out_channels: 4, kernel_size: 0}]",
          words=("layers[0]", "kernel_size must be an integer >= 1", "got 0")),
    train("zero-input-size", "data.in_features=0",
          words=("data/regression.yaml", "in_features", "positive")),
    train("negative-n-train", "data.n_train=-5",
          words=("data/regression.yaml", "n_train must be an integer >= 1", "got -5")),
    train("zero-batch-size", "train.batch_size=0",
          words=("train.batch_size must be an integer >= 1", "got 0")),
    train("batch-larger-than-data", "train.batch_size=5000",
          words=("train.batch_size=5000", "larger than the 1000 training samples", "n_train")),
    train("negative-steps", "train.steps=-1", words=("train.steps must be an integer >= 0", "-1")),
    train("negative-log-every", "log.every=-1", words=("log.every", ">= 0", "-1")),
    # --- model, init and tying ---
    train("unknown-layer-type", *CONF, "model=typo",
          words=("model/typo.yaml", "layers[0]", "unknown layer type 'lineer'", "'linear'")),
    train("block-recursion", *CONF, "model=loop",
          words=("model/loop.yaml", "uses itself", "a -> b -> a")),
    train("unknown-init-scheme", *CONF, "init=bad_scheme",
          words=("init/bad_scheme.yaml", "rules[0]", "unknown scheme 'xaiver_uniform'",
                 "'xavier_uniform'")),
    train("negative-init-std", *CONF, "init=neg_std",
          words=("init/neg_std.yaml", "rules[0]", "std must be a number >= 0", "-0.1")),
    train("unknown-init-argument", *CONF, "init=bad_key",
          words=("init/bad_key.yaml", "no argument 'sigma'", "mean, std")),
    train("init-rule-matches-nothing", *CONF, "init=no_match",
          words=("init/no_match.yaml", "'0.wieght' matches no parameter", "'0.weight'")),
    train("tying-entry-matches-nothing", *CONF, "model=deep_mlp", "tying=no_match",
          words=("tying/no_match.yaml", "'44' matches no module", "did you mean '4'")),
    train("tying-different-shapes", *CONF, "model=deep_mlp", "tying=shapes",
          words=("tying/shapes.yaml", "cannot tie '0' and '2'", "same type, settings and shapes")),
    train("one-path-in-two-groups", *CONF, "model=deep_mlp", "tying=twice",
          words=("tying/twice.yaml", "groups[1]", "already tied in", "groups[0]")),
    # --- device, optimizer, loss ---
    train("cuda-without-cuda", "device=cuda",
          words=("device=cuda", "CUDA is not available", "device=auto or cpu"), needs_no_cuda=True),
    train("unknown-device", "device=tpu", words=("device=tpu", "valid: auto, cpu, cuda")),
    train("unknown-optimizer-target", "optim.optimizer._target_=torch.optim.Nope",
          words=("optim/sgd.yaml: optimizer", "cannot import _target_ 'torch.optim.Nope'",
                 "its classes: Adadelta", "SGD")),
    train("unknown-scheduler-target",
          "optim.scheduler={_target_: torch.optim.lr_scheduler.StepLRR, _partial_: true, step_size: 2}",
          words=("optim/sgd.yaml: scheduler", "'torch.optim.lr_scheduler.StepLRR'",
                 "did you mean 'torch.optim.lr_scheduler.StepLR'")),
    train("unknown-loss-target", "train.loss={_target_: torch.nn.MSELos}",
          words=("train.loss", "'torch.nn.MSELos'", "did you mean 'torch.nn.MSELoss'")),
    train("cross-entropy-on-regression", "train.loss={_target_: torch.nn.CrossEntropyLoss}",
          words=("train.loss", "CrossEntropyLoss is a classification loss", "data/regression.yaml",
                 "torch.nn.MSELoss")),
    train("mse-on-classification", "data=classification", "train.loss={_target_: torch.nn.MSELoss}",
          words=("train.loss", "MSELoss does not fit classification targets",
                 "data/classification.yaml", "torch.nn.CrossEntropyLoss")),
    train("negative-learning-rate", "optim.optimizer.lr=-1",
          words=("optim/sgd.yaml", "optim.optimizer.lr must be a number >= 0", "got -1")),
    train("diverging-learning-rate", "optim.optimizer.lr=1e30", "train.steps=5",
          words=("training diverged", "a smaller optim.optimizer.lr"), logs=True),
    # --- resume ---
    train("resume-missing-file", "train.resume={tmp}/nope/checkpoint.pt",
          words=("train.resume={tmp}/nope/checkpoint.pt", "no such file")),
    train("resume-truncated-file", "train.resume={tmp}/checkpoint.pt",
          words=("train.resume={tmp}/checkpoint.pt", "cut short or damaged",
                 "give a checkpoint.pt that a run wrote"),
          files={"checkpoint.pt": _truncated}),
    train("resume-foreign-file", "train.resume={tmp}/foreign.pt",
          words=("train.resume={tmp}/foreign.pt", "not a runner checkpoint",
                 "model, optimizer, scheduler, step, rng"),
          files={"foreign.pt": _foreign}),
    train("resume-pickled-object", "train.resume={tmp}/object.pt",
          words=("train.resume={tmp}/object.pt", "refused", "argparse.Namespace"),
          files={"object.pt": _pickled_object}),
    train("resume-plain-pickle", "train.resume={tmp}/plain.pkl",
          words=("train.resume={tmp}/plain.pkl", "not a file that torch.save wrote",
                 "give a checkpoint.pt that a run wrote"),
          files={"plain.pkl": _plain_pickle}),
    train("resume-text-file", "train.resume={tmp}/notes.txt",
          words=("train.resume={tmp}/notes.txt", "not a file that torch.save wrote",
                 "give a checkpoint.pt that a run wrote"),
          files={"notes.txt": "hello\n"}),
    # --- the run dir ---
    train("run-dir-under-a-file", "hydra.run.dir={tmp}/afile/run",
          words=("hydra.run.dir={tmp}/afile/run", "{tmp}/afile is a file",
                 "a path under a folder"),
          files={"afile": "a file\n"}),
    train("run-dir-holds-a-run", "hydra.run.dir={tmp}/run",
          words=("hydra.run.dir={tmp}/run: it already holds a run (metrics.json, model.pt, "
                 "checkpoint.pt, tb/)",
                 "give hydra.run.dir a new folder",
                 "or continue it: train.resume={tmp}/run/checkpoint.pt hydra.run.dir=<new folder>"),
          files={"run/metrics.json": '{"status": "ok"}\n', "run/model.pt": "weights\n",
                 "run/checkpoint.pt": "state\n",
                 "run/tb/events.out.tfevents.1.host": "events\n", "run/.hydra/config.yaml": "seed: 0\n"}),
    train("run-dir-holds-a-failed-run", "hydra.run.dir={tmp}/run",
          words=("hydra.run.dir={tmp}/run: it already holds a run (tb/)",
                 "give hydra.run.dir a new folder"),
          files={"run/tb/events.out.tfevents.1.host": "events\n"}),
    train("run-dir-empty", "hydra.run.dir=", words=("hydra.run.dir is empty", "hydra.run.dir=runs/")),
    train("run-dir-in-proc", "hydra.run.dir=/proc/runner-run",
          words=("hydra.run.dir=/proc/runner-run", "cannot make or write this folder")),
    train("run-dir-name-too-long", "hydra.run.dir={tmp}/" + "a" * 300,
          words=("is 300 bytes", "255 at most")),
    train("sweep-dir-holds-a-sweep", "-m", "hydra.sweep.dir={tmp}/sweep", "seed=0,1",
          "train.steps=0",
          words=("hydra.sweep.dir={tmp}/sweep: it already holds a sweep (multirun.yaml, summary.csv)",
                 "give hydra.sweep.dir a new folder"),
          files={"sweep/multirun.yaml": "hydra: {}\n", "sweep/summary.csv": "job,status\n0,ok\n",
                 "sweep/0/model.pt": "weights\n"}),
    train("run-dir-holds-a-sweep", "hydra.run.dir={tmp}/sweep",
          words=("hydra.run.dir={tmp}/sweep: it already holds a sweep (multirun.yaml, summary.csv)",
                 "give hydra.run.dir a new folder"),
          files={"sweep/multirun.yaml": "hydra: {}\n", "sweep/summary.csv": "job,status\n0,ok\n"}),
    train("sweep-jobs-in-the-sweep-dir", "-m", "hydra.sweep.dir={tmp}/sweep", "seed=0,1",
          "hydra.sweep.subdir=.",
          words=("hydra.sweep.subdir=.: every job of the sweep would write into the sweep dir "
                 "itself", "'hydra.sweep.subdir=${hydra.job.num}'")),
    train("sweep-jobs-in-one-folder", "-m", "hydra.sweep.dir={tmp}/sweep", "seed=0,1",
          "hydra.sweep.subdir=same",
          words=("hydra.sweep.subdir=same: every job of the sweep would write into one folder, "
                 "same, over each other's files",)),
    train("sweep-dir-under-a-file", "-m", "hydra.sweep.dir={tmp}/afile/sweep", "seed=0,1",
          "train.steps=0",
          words=("hydra.sweep.dir={tmp}/afile/sweep", "{tmp}/afile is a file"),
          files={"afile": "a file\n"}),
    train("joblib-no-jobs", "-m", "hydra.sweep.dir={tmp}/sweep", "seed=0,1",
          "hydra/launcher=joblib", "hydra.launcher.n_jobs=0",
          words=("hydra.launcher.n_jobs=0", "not 0; -1: one per core")),
    train("sweep-value-twice", "-m", "hydra.sweep.dir={tmp}/sweep", "seed=0,1,0",
          words=("command line: seed=0,1,0 gives 0 more than once", "give each once")),
    train("sweep-over-hydra-settings", "-m", "hydra/launcher=basic,joblib", "seed=0,1",
          words=("command line: hydra/launcher=basic,joblib", "Hydra cannot sweep its own",
                 "seed=0,1")),
    train("sweep-over-hydra-settings-in-a-config", *CONF, "-m", "experiment=sweeps_hydra",
          words=("experiment/sweeps_hydra.yaml: hydra.sweeper.params: hydra.job.chdir=true,false",
                 "Hydra cannot sweep its own")),
    # --- the companion commands ---
    inspect("inspect-unknown-layer-type", *CONF, "model=typo",
            words=("model/typo.yaml", "unknown layer type 'lineer'", "'linear'")),
    inspect("inspect-unknown-init-scheme", *CONF, "init=bad_scheme",
            words=("init/bad_scheme.yaml", "unknown scheme 'xaiver_uniform'", "'xavier_uniform'")),
    inspect("inspect-init-rule-matches-nothing", *CONF, "init=no_match",
            words=("init/no_match.yaml", "matches no parameter", "'0.weight'")),
    inspect("inspect-tying-different-shapes", *CONF, "model=deep_mlp", "tying=shapes",
            words=("tying/shapes.yaml", "cannot tie '0' and '2'")),
    inspect("inspect-unknown-tying-option", "tying=hiden",
            words=("tying=hiden", "valid:", "'hidden'")),
    inspect("inspect-cuda-without-cuda", "device=cuda",
            words=("device=cuda", "CUDA is not available", "device=auto or cpu"),
            needs_no_cuda=True),
    inspect("inspect-unknown-parameter-path", "model=rgnet", "inspect.param=0.1.0.bais",
            words=("inspect.param=0.1.0.bais", "valid paths include",
                   "did you mean '0.block 1.0.bias'")),
    inspect("inspect-missing-config-dir", "--config-dir", "{tmp}/nowhere", "model=mlp",
            words=("--config-dir {tmp}/nowhere", "no such folder")),
    Case("reproduce-run-json-not-json", ("runner.reproduce", "{tmp}/run"),
         ("{tmp}/run/run.json: cannot read it as JSON",),
         files={**FAKE_RUN, "run/run.json": "not json\n"}),
    Case("reproduce-run-json-without-overrides", ("runner.reproduce", "{tmp}/run"),
         ("{tmp}/run/run.json: it has no 'overrides' list",),
         files={**FAKE_RUN, "run/run.json": "[]\n"}),
    Case("reproduce-config-not-yaml", ("runner.reproduce", "{tmp}/run"),
         ("{tmp}/run/.hydra/config.yaml: cannot read it",),
         files={**FAKE_RUN, "run/.hydra/config.yaml": "seed: [oops\n"}),
    Case("reproduce-out-is-a-file", ("runner.reproduce", "{tmp}/run", "--out", "{tmp}/afile"),
         ("--out {tmp}/afile: is a file",), files={**FAKE_RUN, "afile": "a file\n"}),
    Case("reproduce-not-a-run", ("runner.reproduce", "{tmp}/notrun"),
         ("{tmp}/notrun", "not a finished run", "run.json", "run dir"),
         files={"notrun": _not_a_run}),
    Case("reproduce-missing-dir", ("runner.reproduce", "{tmp}/nowhere"),
         ("{tmp}/nowhere", "no such folder")),
    Case("compare-no-event-files", ("runner.compare", "{tmp}/sweep"),
         ("{tmp}/sweep", "no TensorBoard event files", "tb/"), files={"sweep": _no_events}),
    Case("compare-empty-tb", ("runner.compare", "{tmp}/run"),
         ("{tmp}/run", "no TensorBoard event files"), files={"run": _empty_tb}),
    Case("compare-missing-dir", ("runner.compare", "{tmp}/nowhere"),
         ("{tmp}/nowhere", "no such folder")),
    Case("compare-damaged-events", ("runner.compare", "{tmp}/run"),
         ("{tmp}/run: its event files hold no scalars",),
         files={"run/tb/events.out.tfevents.1.host": "not an event file\n"}),
    Case("compare-a-file", ("runner.compare", "{tmp}/afile"),
         ("{tmp}/afile: is a file",), files={"afile": "a file\n"}),
    train("resume-a-folder", "train.resume={tmp}/old",
          words=("train.resume={tmp}/old: is a folder", "give {tmp}/old/checkpoint.pt"),
          files={"old/checkpoint.pt": "x\n"}),
    inspect("inspect-config-dir-is-a-file", "--config-dir", "{tmp}/afile",
            words=("--config-dir {tmp}/afile: is a file",), files={"afile": "a file\n"}),
]  # fmt: skip

# A few cases again with HYDRA_FULL_ERROR=1: the traceback is then shown.
FULL_ERROR_CASES = ["unknown-model-option", "unknown-layer-type", "compare-no-event-files"]


@dataclass
class Outcome:
    case: Case
    tmp: Path
    made: dict[Path, bytes]  # the files the case made before running, and their bytes
    returncode: int
    stdout: str
    stderr: str
    seconds: float

    def text(self, value: str) -> str:
        return value.replace("{tmp}", str(self.tmp))


def _make_files(case: Case, tmp: Path) -> dict[Path, bytes]:
    files: dict[str, str | Callable[[Path], None]] = dict(case.files)
    if "--config-dir" in case.argv and "{tmp}/conf" in case.argv:
        files.update({f"conf/{name}": text for name, text in USER_CONF.items()})
    for name, content in files.items():
        path = tmp / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, str):
            path.write_text(content)
        else:
            content(path)
    return {p: p.read_bytes() for p in tmp.rglob("*") if p.is_file()}


def _run(case: Case, tmp: Path, env: dict | None = None) -> Outcome:
    tmp.mkdir(parents=True, exist_ok=True)
    made = _make_files(case, tmp)
    start = time.perf_counter()
    result = run_cli(*case.command(tmp), env=env, cwd=tmp)
    seconds = time.perf_counter() - start
    return Outcome(case, tmp, made, result.returncode, result.stdout, result.stderr, seconds)


@pytest.fixture(scope="session")
def outcomes(request, tmp_path_factory) -> dict[str, Outcome]:
    """Run each selected case (and HYDRA_FULL_ERROR one) once, two at a time."""
    by_id = {case.id: case for case in CASES}
    jobs = []
    for item in request.session.items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        case, name = params.get("case"), params.get("name")
        if isinstance(case, Case) and not (case.needs_no_cuda and HAS_CUDA):
            jobs.append((case.id, case, None))
        elif item.path == Path(__file__) and name in by_id:
            jobs.append((f"{name}+full", by_id[name], {"HYDRA_FULL_ERROR": "1"}))
    folders = {key: tmp_path_factory.mktemp(key.replace("+", "_")) for key, _, _ in jobs}
    with ThreadPoolExecutor(max_workers=WORKERS) as pool:
        futures = {key: pool.submit(_run, case, folders[key], env) for key, case, env in jobs}
        return {key: future.result() for key, future in futures.items()}


def test_the_catalogue_covers_the_issue():
    assert len(CASES) >= 45
    assert len({case.id for case in CASES}) == len(CASES)
    tools = {case.argv[0] for case in CASES}
    assert tools == {"runner", "runner.inspect", "runner.reproduce", "runner.compare"}


def _finished_runs(outcome: Outcome) -> list[Path]:
    """model.pt files, and metrics.json files that say the run finished, made by the command."""
    found = []
    for path in outcome.tmp.rglob("*"):
        if path in outcome.made or not path.is_file():
            continue
        if path.name == "model.pt":
            found.append(path)
        elif path.name == "metrics.json":
            status = json.loads(path.read_text()).get("status", "ok")
            if status != "diverged":
                found.append(path)
    return found


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_a_bad_input_fails_with_one_clear_line(case, outcomes):
    if case.needs_no_cuda and HAS_CUDA:
        pytest.skip("this machine has CUDA")
    outcome = outcomes[case.id]
    output = outcome.stdout + outcome.stderr
    shown = f"exit {outcome.returncode}\nstdout:\n{outcome.stdout}\nstderr:\n{outcome.stderr}"
    assert outcome.returncode != 0, shown
    assert "Traceback" not in output, shown
    lines = [line for line in output.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], shown
    # A run that got going may have logged its first steps; nothing may look like a result.
    assert len(lines) == 1 or case.logs, shown
    assert not any(sign in line for line in lines for sign in LOOKS_LIKE_SUCCESS), shown
    for word in case.words:
        assert outcome.text(word) in errors[0], f"{outcome.text(word)!r} missing\n{shown}"
    assert _finished_runs(outcome) == [], shown
    for path, content in outcome.made.items():  # nothing the user had is changed or lost
        assert path.is_file() and path.read_bytes() == content, f"{path} changed\n{shown}"


@pytest.mark.parametrize("name", FULL_ERROR_CASES)
def test_hydra_full_error_shows_the_traceback(name, outcomes):
    outcome = outcomes[f"{name}+full"]
    assert outcome.returncode != 0
    assert "Traceback" in outcome.stderr, outcome.stderr
    assert _finished_runs(outcome) == []


if __name__ == "__main__":
    import sys
    import tempfile

    chosen = [c for c in CASES if not sys.argv[1:] or c.id in sys.argv[1:]]
    root = Path(tempfile.mkdtemp())
    with ThreadPoolExecutor(max_workers=WORKERS) as pool:
        done = list(pool.map(lambda c: _run(c, root / c.id), chosen))
    for outcome in done:
        print(f"== {outcome.case.id}: exit {outcome.returncode} ({outcome.seconds:.1f} s)")
        print((outcome.stdout + outcome.stderr).rstrip())
        print("   finished:", _finished_runs(outcome))
    shutil.rmtree(root)
