"""Learning-rate schedules under data parallelism: a schedule decays over the optimizer steps a
process actually takes, which under ``torchrun`` with N processes are N times fewer than with one.

The Boltzmann plugin's rbm decays its learning rate linearly to 0 over the run; two processes on
the CPU (gloo) must still reach 0 at their last step, not stop half-way (lr/2).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("gentool_boltzmann", reason="the Boltzmann plugin is not installed")


def _gloo_available() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_gloo_available()


@pytest.mark.skipif(not _gloo_available(), reason="torch.distributed with the gloo backend is not available")
def test_rbm_linear_learning_rate_reaches_zero_at_the_last_step_of_two_processes(tmp_path):
    import gentool

    env = {**os.environ, "GENTOOL_RUNS": str(tmp_path / "runs"), "GENTOOL_CACHE": str(tmp_path / "cache"),
           "OMP_NUM_THREADS": "1", "GENTOOL_PLUGINS": "boltzmann"}
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         "-m", "gentool", "train", "rbm", "--data", "digits", "--epochs", "1", "--batch-size", "20",
         "--name", "ddp", "-q", "--set", "hidden=16", "--set", "sample_steps=20"],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]

    run = tmp_path / "runs" / "rbm" / "ddp"
    ckpt = gentool.load_checkpoint(run / "last.safetensors")
    assert ckpt.meta["train"]["world_size"] == 2
    lr0 = float(ckpt.meta["train"]["lr"])
    taken = ckpt.step  # optimizer steps each process took: half the batches of one process
    records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in records if r["type"] == "step"]
    assert len(steps) >= 2 and steps[-1]["step"] == taken  # the last step is always logged
    # linear decay to 0 over the steps taken: lr after step s is lr0 * (1 - s / taken) ...
    for r in steps:
        assert r["lr"]["sgd"] == pytest.approx(lr0 * (1 - r["step"] / taken), abs=1e-9), r
    # ... so the last step ends at 0, not at lr0 / 2 (a decay over one process's step count)
    assert steps[-1]["lr"]["sgd"] == pytest.approx(0.0, abs=1e-9)
