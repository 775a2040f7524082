"""Every built-in model on a CUDA GPU: train, sample, evaluate, and a GPU checkpoint read on the CPU.

Skipped where PyTorch sees no CUDA GPU (CI has none). ``GENTOOL_TEST_GPU_DEVICE=cpu`` runs the
same checks on the CPU, to debug this module without a GPU.
"""

from __future__ import annotations

import json
import os

import pytest
import torch

from gentool.testing import run_cli as gentool

DEVICE = os.environ.get("GENTOOL_TEST_GPU_DEVICE", "cuda")
pytestmark = pytest.mark.skipif(DEVICE == "cuda" and not torch.cuda.is_available(),
                                reason="no CUDA GPU here (set GENTOOL_TEST_GPU_DEVICE=cpu to run these on the CPU)")

# model: (train options, evaluate options, a metric the evaluation must report as a finite number)
MODELS = {
    "rbm": (["--epochs", "2"], ["--ais-runs", "16", "--ais-steps", "500", "--probe", "false"],
            "test_log_likelihood_nats"),
    "bm": (["--epochs", "2"], [], "reconstruction_error"),
    "dbn": (["--epochs", "2"], ["--ais-runs", "16", "--ais-steps", "500", "--probe", "false"], None),
    "dbm": (["--epochs", "2"], ["--ais-runs", "16", "--ais-steps", "500", "--probe", "false"], None),
    "gan": (["--epochs", "1", "--set", "val_samples=200"], ["-n", "300"], "fd"),
    "cgan": (["--epochs", "1", "--set", "val_samples=200"], ["-n", "300", "--cas", "false"], "class_faithfulness"),
    "dcgan": (["--epochs", "1", "--set", "val_samples=200", "--precision", "bf16"], ["-n", "300"], "fd"),
    "stylegan": (["--epochs", "1", "--set", "val_samples=200"], ["-n", "300", "--psis", "1"], "fd"),
    "srgan": (["--epochs", "2", "--set", "val_images=50"], ["-n", "300", "--fd", "false"], "psnr_pixel"),
    "cyclegan": (["--epochs", "1", "--set", "domains=0,1"], ["-n", "100"], "cycle_l1_a"),
    "gpt": (["--epochs", "1", "--set", "iters_per_epoch=20"], [], None),
    "vae": (["--epochs", "2"], ["-n", "300"], None),
}


@pytest.fixture
def env(tmp_path) -> dict[str, str]:
    return {**os.environ, "GENTOOL_RUNS": str(tmp_path / "runs"), "GENTOOL_CACHE": str(tmp_path / "cache")}


@pytest.mark.parametrize("model", sorted(MODELS))
def test_model_trains_samples_and_evaluates_on_the_gpu(model, env, tmp_path):
    train, evaluate, metric = MODELS[model]
    res = gentool("train", model, "--device", DEVICE, "-q", *train, env=env, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    run = tmp_path / "runs" / model / "run1"
    res = gentool("info", str(run / "last.safetensors"), "--json", env=env, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    trained = json.loads(res.stdout)["train"]
    assert trained["device"] == torch.device(DEVICE).type, trained

    # a checkpoint written on the GPU samples on the CPU: no device baked into the file
    extra = ["--max-tokens", "20"] if model == "gpt" else []
    res = gentool("sample", model, "-n", "4", "--device", "cpu", "--out", "s", *extra, env=env, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert any((tmp_path / "s").iterdir())

    res = gentool("evaluate", model, "--json", "--device", DEVICE, *evaluate, env=env, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    metrics = json.loads(res.stdout)["metrics"]
    numbers = {k: v for k, v in metrics.items() if isinstance(v, float)}
    assert numbers and all(v == v for v in numbers.values()), metrics  # some figures, none NaN
    if metric is not None:
        assert isinstance(metrics[metric], float) and metrics[metric] == metrics[metric], metrics
