"""Which parameters a logging step reduces together, and as rows of what length."""

from __future__ import annotations

from runner.param_layout import MIN_ROW, RowGroup, plan_groups
from runner.reductions import STACK_LIMIT


def test_small_tensors_of_several_shapes_share_rows_of_their_common_divisor():
    # The benchmark's 4 x 256 MLP: its 256 x 64 and three 256 x 256 weights are one group
    # of rows of 16384 values (the 256 x 256 ones four rows each); the biases and the
    # 1 x 256 output weight are tiny, reduced on the host.
    shapes = [(256, 64), (256,), (256, 256), (256,), (256, 256), (256,), (256, 256), (256,),
              (1, 256), (1,)]  # fmt: skip
    groups, tiny = plan_groups(shapes)
    assert groups == [RowGroup((0, 2, 4, 6), 16384, (1, 4, 4, 4), paired=True)]
    assert groups[0].merged and tiny == [1, 3, 5, 7, 8, 9]


def test_groups_without_a_long_common_divisor_or_room_stay_apart():
    odd = (MIN_ROW + 1, 3)  # shares no divisor of MIN_ROW values with the others
    half = (STACK_LIMIT // 2 - MIN_ROW,)  # fits a pair alone, not beside the first group
    shapes = [(MIN_ROW, 2), odd, (MIN_ROW, 4), half, (STACK_LIMIT,)]
    groups, tiny = plan_groups(shapes)
    assert groups == [
        RowGroup((0, 2), 2 * MIN_ROW, (1, 2), paired=True),
        RowGroup((1,), 3 * (MIN_ROW + 1), (1,), paired=True),
        RowGroup((3,), STACK_LIMIT // 2 - MIN_ROW, (1,), paired=True),
        RowGroup((4,), STACK_LIMIT, (1,), paired=False),  # too big to copy: reduced alone
    ]
    assert not groups[1].merged and tiny == []
