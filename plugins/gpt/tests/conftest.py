"""Fixtures of the gpt plugin's tests: an isolated runs folder, the ShareGPT test file."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gpt_helpers import SHARED  # noqa: E402

# Tests never download: transformers and huggingface_hub (in this process and in every CLI
# subprocess, which inherits os.environ) read only local files. Set before any test module
# imports transformers, which reads these variables at import time.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"


@pytest.fixture
def env(tmp_path, monkeypatch) -> dict[str, str]:
    monkeypatch.chdir(tmp_path)
    return {**os.environ, "GENTOOL_RUNS": str(tmp_path / "runs"), "GENTOOL_CACHE": str(tmp_path / "cache"),
            "GENTOOL_PLUGINS": "gpt", "OMP_NUM_THREADS": "1"}


@pytest.fixture
def sharegpt() -> Path:
    path = SHARED / "chat" / "sharegpt_dummy_conversations.json"
    if not path.exists():
        pytest.skip(f"{path} not present: the ShareGPT test file lives in ../shared/data")
    return path
