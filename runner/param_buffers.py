"""The buffers a logging step copies parameters into, made once and reused
(runner/param_stats.py): a small group's pair of gradients and weights, and the one block
of every tiny tensor.
"""

from __future__ import annotations

import numpy as np
import torch


class Pair:
    """A small group's (2k, n) float32 buffer: gradients in rows [0, k), weights in [k, 2k)."""

    def __init__(self, k: int, n: int, device: torch.device) -> None:
        self.both = torch.empty(2 * k, n, dtype=torch.float32, device=device)
        self.grads, self.weights = self.both[:k], self.both[k:]  # views made once


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
        flats = [t.reshape(-1) for t in tensors]
        if all(f.dtype == torch.float32 for f in flats):
            torch.cat(flats, out=row)
            return
        at = 0
        for flat in flats:  # another dtype: copy_ converts
            row[at : at + flat.numel()].copy_(flat)
            at += flat.numel()
