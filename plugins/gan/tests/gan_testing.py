"""Helpers of the GAN plugin's tests (a uniquely named module: every test folder's conftest.py
is called "conftest", so tests import from here, not from it)."""

from __future__ import annotations

import os
from pathlib import Path

from gentool.testing import invoke

SHARED = Path(__file__).resolve().parents[3].parent / "shared" / "data"
gentool = invoke  # the real command line (in this process where a fresh interpreter would answer the same)


def make_env(runs: Path, cache: Path) -> dict[str, str]:
    env = {**os.environ, "GENTOOL_RUNS": str(runs), "GENTOOL_CACHE": str(cache), "GENTOOL_PLUGINS": "gan"}
    env.setdefault("OMP_NUM_THREADS", "1")  # tiny networks: one thread avoids oversubscribing 2 shared cores
    return env
