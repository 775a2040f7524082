"""The rbm model and the plugin's routing, through the real entry point and command line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from gentool.testing import invoke

SHARED = Path(__file__).resolve().parents[3].parent / "shared" / "data"


def gentool(*args, env):
    """The real command line (in this process where a fresh interpreter would answer the same)."""
    return invoke(*args, env=env, timeout=900)


@pytest.fixture
def env(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return {**os.environ, "GENTOOL_RUNS": str(tmp_path / "runs"), "GENTOOL_CACHE": str(tmp_path / "cache"),
            "GENTOOL_PLUGINS": "boltzmann", "OMP_NUM_THREADS": "1"}


def test_the_plugin_registers_its_four_models_with_typed_verb_options():
    from gentool_boltzmann import plugin
    from gentool_boltzmann.configs import EvaluateOptions, SampleOptions

    registered = []
    plugin.gentool_register_models(registered.append)
    assert [s.name for s in registered] == ["bm", "rbm", "dbn", "dbm"]
    for spec in registered:
        assert spec.sample_options is SampleOptions and spec.evaluate_options is EvaluateOptions


def test_rbm_trains_samples_and_evaluates_on_digits(env, tmp_path):
    res = gentool("train", "rbm", "--epochs", "6", "--set", "hidden=64", "-q", env=env)
    assert res.returncode == 0, res.stderr
    run = tmp_path / "runs/rbm/run1"
    for f in ("filters.png", "gibbs_chain.png", "gibbs_chain.gif", "samples/epoch_006.png", "last.safetensors"):
        assert (run / f).exists(), f
    # no best epoch: the noisy pseudo-likelihood chose a half-trained PCD model on MNIST, so
    # sample and evaluate take the last checkpoint, trained to the end of the learning-rate decay
    assert not (run / "best.safetensors").exists()
    epochs = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if '"epoch"' in x]
    epochs = [e for e in epochs if e["type"] == "epoch"]
    assert epochs[-1]["val_pll"] > epochs[0]["val_pll"]  # the pseudo-likelihood of held-out digits rises
    res = gentool("sample", "rbm", "-n", "5", "--out", "s", env=env)
    assert res.returncode == 0 and len(list((tmp_path / "s").glob("0*.png"))) == 5
    res = gentool("evaluate", "rbm", "--json", "--ais-runs", "30", "--ais-steps", "1000", env=env)
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    m = out["metrics"]
    assert m["ais_runs"] == 30 and m["ais_steps"] == 1000 and out["settings"]["ais_method"] == "ais"
    assert out["warnings"] == [] and all(isinstance(v, (int, float)) or v is None for v in m.values())
    assert -64 * 0.6932 < m["test_log_likelihood_nats"] < 0  # better than a coin per pixel, below 0
    assert m["test_ll_low"] <= m["test_log_likelihood_nats"] <= (m["test_ll_high"] or float("inf"))
    assert m["ais_consistent"] and m["log_z_floor"] < m["log_z"]
    assert 0.5 < m["linear_probe_accuracy"] <= 1
    res = gentool("evaluate", "rbm", "--ais-run", "3", env=env)
    assert res.returncode == 1 and "did you mean --ais-runs" in res.stderr
    res = gentool("evaluate", "rbm", "--ais-runs", "1", env=env)  # checked before any AIS runs
    assert res.returncode == 1 and "--ais-runs must be at least 2" in res.stderr and "Traceback" not in res.stderr
    res = gentool("sample", "rbm", "-n", "2", "--steps", "5", env=env)  # sample takes no flags of its own
    assert res.returncode == 1 and "--steps" in res.stderr and "Traceback" not in res.stderr


def test_gaussian_visible_units_on_grey_digits(env):
    res = gentool("train", "rbm", "--epochs", "3", "--set", "visible=gaussian", "--lr", "0.005", "-q", env=env)
    assert res.returncode == 0, res.stderr
    res = gentool("evaluate", "rbm", "--json", "--ais-runs", "20", "--ais-steps", "500", "--probe", "false", env=env)
    assert res.returncode == 0, res.stderr
    m = json.loads(res.stdout)["metrics"]
    assert torch.isfinite(torch.tensor(m["test_log_likelihood_nats"])) and "linear_probe_accuracy" not in m


def test_training_raises_the_ais_likelihood_of_real_mnist(tmp_path):
    """On real data: the trained RBM explains held-out MNIST digits better than it did at the start."""
    if not (SHARED / "mnist").is_dir():
        pytest.skip(f"../shared/data/mnist not present at {SHARED}: the real-data test needs it")
    from gentool_boltzmann import ais
    from gentool_boltzmann.common import binarized, flat
    from gentool_boltzmann.rbm import RBM, rbm_gradients

    from gentool.data import load_dataset

    torch.manual_seed(0)
    train = binarized(load_dataset(str(SHARED / "mnist")).subset(slice(0, 6000)), "threshold", 0)
    test = binarized(load_dataset(str(SHARED / "mnist"), split="test").subset(slice(0, 1000)), "threshold", 0)
    x, v_test = flat(train.as_float()), flat(test.as_float()).double()
    rbm = RBM(784, 64)
    p = x.mean(0).clamp(1e-3, 1 - 1e-3)
    rbm.b.data.copy_(torch.log(p / (1 - p)))
    base = ais.base_rate_visible_bias(x.double())

    def test_ll() -> float:
        W, b, c = (t.detach().double() for t in (rbm.W, rbm.b, rbm.c))
        est = ais.rbm_ais(W, b, c, runs=50, steps=2000, base_bias=base, generator=torch.Generator().manual_seed(1))
        return float(ais.rbm_log_likelihood(v_test, W, b, c, est.log_z).mean())

    before = test_ll()
    opt = torch.optim.SGD(rbm.parameters(), lr=0.05, momentum=0.5)
    chains = x[:100].clone()
    with torch.no_grad():
        for epoch in range(3):
            for i in range(0, len(x), 100):
                v0 = x[i : i + 100]
                chains = rbm.gibbs(chains, 1)
                grads, _ = rbm_gradients(rbm, v0, chains)
                for param, g in grads.items():
                    param.grad = g
                opt.step()
    after = test_ll()
    assert after > before + 20, (before, after)  # nats per test digit


def test_sampled_binarisation_draws_each_split_independently():
    """Test digit i must not reuse training digit i's noise: the same grey image binarised as
    'train' and as 'test' gives different draws, each reproducible, with the grey level as
    the probability of a one."""
    from gentool.data import ImageDataset
    from gentool_boltzmann.common import binarized

    grey = ImageDataset(torch.full((50, 1, 8, 8), 128, dtype=torch.uint8), None, None, "grey")
    as_train = binarized(grey, "sample", 0, "train").images
    as_test = binarized(grey, "sample", 0, "test").images
    assert torch.equal(as_train, binarized(grey, "sample", 0, "train").images)
    assert not torch.equal(as_train, as_test)
    agree = float((as_train == as_test).float().mean())
    assert 0.4 < agree < 0.6  # independent fair coins agree half the time; shared noise would agree always
    assert 0.45 < float((as_test > 0).float().mean()) < 0.56
    with pytest.raises(ValueError, match="split"):
        binarized(grey, "sample", 0, "valid")


#: ``python -c`` program: ``gentool`` whose rbm kills its own process (SIGKILL, no chance to save)
#: when it is about to take step ``KILL_AT`` (0-based: after KILL_AT steps).
KILLED_CLI = """
import os, signal, sys
from gentool_boltzmann import rbm
step = rbm.RBMTask.training_step
def training_step(self, batch, ctx):
    if ctx.step_count == int(os.environ["KILL_AT"]):
        os.kill(os.getpid(), signal.SIGKILL)
    return step(self, batch, ctx)
rbm.RBMTask.training_step = training_step
from gentool.cli import main
sys.argv[0] = "gentool"
main()
"""


def test_rbm_resumed_mid_epoch_after_sigkill_ends_exactly_where_a_straight_run_does(env, tmp_path):
    """Digits, batch 20: 64 steps an epoch. One run is killed at step 70, after its --save-every
    checkpoint of step 68 (mid epoch 2), and resumed: its last checkpoint must equal, tensor for
    tensor (weights, optimizer, PCD chains, RNG), that of a run that was never stopped. The
    reconstruction the rbm reports every 10th step draws from the global RNG, so which steps
    report it must follow the harness's restored step count, not a counter that restarts at 0."""
    from gentool import load_checkpoint

    common = ["--epochs", "2", "--batch-size", "20", "--save-every", "4", "--set", "hidden=16",
              "--set", "sample_steps=20", "-q"]
    res = gentool("train", "rbm", *common, "--name", "straight", env=env)
    assert res.returncode == 0, res.stderr
    killed = subprocess.run([sys.executable, "-c", KILLED_CLI, "train", "rbm", *common, "--name", "killed"],
                            env={**env, "KILL_AT": "70"}, capture_output=True, text=True, timeout=300)
    assert killed.returncode == -9, killed.stderr
    runs = tmp_path / "runs" / "rbm"
    saved = load_checkpoint(runs / "killed" / "last.safetensors")
    assert saved.step == 68 and saved.epoch == 1  # a --save-every checkpoint in the middle of epoch 2
    res = gentool("train", "rbm", "--resume", "killed", "-q", env=env)
    assert res.returncode == 0, res.stderr

    straight = load_checkpoint(runs / "straight" / "last.safetensors")
    resumed = load_checkpoint(runs / "killed" / "last.safetensors")
    assert straight.step == resumed.step == 128
    a, b = straight.tensors(), resumed.tensors()
    assert a.keys() == b.keys() and any(k.startswith("__train__/") for k in a)
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, different

    def epochs(run: Path) -> list[dict]:
        records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
        return [{k: v for k, v in r.items() if k != "epoch_time"} for r in records if r["type"] == "epoch"]

    # the epoch means too: the resumed epoch's losses cover its steps before the kill
    assert epochs(runs / "straight") == epochs(runs / "killed")
