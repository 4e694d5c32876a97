"""Architecture from config: layers and named blocks become a plain `nn.Sequential` tree.

The tree is what the same net written by hand would be: children named "0", "1", ...
(or by a `name:` template such as "block {i}"), blocks as nested `nn.Sequential`s,
so `state_dict` keys and shapes equal the hand-written model's. Layers are built
in order with PyTorch's own default init, so under one seed the untouched
parameters equal those of the hand-written model built under that seed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from runner.errors import ConfigError, did_you_mean, one_of, require_int
from runner.layers import (
    ALIASES,
    constructor_parameters,
    infer_input_sizes,
    torch_nn_class,
    torch_nn_class_names,
)

MODEL_KEYS = ("layers", "blocks")
# A batch of two: enough for BatchNorm, cheap for the widest layer.
SHAPE_PROBE_BATCH = 2
# Arguments that size a tensor: torch accepts 0 (an empty layer, with a warning) and fails on
# a negative one deep inside; a size the user wrote must be at least 1.
SIZE_ARGUMENTS = ("in_features", "out_features", "in1_features", "in2_features", "in_channels",
                  "out_channels", "num_features", "num_embeddings", "embedding_dim", "input_size",
                  "hidden_size", "num_channels", "num_groups", "kernel_size")  # fmt: skip


@dataclass(frozen=True)
class LayerEntry:
    """One item of a `layers:` or block list, parsed and checked."""

    where: str  # e.g. "model/rgnet.yaml: blocks.block2[0]", for error messages
    label: str  # what the user wrote: "linear", "block1", "runner.layers.MyLinear"
    block: str | None  # the block it expands, or None for a single module
    cls: type[nn.Module] | None
    kwargs: dict[str, Any] = field(default_factory=dict)
    repeat: int = 1
    name: str | None = None


def build_architecture(
    model_cfg: Mapping[str, Any], sample_shape: tuple[int, ...], where: str
) -> tuple[nn.Sequential, tuple[int, ...]]:
    """Build the module tree of a model config; return it with the output shape of one sample.

    `model_cfg` is the plain dict of the `model` group, `sample_shape` the input shape
    without the batch dimension, `where` the file name used in error messages.
    """
    return _ArchitectureBuilder(model_cfg, where).build(sample_shape)


class _ArchitectureBuilder:
    def __init__(self, model_cfg: Mapping[str, Any], where: str) -> None:
        from runner.config_values import check_keys

        check_keys(model_cfg, MODEL_KEYS, where, allow_scalars=True)
        self.where = where
        blocks = model_cfg.get("blocks") or {}
        if not isinstance(blocks, Mapping):
            raise ConfigError(f"{where}: blocks must map block names to lists of layers")
        self.block_names = [str(name) for name in blocks]
        self.blocks = {
            str(name): self._parse_list(entries, f"{where}: blocks.{name}")
            for name, entries in blocks.items()
        }
        layers = model_cfg.get("layers")
        if layers is None:
            raise ConfigError(f"{where}: missing key 'layers' (the list of layers of the model)")
        self.layers = self._parse_list(layers, f"{where}: layers")

    def build(self, sample_shape: tuple[int, ...]) -> tuple[nn.Sequential, tuple[int, ...]]:
        shape_dtype = (tuple(sample_shape), None)  # None: the model's input, ints or floats
        net, (shape, _) = self._sequential(self.layers, shape_dtype, stack=())
        return net, shape

    # -- parsing -------------------------------------------------------------------------

    def _parse_list(self, entries: Any, where: str) -> list[LayerEntry]:
        if not isinstance(entries, list) or not entries:
            raise ConfigError(f"{where}: must be a non-empty list of layers, got {entries!r}")
        return [self._parse_entry(entry, f"{where}[{i}]") for i, entry in enumerate(entries)]

    def _parse_entry(self, entry: Any, where: str) -> LayerEntry:
        if isinstance(entry, str):  # a bare "relu" is short for {type: relu}
            entry = {"type": entry}
        if not isinstance(entry, Mapping):
            raise ConfigError(f"{where}: a layer is a mapping with 'type:' or '_target_:'")
        entry = dict(entry)
        type_name, target = entry.pop("type", None), entry.pop("_target_", None)
        repeat, name = entry.pop("repeat", 1), entry.pop("name", None)
        if (type_name is None) == (target is None):
            raise ConfigError(f"{where}: give exactly one of 'type' or '_target_'")
        require_int(repeat, f"{where}: repeat", 1)
        if name is not None:
            name = str(name)
            if repeat > 1 and "{i}" not in name:
                raise ConfigError(f"{where}: name '{name}' needs '{{i}}' when repeat > 1")
            try:
                name.format(i=0)
            except (KeyError, IndexError, ValueError) as error:
                raise ConfigError(
                    f"{where}: name '{name}' is not a template of {{i}} alone ({error!r})"
                ) from error
        if target is not None:
            cls = _import_module_class(target, where)
            return LayerEntry(where, target, None, cls, entry, repeat, name)
        type_name = str(type_name)
        if type_name in self.block_names:
            if entry:
                raise ConfigError(
                    f"{where}: block '{type_name}' takes no arguments, got {one_of(entry)}"
                )
            return LayerEntry(where, type_name, type_name, None, {}, repeat, name)
        cls = torch_nn_class(type_name)
        if cls is None:
            known = [*self.block_names, *ALIASES]
            raise ConfigError(
                f"{where}: unknown layer type '{type_name}'; valid: blocks "
                f"[{one_of(self.block_names)}], aliases [{one_of(ALIASES, limit=20)}] "
                f"or a torch.nn class name"
                f"{did_you_mean(type_name, known + torch_nn_class_names())}"
            )
        _check_arguments(cls, entry, type_name, where)
        return LayerEntry(where, type_name, None, cls, entry, repeat, name)

    # -- building ------------------------------------------------------------------------

    def _sequential(
        self, entries: list[LayerEntry], shape_dtype: tuple, stack: tuple[str, ...]
    ) -> tuple[nn.Sequential, tuple]:
        net = nn.Sequential()
        position = 0
        for entry in entries:
            for i in range(entry.repeat):
                child_name = entry.name.format(i=i) if entry.name else str(position)
                if child_name in net._modules or "." in child_name or not child_name:
                    raise ConfigError(
                        f"{entry.where}: child name '{child_name}' is empty, contains '.', "
                        f"or is used twice in this list"
                    )
                child, shape_dtype = self._child(entry, shape_dtype, stack)
                net.add_module(child_name, child)
                position += 1
        return net, shape_dtype

    def _child(self, entry: LayerEntry, shape_dtype: tuple, stack: tuple[str, ...]):
        if entry.block is not None:
            if entry.block in stack:
                cycle = " -> ".join([*stack[stack.index(entry.block) :], entry.block])
                raise ConfigError(f"{entry.where}: block '{entry.block}' uses itself ({cycle})")
            return self._sequential(self.blocks[entry.block], shape_dtype, (*stack, entry.block))
        shape, _ = shape_dtype
        kwargs = {**infer_input_sizes(entry.cls, entry.kwargs, shape), **entry.kwargs}
        _check_arguments(entry.cls, kwargs, entry.label, entry.where, complete=True)
        _check_sizes(kwargs, entry)
        try:
            module = entry.cls(**kwargs)
        except Exception as error:  # the class's own check of its arguments
            raise ConfigError(
                f"{entry.where}: {entry.label}({_format_kwargs(kwargs)}) failed: {error}"
            ) from error
        return module, _output_shape(module, shape_dtype, entry)


def _import_module_class(target: str, where: str) -> type[nn.Module]:
    from runner.config_values import import_object

    cls = import_object(target, where)
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise ConfigError(f"{where}: _target_ '{target}' is not a torch.nn.Module class")
    return cls


def _check_arguments(
    cls: type[nn.Module], kwargs: Mapping[str, Any], label: str, where: str, complete=False
) -> None:
    names, required, var_keyword = constructor_parameters(cls)
    if not var_keyword:
        for key in kwargs:
            if key not in names:
                raise ConfigError(
                    f"{where}: {label} has no argument '{key}'; valid: {one_of(names)}"
                    f"{did_you_mean(key, names)}"
                )
    if complete:
        missing = [name for name in required if name not in kwargs]
        if missing:
            raise ConfigError(
                f"{where}: {label} is missing required argument '{missing[0]}' "
                f"(it takes {one_of(names)})"
            )


def _check_sizes(kwargs: Mapping[str, Any], entry: LayerEntry) -> None:
    """Each size argument an integer >= 1 (or a tuple of them, as kernel_size may be)."""
    for key in SIZE_ARGUMENTS:
        value = kwargs.get(key)
        values = value if isinstance(value, (list, tuple)) else [value]
        if any(isinstance(v, int) and not isinstance(v, bool) and v < 1 for v in values):
            raise ConfigError(
                f"{entry.where}: {entry.label} {key} must be an integer >= 1, got {value!r}"
            )


def _output_shape(module: nn.Module, shape_dtype: tuple, entry: LayerEntry) -> tuple:
    """Run `module` on zeros to learn its output shape and dtype (eval mode: no state changes)."""
    shape, dtype = shape_dtype
    if isinstance(module, (nn.Embedding, nn.EmbeddingBag)):
        if dtype is not None:
            raise ConfigError(
                f"{entry.where}: {entry.label} needs token ids (integers), but the layer before "
                f"it outputs {str(dtype).removeprefix('torch.')}; an embedding must come first"
            )
        dtype = torch.long  # token ids in; a model that starts with an embedding takes ints
    dtype = dtype or torch.float32
    x = torch.zeros((SHAPE_PROBE_BATCH, *shape), dtype=dtype)
    was_training = module.training
    module.eval()  # no BatchNorm statistics updated, no dropout draws from the RNG
    try:
        with torch.no_grad():
            y = module(x)
    except Exception as error:
        message = str(error).strip().splitlines()[0] if str(error).strip() else type(error)
        raise ConfigError(
            f"{entry.where}: {entry.label} does not accept an input of shape "
            f"{tuple(x.shape)}: {message}"
        ) from error
    finally:
        module.train(was_training)
    if not isinstance(y, torch.Tensor):
        raise ConfigError(
            f"{entry.where}: {entry.label} returns {type(y).__name__}, not a tensor; "
            "layers in a list must map a tensor to a tensor"
        )
    return tuple(y.shape[1:]), y.dtype


def _format_kwargs(kwargs: Mapping[str, Any]) -> str:
    return ", ".join(f"{key}={value!r}" for key, value in kwargs.items())
