"""Helpers of the gpt plugin's tests: the real command line and a tiny model's flags."""

from __future__ import annotations

import subprocess
from pathlib import Path

from gentool.testing import invoke

SHARED = Path(__file__).resolve().parents[3].parent / "shared" / "data"
# A model small enough to train in seconds on two busy CPU cores.
TINY = ["--set", "n_layer=2", "--set", "n_embd=32", "--set", "n_head=2", "--set", "block_size=32",
        "--set", "eval_tokens=2048"]


def gentool(*args: str, env: dict[str, str], timeout: float = 600) -> subprocess.CompletedProcess:
    """Run the real command line (in this process where a fresh interpreter would answer the same)."""
    return invoke(*args, env=env, timeout=timeout)
