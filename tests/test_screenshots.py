"""The README's TensorBoard screenshots: docs/screenshots.py regenerates them from scratch."""

from __future__ import annotations

import json
import re
import shutil
import struct
import subprocess
import sys

import pytest
from conftest import REPO

PER_LAYER = re.compile(r"/\d+\.weight$")  # e.g. weights_norm/2.weight: one tag per layer


def png_size(data: bytes) -> tuple[int, int]:
    """Width and height from a PNG's IHDR chunk; fails on anything that is not a PNG."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR", data[:16]
    return struct.unpack(">II", data[16:24])


@pytest.mark.slow
def test_screenshots_show_tied_and_untied_runs_and_per_layer_tags(tmp_path):
    pytest.importorskip("selenium", reason="docs/screenshots.py drives Chromium with selenium")
    if not (shutil.which("chromium") and shutil.which("chromedriver")):
        pytest.skip("needs chromium and chromedriver (apt-get install chromium chromium-driver)")
    # The whole script as a user runs it, study included, with fewer steps to stay quick.
    result = subprocess.run(
        [sys.executable, "docs/screenshots.py", "--out", str(tmp_path), "--steps", "200"],
        capture_output=True, text=True, cwd=REPO, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    seen = json.loads(result.stdout.splitlines()[-1])

    for page in ("scalars", "histograms"):
        data = (tmp_path / f"tensorboard_{page}.png").read_bytes()
        assert png_size(data) == (1400, 720)
        assert len(data) > 40_000, f"{page}: {len(data)} bytes, a blank page?"
        assert any(PER_LAYER.search(tag) for tag in seen[page]["tags"]), seen[page]

    scalar_runs = seen["scalars"]["runs"]
    assert any("tying=hidden" in run for run in scalar_runs), scalar_runs
    assert any("tying=none" in run for run in scalar_runs), scalar_runs
    assert len(scalar_runs) == 6  # three seeds of each, overlaid on one page
    assert [run for run in seen["histograms"]["runs"] if "tying=hidden" in run]
