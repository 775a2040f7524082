"""Helpers of the detect plugin's tests (a uniquely named module; conftest.py imports from here)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

from gentool.testing import invoke

SHARED = Path(__file__).resolve().parents[3].parent / "shared" / "data"
MNIST = SHARED / "mnist"
gentool_cli = invoke


def make_env(runs: Path, cache: Path) -> dict[str, str]:
    env = {**os.environ, "GENTOOL_RUNS": str(runs), "GENTOOL_CACHE": str(cache), "HF_HUB_OFFLINE": "1"}
    env.setdefault("OMP_NUM_THREADS", "1")
    env.pop("GENTOOL_PLUGINS", None)
    return env


def nearest_fake(img: np.ndarray) -> np.ndarray:
    """A stand-in "generator": half resolution, then nearest up-sampling (an up-sampling trace),
    with a little noise so that no two fakes are alike."""
    h, w = img.shape[:2]
    small = np.asarray(Image.fromarray(img).resize((w // 2, h // 2), Image.Resampling.BILINEAR))
    up = np.asarray(Image.fromarray(small).resize((w, h), Image.Resampling.NEAREST)).astype(np.int16)
    rng = np.random.default_rng(int(img.sum()))
    return (up + rng.integers(-3, 4, size=up.shape)).clip(0, 255).astype(np.uint8)


def write_real_fake(folder: Path, n: int = 300, side: int = 16) -> Path:
    """``folder/real`` (smooth random textures, ``side`` x ``side`` RGB) and ``folder/fake/nearest``."""
    rng = np.random.default_rng(0)
    (folder / "real").mkdir(parents=True, exist_ok=True)
    (folder / "fake" / "nearest").mkdir(parents=True, exist_ok=True)
    for i in range(n):
        base = rng.integers(0, 256, size=(side // 4, side // 4, 3)).astype(np.uint8)
        smooth = np.asarray(Image.fromarray(base).resize((side, side), Image.Resampling.BICUBIC)).astype(np.int16)
        real = (smooth + rng.integers(-8, 9, size=smooth.shape)).clip(0, 255).astype(np.uint8)
        Image.fromarray(real).save(folder / "real" / f"{i:04d}.png")
        Image.fromarray(nearest_fake(real)).save(folder / "fake" / "nearest" / f"{i:04d}.png")
    return folder
