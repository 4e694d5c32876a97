"""Typed schemas of the config tree: what each key holds, checked by Hydra at compose time.

Every config group and the top-level settings is a dataclass here. `register()` stores
the whole tree in Hydra's ConfigStore as `schema/run` (and `schema/inspect`, which adds
`inspect.*`), and conf/config.yaml lists it first in its defaults. Every file composed
after it, shipped or from `--config-dir`, is merged *into* the typed tree, so a value
of the wrong type or a key that no schema declares fails the composition, naming the
key path.

`train`, `log`, `data` and `optim` are closed: the runner reads every key they may hold.
`model`, `init` and `tying` also take variables of their own (`width: 256` ... `out_features:
${model.width}`), so their nodes stay open and runner.config checks that an extra key
holds a single value. Layer lists, init rules and `_target_` nodes take free-form
arguments: they are typed as lists and mappings here and checked in full when the
model is built.

runner/schema_paths.py walks a composed config against these classes (undeclared and
unset keys, the type at a key path, in words); runner/config_reference.py renders the
markdown reference of every key from them, so the documentation cannot drift from what
is checked.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Union, get_args, get_origin, get_type_hints

from omegaconf import MISSING, DictConfig, OmegaConf

# The ConfigStore group of the schemas; conf/config.yaml and conf/inspect.yaml name their option.
SCHEMA_GROUP = "schema"


def setting(default: Any = MISSING, doc: str = "", factory: Callable[[], Any] | None = None) -> Any:
    """A schema field with its one-line description (read by `config_reference`).

    `default` MISSING makes the key required; `factory` gives a fresh list or dict per config.
    """
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata={"help": doc})
    return dataclasses.field(default=default, metadata={"help": doc})


@dataclass
class ModelSchema:
    """`model`: the architecture (conf/model/*.yaml).

    Other keys are variables holding one value (`width: 256`, used as `${model.width}`).
    """

    layers: list[Any] = setting(
        doc="the layers in order: {type: alias, torch.nn class or block name, ...kwargs}, "
        "{_target_: module class, ...kwargs}, or a bare alias; optional repeat and name"
    )
    blocks: dict[str, list[Any]] = setting(
        doc="named lists of layers that `type:` can use, nested as nn.Sequential", factory=dict
    )


@dataclass
class InitSchema:
    """`init`: which scheme fills which parameter (conf/init/*.yaml).

    Other keys are variables holding one value (`val: 42`, used as `${init.val}`).
    """

    rules: list[dict[str, Any]] = setting(
        doc="in order, the last match wins: {params: glob(s), modules: class(es), scheme: name "
        "or _target_: fn, optional: bool, ...arguments}; unmatched parameters keep PyTorch's init",
        factory=list,
    )
    edits: list[dict[str, Any]] = setting(
        doc="in order, after init and tying, as param.data += 1 is: {params: glob(s), modules: "
        "class(es), optional: bool, index: [i, j, ...], one of add|sub|mul|div|set: number}",
        factory=list,
    )


@dataclass
class TyingSchema:
    """`tying`: modules or parameters that are one (conf/tying/*.yaml).

    Other keys are variables holding one value.
    """

    groups: list[list[Any]] = setting(
        doc="each a list of module paths (one module) or parameter paths (one Parameter), "
        "globs allowed; the first member owns the tensor",
        factory=list,
    )


@dataclass
class DataSchema:
    """`data`: synthetic data made on the device (conf/data/*.yaml); it sizes the model's input.

    One schema for the three kinds, as the runner reads them: keys of another kind are unused.
    """

    kind: str = setting(doc="regression | classification | teacher")
    in_features: int = setting(4, "features per sample; the model's first layer is sized from it")
    in_shape: list[int] | None = setting(
        None, "per-sample input shape for conv models, e.g. [3, 8, 8]; overrides in_features"
    )
    out_features: int = setting(doc="targets (or logits) per sample")
    n_train: int = setting(doc="training samples")
    n_val: int = setting(doc="validation samples, drawn from the same distribution")
    noise: float = setting(0.0, "std of the Gaussian noise on the targets (regression, teacher)")
    true_w: list[float] | None = setting(
        None, "regression: one weight per feature, e.g. [2, -3.4, 1, 0]; null: drawn from the seed"
    )
    true_b: float | None = setting(
        None, "regression: the bias, e.g. 4.2; null: drawn from the seed"
    )
    n_classes: int | None = setting(None, "classification: number of clusters (classes)")
    spread: float = setting(
        3.0, "classification: std of the cluster centres around 0 (each cluster has unit std)"
    )
    teacher_width: int | None = setting(None, "teacher: units per hidden layer of the teacher")
    teacher_depth: int | None = setting(None, "teacher: hidden layers of the teacher")
    teacher_activation: str | None = setting(None, "teacher: tanh | relu")


@dataclass
class OptimSchema:
    """`optim`: optimizer and LR schedule (conf/optim/*.yaml)."""

    optimizer: dict[str, Any] = setting(
        doc="{_target_: torch.optim class, _partial_: true, lr: ..., ...}, "
        "called with the model's unique parameters"
    )
    # Typed Any, not `dict | None`: OmegaConf 2.3 cannot merge a mapping into a None that is
    # typed Optional[Dict] (`optim.scheduler={...}` fails inside OmegaConf). Same for train.loss.
    scheduler: Any = setting(
        None,
        "a {_target_: torch.optim.lr_scheduler class, _partial_: true, ...} mapping, stepped "
        "after every step with no metric (so not ReduceLROnPlateau); null: a constant rate",
    )


@dataclass
class TrainSchema:
    """`train`: the training loop (conf/config.yaml)."""

    steps: int = setting(1000, "optimizer steps; 0 builds, initialises and saves without training")
    epochs: int | None = setting(
        None, "if set, steps = epochs * (n_train // batch_size), replacing steps"
    )
    batch_size: int = setting(32, "samples per step, sliced from the data on the device")
    val_every: int = setting(100, "validation loss every N steps and at the end (0: off)")
    loss: Any = setting(  # Any: see OptimSchema.scheduler
        None,
        "a {_target_: ...} mapping of a loss module; null: MSE for regression and teacher, "
        "cross-entropy for classification",
    )
    grad_clip: float | None = setting(
        None, "clip the global gradient norm to this value (null: no clipping)"
    )
    progress: str = setting(
        "auto", "auto (a bar on a terminal, log lines otherwise) | bar | lines | off"
    )
    checkpoint_every: int = setting(
        0, "also write checkpoint.pt every N steps, for resuming after a crash (0: at the end only)"
    )
    resume: str | None = setting(
        None, "path of a checkpoint.pt to continue from; the run then ends at train.steps"
    )
    on_nonfinite: str = setting(
        "stop",
        "a NaN/inf loss or gradient: stop (metrics.json says diverged; the last good "
        "checkpoint kept) | skip (drop that update; one host sync a step) | raise (fail the job)",
    )
    amp: str | None = setting(
        None, "null (full precision) | bf16: autocast of the forward pass and the loss"
    )
    compile: bool = setting(False, "torch.compile the model for the training steps")


@dataclass
class LogSchema:
    """`log`: what goes to TensorBoard, and how often (conf/config.yaml)."""

    every: int = setting(
        10, "scalars (norms, stds, update ratios, activations, loss, lr) every N steps (0: off)"
    )
    hist_every: int = setting(100, "weight and gradient histograms every N steps (0: off)")
    hist_bins: int = setting(64, "bins of each histogram, counted on the device")


@dataclass
class RunSchema:
    """The config of `python -m runner`: one option of each group plus the top-level settings.

    Fields are in the order the keys are composed (groups, then conf/config.yaml's own keys).
    """

    model: ModelSchema = setting(doc="the architecture", factory=ModelSchema)
    init: InitSchema = setting(doc="the init rules", factory=InitSchema)
    tying: TyingSchema = setting(doc="the tying groups", factory=TyingSchema)
    data: DataSchema = setting(doc="the synthetic data", factory=DataSchema)
    optim: OptimSchema = setting(doc="optimizer and schedule", factory=OptimSchema)
    seed: int = setting(
        0, "seeds layer construction, init, data, shuffling and dropout: one seed, one set of bits"
    )
    device: str = setting("auto", "auto (cuda, then mps, then cpu) | cpu | cuda | cuda:N | mps")
    train: TrainSchema = setting(doc="the training loop", factory=TrainSchema)
    log: LogSchema = setting(doc="TensorBoard logging", factory=LogSchema)


@dataclass
class InspectOptionsSchema:
    """`inspect`: what `python -m runner.inspect` shows about the model (conf/inspect.yaml)."""

    param: str | None = setting(
        None,
        "a parameter or module path to print, e.g. 0.1.0.bias (the chapter's "
        "rgnet[0][1][0].bias); an empty path prints the whole model's state_dict",
    )
    backward: bool = setting(
        False,
        "with param: first run net(X).sum().backward() on the batch of batch_size samples, so "
        "the printed .grad is that gradient (the chapter's Y.backward())",
    )
    batch_size: int = setting(2, "samples in the batch that shows each layer's output shape")
    probe_batch: int = setting(
        256, "samples in the signal-propagation probe: activation and gradient std per layer"
    )


@dataclass
class InspectSchema(RunSchema):
    """The config of `python -m runner.inspect`: the run's config plus `inspect.*`."""

    inspect: InspectOptionsSchema = setting(
        doc="what runner.inspect shows", factory=InspectOptionsSchema
    )


# Groups whose files may define variables for their own interpolations (`${model.width}`).
WITH_VARIABLES = (ModelSchema, InitSchema, TyingSchema)


def register() -> None:
    """Store the schemas in Hydra's ConfigStore as `schema/run` and `schema/inspect`.

    Both sit at the global package, so the config that lists one is typed as a whole;
    the nodes of WITH_VARIABLES are left open (struct off) for the files' variables.
    Storing again replaces the entries, so calling this twice is harmless.
    """
    from hydra.core.config_store import ConfigStore

    store = ConfigStore.instance()
    for name, schema in (("run", RunSchema), ("inspect", InspectSchema)):
        store.store(group=SCHEMA_GROUP, name=name, node=_typed_node(schema), package="_global_")


def _typed_node(schema: type) -> DictConfig:
    node = OmegaConf.structured(schema)
    for field in dataclasses.fields(schema):
        if hints(schema)[field.name] in WITH_VARIABLES:
            OmegaConf.set_struct(node[field.name], False)
    return node


def takes_variables(node_type: Any) -> bool:
    """True for the schema of a group whose files may hold variables of their own."""
    return node_type in WITH_VARIABLES


def is_schema(node_type: Any) -> bool:
    """True for a dataclass of this module (a closed or variable-taking node of the tree)."""
    return dataclasses.is_dataclass(node_type) and node_type.__module__ == __name__


def keys_of(schema: type) -> list[str]:
    """The keys a schema declares, in order."""
    return [field.name for field in dataclasses.fields(schema)]


def strip_optional(tp: Any) -> Any:
    """`X` for `X | None` (Optional[X]); `Any` for a union of several types; else `tp`."""
    if get_origin(tp) is Union or type(tp).__name__ == "UnionType":
        rest = [arg for arg in get_args(tp) if arg is not type(None)]
        return rest[0] if len(rest) == 1 else Any
    return tp


def hints(schema: type) -> dict[str, Any]:
    """The schema's field types, resolved."""
    # The annotations are strings (postponed evaluation); resolve them in this module.
    return get_type_hints(schema)
