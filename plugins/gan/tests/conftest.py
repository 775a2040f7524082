"""Fixtures of the GAN plugin's tests: isolated runs folders, one feature-extractor cache per
session (the digits extractor is trained once, not once per test), the real command line."""

from __future__ import annotations

from pathlib import Path

import pytest
from gan_testing import gentool, make_env


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("gentool-cache")


@pytest.fixture
def env(tmp_path, monkeypatch, cache_dir) -> dict[str, str]:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GENTOOL_RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv("GENTOOL_CACHE", str(cache_dir))
    return make_env(tmp_path / "runs", cache_dir)


@pytest.fixture(scope="session")
def trained_cgan(tmp_path_factory, cache_dir) -> tuple[Path, dict[str, str]]:
    """A cgan trained once per session on the embedded digits with the default settings
    (12 of the default 20 epochs, to keep the suite short); returns its runs folder and env."""
    base = tmp_path_factory.mktemp("cgan")
    env = make_env(base / "runs", cache_dir)
    res = gentool("train", "cgan", "--epochs", "12", "-q", env=env)
    assert res.returncode == 0, res.stderr
    return base, env


@pytest.fixture(autouse=True)
def one_torch_thread():
    """In-process training on tiny networks: one thread (two oversubscribe a shared 2-core
    machine and run many times slower); the previous setting is restored afterwards."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
