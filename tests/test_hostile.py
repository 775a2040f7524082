"""A hostile user's battery, through the real command line: every case gets its own one-line
message (never the catch-all "this is a bug"), and nothing a user ran is lost to a signal, a
crash window or a second process. (Data, checkpoint, hub and chat cases live in the
test_hostile_*.py files beside this one and in the gpt plugin's tests.)"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import gentool
from gentool.checkpoint import load_checkpoint

CATCH_ALL = "this is a bug"


def _in_process(*args: str) -> subprocess.CompletedProcess:
    """The CLI's app under Typer's runner (no interpreter start-up): the same output and exit code."""
    from typer.testing import CliRunner

    from gentool.cli import app

    res = CliRunner().invoke(app, list(args))
    return subprocess.CompletedProcess(list(args), res.exit_code, res.stdout, res.stderr)


def one_line_error(res: subprocess.CompletedProcess, *words: str) -> None:
    assert res.returncode != 0, res.stdout
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    assert CATCH_ALL not in res.stderr and "Traceback" not in res.stderr
    for w in words:
        assert w in res.stderr, (w, res.stderr)


@pytest.mark.parametrize("args, words", [
    (["--lr", "-1"], ["lr must be a finite number >= 0"]),
    (["--lr", "nan"], ["lr must be a finite number >= 0, got nan"]),
    (["--lr", "inf"], ["lr must be a finite number >= 0"]),
    (["--seed", "99999999999999999999"], ["seed must lie in 0 .. 2**63-1"]),
    (["--name", "a" * 300], ["bad run name", "at most 100"]),
    (["--config", "."], ["is a folder: name a TOML file"]),
])
def test_bad_flags_are_one_line(toy_registry, args, words):
    one_line_error(_in_process("train", "toy", "--epochs", "1", *args), *words)


@pytest.mark.parametrize("toml, words", [
    ("[train]\nepochs = 0\n", ["epochs must be at least 1, got 0"]),
    ("[train]\nepochs = -3\n", ["epochs must be at least 1, got -3"]),
    ("[train]\nepochs = \"many\"\n", ["bad value 'many' for --epochs (int)"]),
    ("[train]\nbatch_size = -4\n", ["batch_size must be at least 1, got -4"]),
    ("[train]\nimage_size = 1\n", ["image_size must be at least 4, got 1"]),
    ("[train]\nsave_every = -1\n", ["save_every must be a finite number >= 0"]),
    ("[train]\ndevice = 5\n", ["unknown device '5'"]),
    ("train = 5\n", ["[train] must be a table of options"]),
    ("[train]\nlr = nan\n", ["lr must be a finite number >= 0, got nan"]),
])
def test_bad_config_file_values_are_one_line_like_flags(toy_registry, workdir, toml, words):
    path = workdir / "bad.toml"
    path.write_text(toml)
    one_line_error(_in_process("train", "toy", "--config", str(path)), *words)
    assert not list((workdir / "runs" / "toy").glob("*")) if (workdir / "runs" / "toy").exists() else True


def test_a_training_that_fails_inside_the_plugin_leaves_no_run_folder(toy_registry, workdir, monkeypatch):
    """The run folder (config.toml, lock) is made before the plugin trains: a failure there removes
    it, so ``runs/`` holds no empty run; an existing run that fails on resume keeps its files."""
    import gentool as api
    from gentool.errors import DataError

    def broken(task, job):
        raise DataError("the data went away")

    api.train("toy", epochs=1, quiet=True, name="kept")
    monkeypatch.setattr(api, "fit", broken)
    with pytest.raises(DataError, match="went away"):
        api.train("toy", epochs=1, quiet=True, name="doomed")
    assert sorted(p.name for p in (workdir / "runs" / "toy").iterdir()) == ["kept"]
    with pytest.raises(DataError):
        api.train("toy", epochs=2, quiet=True, resume="kept")
    assert (workdir / "runs" / "toy" / "kept" / "last.safetensors").exists()


def test_output_that_cannot_be_written_is_one_line(toy_env, workdir):
    gentool("train", "toy", "--epochs", "1", "-q", env=toy_env, check=True)
    (workdir / "afile").write_text("x")
    one_line_error(gentool("sample", "toy", "-n", "2", "--out", "afile", env=toy_env), "cannot write samples to afile")
    one_line_error(gentool("sample", "toy", "-n", "2", "--out", "afile/sub", env=toy_env), "Not a directory")
    one_line_error(gentool("sample", "toy", "-n", "2", "--out", "/proc/gentool-test", env=toy_env),
                   "cannot write samples to /proc/gentool-test")
    res = gentool("train", "toy", "--epochs", "1", env={**toy_env, "GENTOOL_RUNS": str(workdir / "afile")})
    one_line_error(res, "cannot create the run folder", "GENTOOL_RUNS")


def _start(env: dict, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "gentool", "train", "toy", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert proc.poll() is None, f"training ended early: {proc.communicate()}"
        if path.exists():
            return
        time.sleep(0.05)
    raise AssertionError(f"{path} did not appear in time")


def test_sigterm_saves_and_exits_143_like_ctrl_c(toy_env, workdir):
    proc = _start(toy_env, "--epochs", "3", "--set", "sleep=0.03", "--save-every", "4", "--name", "term")
    last = workdir / "runs/toy/term/last.safetensors"
    _wait_for(last, proc)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    assert "terminated (SIGTERM) at step" in err and "--resume term" in err and CATCH_ALL not in err
    ckpt = load_checkpoint(last)
    assert ckpt.has_train_state and ckpt.step > 0
    res = gentool("train", "toy", "--resume", "term", "-q", env=toy_env)
    assert res.returncode == 0, res.stderr
    assert load_checkpoint(last).epoch == 3


def test_a_second_process_on_the_same_run_is_refused_naming_the_holder(toy_env, workdir):
    proc = _start(toy_env, "--epochs", "3", "--set", "sleep=0.05", "--save-every", "2", "--name", "busy", "-q")
    try:
        _wait_for(workdir / "runs/toy/busy/last.safetensors", proc)
        res = gentool("train", "toy", "--resume", "busy", env=toy_env)
        one_line_error(res, "is being trained by another process", f"pid {proc.pid}")
    finally:
        proc.kill()
        proc.wait()
    # the holder died (SIGKILL): its lock went with it, and the run resumes
    res = gentool("train", "toy", "--resume", "busy", "-q", env=toy_env)
    assert res.returncode == 0, res.stderr
    records = [json.loads(x) for x in (workdir / "runs/toy/busy/metrics.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in records if r["type"] == "step"]
    assert steps == sorted(set(steps))  # no duplicated records


def test_a_stale_lock_file_of_a_dead_process_is_taken_over(toy_env, workdir):
    gentool("train", "toy", "--epochs", "1", "--name", "old", "-q", env=toy_env, check=True)
    (workdir / "runs/toy/old/.lock").write_text("999999\n")  # left by a process long gone
    res = gentool("train", "toy", "--resume", "old", "--epochs", "2", "-q", env=toy_env)
    assert res.returncode == 0, res.stderr


def test_a_crash_between_best_and_last_resumes_to_the_uninterrupted_result(toy_env, workdir):
    """The epoch end writes best, then last: killed between the two, last is one epoch behind and
    the resumed run redoes that epoch, ending exactly where an uninterrupted run ends."""
    gentool("train", "toy", "--epochs", "2", "--name", "straight", "-q", env=toy_env, check=True)
    res = gentool("train", "toy", "--epochs", "2", "--name", "cut", "-q",
                  env={**toy_env, "GENTOOL_TEST_KILL_AFTER_BEST": "2"})
    assert res.returncode in (-9, 137), res.stderr
    runs = workdir / "runs/toy"
    assert load_checkpoint(runs / "cut/best.safetensors").epoch == 2 and load_checkpoint(runs / "cut/last.safetensors").epoch == 1
    res = gentool("train", "toy", "--resume", "cut", "-q", env=toy_env)
    assert res.returncode == 0, res.stderr
    for name in ("last", "best"):
        a = load_checkpoint(runs / f"straight/{name}.safetensors").tensors()
        b = load_checkpoint(runs / f"cut/{name}.safetensors").tensors()
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
    # and a run that finished is resumed to nothing, successfully, rather than refused
    res = gentool("train", "toy", "--resume", "cut", env=toy_env)
    assert res.returncode == 0 and "nothing left to train" in res.stderr


def test_a_two_image_folder_trains_a_gan_quickly(workdir):
    """The smallest data set training accepts (one image is refused): the GAN's validation trains
    its feature extractor for a bounded number of steps, not 40,000 / 2 epochs of one tiny batch."""
    import os

    from PIL import Image

    pytest.importorskip("gentool_gan")
    (workdir / "two" / "a").mkdir(parents=True)
    for i, shade in enumerate((20, 220)):
        Image.new("L", (8, 8), color=shade).save(workdir / "two" / "a" / f"{i}.png")
    env = {k: v for k, v in os.environ.items() if k != "GENTOOL_PLUGINS"}
    res = gentool("train", "gan", "--data", str(workdir / "two"), "--epochs", "1", "-q", env=env, timeout=180)
    assert res.returncode == 0, res.stderr
    (workdir / "one" / "a").mkdir(parents=True)
    Image.new("L", (8, 8)).save(workdir / "one" / "a" / "0.png")
    one_line_error(gentool("train", "rbm", "--data", str(workdir / "one"), env=env), "holds 1 image; training needs at least 2")
