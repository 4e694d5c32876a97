"""Writing a run's event files with TensorBoard's own writer: scalars, histograms, hparams, text.

The hparams summary goes into the run's own event directory, not the timestamped
sub-run that `SummaryWriter.add_hparams` creates, so the HParams dashboard shows the
run under the same name as its scalars.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from runner.stats import StepRecord


class RunWriter:
    """One run's TensorBoard writer (`<run dir>/tb`)."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self._writer = None

    @property
    def writer(self):
        """The SummaryWriter, made on first use: a run that logs nothing leaves no tb/ and pays
        no TensorBoard import before its first step."""
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(log_dir=str(self.log_dir))
        return self._writer

    def record(self, step: int, record: StepRecord) -> None:
        """Write every scalar and histogram of one logging step."""
        for tag, value in record.scalars.items():
            self.writer.add_scalar(tag, value, step)
        for tag, h in record.histograms.items():
            self.writer.add_histogram_raw(
                tag, h.min, h.max, h.num, h.sum, h.sum_squares, h.bucket_limits, h.bucket_counts,
                global_step=step,
            )  # fmt: skip

    def scalar(self, tag: str, value: float, step: int) -> None:
        """One scalar outside a logging step (the validation loss)."""
        self.writer.add_scalar(tag, value, step)

    def text(self, tag: str, text: str) -> None:
        """A text summary (markdown), e.g. the resolved config."""
        self.writer.add_text(tag, text, 0)

    def hparams(self, hparams: Mapping[str, Any], metrics: Mapping[str, float], step: int) -> None:
        """The HParams dashboard entry of this run: chosen options and final metrics."""
        from torch.utils.tensorboard.summary import hparams as hparams_summary

        clean = {
            k: v if isinstance(v, (int, float, str, bool)) else str(v) for k, v in hparams.items()
        }
        experiment, start, end = hparams_summary(clean, dict(metrics))
        for summary in (experiment, start, end):
            self.writer.file_writer.add_summary(summary)
        for tag, value in metrics.items():
            self.writer.add_scalar(tag, value, step)

    def close(self) -> None:
        """Flush and close the event file (if one was opened)."""
        if self._writer is not None:
            self._writer.close()
