"""Every built-in model, killed with SIGKILL right after a mid-epoch checkpoint and resumed, ends with
the same tensors (weights, optimizers, chains, EMA) and the same per-epoch losses as a run that was
never interrupted. rbm, the example vae and the toy run in CI (their own test files); the full set
runs with --runslow (about 25 s a model on a 2-core CPU)."""

from __future__ import annotations

import importlib.util
import os

import pytest

from gentool.testing import assert_mid_epoch_resume_is_exact

# model -> (plugin package, tiny training flags); digits: 1438 training images
MODELS = {
    "bm": ("gentool_boltzmann", ["--set", "hidden=8", "--set", "chains=20"]),
    "rbm": ("gentool_boltzmann", ["--set", "hidden=16"]),
    "dbn": ("gentool_boltzmann", ["--set", "layers=16,16"]),
    "dbm": ("gentool_boltzmann", ["--set", "layers=16,16", "--set", "chains=20", "--set", "k=1"]),
    "gan": ("gentool_gan", ["--set", "g_hidden=32", "--set", "d_hidden=32", "--set", "val_samples=0"]),
    "cgan": ("gentool_gan", ["--set", "g_hidden=32", "--set", "d_hidden=32", "--set", "val_samples=0"]),
    "dcgan": ("gentool_gan", ["--set", "g_width=8", "--set", "d_width=8", "--set", "val_samples=0"]),
    "stylegan": ("gentool_gan", ["--set", "width=8", "--set", "max_width=16", "--set", "augment=ada", "--set", "val_samples=0"]),
    "srgan": ("gentool_gan", ["--set", "width=8", "--set", "blocks=1", "--set", "d_width=8", "--set", "val_images=20",
                              "--set", "pixel_epochs=0"]),
    "cyclegan": ("gentool_gan", ["--set", "domains=0,1", "--set", "width=8", "--set", "d_width=8",
                                 "--set", "res_blocks=1", "--set", "pool_size=4"]),
    "gpt": ("gentool_gpt", ["--set", "n_layer=1", "--set", "n_head=2", "--set", "n_embd=16", "--set", "block_size=16",
                            "--set", "iters_per_epoch=12", "--set", "eval_tokens=256", "--set", "warmup_iters=2"]),
}


@pytest.mark.slow
@pytest.mark.parametrize("model", sorted(MODELS))
def test_killed_mid_epoch_resumes_exactly(model, tmp_path, monkeypatch):
    package, flags = MODELS[model]
    if importlib.util.find_spec(package) is None:
        pytest.skip(f"{package} is not installed")
    monkeypatch.chdir(tmp_path)
    env = {k: v for k, v in os.environ.items() if k != "GENTOOL_PLUGINS"}
    env.update(GENTOOL_RUNS=str(tmp_path / "runs"), GENTOOL_CACHE=str(tmp_path / "cache"), OMP_NUM_THREADS="1")
    # --save-every 4, killed after the step-8 checkpoint: inside the first epoch of every model here
    assert_mid_epoch_resume_is_exact(model, *flags, "-q", env=env, runs=tmp_path / "runs", save_every=4, kill_at=8)
