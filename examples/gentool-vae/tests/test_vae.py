"""The example plugin, driven through its installed entry point and the real command line."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest


def gentool(*args, cwd, env):
    return subprocess.run([sys.executable, "-m", "gentool", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    work = tmp_path_factory.mktemp("vae")
    env = {**os.environ, "GENTOOL_RUNS": str(work / "runs"), "GENTOOL_CACHE": str(work / "cache")}
    env.pop("GENTOOL_PLUGINS", None)
    proc = gentool("train", "vae", "--epochs", "8", "-q", cwd=work, env=env)
    assert proc.returncode == 0, proc.stderr
    return work, env


def test_vae_is_discovered_through_its_entry_point(trained):
    work, env = trained
    plugins = {p["name"]: p for p in json.loads(gentool("plugins", "--json", cwd=work, env=env).stdout)}
    assert plugins["vae"]["ok"] and plugins["vae"]["distribution"] == "gentool-vae"
    assert {"gentool_train", "gentool_sample", "gentool_evaluate"} <= set(plugins["vae"]["hooks"])


def test_training_lowers_the_negative_elbo(trained):
    work, _ = trained
    lines = (work / "runs/vae/run1/metrics.jsonl").read_text().splitlines()
    epochs = [json.loads(x) for x in lines if '"type": "epoch"' in x]
    assert len(epochs) == 8
    assert epochs[-1]["train_loss"] < epochs[0]["train_loss"] - 3  # nats per 8x8 digit


def test_sample_and_evaluate_from_the_checkpoint(trained):
    work, env = trained
    proc = gentool("sample", "vae", "-n", "9", "--out", "out", cwd=work, env=env)
    assert proc.returncode == 0, proc.stderr
    assert len(list((work / "out").glob("0000*.png"))) == 9 and (work / "out/grid.png").exists()
    proc = gentool("evaluate", "vae", "--json", "-n", "500", cwd=work, env=env)
    assert proc.returncode == 0, proc.stderr
    metrics = json.loads(proc.stdout)["metrics"]
    # a trained VAE explains held-out digits far better than a uniform model (64 * ln 2 = 44.4 nats)
    assert 0 < metrics["neg_elbo_nats"] < 35
    assert metrics["features"].startswith("gentool-cnn") and metrics["fd"] >= 0


def test_bad_option_is_refused_by_the_config_dataclass(trained):
    work, env = trained
    proc = gentool("train", "vae", "--set", "latent_dim=0", cwd=work, env=env)
    assert proc.returncode == 1 and "latent_dim must be at least 1" in proc.stderr
