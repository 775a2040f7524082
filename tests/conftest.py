"""Shared fixtures: isolated runs/cache folders, real entry-point plugins made on the fly."""

from __future__ import annotations

import os
import subprocess
import textwrap
from pathlib import Path

import pytest

from gentool.testing import invoke, make_dist  # noqa: F401  (make_dist: tests import it from here)

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
TOY_DIR = Path(__file__).resolve().parent / "toy_plugin"


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"../shared/data not present at {SHARED_DATA}: real-data tests need it")
    return SHARED_DATA


@pytest.fixture
def workdir(tmp_path, monkeypatch) -> Path:
    """A fresh working folder with its own runs folder and cache."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GENTOOL_RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv("GENTOOL_CACHE", str(tmp_path / "cache"))
    return tmp_path


@pytest.fixture
def toy_env(workdir) -> dict[str, str]:
    """Environment for subprocesses that sees the test-only ``toy`` plugin through an entry point."""
    site = make_dist(workdir / "site", "gentool-toy", {"toy": "gentool_toy"})
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(TOY_DIR), str(site), env.get("PYTHONPATH", "")])
    env["GENTOOL_PLUGINS"] = "toy"
    return env


def gentool(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None, timeout: float = 300,
            check: bool = False) -> subprocess.CompletedProcess:
    """Run the real command line (:func:`gentool.testing.invoke`: in this process where a fresh
    interpreter would answer the same, else in one)."""
    proc = invoke(*args, env=env, cwd=cwd, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"gentool {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def write_plugin(folder: Path, module: str, source: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{module}.py").write_text(textwrap.dedent(source))


@pytest.fixture
def toy_registry(workdir, monkeypatch):
    """An in-process registry holding only the toy plugin (for Typer's CliRunner)."""
    import importlib

    from gentool.plugins import Registry, set_registry

    monkeypatch.syspath_prepend(str(TOY_DIR))
    reg = Registry()
    reg.add("toy", importlib.import_module("gentool_toy"), version="0.1.0")
    set_registry(reg)
    yield reg
    set_registry(None)
