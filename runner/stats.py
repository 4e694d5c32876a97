"""Per-layer statistics of a training step, computed in batched device ops, copied to the host once.

On a step that logs, `StepStats` hooks every layer's forward pass (activation mean,
std and the fraction of dead ReLU units), reads every unique parameter's weight and
gradient (norm, std) and the update it received (‖Δw‖/‖w‖), and bins histograms
on the device (`torch.histc`). All numbers of a step are concatenated into one
tensor and copied to the host in one transfer; on steps that do not log, nothing
is registered or computed. A tied tensor is measured once and reported under every
name that refers to it, so tied and untied runs have the same tags.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from runner.probe import LayerCall, layer_paths

# Modules whose zero outputs mean a unit is off (a "dead" unit never turns on in a batch).
RECTIFIERS = (nn.ReLU, nn.ReLU6)


@dataclass
class Histogram:
    """What `SummaryWriter.add_histogram_raw` needs for one tensor."""

    min: float
    max: float
    num: int
    sum: float
    sum_squares: float
    bucket_limits: list[float]
    bucket_counts: list[float]


@dataclass
class StepRecord:
    """The host-side numbers of one logging step."""

    scalars: dict[str, float] = field(default_factory=dict)
    histograms: dict[str, Histogram] = field(default_factory=dict)


def activation_stats(
    path: str, module: nn.Module, output: torch.Tensor
) -> tuple[list[str], torch.Tensor]:
    """Tags and values of one layer call: activation mean and std, and for a rectifier the
    fraction of dead units (units that are never positive across the batch)."""
    out = output.detach().float()
    mean = out.mean()
    values = [mean, _centred_std(out, mean)]
    tags = [f"activations_mean/{path}", f"activations_std/{path}"]
    if isinstance(module, RECTIFIERS):
        # Never above zero over the batch; amax is one reduction where (x <= 0).all()
        # first writes a boolean copy of the whole output (10x slower on the CPU).
        flat = out.reshape(out.shape[0], -1)
        values.append((flat.amax(dim=0) <= 0).float().mean())
        tags.append(f"dead_relu/{path}")
    return tags, torch.stack(values)


def _centred_std(t: torch.Tensor, mean: torch.Tensor) -> torch.Tensor:
    """The sample std, sqrt(sum((t - mean)^2) / (n - 1)), in two passes (as accurate as
    `Tensor.std`, which on the CPU is several times slower); 0 for a single value."""
    n = t.numel()
    if n < 2:
        return t.new_zeros((), dtype=torch.float32)
    return torch.linalg.vector_norm(t - mean) / (n - 1) ** 0.5


def unique_parameters(model: nn.Module) -> list[tuple[nn.Parameter, list[str]]]:
    """Each distinct Parameter once, with every name that refers to it (tied ones have several)."""
    seen: dict[int, tuple[nn.Parameter, list[str]]] = {}
    for name, param in model.named_parameters(remove_duplicate=False):
        seen.setdefault(id(param), (param, []))[1].append(name)
    return list(seen.values())


class StepStats:
    """Collects one step's statistics: `start` before forward, `before_update` after
    backward (gradients), `finish` after `optimizer.step()` (weights).
    """

    def __init__(self, model: nn.Module, hist_bins: int) -> None:
        self.model = model
        self.params = unique_parameters(model)
        self.layers = layer_paths(model)
        self.hist_bins = hist_bins
        # Row i of a per-tensor result goes to every name of tensor i. The index and the std
        # divisors live on the device from the start (copied without waiting: no host sync),
        # so using them costs no host-to-device copy per step.
        device = self.params[0][0].device if self.params else torch.device("cpu")
        columns = [i for i, (_, names) in enumerate(self.params) for _ in names]
        self._by_name = torch.tensor(columns, dtype=torch.long).to(device, non_blocking=True)
        self._names = [name for _, names in self.params for name in names]
        divisors = [max(p.numel() - 1, 1) ** 0.5 for p, _ in self.params]
        self._std_divisors = torch.tensor(divisors).to(device, non_blocking=True)
        self._snapshot: list[torch.Tensor] | None = None  # weights before the update, reused
        self._reset()

    def _reset(self) -> None:
        self._parts: list[tuple[list[str], torch.Tensor]] = []  # (tags, values) pairs
        self._hist_parts: list[tuple[list[str], torch.Tensor, torch.Tensor]] = []
        self._handles: list = []
        self._before: list[torch.Tensor] | None = None

    def start(self, activations: bool) -> None:
        """Hook every layer's forward pass for this step only."""
        if not activations:
            return
        places: dict[int, list[str]] = {}
        for path, module in self.layers:
            places.setdefault(id(module), []).append(path)
        calls: dict[int, int] = {}

        def hook(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
            if not isinstance(output, torch.Tensor) or not output.is_floating_point():
                return
            index = calls.get(id(module), 0)
            calls[id(module)] = index + 1
            where = places[id(module)]
            self._parts.append(activation_stats(where[min(index, len(where) - 1)], module, output))

        unique = {id(m): m for _, m in self.layers}.values()
        self._handles = [m.register_forward_hook(hook) for m in unique]

    def add_calls(self, calls: list[LayerCall]) -> None:
        """Activation statistics of layer calls recorded elsewhere (the probe at step 0)."""
        for call in calls:
            if call.output.is_floating_point():
                self._parts.append(activation_stats(call.path, call.module, call.output))

    def before_update(self, scalars: bool, histograms: bool) -> None:
        """After backward: gradient statistics and histograms; snapshot weights for ‖Δw‖."""
        for handle in self._handles:
            handle.remove()
        self._handles = []
        weights = [p.detach() for p, _ in self.params]
        grads = [
            p.grad.detach() if p.grad is not None else torch.zeros_like(p) for p, _ in self.params
        ]
        if scalars:
            self._per_param("grads_norm", torch.stack(torch._foreach_norm(grads)))
            self._per_param("grads_std", _stds(grads, self._std_divisors))
            if self._snapshot is None:
                self._snapshot = [w.clone() for w in weights]
            else:  # into the buffers of the last logging step: no allocation
                torch._foreach_copy_(self._snapshot, weights)
            self._before = self._snapshot
        if histograms:
            self._histograms("grads", grads)

    def finish(self, scalars: bool, histograms: bool, extra: dict[str, torch.Tensor]) -> StepRecord:
        """After the optimizer step: weight statistics, update ratios and weight histograms (all
        of the weights the step produced), then the one host copy.

        `extra` holds more scalar tensors to ship in the same copy (the loss, the lr).
        """
        weights = [p.detach() for p, _ in self.params]
        if histograms:
            self._histograms("weights", weights)
        if scalars:
            norms = torch.stack(torch._foreach_norm(weights))
            self._per_param("weights_norm", norms)
            self._per_param("weights_std", _stds(weights, self._std_divisors))
            if self._before is not None:
                delta = torch.stack(torch._foreach_norm(torch._foreach_sub(weights, self._before)))
                before = torch.stack(torch._foreach_norm(self._before))
                self._per_param("update_ratio", delta / before.clamp_min(1e-12))
        for tag, value in extra.items():
            self._parts.append(([tag], value.detach().float().reshape(1)))
        record = self._to_host()
        self._reset()
        return record

    def _per_param(self, prefix: str, values: torch.Tensor) -> None:
        # One measurement per tensor, written under every name of a tied tensor.
        tags = [f"{prefix}/{name}" for name in self._names]
        self._parts.append((tags, values.float().index_select(0, self._by_name)))

    def _histograms(self, prefix: str, tensors: list[torch.Tensor]) -> None:
        flats = [t.float().reshape(-1) for t in tensors]
        bounds = [torch.aminmax(flat) for flat in flats]  # one pass each for min and max
        bin_counts = [
            self._bin(flat, low, high) for flat, (low, high) in zip(flats, bounds, strict=True)
        ]
        summary = torch.stack([
            torch.stack([low for low, _ in bounds]), torch.stack([high for _, high in bounds]),
            torch.stack([flat.sum() for flat in flats]),
            torch.stack(torch._foreach_norm(flats)).square(),  # sums of squares, batched
        ], dim=1)  # fmt: skip
        tags = [f"{prefix}/{name}" for name in self._names]
        self._hist_parts.append(
            (tags, summary.index_select(0, self._by_name),
             torch.stack(bin_counts).index_select(0, self._by_name))
        )  # fmt: skip

    def _bin(self, flat: torch.Tensor, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
        """Counts of `flat` in `hist_bins` equal bins from its min to its max (the max in the
        last bin), as `torch.histc` counts them."""
        bins = self.hist_bins
        if flat.device.type == "cpu":  # bounds as Python numbers cost nothing here
            lo, hi = low.item(), high.item()
            if not lo < hi:  # one value throughout (or NaN): all of it in the first bin
                counts = torch.zeros(bins)
                counts[0] = flat.numel()
                return counts
            return torch.histc(flat, bins=bins, min=lo, max=hi)
        # On a GPU, Python bounds would be a host sync: bin in [0, 1] after scaling instead.
        scaled = (flat - low) / (high - low).clamp_min(1e-12)
        return torch.histc(scaled, bins=bins, min=0.0, max=1.0)

    def _to_host(self) -> StepRecord:
        pieces = [values.reshape(-1) for _, values in self._parts]
        for _, summary, counts in self._hist_parts:
            pieces += [summary.reshape(-1), counts.reshape(-1)]
        if not pieces:
            return StepRecord()
        host = torch.cat(pieces).cpu().tolist()  # the one device-to-host copy of the step
        record, at = StepRecord(), 0
        for tags, values in self._parts:
            for tag, value in zip(tags, host[at : at + values.numel()], strict=True):
                record.scalars[tag] = value
            at += values.numel()
        bins = self.hist_bins
        for tags, summary, _ in self._hist_parts:
            stats = host[at : at + summary.numel()]
            at += summary.numel()
            counts = host[at : at + len(tags) * bins]
            at += len(tags) * bins
            for i, tag in enumerate(tags):
                low, high, total, squares = stats[4 * i : 4 * i + 4]
                width = max(high - low, 1e-12) / bins
                record.histograms[tag] = Histogram(
                    low, high, int(sum(counts[i * bins : (i + 1) * bins])), total, squares,
                    [low + width * (k + 1) for k in range(bins)], counts[i * bins : (i + 1) * bins],
                )  # fmt: skip
        return record


def _stds(tensors: list[torch.Tensor], divisors: torch.Tensor) -> torch.Tensor:
    """Sample stds of many tensors, sqrt(sum((t - mean)^2) / (n - 1)): per-tensor means, then
    one batched norm of the centred tensors. `divisors` holds sqrt(max(n - 1, 1)) per tensor
    (a single value is its own mean, so its std comes out 0)."""
    floats = [t.float() for t in tensors]
    centred = torch._foreach_sub(floats, [t.mean() for t in floats])
    return torch.stack(torch._foreach_norm(centred)) / divisors
