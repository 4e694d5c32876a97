"""A user's own init function, as the README's custom-init section writes it.

An init rule's `_target_` names any callable `fn(tensor, **arguments)` that fills the
tensor in place; `--config-dir docs/examples/conf` makes `init=my_init` choosable and
`PYTHONPATH=docs/examples` makes this module importable.
"""

import torch


def my_init(tensor: torch.Tensor, bound: float = 10.0, threshold: float = 5.0) -> None:
    """The chapter's `my_init`: w ~ U(-bound, bound), then w = 0 where |w| < threshold."""
    with torch.no_grad():
        tensor.uniform_(-bound, bound)
        tensor *= tensor.abs() >= threshold
