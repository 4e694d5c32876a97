"""Writing a run's event files with TensorBoard's own writer: scalars, histograms, hparams, text.

All values of one logging step go into one `Summary` (one event), the way a merged
TensorFlow summary does, instead of one event per tag: a 4 x 256 MLP logs ~100 tags a
step, and an `add_scalar` call each would cost more than the step itself. Encoding that
one event (runner/summary_bytes.py) stays on the training thread; TensorBoard's own
writer thread does the file writes, with the C checksum of `google-crc32c` in place of
TensorBoard's pure-Python one. (A thread of ours building protos was slower: its Python
work holds the GIL for whole switch intervals while the training thread waits to
reacquire it after every kernel, the convoy effect, and a logged step took 20x longer.)
The hparams summary goes into the run's own event directory, not the timestamped sub-run
that `SummaryWriter.add_hparams` creates, so the HParams dashboard shows the run under the
same name as its scalars.

Logging steps' events are handed to the writer thread in batches: an event is handed over
at once when the last handover was HANDOVER_SECONDS ago or more (a run logging once a
second or less often batches nothing), else with the HANDOVER_EVENTS-th event of its batch
or before anything else is written, flushed or closed. Each handover wakes that thread,
which then holds the GIL while the training thread waits: 50 us a logging step when it was
woken for every event. The writer itself keeps events in memory for up to `flush_secs`
(120 s) anyway.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from runner.stats import StepRecord
from runner.summary_bytes import SummaryEncoder, event_bytes

HANDOVER_EVENTS = 10  # logging steps' events handed to the writer thread at once
HANDOVER_SECONDS = 1.0  # ... or after this long, whichever comes first


def masked_crc32c(data: bytes) -> int:
    """The checksum of a TFRecord: CRC-32C of `data`, rotated right by 15 bits, plus
    0xA282EAD8 (mod 2^32); the same number as TensorBoard's pure-Python `masked_crc32c`."""
    import google_crc32c

    crc = google_crc32c.value(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def use_fast_crc() -> None:
    """Make TensorBoard's record writer checksum in C. Without TensorFlow it computes the
    CRC in pure Python, 1.6 ms per 10 kB on our CI machine: more than a whole step of
    the benchmark's MLP once a step logs every histogram."""
    from tensorboard.summary.writer import record_writer

    record_writer.masked_crc32c = masked_crc32c


class RunWriter:
    """One run's TensorBoard writer (`<run dir>/tb`), opened on its first write."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self._writer = None
        self._held: list[tuple[int, float, StepRecord]] = []  # written before anything else
        self._encoder = SummaryEncoder()  # keeps each tag's header bytes
        self._batch: list[tuple[int, float, Any]] = []  # (step, wall time, Event) to hand over
        self._handed_over = 0.0  # time.monotonic() of the last handover

    @property
    def writer(self):
        """The SummaryWriter, made on first use: a run that logs nothing leaves no tb/, and
        one that logs pays TensorBoard's import (0.2 s) after its first step, not before."""
        return self._open()

    def _open(self):
        """Make the SummaryWriter if there is none yet, and write what is held first."""
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter

            use_fast_crc()
            self._writer = SummaryWriter(log_dir=str(self.log_dir))
            held, self._held = self._held, []  # before the batch: steps in order
            self._batch[:0] = [(step, wall, self._event(record)) for step, wall, record in held]
        return self._writer

    def hold(self, step: int, record: StepRecord) -> None:
        """Keep `record` to write first with the next write, or at `flush` or `close`: the
        statistics at initialisation are measured before training and need not make the
        first step wait for the writer."""
        if record.scalars or record.histograms:  # as `record`: an empty one writes nothing
            self._held.append((step, time.time(), record))

    def record(self, step: int, record: StepRecord) -> None:
        """Every scalar and histogram of one logging step, as one event (handed to the
        writer with the next batch)."""
        if not (record.scalars or record.histograms):
            return
        self._batch.append((step, time.time(), self._event(record)))
        if (len(self._batch) >= HANDOVER_EVENTS
                or time.monotonic() - self._handed_over >= HANDOVER_SECONDS):  # fmt: skip
            self._hand_over()

    def _event(self, record: StepRecord):
        """An Event holding the record's one Summary, serialized by our encoder (protobuf's
        field-by-field API cost 8x more) and read back by protobuf's parser: a bad byte
        fails here, at its step, not in TensorBoard or at a later handover."""
        from tensorboard.compat.proto.event_pb2 import Event

        return Event.FromString(
            event_bytes(self._encoder.encode(record.scalars, record.histograms))
        )

    def _hand_over(self) -> None:
        """Give the held and batched events to the SummaryWriter, which stamps each with its
        step and wall time and writes it on its thread."""
        if not (self._batch or self._held):
            return
        file_writer = self.writer.file_writer  # opening it puts the held events first
        batch, self._batch = self._batch, []
        self._handed_over = time.monotonic()
        for step, wall, event in batch:
            file_writer.add_event(event, step, wall)

    def scalar(self, tag: str, value: float, step: int) -> None:
        """One scalar outside a logging step (the validation loss)."""
        self._hand_over()
        self.writer.add_scalar(tag, value, step)

    def text(self, tag: str, text: str) -> None:
        """A text summary (markdown), e.g. the resolved config."""
        self._hand_over()
        self.writer.add_text(tag, text, 0)

    def hparams(self, hparams: Mapping[str, Any], metrics: Mapping[str, float], step: int) -> None:
        """The HParams dashboard entry of this run: chosen options and final metrics."""
        from torch.utils.tensorboard.summary import hparams as hparams_summary

        clean = {
            k: v if isinstance(v, (int, float, str, bool)) else str(v) for k, v in hparams.items()
        }
        self._hand_over()
        for summary in hparams_summary(clean, dict(metrics)):
            self.writer.file_writer.add_summary(summary)
        for tag, value in metrics.items():
            self.writer.add_scalar(tag, value, step)

    def flush(self) -> None:
        """Write out what is buffered or held (the benchmark times event writing too)."""
        if self._writer is not None or self._held or self._batch:
            self._hand_over()
            self._writer.flush()

    def close(self) -> None:
        """Write what is held, flush and close the event file (if one was opened)."""
        self._hand_over()
        if self._writer is not None:
            self._writer.close()
            self._writer = None
