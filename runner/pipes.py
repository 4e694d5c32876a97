"""Standard streams whose reader goes away: `python -m runner | head -3`.

Python ignores SIGPIPE, so once `head` has exited every write to stdout raises
BrokenPipeError: in a log handler that prints "--- Logging error ---" and a traceback for
every later line of the run, elsewhere it ends the command with a traceback. The console
is only a view of a run (its log file, metrics and TensorBoard events are the record), so
a command whose reader left carries on, and what it still prints goes to os.devnull.
"""

from __future__ import annotations

import contextlib
import os
import sys
from typing import Any, TextIO


class ReaderSafeStream:
    """A text stream (sys.stdout, sys.stderr) that, the first time a write or flush finds
    its pipe closed, points its file descriptor at os.devnull and goes on as if written.
    Everything else is the wrapped stream's."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except BrokenPipeError:
            self._to_devnull()
            return len(text)

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        try:
            self._stream.flush()
        except BrokenPipeError:
            self._to_devnull()

    def _to_devnull(self) -> None:
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, self._stream.fileno())
        finally:
            os.close(devnull)
        with contextlib.suppress(BrokenPipeError):  # what the closed pipe refused: dropped
            self._stream.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def survive_closed_readers() -> None:
    """Wrap sys.stdout and sys.stderr in ReaderSafeStream (once; streams without a file
    descriptor, such as a test's capture, are left alone). Call it first in a command's
    `__main__`, before logging takes the streams."""
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        if stream is None or isinstance(stream, ReaderSafeStream):
            continue
        try:
            stream.fileno()
        except (AttributeError, OSError, ValueError):
            continue
        setattr(sys, name, ReaderSafeStream(stream))
