"""The training harness: seeding, resume after SIGKILL, Ctrl-C, the NaN guard, data-parallel runs."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import gentool
from gentool.checkpoint import load_checkpoint

STEPS_PER_EPOCH = 1438 // 64  # digits train split, batch 64, full batches


def _weights(path: Path) -> dict[str, torch.Tensor]:
    ckpt = load_checkpoint(path)
    return {k: v for k, v in ckpt.tensors().items() if not k.startswith("__train__/")}


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _start(env: dict, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "gentool", "train", "toy", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_step(path: Path, proc: subprocess.Popen, at_least: int, timeout: float = 120) -> int:
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert proc.poll() is None, f"training ended early: {proc.communicate()}"
        if path.exists():
            step = load_checkpoint(path).step  # never a torn file: writes are atomic
            if step >= at_least:
                return step
        time.sleep(0.05)
    raise AssertionError("no checkpoint in time")


def test_same_seed_same_run_and_same_samples(toy_registry, workdir):
    """In-process through the Python API (the CLI's train and sample are thin layers over it)."""
    import gentool as g

    for name in ("a", "b"):
        g.train("toy", epochs=1, seed=3, name=name, quiet=True)
    g.train("toy", epochs=1, seed=4, name="c", quiet=True)
    runs = workdir / "runs" / "toy"
    assert _same(_weights(runs / "a/last.safetensors"), _weights(runs / "b/last.safetensors"))
    assert not _same(_weights(runs / "a/last.safetensors"), _weights(runs / "c/last.safetensors"))
    m = g.load("a", model="toy")
    for out in ("s1", "s2"):
        m.sample(6, seed=9).save(workdir / out)
    assert sorted(p.name for p in (workdir / "s1").iterdir())[:2] == ["000000.png", "000001.png"]
    assert (workdir / "s1/grid.png").read_bytes() == (workdir / "s2/grid.png").read_bytes()
    m.sample(6, seed=10).save(workdir / "s3")
    assert (workdir / "s1/grid.png").read_bytes() != (workdir / "s3/grid.png").read_bytes()


def test_validation_does_not_move_the_training_random_streams(toy_env, workdir):
    """A validate() that draws random numbers (as training a cached feature extractor does) must
    not change the weights: else a run depends on what its validation did, and a resumed run
    drifts from an uninterrupted one."""
    for name, draws in (("quiet", "0"), ("noisy", "1000")):
        gentool("train", "toy", "--epochs", "2", "--seed", "3", "--set", f"val_draws={draws}", "--name", name, "-q",
                env=toy_env, check=True)
    runs = workdir / "runs" / "toy"
    assert "val_noise" in (runs / "noisy/metrics.jsonl").read_text()
    assert _same(_weights(runs / "quiet/last.safetensors"), _weights(runs / "noisy/last.safetensors"))


def test_before_checkpoint_runs_before_every_checkpoint_and_off_the_training_stream(toy_env, workdir):
    """Task.before_checkpoint() runs at each epoch's end and before each --save-every checkpoint,
    and the random numbers it draws do not change the weights."""
    from safetensors.torch import load_file

    for name, count in (("counted", "true"), ("plain", "false")):
        gentool("train", "toy", "--epochs", "2", "--save-every", "5", "--set", f"count_checkpoints={count}",
                "--name", name, "-q", env=toy_env, check=True)
    runs = workdir / "runs" / "toy"
    state = load_file(str(runs / "counted/last.safetensors"))
    prepared = next(v for k, v in state.items() if k.endswith("/prepared")).tolist()
    mid_epoch = list(range(5, 2 * STEPS_PER_EPOCH + 1, 5))
    assert prepared == sorted(mid_epoch + [STEPS_PER_EPOCH, 2 * STEPS_PER_EPOCH]), prepared
    assert _same(_weights(runs / "counted/last.safetensors"), _weights(runs / "plain/last.safetensors"))


def test_run_folder_has_config_metrics_checkpoints_samples_and_plot(toy_env, workdir):
    gentool("train", "toy", "--epochs", "2", "-q", env=toy_env, check=True)
    run = workdir / "runs" / "toy" / "run1"
    for f in ("config.toml", "metrics.jsonl", "last.safetensors", "best.safetensors", "loss.png",
              "samples/epoch_001.png", "samples/epoch_002.png"):
        assert (run / f).exists(), f
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    epochs = [r for r in records if r["type"] == "epoch"]
    assert [r["epoch"] for r in epochs] == [1, 2]
    assert epochs[1]["train_loss"] < epochs[0]["train_loss"]  # the toy model learns
    ckpt = load_checkpoint(run / "last.safetensors", model="toy")
    assert (ckpt.step, ckpt.epoch, ckpt.data["shape"]) == (2 * STEPS_PER_EPOCH, 2, [1, 8, 8])
    assert "model = \"toy\"" in (run / "config.toml").read_text()


def test_resume_after_sigkill_mid_epoch_continues_exactly(toy_env, workdir):
    # random_batches: the task draws its batches from the global RNG, as text models draw crops
    args = ["--epochs", "3", "--set", "sleep=0.03", "--set", "random_batches=true", "--save-every", "4", "-q"]
    proc = _start(toy_env, *args, "--name", "killed")
    last = workdir / "runs/toy/killed/last.safetensors"
    step = _wait_for_step(last, proc, STEPS_PER_EPOCH + 6)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    ckpt = load_checkpoint(last, model="toy")  # intact after the kill
    assert ckpt.has_train_state and ckpt.step >= step
    assert ckpt.step % STEPS_PER_EPOCH != 0  # a mid-epoch checkpoint
    saved_step = ckpt.step

    res = gentool("train", "toy", "--resume", "-q", env=toy_env)  # bare --resume: the newest run
    assert res.returncode == 0, res.stderr
    final = load_checkpoint(last)
    assert (final.step, final.epoch) == (3 * STEPS_PER_EPOCH, 3)
    records = [json.loads(x) for x in (last.parent / "metrics.jsonl").read_text().splitlines()]
    assert max(r["step"] for r in records) == 3 * STEPS_PER_EPOCH and saved_step < 3 * STEPS_PER_EPOCH
    steps = [r["step"] for r in records if r["type"] == "step"]
    assert steps == sorted(set(steps))  # records past the saved step were dropped, not duplicated
    assert not list(last.parent.glob(".*.tmp"))

    gentool("train", "toy", "--epochs", "3", "--set", "random_batches=true", "--name", "straight", "-q",
            env=toy_env, check=True)
    # same data order, RNG and optimizer state: the resumed run ends where an uninterrupted one does
    assert _same(_weights(last), _weights(workdir / "runs/toy/straight/last.safetensors"))


def test_ctrl_c_saves_and_exits_130(toy_env, workdir):
    proc = _start(toy_env, "--epochs", "3", "--set", "sleep=0.03", "--name", "stopped")
    last = workdir / "runs/toy/stopped/last.safetensors"
    log = workdir / "runs/toy/stopped/metrics.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline:  # wait until the second epoch is under way
        steps = [json.loads(x).get("step", 0) for x in log.read_text().splitlines()] if log.exists() else []
        if steps and max(steps) > STEPS_PER_EPOCH:
            break
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "interrupted at step" in err and "--resume stopped" in err
    ckpt = load_checkpoint(last)
    assert STEPS_PER_EPOCH < ckpt.step < 2 * STEPS_PER_EPOCH  # saved mid-epoch, at a step boundary
    res = gentool("train", "toy", "--resume", "stopped", "-q", env=toy_env)
    assert res.returncode == 0, res.stderr
    gentool("train", "toy", "--epochs", "3", "--name", "straight", "-q", env=toy_env, check=True)
    assert _same(_weights(last), _weights(workdir / "runs/toy/straight/last.safetensors"))


def test_non_finite_loss_raises_before_any_weight_changes():
    """StepContext.step checks the loss after queueing backward (no GPU stall before it), but
    before the optimizer: a NaN loss must leave the weights as they were."""
    from gentool.distributed import World
    from gentool.training import NonFiniteLoss, StepContext

    net = torch.nn.Linear(3, 1)
    opt = torch.optim.Adam(net.parameters(), lr=0.1)
    ctx = StepContext(device=torch.device("cpu"), precision="fp32", world=World(), optimizers={"m": opt})
    before = [p.detach().clone() for p in net.parameters()]
    with pytest.raises(NonFiniteLoss):
        ctx.step(net(torch.ones(2, 3)).sum() * float("nan"), "m")
    assert all(torch.equal(a, p) for a, p in zip(before, net.parameters()))
    ctx.step(net(torch.ones(2, 3)).sum(), "m")  # a finite loss after it steps normally
    assert not all(torch.equal(a, p) for a, p in zip(before, net.parameters()))


def test_nan_guard_stops_and_keeps_last_good_checkpoint(toy_env, workdir):
    bad = STEPS_PER_EPOCH + 8
    res = gentool("train", "toy", "--epochs", "3", "--set", f"nan_at_step={bad}", "--name", "nan", env=toy_env)
    assert res.returncode == 3
    assert f"training diverged at step {bad} (epoch 2)" in res.stderr
    assert "last good checkpoint" in res.stderr and "Traceback" not in res.stderr
    ckpt = load_checkpoint(workdir / "runs/toy/nan/last.safetensors")
    assert ckpt.step == STEPS_PER_EPOCH  # the epoch-1 checkpoint, not overwritten
    assert all(torch.isfinite(v).all() for v in _weights(ckpt.path).values())


def test_resume_refuses_changed_model_options_and_finishes_finished_runs(toy_env, workdir):
    gentool("train", "toy", "--epochs", "1", "-q", env=toy_env, check=True)
    res = gentool("train", "toy", "--resume", "run1", "--set", "width=2", env=toy_env)
    assert res.returncode == 1 and "cannot change when resuming" in res.stderr
    res = gentool("train", "toy", "--resume", "run1", env=toy_env)  # finished: nothing owed, nothing to do
    assert res.returncode == 0 and "already trained 1 epochs: nothing left to train" in res.stderr
    res = gentool("train", "toy", "--resume", "nope", env=toy_env)
    assert res.returncode == 1 and "no run 'nope'" in res.stderr
    res = gentool("train", "toy", "--resume", "run1", "--epochs", "2", "-q", env=toy_env)
    assert res.returncode == 0 and load_checkpoint(workdir / "runs/toy/run1/last.safetensors").epoch == 2


def _torchrun(mode: str, out: Path) -> None:
    worker = Path(__file__).resolve().parent / "ddp_worker.py"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           str(worker), mode, str(out)], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_two_process_data_parallel_training_keeps_weights_equal(tmp_path):
    from safetensors.torch import load_file

    _torchrun("toy", tmp_path)
    w0, w1 = load_file(str(tmp_path / "toy-rank0.safetensors")), load_file(str(tmp_path / "toy-rank1.safetensors"))
    i0, i1 = load_file(str(tmp_path / "toy-init0.safetensors")), load_file(str(tmp_path / "toy-init1.safetensors"))
    assert not _same(i0, i1)  # the processes started from different random weights...
    assert _same(w0, w1)  # ...yet end equal: rank 0's weights were broadcast and gradients averaged
    assert not _same(w0, i0)
    steps = (1438 // 2) // 32  # each process sees half the data per epoch
    assert (tmp_path / "toy-steps0.txt").read_text() == (tmp_path / "toy-steps1.txt").read_text() == str(2 * steps)
    run = tmp_path / "runs/toy/toy"
    ckpt = load_checkpoint(run / "last.safetensors")
    assert ckpt.meta["train"]["world_size"] == 2 and _same(_weights(ckpt.path), {f"net.{k}": v for k, v in w0.items()})
    step_lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    logged = [r["step"] for r in step_lines if r["type"] == "step"]
    assert logged and len(logged) == len(set(logged))  # rank 0 alone writes


def test_two_processes_equal_one_process_with_twice_the_batch(tmp_path, monkeypatch):
    """Rank r trains on order[r::2] in batches of 32; together that is one process's batch of 64."""
    from safetensors.torch import load_file

    import ddp_worker

    _torchrun("linear", tmp_path)
    two = load_file(str(tmp_path / "linear-rank0.safetensors"))
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.delenv("RANK", raising=False)
    task, steps, _ = ddp_worker.train("linear", tmp_path / "single", 64, "single")
    assert steps == 2 * (1438 // 64)
    one = task.net.state_dict()
    for k in one:
        assert torch.allclose(one[k], two[k], atol=1e-5), (k, (one[k] - two[k]).abs().max())
    assert not torch.allclose(one["weight"], load_file(str(tmp_path / "linear-init0.safetensors"))["weight"])


def test_plain_progress_lines_when_output_is_not_a_terminal(toy_env, workdir):
    res = gentool("train", "toy", "--epochs", "2", env=toy_env)
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    progress = [x for x in lines if x.startswith("toy/run1 step ")]
    assert progress and "samples/s" in progress[0] and "eta" in progress[0] and "loss" in progress[0]
    assert f"toy/run1 step {2 * STEPS_PER_EPOCH}/{2 * STEPS_PER_EPOCH}" in res.stdout
    assert any(x.startswith("epoch 2/2 train_loss") for x in lines)
    assert "\x1b[" not in res.stdout  # no terminal control codes in a log file


def test_bf16_autocast_on_the_cpu_trains_and_saves_float32(toy_env, workdir):
    res = gentool("train", "toy", "--epochs", "1", "--precision", "bf16", "-q", env=toy_env)
    assert res.returncode == 0, res.stderr
    ckpt = load_checkpoint(workdir / "runs/toy/run1/last.safetensors")
    assert ckpt.meta["train"]["precision"] == "bf16"
    assert all(d == "F32" for k, (_, d) in ckpt.tensor_shapes.items() if k.startswith("net."))
