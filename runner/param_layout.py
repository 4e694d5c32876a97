"""How a logging step lays a model's parameters out for its reductions
(runner/param_stats.py): which tensors are reduced together, as the rows of which matrix.

Every set of reductions costs a dozen device ops of fixed cost (runner/reductions.py), so
the fewer sets, the cheaper a logging step. Tensors of one shape share a set
(`shape_groups`); the tiny ones go to the host together; and the small groups of
different shapes share one when their sizes have a long common divisor: each tensor is
cut into rows of that many values, its statistics merged from its rows' on the host
(runner/host_numbers.py). A 4 x 256 MLP's 256 x 64 and three 256 x 256 weights are one
set of 13 rows of 16384 values, where two sets of ops cost ~0.3 ms a step more.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from runner.reductions import STACK_LIMIT, TINY_LIMIT, shape_groups

# Rows of at least this many values: a common divisor below it would cut tensors into rows
# too short for the row ops (and for `cpu_counts`' lanes) to run at full speed.
MIN_ROW = 4096


@dataclass(frozen=True)
class RowGroup:
    """Tensors reduced by one set of ops: `members` (unique tensor indices) end to end, as
    rows of `row` values, `spans[j]` rows for member j; `paired`: small enough to copy
    (gradients and weights together) into a `Rows` buffer, else reduced where taken."""

    members: tuple[int, ...]
    row: int
    spans: tuple[int, ...]
    paired: bool

    @property
    def merged(self) -> bool:
        """Some member spans several rows: its numbers are merged from its rows' on the host."""
        return any(span > 1 for span in self.spans)


def plan_groups(shapes: list[tuple[int, ...]]) -> tuple[list[RowGroup], list[int]]:
    """The row groups of tensors of `shapes` and the tiny tensors (indices) that the host
    reduces. Tensors of one shape are a group (`shape_groups`). A group whose gradients and
    weights together hold at most TINY_LIMIT values is tiny; one below STACK_LIMIT is
    paired, and joins the first paired group whose row length shares a divisor of at least
    MIN_ROW with its size while both fit below STACK_LIMIT (the row length becomes that
    divisor); a bigger one is a group of its own, one row per tensor."""
    numels = [math.prod(shape) for shape in shapes]
    groups: list[RowGroup] = []
    tiny: list[int] = []
    for members in shape_groups(shapes):
        n, k = numels[members[0]], len(members)
        if 2 * k * n <= TINY_LIMIT:
            tiny += members
        elif 2 * k * n >= STACK_LIMIT:
            groups.append(RowGroup(tuple(members), n, (1,) * k, paired=False))
        else:
            _join(groups, numels, members)
    return groups, tiny


def _join(groups: list[RowGroup], numels: list[int], members: list[int]) -> None:
    """Add the paired shape group `members` to the first paired group it can join (see
    `plan_groups`), or as a group of its own."""
    size = len(members) * numels[members[0]]
    for at, group in enumerate(groups):
        row = math.gcd(group.row, numels[members[0]])
        total = sum(numels[i] for i in group.members) + size
        if group.paired and row >= MIN_ROW and 2 * total < STACK_LIMIT:
            joined = (*group.members, *members)
            groups[at] = RowGroup(joined, row, tuple(numels[i] // row for i in joined), True)
            return
    groups.append(RowGroup(tuple(members), numels[members[0]], (1,) * len(members), True))
