"""Shared pytest set-up: headless plotting, small thread pools, the browser helpers on the path."""
import os
import sys
from pathlib import Path

os.environ.setdefault("MPLBACKEND", "Agg")
sys.path.insert(0, str(Path(__file__).resolve().parent))  # `from browser import ...`

from browser import browser, page  # noqa: E402,F401  (fixtures: a Chromium and a page per test)


def pytest_configure(config):
    try:
        import torch

        torch.set_num_threads(1)  # two cores, two xdist workers
    except ImportError:
        pass
