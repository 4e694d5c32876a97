"""Statistics of a model's parameters on a logging step: each unique tensor's gradient and
weight (norm, std, histogram) and the update it received (‖Δw‖/‖w‖).

Tensors are reduced in row groups (runner/param_layout.py: tensors of one shape, and
small ones of several shapes cut into rows of one length). A small group (its gradients
and weights together below STACK_LIMIT values) keeps a "pair" buffer: the gradients are
copied into its first half before the update (a copy, since gradient clipping changes
them in place), the new weights into its second half after it, and both halves are
reduced by one set of ops, where reducing each on its own would pay every op's fixed cost
twice. A bigger group is reduced where it is taken, without a copy. The tiny groups (a
pair of at most TINY_LIMIT values: biases, norm layers' weights) share one block, copied
to the host whole and reduced there.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from runner.binning import row_histograms
from runner.host_copy import Shipment
from runner.host_numbers import Histogram, reduce_rows
from runner.param_buffers import Rows, TinyBlock
from runner.param_layout import RowGroup, plan_groups
from runner.param_tags import ParamTags
from runner.reductions import Workspace, row_moments, row_squares, span_layout, stacked


def unique_parameters(model: nn.Module) -> list[tuple[nn.Parameter, list[str]]]:
    """Each distinct Parameter once, with every name that refers to it (tied ones have several)."""
    seen: dict[int, tuple[nn.Parameter, list[str]]] = {}
    for name, param in model.named_parameters(remove_duplicate=False):
        seen.setdefault(id(param), (param, []))[1].append(name)
    return list(seen.values())


class ParamStats:
    """One logging step's parameter statistics: `take_grads` after backward, `snapshot`
    before the update (for the update ratio), `take_weights` after it; the two takes return
    the shipments to copy to the host, and `emit` writes the tags once their values arrived.
    The tensors shipped are the pairs' and snapshots' own buffers: valid until the next
    logging step takes into them.

    Given the step numbers, a logging step that follows another (logging every step) takes
    no snapshot of the pairs' and the tiny block's weights: the previous step's new weights,
    still in their buffers, are these weights before the update (nothing else writes the
    parameters between two steps). The takes then alternate between two sets of buffers."""

    def __init__(self, model: nn.Module, hist_bins: int, workspace: Workspace) -> None:
        # A tensor of no values has no norm, std or histogram: it gets no tags.
        self.params = [(p, names) for p, names in unique_parameters(model) if p.numel()]
        self.hist_bins = hist_bins
        self._workspace = workspace
        self._numels = [p.numel() for p, _ in self.params]
        # The row groups the device reduces, and the tiny tensors the host does.
        self._groups, self._tiny_members = plan_groups([tuple(p.shape) for p, _ in self.params])
        self._block: TinyBlock | None = None  # made on first use, on the device
        self._pairs: list[Rows | None] | None = None  # made on first use, on the device
        self._spare: tuple | None = None  # the other (pairs, block), made on first use
        self._weights_step: int | None = None  # the step whose new weights the pairs hold
        self._snapshots: list[Rows] | None = None  # per group: weights before the update
        self._before: list[torch.Tensor | None] = []  # per group: this step's w_before
        # Per unique tensor, ||w||^2 of the weights taken at step `_weights_step` (q + s^2/n
        # of their moments): the next step's ||w_before||^2 when it follows that one.
        self._last_squares: list[float] | None = None
        self._block_before: torch.Tensor | None = None  # the tiny block's w_before
        self._tag_writer = ParamTags([names for _, names in self.params], self._numels)
        self.reset()

    def reset(self) -> None:
        """Forget the step: nothing taken, nothing measured."""
        self._grads_held = False  # the small groups' gradients wait in their pairs
        self._follows = False  # this step follows the step whose weights the pairs hold
        self._snapshot_taken = False
        self._histograms = False  # this step bins histograms
        self._updated = False  # this step measures the update ratio
        # prefix ("grads", "weights") -> unique tensor index -> its host numbers:
        # [sum, centred squares, (min, max, counts), (‖Δw‖², ‖w_before‖²)]
        self._measured: dict[str, dict[int, list]] = {}

    def _pairs_on(self, device: torch.device) -> list[Rows | None]:
        """The pairs of the paired groups (None for the others), and the tiny block, made
        on first use."""
        if self._pairs is None:
            self._pairs, self._block = self._new_set(device)
        return self._pairs

    def _new_set(self, device: torch.device) -> tuple[list[Rows | None], TinyBlock | None]:
        """A set of buffers: the pairs (None for groups without one) and the tiny block."""
        pairs = [self._rows(group, 2, device) if group.paired else None for group in self._groups]
        members = self._tiny_members
        return pairs, TinyBlock(members, self._numels, device) if members else None

    def _rows(self, group: RowGroup, sections: int, device: torch.device) -> Rows:
        """A buffer of `sections` sections of the group's rows."""
        shapes = [tuple(self.params[i][0].shape) for i in group.members]
        return Rows(shapes, group.row, sections, device)

    def take_grads(self, histograms: bool, step: int | None = None) -> list[Shipment]:
        """After backward: reduce the big groups' gradients now, hold the small groups' copies
        (in the other set of buffers when step `step - 1` was taken last: its weights stay)."""
        self._histograms = histograms
        if not self.params:
            return []
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p, _ in self.params]
        pairs = self._pairs_on(grads[0].device)
        self._follows = step is not None and self._weights_step == step - 1
        if self._follows:
            if self._spare is None:
                self._spare = self._new_set(grads[0].device)
            self._spare, (self._pairs, self._block) = (self._pairs, self._block), self._spare
            pairs = self._pairs
        shipments = []
        for g, group in enumerate(self._groups):
            members = [grads[i] for i in group.members]
            pair = pairs[g]
            if pair is None:
                shipments.append(self._reduce(g, stacked(members, self._workspace), ("grads",)))
            else:
                pair.put(0, members)
        if self._block is not None:
            self._block.put([grads[i] for i in self._block.members], self._block.grads)
        self._grads_held = True
        return shipments

    def snapshot(self) -> None:
        """The weights before the update, the update ratio's w_before: copied into buffers
        made once, or, on a step that follows the last one taken, the previous step's new
        weights where the other set of buffers holds them."""
        weights = [p for p, _ in self.params]
        if not weights:
            return
        self._pairs_on(weights[0].device)
        if self._snapshots is None:
            self._snapshots = [self._rows(group, 1, weights[0].device) for group in self._groups]
        previous_pairs, previous_block = self._spare if self._follows else (None, None)
        self._before = []
        for g, (group, buffer) in enumerate(zip(self._groups, self._snapshots, strict=True)):
            if previous_pairs is not None and previous_pairs[g] is not None:
                self._before.append(previous_pairs[g].sections[1])
            else:
                self._before.append(buffer.put(0, [weights[i] for i in group.members]))
        if previous_block is not None:
            self._block_before = previous_block.weights
        elif self._block is not None:
            self._block.put([weights[i] for i in self._block.members], self._block.before)
            self._block_before = self._block.before
        self._snapshot_taken = True

    def take_weights(self, histograms: bool, step: int | None = None) -> list[Shipment]:
        """After the update of step `step`: reduce the weights (with the held gradients of
        small groups, and the update ratio when a snapshot was taken)."""
        self._weights_step = step
        self._histograms = histograms
        weights = [p for p, _ in self.params]
        if not weights:
            return []
        pairs = self._pairs_on(weights[0].device)
        shipments = []
        for g, group in enumerate(self._groups):
            members = [weights[i] for i in group.members]
            pair = pairs[g]
            if pair is None:
                rows = stacked(members, self._workspace)
                shipments.append(self._reduce(g, rows, ("weights",), rows))
                continue
            rows = pair.put(1, members)
            if self._grads_held:
                shipments.append(self._reduce(g, pair.all, ("grads", "weights"), rows))
            else:  # step 0: the initial weights alone
                shipments.append(self._reduce(g, rows, ("weights",), rows))
        if self._block is not None:
            shipments.append(self._ship_block(weights))
        return shipments

    def _ship_block(self, weights: list[torch.Tensor]) -> Shipment:
        """The tiny block's weights (with its held gradients), copied whole for the host to
        reduce; with the snapshot, its weights before the update too."""
        block = self._block
        block.put([weights[i] for i in block.members], block.weights)
        update = self._snapshot_taken
        self._updated |= update
        prefixes = ("grads", "weights") if self._grads_held else ("weights",)
        rows = block.both if self._grads_held else block.weights
        whole = [rows, self._block_before] if update else [rows]
        return Shipment([], self._block_finisher(prefixes, update), whole, host_rows=True,
                        host_bins=self.hist_bins if self._histograms else None,
                        host_lengths=block.lengths * len(prefixes))  # fmt: skip

    def _reduce(self, g: int, rows: torch.Tensor, prefixes: tuple[str, ...],
                weights: torch.Tensor | None = None) -> Shipment:  # fmt: skip
        """Per row, sums and centred squares (and per tensor, histograms) of `rows`, one
        section of the group's rows per prefix; with the snapshot, per row of the weights,
        ‖weights - w_before‖² and ‖w_before‖²."""
        update = weights is not None and self._snapshot_taken
        self._updated |= update
        before = self._before[g] if update else None
        # On a step that follows the last one taken, w_before is that step's new weights,
        # whose ||w||^2 its moments gave: a pass over the group fewer (~50 us at 3 x 65536).
        known = self._follows and self._last_squares is not None
        workspace = self._workspace
        group = self._groups[g]
        spans = group.spans * len(prefixes) if group.merged else None  # rows per tensor
        pieces = [*row_moments(rows, workspace, spans=spans)]
        if self._histograms:
            pieces += row_histograms(rows, self.hist_bins, workspace, spans)
        if before is not None:
            # Cascade sums: vector_norm's float32 accumulation put the ratio 2e-5 off at
            # 1 M values (1e-8 this way, for 15 us more on a (3, 65536) group).
            pieces.append(row_squares(weights, workspace, minus=before))
            if not known:
                pieces.append(row_squares(before, workspace))
        return Shipment(pieces, self._finisher(g, prefixes, spans, update, known))

    def _finisher(self, g: int, prefixes: tuple[str, ...], spans: tuple[int, ...] | None,
                  update: bool, known: bool) -> Callable:  # fmt: skip
        """Files the host values of `_reduce`'s pieces under each tensor of the group, a
        tensor's rows' numbers merged (`reduce_rows`) where it spans several (`spans`: the
        rows of each tensor in `rows`, None when one each); `known`: ||w_before||^2 is the
        last step's ||w||^2 (`_last_squares`), not a piece."""
        histograms, width = self._histograms, self.hist_bins + 1
        group = self._groups[g]
        members = list(group.members)
        last = [self._last_squares[i] for i in members] if update and known else None
        # Where a tensor spans several rows: the first row of each tensor, in all the rows
        # and in the weights' section.
        starts = weight_starts = None
        if spans is not None:
            starts = span_layout(self._workspace, spans, sum(spans))[2]
            weight_starts = span_layout(self._workspace, group.spans, sum(group.spans))[2]

        def finish(values: list) -> None:
            sums, squares = values[0], values[1]
            hist = ratio = None
            if histograms:  # lows, highs (lists, per row), the counts (int64, per tensor)
                lows, highs = values[2], values[3]
                if starts is not None:
                    lows, highs = (
                        reduce_rows(starts, "min", lows),
                        reduce_rows(starts, "max", highs),
                    )
                hist = (lows, highs, values[4].reshape(len(lows), width))
            if starts is not None:  # (the rows' squares are about their tensor's mean)
                sums, squares = (
                    reduce_rows(starts, "sum", sums),
                    reduce_rows(starts, "sum", squares),
                )
            if update:
                change, before = (values[-1], last) if known else (values[-2], values[-1])
                if weight_starts is not None:  # per row of the weights: per tensor
                    change = reduce_rows(weight_starts, "sum", change)
                    before = before if known else reduce_rows(weight_starts, "sum", before)
                ratio = (change, before)
            self._file(members, prefixes, sums, squares, hist, ratio)

        return finish

    def _block_finisher(self, prefixes: tuple[str, ...], update: bool) -> Callable:
        """Files the tiny block's segments as reduced on the host (`host_segments`) as
        `_finisher` does, with the update ratio from its new weights and snapshot (float64)."""
        histograms, block = self._histograms, self._block

        def finish(values: list[np.ndarray]) -> None:
            reduced = values[-1]
            ratio = None
            if update:
                new = values[0][-block.weights.numel() :].astype(np.float64)
                old = values[1].astype(np.float64)
                with np.errstate(invalid="ignore", over="ignore"):  # inf - inf: NaN, quietly
                    ratio = (np.add.reduceat(np.square(new - old), block.starts).tolist(),
                             np.add.reduceat(np.square(old), block.starts).tolist())  # fmt: skip
            hist = None
            if histograms:
                hist = (reduced[2].tolist(), reduced[3].tolist(), reduced[4])
            self._file(block.members, prefixes, reduced[0].tolist(), reduced[1].tolist(), hist,
                       ratio)  # fmt: skip

        return finish

    def _file(self, group: list[int], prefixes: tuple[str, ...], sums: list, squares: list,
              hist: tuple | None, update: tuple | None) -> None:  # fmt: skip
        """Each row's host numbers under its (prefix, tensor): the rows are one section of
        the k tensors of `group` (unique tensor indices) per prefix; `hist` holds the rows'
        (mins, maxes, counts), the counts an int64 array (rows, bins + 1); `update` holds
        the weights' section's numbers."""
        for j, prefix in enumerate(prefixes):
            table = self._measured.setdefault(prefix, {})
            for r, i in enumerate(group):
                row = j * len(group) + r
                numbers = [sums[row], squares[row]]
                if hist is not None:
                    numbers += [part[row] for part in hist]
                if update is not None and prefix == "weights":
                    numbers += [update[0][r], update[1][r]]
                table[i] = numbers

    def emit(self, scalars: bool, scalars_of: dict[str, float],
             histograms_of: dict[str, Histogram]) -> None:  # fmt: skip
        """Write the measured numbers as tags, in model order, each tensor under every name:
        `{grads,weights}_norm/<name>`, `..._std/<name>`, `update_ratio/<name>`, and the
        histograms `grads/<name>`, `weights/<name>`."""
        tables = {prefix: [table[i] for i in range(len(self.params))]
                  for prefix, table in self._measured.items()}  # fmt: skip
        squares = self._tag_writer.write(tables, scalars, self._updated, self._histograms,
                                         scalars_of, histograms_of)  # fmt: skip
        if squares is not None:  # the next step's ||w_before||^2, should it follow this one
            self._last_squares = squares
