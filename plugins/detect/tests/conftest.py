"""Fixtures of the detect plugin's tests: a small detector trained once per session through the
real command line on a synthetic real/fake folder, and (where ../shared/data exists) two tiny
generators trained once on an MNIST subset to draw real fakes from."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from detect_testing import MNIST, gentool_cli, make_env, write_real_fake


@pytest.fixture(scope="session")
def session_env(tmp_path_factory) -> dict[str, str]:
    base = tmp_path_factory.mktemp("detect")
    return make_env(base / "runs", base / "cache")


@pytest.fixture(scope="session")
def trained(tmp_path_factory, session_env) -> dict:
    """A detector trained by ``gentool train detector --data DIR`` (real/ and fake/nearest/)."""
    data = write_real_fake(tmp_path_factory.mktemp("realfake"))
    res = gentool_cli("train", "detector", "--data", str(data), "--epochs", "4", "--batch-size", "32",
                      "--name", "t1", "-q", "--set", "width=8", env=session_env)
    assert res.returncode == 0, res.stderr[-3000:]
    ckpt = Path(session_env["GENTOOL_RUNS"]) / "detector" / "t1" / "best.safetensors"
    assert ckpt.exists()
    return {"data": data, "checkpoint": ckpt, "env": session_env}


@pytest.fixture(scope="session")
def mnist_generators(tmp_path_factory) -> dict:
    """vae and dcgan trained briefly on 3,000 MNIST training images (in this process)."""
    if not MNIST.is_dir():
        pytest.skip(f"real data absent: {MNIST} (see ../shared/data/README.md)")
    import gentool

    base = tmp_path_factory.mktemp("mnistgen")
    before = {k: os.environ.get(k) for k in ("GENTOOL_RUNS", "GENTOOL_CACHE", "GENTOOL_PLUGINS")}
    os.environ.update(GENTOOL_RUNS=str(base / "runs"), GENTOOL_CACHE=str(base / "cache"))
    os.environ.pop("GENTOOL_PLUGINS", None)
    try:
        ds = gentool.load_dataset(str(MNIST), split="train")
        npz = base / "mnist3k.npz"
        np.savez(npz, x=ds.images[:3000].numpy(), y=ds.labels[:3000].numpy())
        vae = gentool.train("vae", data=str(npz), epochs=3, name="vae", quiet=True, threads=1)
        dcgan = gentool.train("dcgan", data=str(npz), epochs=1, name="dcgan", quiet=True, threads=1, val_samples=0)
    finally:
        for k, v in before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return {"npz": npz, "vae": str(vae.checkpoint), "dcgan": str(dcgan.checkpoint), "base": base}


@pytest.fixture(autouse=True)
def one_torch_thread():
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
