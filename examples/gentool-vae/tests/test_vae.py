"""The example plugin, driven through its installed entry point: the real command line, the Python
API, and the checks gentool.testing gives every plugin (its ``gentool_env`` fixture comes with
gentool, as a pytest plugin)."""

from __future__ import annotations

import json
import os

import pytest

from gentool.testing import invoke


def gentool(*args, cwd, env):
    """The real command line (in this process where a fresh interpreter would answer the same)."""
    return invoke(*args, cwd=cwd, env=env, timeout=600)


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
    doc = json.loads(proc.stdout)
    metrics = doc["metrics"]
    # a trained VAE explains held-out digits far better than a uniform model (64 * ln 2 = 44.4 nats)
    assert 0 < metrics["neg_elbo_nats"] < 35
    assert doc["settings"]["features"].startswith("gentool-cnn") and metrics["fd"] >= 0


def test_bad_option_is_refused_by_the_config_dataclass(trained):
    work, env = trained
    proc = gentool("train", "vae", "--set", "latent_dim=0", cwd=work, env=env)
    assert proc.returncode == 1 and "latent_dim must be at least 1" in proc.stderr


def test_sample_option_is_typed_and_checked(trained):
    work, env = trained
    proc = gentool("sample", "vae", "-h", cwd=work, env=env)
    assert proc.returncode == 0 and "--temperature" in proc.stdout and "1.0" in proc.stdout
    proc = gentool("sample", "vae", "--temperature", "-1", cwd=work, env=env)
    assert proc.returncode == 1 and "--temperature must be >= 0" in proc.stderr
    proc = gentool("evaluate", "vae", "--labl", "3", cwd=work, env=env)  # NoOptions: typos refused
    assert proc.returncode == 1 and "unknown vae evaluate option '--labl'" in proc.stderr


def test_python_api_samples_with_the_typed_option(trained, monkeypatch):
    import gentool

    work, env = trained
    monkeypatch.setenv("GENTOOL_RUNS", env["GENTOOL_RUNS"])
    m = gentool.load(model="vae", device="cpu")
    mean = m.sample(4, temperature=0).images  # z = 0 for every sample: one image, four times
    assert mean.shape == (4, 1, 8, 8) and all(bool((mean[i] == mean[0]).all()) for i in range(4))
    varied = m.sample(4, seed=1).images
    assert not bool((varied[1] == varied[0]).all())


def test_imports_only_the_facade():
    from gentool.testing import assert_imports_only_the_facade
    from gentool_vae import plugin

    assert_imports_only_the_facade(plugin.__file__)


def test_killed_mid_epoch_resumes_exactly(gentool_env):
    """SIGKILL right after the step-8 checkpoint (of 22 steps an epoch), then --resume: the same
    weights, optimizer state and per-epoch losses as a run never interrupted."""
    from gentool.testing import assert_mid_epoch_resume_is_exact

    assert_mid_epoch_resume_is_exact("vae", "--set", "hidden=32", "-q", env=gentool_env.env, runs=gentool_env.runs,
                                     save_every=4, kill_at=8)
