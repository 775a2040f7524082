"""A plugin written against gentool 0.1's contract (tests/legacy_plugin, frozen: internal imports,
name guards, dict verb options, job.fit, a dict from evaluate with a "warning" entry) keeps
working: it trains, samples and evaluates, and only its use of a deprecated name warns."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

import gentool
from conftest import gentool as run_gentool, make_dist

LEGACY_DIR = Path(__file__).resolve().parent / "legacy_plugin"


@pytest.fixture
def legacy_env(workdir) -> dict[str, str]:
    site = make_dist(workdir / "site", "gentool-legacy-vae", {"legacy-vae": "gentool_legacy_vae.plugin"})
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(LEGACY_DIR), str(site), env.get("PYTHONPATH", "")])
    env["GENTOOL_PLUGINS"] = "legacy-vae"
    return env


def test_a_0_1_plugin_trains_samples_and_evaluates_through_the_cli(legacy_env, workdir):
    res = run_gentool("plugins", "--json", env=legacy_env)
    info = {p["name"]: p for p in json.loads(res.stdout)}["legacy-vae"]
    assert info["ok"] and info["models"] == ["legacy-vae"] and not info["problems"]
    run_gentool("train", "legacy-vae", "--epochs", "2", "--set", "hidden=32", "-q", env=legacy_env, check=True)
    res = run_gentool("sample", "legacy-vae", "-n", "4", "--out", "s", env=legacy_env)
    assert res.returncode == 0, res.stderr
    assert len(list((workdir / "s").glob("0*.png"))) == 4
    res = run_gentool("sample", "legacy-vae", "--labl", "3", env=legacy_env)  # its dict of flags still guards
    assert res.returncode == 1 and "unknown legacy-vae sample option '--labl'" in res.stderr
    res = run_gentool("evaluate", "legacy-vae", "--json", "-n", "100", env=legacy_env)
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    assert doc["metrics"]["neg_elbo_nats"] > 0 and doc["settings"]["features"].startswith("gentool-cnn")
    assert doc["warnings"] == ["a 0.1-style warning, passed in the metrics dict"]
    assert "warning: a 0.1-style warning" in res.stderr


def test_a_0_1_plugin_in_process_warns_only_about_job_fit(legacy_env, monkeypatch):
    import sys

    from gentool.plugins import set_registry

    monkeypatch.syspath_prepend(str(LEGACY_DIR))
    monkeypatch.syspath_prepend(str(Path(legacy_env["PYTHONPATH"].split(os.pathsep)[1])))
    monkeypatch.setenv("GENTOOL_PLUGINS", "legacy-vae")
    set_registry(None)
    try:
        with pytest.warns(DeprecationWarning, match=r"return gentool.fit\(task, job\)"):
            run = gentool.train("legacy-vae", epochs=1, quiet=True, hidden=(16,))
        samples = run.load(device="cpu").sample(3, seed=0)
        assert samples.images.shape == (3, 1, 8, 8)
        assert "gentool_legacy_vae.plugin" in sys.modules
    finally:
        set_registry(None)
