"""Regenerates the README's TensorBoard screenshots from a real server and a real browser.

Usage: python docs/screenshots.py [--logdir DIR] [--out docs/img] [--steps N]
(about a minute on a 2-core CPU; writes tensorboard_scalars.png and tensorboard_histograms.png)

Without --logdir it first runs the shipped study, `python -m runner -m
experiment=shared_vs_unshared`, into a temporary sweep dir. It then starts `tensorboard`
on loopback and drives headless Chromium (Selenium with Debian's `chromium` and
`chromium-driver`) to the Time Series page, tied and untied runs overlaid and coloured by
their `tying=` value, and to the Histograms page of one tied run. Its last line on stdout
is JSON: for each page, the run names and tags the rendered page shows.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from selenium.webdriver.remote.webdriver import WebDriver

REPO = Path(__file__).resolve().parent.parent
WIDTH, HEIGHT = 1400, 720  # both pages' first cards in full, no empty band below them
SCALAR_TAGS = r"weights_norm/[24]\.weight"  # the tied pair: one curve per run, equal when tied
COLOR_BY = r"tying=(\w+)"  # one colour per tying option, whatever the seed
HIST_RUN = r"tying=hidden"  # the first run matching this gets the Histograms page
HIST_TAGS = r"^(weights|grads)/[24]\.weight$"
# Chromium at a fresh profile; without these flags it waits on network lookups that a
# sandboxed CI box never answers, and as root it refuses to start sandboxed.
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update",
                  "--disable-sync")  # fmt: skip
# The Time Series page keeps its settings in localStorage: no settings pane over the
# charts, cards wide enough for two a row, and no auto-reload redrawing mid-screenshot.
TIMESERIES_SETTINGS = {"timeSeriesSettingsPaneOpened": False, "timeSeriesCardMinWidth": 500,
                       "autoReload": False, "stepSelectorEnabled": True}  # fmt: skip

# Every text an element on screen holds, whitespace dropped, looked up through shadow roots
# too (the Histograms page is Polymer; its cards live in shadow DOM).
PAGE_TEXTS_JS = """
const texts = new Set();
const walk = (root) => {
  for (const el of root.querySelectorAll('*')) {
    if (el.shadowRoot) walk(el.shadowRoot);
    if (el.getClientRects().length === 0) continue;
    const text = (el.textContent || '').replace(/\\s+/g, '');
    if (text && text.length <= 200) texts.add(text);
  }
};
walk(document);
return [...texts];
"""
# Time Series: every card has drawn its axes and lists every run in its data table.
SCALARS_READY_JS = """
const [cards, runs] = arguments;
const shown = [...document.querySelectorAll('scalar-card')];
return shown.length === cards && shown.every(c =>
  c.querySelectorAll('line-chart-axis text').length >= 4 &&
  c.querySelectorAll('tb-data-table-content-row').length === runs);
"""
# Histograms: at least this many charts on screen, and each has drawn its per-step outlines.
HISTOGRAMS_READY_JS = """
const [charts] = arguments;
const onScreen = [];
const walk = (root) => {
  for (const el of root.querySelectorAll('*')) {
    const box = el.getBoundingClientRect();
    if (el.tagName === 'VZ-HISTOGRAM-TIMESERIES' && box.height > 0 && box.top < innerHeight)
      onScreen.push(el.shadowRoot.querySelectorAll('g.histogram path[d]').length > 0);
    if (el.shadowRoot) walk(el.shadowRoot);
  }
};
walk(document);
return onScreen.length >= charts && onScreen.every(Boolean);
"""


def require_browser() -> tuple[str, str]:
    """The chromium and chromedriver paths; exits with one line saying what is missing."""
    missing = []
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("selenium (pip install selenium)")
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chromium and driver):
        missing.append("chromium and chromedriver (apt-get install chromium chromium-driver)")
    if missing:
        sys.exit(f"screenshots.py: needs {' and '.join(missing)}")
    return chromium, driver


def make_runs(sweep_dir: Path, steps: int | None) -> None:
    """Run the shipped tied-vs-untied study into sweep_dir, as a user would."""
    overrides = [
        "train.progress=off",
        f"hydra.sweep.dir={sweep_dir}",
        # Run names as "seed=0,tying=hidden": the options that vary, nothing else.
        "hydra.job.config.override_dirname.exclude_keys=[experiment,train.progress,train.steps]",
    ]
    if steps is not None:
        overrides.append(f"train.steps={steps}")
    # One thread per job: this small MLP gains nothing from more, and on a busy CI box the
    # threads fight over the cores (the study took minutes instead of seconds, same numbers).
    env = {"OMP_NUM_THREADS": "1", **os.environ}
    command = [sys.executable, "-m", "runner", "-m", "experiment=shared_vs_unshared", *overrides]
    subprocess.run(command, cwd=REPO, env=env, check=True, stdout=subprocess.DEVNULL)


def get_json(url: str) -> Any:
    """One GET of TensorBoard's JSON API."""
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


def disk_runs(logdir: Path) -> set[str]:
    """The run names TensorBoard gives the event-file folders under logdir."""
    folders = {p.parent for p in logdir.rglob("events.out.tfevents.*")}
    return {p.relative_to(logdir).as_posix() for p in folders}


@contextlib.contextmanager
def tensorboard(logdir: Path, log: Path, timeout: float = 90) -> Iterator[str]:
    """A `tensorboard` serving logdir on loopback, once it has loaded every run; yields its URL."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # Load once (reload_interval 0): the data cannot change between the two screenshots.
    with log.open("w") as out:
        server = subprocess.Popen(
            [sys.executable, "-m", "tensorboard.main", "--logdir", logdir.name,
             "--host", "127.0.0.1", "--port", str(port), "--load_fast", "false",
             "--reload_interval", "0"],
            cwd=logdir.parent,  # the Histograms page prints the logdir: no temp path in the README
            stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        expected, last, deadline = disk_runs(logdir), None, time.monotonic() + timeout
        while True:
            with contextlib.suppress(OSError, ValueError):
                tags = [get_json(f"{base}/data/plugin/{p}/tags") for p in ("scalars", "histograms")]
                # Every run listed with tags, and nothing new since the last look: loaded.
                if expected <= set(tags[0]) and all(tags[0].values()) and tags == last:
                    break
                last = tags
            if server.poll() is not None or time.monotonic() > deadline:
                tail = log.read_text()[-2000:]
                raise RuntimeError(f"tensorboard did not load {sorted(expected)}:\n{tail}")
            time.sleep(1)
        yield base
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()


@contextlib.contextmanager
def chromium(binary: str, driver_path: str) -> Iterator[WebDriver]:
    """Headless Chromium at a fresh profile, its viewport WIDTH x HEIGHT; quit on exit."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    with tempfile.TemporaryDirectory() as profile:
        options = webdriver.ChromeOptions()
        options.binary_location = binary
        for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={profile}"):
            options.add_argument(flag)
        driver = webdriver.Chrome(options=options, service=Service(executable_path=driver_path))
        try:
            # The viewport itself, not the window: --window-size includes browser chrome.
            viewport = {"width": WIDTH, "height": HEIGHT, "deviceScaleFactor": 1, "mobile": False}
            driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", viewport)
            yield driver
        finally:
            driver.quit()


def wait_until(driver: WebDriver, script: str, *args: Any, what: str, timeout: float = 60) -> None:
    """Poll a JS predicate until true, then let the chart worker paint its canvases."""
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        WebDriverWait(driver, timeout, poll_frequency=0.25).until(
            lambda d: d.execute_script(script, *args)
        )
    except TimeoutException:
        raise RuntimeError(f"{what} did not render in {timeout:.0f} s") from None
    # Time Series lines are drawn off the main thread; the DOM cannot say when.
    time.sleep(1)


def shown(driver: WebDriver, names: list[str]) -> list[str]:
    """Those of names that an element on screen shows as its whole text."""
    texts = set(driver.execute_script(PAGE_TEXTS_JS))
    return [n for n in names if re.sub(r"\s+", "", n) in texts]


def shoot_scalars(driver: WebDriver, base: str, out: Path) -> dict[str, Any]:
    """Time Series page: every run overlaid on the SCALAR_TAGS cards, coloured by COLOR_BY."""
    from selenium.webdriver.common.by import By

    tags = get_json(f"{base}/data/plugin/scalars/tags")
    runs = sorted(tags)
    matching = sorted({t for ts in tags.values() for t in ts if re.search(SCALAR_TAGS, t)})
    if not matching:
        raise RuntimeError(f"no scalar tag matches {SCALAR_TAGS!r}")
    driver.get(f"{base}/data/runs")  # same origin, so the settings land before the app reads them
    driver.execute_script("localStorage.setItem('_tb_global_settings', arguments[0])",
                          json.dumps(TIMESERIES_SETTINGS))  # fmt: skip
    query = urllib.parse.urlencode({"tagFilter": SCALAR_TAGS, "smoothing": 0.6,
                                    "runColorGroup": f"regex:{COLOR_BY}"})  # fmt: skip
    driver.get(f"{base}/?{query}#timeseries")
    wait_until(driver, "return document.querySelectorAll('scalar-card').length > 0",
               what="the Time Series cards")  # fmt: skip
    # Each card's data table starts folded to three rows; unfold it to list every run.
    for button in driver.find_elements(By.CSS_SELECTOR, 'button[aria-label="Expand Table"]'):
        button.click()
    wait_until(driver, SCALARS_READY_JS, len(matching), len(runs), what="the scalar charts")
    driver.save_screenshot(str(out))
    return {"png": str(out), "runs": shown(driver, runs), "tags": shown(driver, matching)}


def shoot_histograms(driver: WebDriver, base: str, out: Path) -> dict[str, Any]:
    """Histograms page of the first HIST_RUN run: its HIST_TAGS weights and gradients."""
    tags = get_json(f"{base}/data/plugin/histograms/tags")
    run = next((r for r in sorted(tags) if re.search(HIST_RUN, r)), min(tags))
    matching = sorted(t for t in tags[run] if re.search(HIST_TAGS, t))
    if not matching:
        raise RuntimeError(f"run {run!r} has no histogram tag matching {HIST_TAGS!r}")
    # The Polymer dashboards keep their state in the URL fragment.
    state = urllib.parse.urlencode({"tagFilter": HIST_TAGS, "regexInput": f"^{re.escape(run)}$"},
                                   quote_via=urllib.parse.quote)  # fmt: skip
    driver.get("about:blank")  # a new fragment alone would not reload the app
    driver.get(f"{base}/#histograms&{state}")
    wait_until(driver, HISTOGRAMS_READY_JS, len(matching), what="the histogram charts")
    driver.save_screenshot(str(out))
    return {"png": str(out), "runs": shown(driver, sorted(tags)), "tags": shown(driver, matching)}


def screenshots(logdir: Path, out: Path, work: Path) -> dict[str, Any]:
    """Both screenshots of logdir's runs into out; what each page showed."""
    binary, driver_path = require_browser()
    out.mkdir(parents=True, exist_ok=True)
    with (
        tensorboard(logdir, work / "tensorboard.log") as base,
        chromium(binary, driver_path) as driver,
    ):
        return {
            "scalars": shoot_scalars(driver, base, out / "tensorboard_scalars.png"),
            "histograms": shoot_histograms(driver, base, out / "tensorboard_histograms.png"),
        }


def main(argv: list[str] | None = None) -> None:
    """The command line: make the runs unless given, shoot both pages, print what they showed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--logdir", type=Path, help="runs to show (default: run the study first)")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "img", help="PNG folder")
    parser.add_argument("--steps", type=int, help="train.steps of the study (default: its own)")
    args = parser.parse_args(argv)
    require_browser()  # before minutes of training, not after
    with tempfile.TemporaryDirectory() as work:
        logdir = args.logdir
        if logdir is None:
            logdir = Path(work) / "shared_vs_unshared"
            make_runs(logdir, args.steps)
        seen = screenshots(logdir.resolve(), args.out.resolve(), Path(work))
    for page in seen.values():
        print(f"wrote {page['png']}", file=sys.stderr)
    print(json.dumps(seen))


if __name__ == "__main__":
    main()
