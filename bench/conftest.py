"""pytest-benchmark set-up for ``python -m pytest bench --benchmark-only``: the op cases as
grouped comparisons (ours vs peers, one group per op, case and mode). ``--bench-quick`` runs the
tiny smoke shapes; ``--bench-rounds`` sets the timed rounds per implementation."""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# The op tests poison fresh outputs with NaN; that costs time and must not leak into timings.
os.environ.pop("ZEROMAMBA_POISON", None)


def pytest_addoption(parser):
    group = parser.getgroup("zeromamba benchmarks")
    group.addoption("--bench-quick", action="store_true", help="tiny shapes (smoke test)")
    group.addoption("--bench-rounds", type=int, default=None, help="timed rounds (default 5)")


def pytest_configure(config):
    if config.pluginmanager.hasplugin("benchmark"):
        return
    raise SystemExit(
        "bench/ needs pytest-benchmark: pip install -e '.[bench]' (or pip install pytest-benchmark)"
    )
