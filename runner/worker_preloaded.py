"""Imported last by a joblib sweep's worker server (runner/launchers.py), after every module
its workers need: collect what the imports left and freeze the rest (runner/start_up.py)
before any worker is forked, so no collection in a worker scans them.
"""

from __future__ import annotations

from runner import start_up

start_up.resume()
