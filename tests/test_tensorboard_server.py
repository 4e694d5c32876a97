"""What a user sees: a real `tensorboard` server serves the run, its per-layer tags and hparams."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

import runner
from runner.train import train


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url: str, body: dict | None = None):
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers={"X-XSRF-Protected": "1",
                                                             "Content-Type": "application/json"})  # fmt: skip
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


@pytest.mark.slow
def test_tensorboard_serves_runs_tags_and_hparams(tmp_path):
    for name, tying in (("tied", "hidden"), ("untied", "none")):
        cfg = runner.compose(["model=deep_mlp", f"tying={tying}", "train.steps=20",
                              "log.every=5", "log.hist_every=10", "train.progress=off"])  # fmt: skip
        train(cfg, tmp_path / name)
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "tensorboard.main", "--logdir", str(tmp_path), "--host", "127.0.0.1",
         "--port", str(port), "--load_fast", "false", "--reload_interval", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline, runs = time.monotonic() + 90, []
        while time.monotonic() < deadline:
            try:
                runs = get(f"{base}/data/runs")
                if {"tied/tb", "untied/tb"} <= set(runs):
                    break
            except OSError:
                pass
            time.sleep(0.5)
        assert {"tied/tb", "untied/tb"} <= set(runs), runs
        scalars = get(f"{base}/data/plugin/scalars/tags")
        for run in ("tied/tb", "untied/tb"):
            tags = set(scalars[run])
            assert {"loss/train", "loss/val", "lr", "grads_norm/2.weight", "grads_norm/4.weight",
                    "weights_std/0.bias", "activations_std/3", "dead_relu/1"} <= tags  # fmt: skip
        assert set(scalars["tied/tb"]) == set(scalars["untied/tb"])
        histograms = get(f"{base}/data/plugin/histograms/tags")
        assert {"weights/2.weight", "grads/4.weight"} <= set(histograms["tied/tb"])
        experiment = get(f"{base}/data/plugin/hparams/experiment", {"experimentName": ""})
        hparam_names = {h["name"] for h in experiment["hparamInfos"]}
        assert {"model", "init", "tying", "seed", "lr"} <= hparam_names
        groups = get(f"{base}/data/plugin/hparams/session_groups", {
            "experimentName": "", "startIndex": 0, "sliceSize": 10,
            "allowedStatuses": ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE", "STATUS_RUNNING"],
            "colParams": [{"hparam": "tying"}, {"metric": {"tag": "final/loss_val", "group": ""}}],
        })  # fmt: skip
        by_tying = {g["hparams"]["tying"]: g for g in groups["sessionGroups"]}
        assert set(by_tying) == {"hidden", "none"}
        metric_tags = {m["name"]["tag"] for m in experiment["metricInfos"]}
        assert "final/loss_val" in metric_tags
    finally:
        server.terminate()
        server.wait(timeout=30)
