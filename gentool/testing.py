"""Checks for plugin authors' tests: what every gentool plugin should pass, through the real CLI.

    from gentool.testing import assert_resume_is_exact, run_cli

    def test_resume_is_exact(tmp_path):
        env = {**os.environ, "GENTOOL_RUNS": str(tmp_path / "runs")}
        assert_resume_is_exact("mymodel", "--set", "width=8", env=env, runs=tmp_path / "runs")
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any


def run_cli(*args: str, env: Mapping[str, str] | None = None, cwd: Path | None = None,
            timeout: float = 900) -> subprocess.CompletedProcess:
    """Run ``gentool ARGS`` in a fresh interpreter (entry points as a user's shell sees them)."""
    return subprocess.run([sys.executable, "-m", "gentool", *args], env=None if env is None else dict(env),
                          cwd=cwd, capture_output=True, text=True, timeout=timeout)


def assert_resume_is_exact(model: str, *train_args: str, env: Mapping[str, str], runs: Path,
                           epochs: int = 2) -> tuple[Any, Any]:
    """Train ``epochs`` epochs straight, and ``epochs - 1`` then ``--resume`` to ``epochs``; assert
    that the two last checkpoints hold the same tensors, bit for bit (weights, optimizer state and
    the task's extra state: whatever a resume must restore).

    ``runs`` is the runs folder ``env`` points ``GENTOOL_RUNS`` at. Returns both checkpoints
    (straight, resumed) for further checks.
    """
    import torch

    from gentool.checkpoint import load_checkpoint

    for name, n in (("straight", epochs), ("resumed", epochs - 1)):
        res = run_cli("train", model, "--epochs", str(n), "--name", name, *train_args, env=env)
        assert res.returncode == 0, f"gentool train {model} failed:\n{res.stderr}"
    res = run_cli("train", model, "--resume", "resumed", "--epochs", str(epochs), "-q", env=env)
    assert res.returncode == 0, f"gentool train {model} --resume failed:\n{res.stderr}"
    a = load_checkpoint(Path(runs) / model / "straight" / "last.safetensors")
    b = load_checkpoint(Path(runs) / model / "resumed" / "last.safetensors")
    assert a.step == b.step > 0, (a.step, b.step)
    ta, tb = a.tensors(), b.tensors()
    assert ta.keys() == tb.keys(), sorted(set(ta) ^ set(tb))
    differ = [k for k in ta if not torch.equal(ta[k], tb[k])]
    assert not differ, f"a resumed run differs from an uninterrupted one in {differ[:5]}"
    return a, b
