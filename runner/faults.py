"""What a run does when something goes wrong mid-training: a non-finite loss or gradient
(`train.on_nonfinite`), and SIGINT or SIGTERM.

Non-finite values. `stop` (the default) and `raise` copy each step's loss into a buffer on
the device (one small copy a step, no host sync) and fold the buffer every `LOSS_BUFFER`
steps, still on the device, into a record: whether every loss so far was finite, how many
were, and the first non-finite one. The host reads the record where it copies numbers
anyway: on logging steps (inside the one copy of the step's statistics, where the logged
gradient and weight norms count too), before each checkpoint (which also checks the
weights, so a good checkpoint.pt is never overwritten by a bad one) and at the end. A
non-finite gradient on a finite loss makes the next loss non-finite, so the loss alone names
the step on the steps in between. `skip` has to decide before each update, so it reads one
flag per step (one host sync a step): a step whose loss or any gradient is non-finite
leaves the weights and the optimizer's state as they were (the batch is used up, the LR
schedule moves on). A forward pass has already updated BatchNorm's running statistics.

Signals. While the loop runs, the first SIGINT (Ctrl-C) or SIGTERM (a scheduler's
pre-emption) is held until the step ends, so the checkpoint written then holds one
consistent step (weights, optimizer, RNG and data stream) and `train.resume` ends with
the same bits as a run that was never stopped; a second signal acts at once. SIGTERM is
taken this way only where `python -m runner` installed `sigterm_as_interrupt`.
"""

from __future__ import annotations

import logging
import math
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

log = logging.getLogger("runner")

NONFINITE_POLICIES = ("stop", "skip", "raise")
LOSS_BUFFER = 256  # losses held on the device between folds into the record
FLAG_TAG = "nonfinite/all_finite"  # rides in a logging step's host copy; never written to TB
SKIPPED_TAG = "nonfinite/skipped"
WATCHED_TAGS = ("loss/train", "grads_norm/", "weights_norm/")  # logged values that count


class NonFinite(Exception):
    """A non-finite value was found at `step` (the first step known to be bad); `what` says
    which ("the loss is nan"). The loop raises it; `train` ends the run as the policy says."""

    def __init__(self, step: int, what: str) -> None:
        super().__init__(f"{what} at step {step}")
        self.step, self.what = step, what


class NonFiniteWatch:
    """Watches one run's losses, gradients and weights for NaN and infinity."""

    def __init__(self, policy: str, model: nn.Module, device: torch.device) -> None:
        self.policy = policy
        # Each tied tensor once; one of no values cannot be non-finite (and has no max-norm).
        self.params = [p for p in model.parameters() if p.is_floating_point() and p.numel()]
        self._named = dict(model.named_parameters(remove_duplicate=False))  # tied names too
        self.device = device
        self.skipped = 0  # `skip`: updates dropped so far (a resumed run carries it on)
        self.start(0)

    def start(self, start_step: int) -> None:
        """Forget the record: the loop is about to run steps `start_step + 1`, ..."""
        self.start_step = start_step
        self._losses: torch.Tensor | None = None  # made on the first loss, in its dtype
        self._slots: list[torch.Tensor] = []  # its elements as views: no indexing per step
        self._held = 0  # losses in the buffer, not yet folded
        self._finite = torch.ones((), dtype=torch.bool, device=self.device)  # all so far
        self._count = torch.zeros((), dtype=torch.int64, device=self.device)  # finite ones
        self._value = torch.zeros((), dtype=torch.float32, device=self.device)  # first bad

    def observe(self, loss: torch.Tensor) -> bool:
        """After backward: note the step's loss; return whether to apply the update.
        `stop`/`raise`: device ops only, always True. `skip`: one host read; False when the
        loss or a gradient is non-finite."""
        loss = loss.detach()
        if self.policy == "skip":
            grads = [p.grad for p in self.params if p.grad is not None]
            # The max-norm cannot overflow the way a sum of squares can: it is inf only for inf.
            tops = torch._foreach_norm(grads, ord=math.inf) if grads else []
            if bool(torch.stack([loss.float().reshape(()), *tops]).isfinite().all()):
                return True
            self.skipped += 1
            return False
        if self._losses is None:
            self._losses = torch.zeros(LOSS_BUFFER, dtype=loss.dtype, device=self.device)
            self._slots = list(self._losses.unbind())
        self._slots[self._held].copy_(loss)  # a copy, not a reference: the value of this step
        self._held += 1
        if self._held == LOSS_BUFFER:
            self._fold()
        return True

    def _fold(self) -> None:
        """Fold the buffered losses into the record, on the device (no host sync)."""
        if not self._held:
            return
        held = self._losses[: self._held]
        # The finite losses before the first non-finite one (all of them if none is).
        leading = torch.cumprod(torch.isfinite(held), 0).sum()
        first_bad = held.index_select(0, leading.clamp(max=self._held - 1).reshape(1))[0]
        all_finite = leading == self._held
        self._value = torch.where(self._finite & ~all_finite, first_bad, self._value)
        self._count += torch.where(self._finite, leading, 0)
        self._finite &= all_finite
        self._held = 0

    def logged(self) -> dict[str, torch.Tensor]:
        """The device flag, to ship in a logging step's single host copy."""
        if self.policy == "skip":
            return {}
        if not self._held:
            return {FLAG_TAG: self._finite}
        # The flag only: folding the record (a dozen small ops) waits until the buffer is
        # full or the flag says a loss was bad, which logging every step would pay each step.
        held = self._losses[: self._held].isfinite().all()
        return {FLAG_TAG: torch.logical_and(self._finite, held)}

    def scalars(self) -> dict[str, float]:
        """What a logging step writes about the policy: `skip`'s count of dropped updates."""
        return {SKIPPED_TAG: float(self.skipped)} if self.policy == "skip" else {}

    def check_logged(self, step: int, scalars: dict[str, float]) -> NonFinite | None:
        """On a logging step, with its numbers on the host (the flag is taken out of
        `scalars`): the divergence found, if any, else None."""
        all_finite = scalars.pop(FLAG_TAG, 1.0)
        if self.policy == "skip":
            watched: tuple[str, ...] = ("weights_norm/",)  # a skipped step's loss may be NaN
        else:
            if not all_finite:
                return self._recorded()
            watched = WATCHED_TAGS
        for tag, value in scalars.items():
            if tag.startswith(watched) and not math.isfinite(value) and self._truly(tag):
                return NonFinite(step, _describe(tag, value))
        return None

    def _truly(self, tag: str) -> bool:
        """Whether the tensor behind a non-finite norm holds a NaN or an infinity: a float32
        sum of squares overflows for finite values past about 1e19, and the run must end
        where it would without logging (one host read, only on this rare path)."""
        kind, _, name = tag.partition("/")
        param = self._named.get(name)
        tensor = param if kind == "weights_norm" else getattr(param, "grad", None)
        if tensor is None or not tensor.is_floating_point() or not tensor.numel():
            return True
        top = torch.linalg.vector_norm(tensor.detach().float(), ord=math.inf)
        return not bool(top.isfinite())

    def verify(self, step: int) -> None:
        """One host read of the record and of the weights; raise NonFinite if either is bad.
        Called before each checkpoint and at the end of the loop."""
        self._fold()
        tops = torch._foreach_norm([p.detach() for p in self.params], ord=math.inf)
        weights_ok = torch.stack(tops).isfinite().all() if tops else torch.tensor(True)
        finite, weights_finite = torch.stack([self._finite, weights_ok.to(self.device)]).tolist()
        if not finite and self.policy != "skip":
            raise self._recorded()
        if not weights_finite:
            raise NonFinite(step, "the weights became non-finite")

    def _recorded(self) -> NonFinite:
        self._fold()
        count, value = int(self._count.item()), self._value.item()  # only once, when it failed
        return NonFinite(self.start_step + count + 1, f"the loss is {value}")


def _describe(tag: str, value: float) -> str:
    kind, _, name = tag.partition("/")
    if kind == "loss":
        return f"the loss is {value}"
    if kind == "grads_norm":
        return f"the gradient of {name} is {value}"
    return f"the weights of {name} are {value}"


class Terminated(KeyboardInterrupt):
    """SIGTERM (a scheduler pre-empting the job), taken the way Ctrl-C is: a checkpoint, then
    exit code 143. A KeyboardInterrupt, so every handler of Ctrl-C handles it too."""


def _raise_terminated(signum: int, frame: Any) -> None:
    raise Terminated


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """For the command line: inside the block SIGTERM raises `Terminated` in the main
    thread; the previous handler is put back after it."""
    if not _main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


class StepBoundary:
    """Inside `with StepBoundary() as signals:`, the first SIGINT or SIGTERM is held in
    `signals.pending` for the loop to act on at the end of its step; a second one acts at
    once. Only signals that would raise anyway are held: SIGINT with Python's default
    handler, SIGTERM under `sigterm_as_interrupt`; other handlers are left alone."""

    RAISING = {signal.SIGINT: signal.default_int_handler, signal.SIGTERM: _raise_terminated}

    def __init__(self) -> None:
        self.pending: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StepBoundary:
        if _main_thread():
            for number, raising in self.RAISING.items():
                if signal.getsignal(number) is raising:
                    self._previous[number] = signal.signal(number, self._hold)
        return self

    def _hold(self, number: int, frame: Any) -> None:
        if self.pending is not None:
            self._previous[number](number, frame)  # the second signal: at once
        self.pending = number
        log.warning("%s: stopping after this step (again to stop at once)",
                    signal.Signals(number).name)  # fmt: skip

    def raise_pending(self) -> None:
        """Raise the held signal's exception (KeyboardInterrupt or Terminated), if one came."""
        if self.pending is not None:
            self._previous[self.pending](self.pending, None)

    def __exit__(self, kind: Any, error: Any, trace: Any) -> None:
        for number, previous in self._previous.items():
            signal.signal(number, previous)
        if kind is None:
            self.raise_pending()  # one that came after the last step's check
