"""Helpers of the GAN plugin's tests (a uniquely named module: every test folder's conftest.py
is called "conftest", so tests import from here, not from it)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from gentool.testing import run_cli

SHARED = Path(__file__).resolve().parents[3].parent / "shared" / "data"


def gentool(*args: str, env: dict[str, str], timeout: float = 900) -> subprocess.CompletedProcess:
    """Run the real ``gentool`` command line in a subprocess."""
    return run_cli(*args, env=env, timeout=timeout)


def make_env(runs: Path, cache: Path) -> dict[str, str]:
    env = {**os.environ, "GENTOOL_RUNS": str(runs), "GENTOOL_CACHE": str(cache), "GENTOOL_PLUGINS": "gan"}
    env.setdefault("OMP_NUM_THREADS", "1")  # tiny networks: one thread avoids oversubscribing 2 shared cores
    return env
