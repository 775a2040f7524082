"""AIS against the exact partition function on a DBM trained on real MNIST (slow: --runslow).

The enumerable tests use small inputs; this one checks the evaluation at MNIST's 784 visible
units, on a 784-20-100 DBM whose odd layer (20 units) can still be enumerated.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

MNIST = Path(__file__).resolve().parents[3].parent / "shared" / "data" / "mnist"


@pytest.mark.slow
def test_dbm_ais_matches_exact_log_z_on_mnist(tmp_path):
    if not MNIST.is_dir():
        pytest.skip(f"../shared/data/mnist not present at {MNIST}")
    env = {**os.environ, "GENTOOL_RUNS": str(tmp_path / "runs"), "GENTOOL_CACHE": str(tmp_path / "cache"),
           "GENTOOL_PLUGINS": "boltzmann"}
    run = lambda *a: subprocess.run([sys.executable, "-m", "gentool", *a], env=env, capture_output=True,  # noqa: E731
                                    text=True, timeout=1200)
    res = run("train", "dbm", "--data", str(MNIST), "--set", "layers=20,100", "--epochs", "4",
              "--batch-size", "100", "--lr", "0.005", "-q")
    assert res.returncode == 0, res.stderr
    res = run("evaluate", "dbm", "--json", "--probe", "false", "--max-test", "1000")
    assert res.returncode == 0, res.stderr
    m = json.loads(res.stdout)["metrics"]
    assert abs(m["log_z"] - m["log_z_exact"]) < 0.1
    assert m["test_log_likelihood_lower_bound_exact_log_z"] <= m["test_log_likelihood_exact"] + 1e-6
    assert m["test_log_likelihood_exact"] < -90  # a 20-unit odd layer cannot explain MNIST well
