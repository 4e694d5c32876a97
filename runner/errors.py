"""User-facing errors: one line naming the file, the key and what would be valid.

Everything a user can get wrong in a config raises `ConfigError` (a `UserError`); the
command-line entry points turn a UserError into a single line on stderr and a non-zero
exit code, with no traceback unless HYDRA_FULL_ERROR=1 (Hydra's own switch, so users
learn one knob).
"""

from __future__ import annotations

import argparse
import difflib
import functools
import os
import sys
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., object])


class UserError(Exception):
    """Something the user can fix; the command line shows its one-line message, no traceback."""

    exit_code = 1


class ConfigError(UserError):
    """A config or argument the user wrote is wrong; the message says where and what is valid."""

    exit_code = 2


class TrainingDiverged(UserError):
    """The loss or a gradient became NaN or infinite; the run saves no model that could pass
    for a result. `stopped` is True when the run ended cleanly (`train.on_nonfinite=stop`:
    metrics.json says "diverged", the last good checkpoint kept); a sweep lists such a job
    as "diverged" rather than "failed"."""

    def __init__(self, message: str, stopped: bool = False) -> None:
        super().__init__(message)
        self.stopped = stopped

    @classmethod
    def of(cls, what: str, stopped: bool = False) -> TrainingDiverged:
        """The error for `what` was seen ("the loss is nan at step 40 (...)"), with what to try."""
        return cls(
            f"training diverged: {what}; a smaller optim.optimizer.lr or train.grad_clip may help",
            stopped,
        )


class OutputError(UserError):
    """A file of the run could not be written (a full disk, a read-only folder); the file
    that was there before is left as it was."""


def did_you_mean(word: str, candidates: Iterable[str], n: int = 3) -> str:
    """Return "; did you mean 'a', 'b'?" for the closest candidates, or "" when none is close."""
    close = difflib.get_close_matches(str(word), [str(c) for c in candidates], n=n, cutoff=0.5)
    return "; did you mean " + ", ".join(repr(c) for c in close) + "?" if close else ""


def one_of(candidates: Iterable[str], limit: int = 12) -> str:
    """Format the valid choices as "a, b, c" (shortened with a count past `limit`)."""
    items = [str(c) for c in candidates]
    shown = ", ".join(items[:limit])
    return shown + (f", ... ({len(items) - limit} more)" if len(items) > limit else "")


def full_error_requested() -> bool:
    """True when the user asked for full tracebacks the Hydra way (HYDRA_FULL_ERROR=1)."""
    return os.environ.get("HYDRA_FULL_ERROR") == "1"


def exit_on_user_error(main: F) -> F:
    """Wrap a command's main so a UserError prints one line and exits with its code
    (2 for a bad config, 1 for a diverged run)."""

    @functools.wraps(main)
    def wrapper(*args: object, **kwargs: object) -> object:
        try:
            return main(*args, **kwargs)
        except UserError as error:
            if full_error_requested():
                raise
            print(f"error: {error}", file=sys.stderr)
            sys.exit(error.exit_code)

    return wrapper  # type: ignore[return-value]


def exit_on_ctrl_c(main: F) -> F:
    """Wrap a companion command's main (inspect, compare, reproduce, bench) so Ctrl-C ends
    it with one line and the shell's code for SIGINT, 130, not a traceback. (A training
    run handles Ctrl-C itself: it checkpoints the step first.) A process that started with
    SIGINT ignored (a script's background job) keeps ignoring it.

    Inside a module's import the process ends at once, from the signal handler: a
    KeyboardInterrupt raised there can be swallowed (numpy's import, within torch's), or
    leave the module half made for the next import to fail on with a RecursionError."""

    @functools.wraps(main)
    def wrapper(*args: object, **kwargs: object) -> object:
        import signal
        import threading

        if (full_error_requested() or threading.current_thread() is not threading.main_thread()
                or signal.getsignal(signal.SIGINT) is signal.SIG_IGN):  # fmt: skip
            return main(*args, **kwargs)
        previous = signal.signal(signal.SIGINT, _interrupt)
        try:
            return main(*args, **kwargs)
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            sys.exit(130)
        finally:
            signal.signal(signal.SIGINT, previous)

    return wrapper  # type: ignore[return-value]


def _interrupt(signum: int, frame: Any) -> None:
    """KeyboardInterrupt, or, inside an import, "interrupted" and exit 130 at once (no
    buffered writes: the handler may run in the middle of one)."""
    while frame is not None:
        if frame.f_code.co_filename.startswith("<frozen importlib"):
            os.write(2, b"interrupted\n")
            os._exit(130)
        frame = frame.f_back
    raise KeyboardInterrupt


def first_line(error: BaseException) -> str:
    """The first non-empty line of an exception's message (its type name if it has none);
    a line that ends with ":" (Hydra's "Error in call to target 'x':") takes the next."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    if not lines:
        return type(error).__name__
    return f"{lines[0]} {lines[1]}" if lines[0].endswith(":") and len(lines) > 1 else lines[0]


def brief(value: object, limit: int = 60) -> str:
    """`repr(value)`, cut to `limit` characters with "..." (a value quoted in a message)."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def is_number(value: object) -> bool:
    """True for ints and floats; a bool is not a number in a config."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def require_int(value: object, label: str, minimum: int) -> int:
    """`value` if it is an integer >= `minimum`, else a ConfigError naming `label`."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{label} must be an integer >= {minimum}, got {value!r}")
    return value


def tool_parser(tool: str, description: str, examples: str) -> argparse.ArgumentParser:
    """The argument parser of a companion command (`python -m runner.<tool>`): its --help
    shows the description, then the examples as written."""
    return argparse.ArgumentParser(
        prog=f"python -m runner.{tool}",
        description=description,
        epilog=examples,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
