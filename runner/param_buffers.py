"""The buffers a logging step copies parameters into, made once and reused
(runner/param_stats.py): a row group's pair of gradients and weights (or its weights
before the update), and the one block of every tiny tensor.
"""

from __future__ import annotations

import math

import numpy as np
import torch


class Rows:
    """A row group's tensors copied end to end into `sections` sections of a float32 buffer
    (a pair: gradients, then weights), each section `rows` rows of `row` values; every
    tensor's place in each section is a view of its own shape, made once, so a copy into
    it is one op (no reshapes a step)."""

    def __init__(self, shapes: list[tuple[int, ...]], row: int, sections: int,
                 device: torch.device) -> None:  # fmt: skip
        sizes = [math.prod(shape) for shape in shapes]
        rows = sum(sizes) // row
        self.all = torch.empty(sections * rows, row, dtype=torch.float32, device=device)
        self.sections = [self.all[k * rows : (k + 1) * rows] for k in range(sections)]
        self._places = []
        for section in self.sections:
            flat, places, at = section.view(-1), [], 0
            for shape, size in zip(shapes, sizes, strict=True):
                places.append(flat[at : at + size].view(shape))
                at += size
            self._places.append(places)

    def put(self, section: int, tensors: list[torch.Tensor]) -> torch.Tensor:
        """Copy `tensors` (in the group's order; any float dtype) into `section`; return
        its rows."""
        for place, tensor in zip(self._places[section], tensors, strict=True):
            place.copy_(tensor)
        return self.sections[section]


class TinyBlock:
    """The tensors of every tiny group (biases, norm layers' weights: 2k x n at most
    TINY_LIMIT values), end to end in one float32 buffer of 3 rows: the gradients, the
    weights and the weights before the update. Three copies a logging step for all of them
    and one shipment, where a shipment per shape cost ~350 us a logging step for a 4 x 256
    MLP's six tiny tensors."""

    def __init__(self, members: list[int], numels: list[int], device: torch.device) -> None:
        self.members = members  # unique tensor indices, in the block's order
        self.lengths = [numels[i] for i in members]
        self.starts = np.cumsum([0, *self.lengths[:-1]])  # each member's first value
        self.buffer = torch.empty(3, sum(self.lengths), dtype=torch.float32, device=device)
        self.grads, self.weights, self.before = self.buffer.unbind()
        self.both = self.buffer[:2]  # gradients, then weights: segments of the same lengths

    def put(self, tensors: list[torch.Tensor], row: torch.Tensor) -> None:
        """Copy `tensors` (the members' values, in order) end to end into `row`."""
        flats = [t if t.dim() == 1 else t.reshape(-1) for t in tensors]  # a view is an op
        if all(f.dtype == torch.float32 for f in flats):
            torch.cat(flats, out=row)
            return
        at = 0
        for flat in flats:  # another dtype: copy_ converts
            row[at : at + flat.numel()].copy_(flat)
            at += flat.numel()
