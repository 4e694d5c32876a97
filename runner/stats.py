"""Per-layer statistics of a training step, computed in batched device ops, copied to the host once.

On a step that logs, `StepStats` hooks every layer's forward pass (activation mean,
std and the fraction of dead ReLU units), reads every unique parameter's weight and
gradient (norm, std) and the update it received (‖Δw‖/‖w‖; runner/param_stats.py), and
bins histograms. The device only reduces (sums, centred sums of squares, min, max, bin
counts; runner/reductions.py, a few ops per group of same-shape tensors), and only
groups above TINY_LIMIT values: smaller ones are copied whole and reduced on the host.
Every number of a step is concatenated into one tensor and copied to the host in one
transfer, and the host finishes them (divisions, square roots, a tied tensor's several
names). On steps that do not log, nothing is registered or computed. A tied tensor is
measured once and reported under every name that refers to it, so tied and untied runs
have the same tags.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from runner.host_copy import Shipment, ship_to_host
from runner.host_numbers import Histogram, sample_std
from runner.param_stats import ParamStats
from runner.probe import LayerCall, layer_paths
from runner.reductions import (
    STACK_LIMIT,
    TINY_LIMIT,
    Workspace,
    dead_rectifier_units,
    host_dead_units,
    row_moments,
    stacked,
    unit_sums,
)

# Modules whose zero outputs mean a unit is off (a "dead" unit never turns on in a batch).
RECTIFIERS = (nn.ReLU, nn.ReLU6)


@dataclass
class StepRecord:
    """The host-side numbers of one logging step."""

    scalars: dict[str, float] = field(default_factory=dict)
    histograms: dict[str, Histogram] = field(default_factory=dict)


@dataclass(frozen=True)
class _Output:
    """One layer call's output, waiting in the stash for its group's reductions; made once
    per (path, kind, batch) and reused, its tags with it."""

    path: str
    rectifier: bool  # a ReLU: count its dead units
    batch: int  # samples in the output (its first dimension)
    mean_tag: str
    std_tag: str
    dead_tag: str

    @classmethod
    def of(cls, path: str, rectifier: bool, batch: int) -> _Output:
        """The entry of an output at `path`, with its tags."""
        return cls(path, rectifier, batch, f"activations_mean/{path}",
                   f"activations_std/{path}", f"dead_relu/{path}")  # fmt: skip


class _OutputStash:
    """Copies of the small layer outputs of a forward pass, as rows of one reused buffer per
    shape, reduced together after the pass. A copy, not a reference: a later in-place op
    (`ReLU(inplace=True)`) would change the output before it is measured."""

    def __init__(self) -> None:
        self._buffers: dict[tuple[int, ...], torch.Tensor] = {}
        # The buffer rows, each viewed in the shape of the outputs it takes: a copy into one
        # is one op (reshaping each output was a second).
        self._rows: dict[tuple[int, ...], list[torch.Tensor]] = {}
        self._waiting: dict[tuple[int, ...], list[_Output]] = {}

    def add(self, output: torch.Tensor, entry: _Output) -> None:
        """Copy `output` (detached) into the next free row of its shape's buffer."""
        shape = tuple(output.shape)
        waiting = self._waiting.setdefault(shape, [])
        rows = self._rows.get(shape, [])
        if len(waiting) == len(rows):  # full (or new): double it, keeping the rows taken
            buffer = torch.empty((max(2 * len(rows), 1), output.numel()), dtype=torch.float32,
                                 device=output.device)  # fmt: skip
            if rows:
                buffer[: len(rows)].copy_(self._buffers[shape][: len(rows)])
            self._buffers[shape] = buffer
            self._rows[shape] = rows = [row.view(shape) for row in buffer.unbind()]
        rows[len(waiting)].copy_(output)
        waiting.append(entry)

    def take(self) -> list[tuple[torch.Tensor, list[_Output]]]:
        """Each shape's filled rows (a (k, numel) float32 view) and what they hold; empties.
        The rows are the caller's until the next `add`: `_ship_outputs` writes the centred
        squares over them."""
        taken = [(self._buffers[shape][: len(entries)], entries)
                 for shape, entries in self._waiting.items() if entries]  # fmt: skip
        self._waiting = {}
        return taken


class StepStats:
    """Collects one step's statistics: `start` before forward, `before_update` after
    backward (gradients), `finish` after `optimizer.step()` (weights).
    """

    def __init__(self, model: nn.Module, hist_bins: int) -> None:
        self.model = model
        self.layers = layer_paths(model)
        self._workspace = Workspace()
        self._params = ParamStats(model, hist_bins, self._workspace)
        self._stash = _OutputStash()
        self._places: dict[int, list[str]] = {}  # module -> its paths, in call order
        for path, module in self.layers:
            self._places.setdefault(id(module), []).append(path)
        self._calls: dict[int, int] = {}  # module -> its calls so far in this forward pass
        self._entries: dict[tuple, _Output] = {}  # (path, rectifier, batch) -> its entry
        self._handle = None  # the global forward hook, while registered
        self._armed = False  # the hook records this forward pass
        self._reset()

    def _reset(self) -> None:
        self._shipped: list[Shipment] = []
        self._record = StepRecord()  # filled by the shipments' finishers
        self._params.reset()

    def start(self, activations: bool) -> None:
        """Hook the layers' forward passes for this step: one global forward hook (PyTorch
        calls it after every module's forward), which files the outputs of our layers. It
        is registered on the first such step and kept while the next steps measure
        activations too (a run logging every step registers it once); `unhook` removes it,
        and a step that does not measure activations calls it. (One global hook, not one
        per layer: registering and removing ten module hooks cost 170 us a logging step.)"""
        if not activations:
            self.unhook()
            return
        if self._handle is None:
            self._handle = nn.modules.module.register_module_forward_hook(self._hook)
        self._calls.clear()
        self._armed = True

    def unhook(self) -> None:
        """Remove the forward hook (the loop calls it on steps that do not log, and at its end)."""
        if self._handle is not None:
            self._handle.remove()
            self._handle = None
        self._armed = False

    def _hook(self, module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        where = self._places.get(id(module))  # None: not one of our layers (the loss, a container)
        if not (where and self._armed and isinstance(output, torch.Tensor)
                and output.is_floating_point() and output.numel()):  # fmt: skip
            return  # (an output of no values has no mean or std)
        index = self._calls.get(id(module), 0)
        self._calls[id(module)] = index + 1
        self._add_output(where[min(index, len(where) - 1)], module, output)

    def add_calls(self, calls: list[LayerCall]) -> None:
        """Activation statistics of layer calls recorded elsewhere (the probe at step 0)."""
        for call in calls:
            if call.output.is_floating_point() and call.output.numel():
                self._add_output(call.path, call.module, call.output)

    def _add_output(self, path: str, module: nn.Module, output: torch.Tensor) -> None:
        rectifier = isinstance(module, RECTIFIERS) and output.dim() > 0
        key = (path, rectifier, output.shape[0] if output.dim() else 1)
        entry = self._entries.get(key)
        if entry is None:
            entry = self._entries[key] = _Output.of(*key)
        out = output.detach()
        if out.numel() < STACK_LIMIT:
            self._stash.add(out, entry)
        else:  # reduced now: big enough to keep its ops busy, too big to copy
            self._ship_outputs(stacked([out], self._workspace), [entry])

    def _ship_outputs(
        self, rows: torch.Tensor, entries: list[_Output], stash: bool = False
    ) -> None:
        """Mean, std and dead units of layer outputs of one shape, the rows of `rows` (at most
        TINY_LIMIT values: copied whole and reduced on the host). `stash`: `rows` are the
        stash's copies, free to overwrite once reduced (not an output itself)."""
        rectifiers, n, batch = any(e.rectifier for e in entries), rows.shape[1], entries[0].batch
        if rows.numel() <= TINY_LIMIT:

            def finish_on_host(values: list) -> None:
                sums, squares = values[-1][0], values[-1][1]
                host = values[0].reshape(len(entries), n)
                dead = host_dead_units(host, batch).tolist() if rectifiers else []
                self._file_outputs(entries, n, sums.tolist(), squares.tolist(), dead)

            # `rows` is the stash's buffer: it holds until the next forward pass, after the copy.
            self._shipped.append(Shipment([], finish_on_host, [rows], host_rows=True))
            return
        counted: list[int] = []  # the rows whose dead units are counted
        if rectifiers:  # the units' sums give the rows' sums and the dead units
            per_unit = unit_sums(rows, batch)
            picked, counted = _rectifier_rows(per_unit, [e.rectifier for e in entries])
            pieces = [*row_moments(rows, self._workspace, per_unit.sum(1), overwrite=stash),
                      dead_rectifier_units(picked)]  # fmt: skip
        else:
            pieces = [*row_moments(rows, self._workspace, overwrite=stash)]

        def finish(values: list[list[float]]) -> None:
            dead = [0.0] * len(entries)
            for row, value in zip(counted, values[2] if counted else [], strict=True):
                dead[row] = value
            self._file_outputs(entries, n, values[0], values[1], dead)

        self._shipped.append(Shipment(pieces, finish))

    def _file_outputs(self, entries: list[_Output], n: int, sums: list[float],
                      squares: list[float], dead: list[float]) -> None:  # fmt: skip
        scalars = self._record.scalars
        for row, entry in enumerate(entries):
            s, q = sums[row], squares[row]
            scalars[entry.mean_tag] = s / n
            scalars[entry.std_tag] = sample_std(q, n)
            if entry.rectifier:
                scalars[entry.dead_tag] = dead[row] * entry.batch / n

    def _reduce_stash(self) -> None:
        for rows, entries in self._stash.take():
            self._ship_outputs(rows, entries, stash=True)

    def before_update(self, scalars: bool, histograms: bool, step: int | None = None) -> None:
        """After backward: the layer outputs' and the gradients' statistics (big groups
        reduced now, small ones copied for `finish`); snapshot weights for ‖Δw‖. `step`:
        the training step (a step that follows the last one measured needs fewer copies)."""
        self._armed = False  # the forward pass is over: hooks stay for the next step
        self._reduce_stash()
        with torch.no_grad():
            self._shipped += self._params.take_grads(histograms, step)
            if scalars:
                self._params.snapshot()

    def finish(self, scalars: bool, histograms: bool, extra: dict[str, torch.Tensor],
               step: int | None = None) -> StepRecord:  # fmt: skip
        """After the optimizer step: weight statistics, update ratios and weight histograms (all
        of the weights the step produced), then the one host copy.

        `extra` holds more scalar tensors to ship in the same copy (the loss, the lr); `step`
        is the one `before_update` was given.
        """
        self._reduce_stash()
        with torch.no_grad():
            if scalars or histograms:
                self._shipped += self._params.take_weights(histograms, step)
            for tag, value in extra.items():
                self._shipped.append(
                    Shipment([value.detach().reshape(1)], self._scalar_finisher(tag))
                )
        ship_to_host(self._shipped)
        record = self._record
        self._params.emit(scalars, record.scalars, record.histograms)
        self._reset()
        return record

    def _scalar_finisher(self, tag: str) -> Callable[[list[list[float]]], None]:
        def finish(values: list[list[float]]) -> None:
            self._record.scalars[tag] = values[0][0]

        return finish


def _rectifier_rows(rows: torch.Tensor, rectifier: list[bool]) -> tuple[torch.Tensor, list[int]]:
    """The rows of rectifier outputs as a view of `rows` (with their indices) when they are
    evenly spaced (a ReLU after each Linear: every other row), else all rows (the other
    rows' counts are ignored): a view costs no op on the device, an index would copy."""
    picked = [r for r, is_rectifier in enumerate(rectifier) if is_rectifier]
    step = picked[1] - picked[0] if len(picked) > 1 else 1
    if all(b - a == step for a, b in zip(picked, picked[1:], strict=False)):
        return rows[picked[0] :: step][: len(picked)], picked
    return rows, list(range(len(rectifier)))
