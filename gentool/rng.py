"""The random streams (torch, CUDA, numpy, Python): seed them, save them, put them back.

The training harness saves them in every ``last`` checkpoint (an exact resume draws the numbers an
uninterrupted run would) and keeps validation, sample grids and pictures off them; the Python API
leaves its caller's streams as it found them.
"""

from __future__ import annotations

import contextlib
import random
from typing import Any, Iterator, Mapping

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch (all devices): same seed, same run on the same machine."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state(device: torch.device) -> dict[str, Any]:
    """Every stream's state, as a checkpoint's training state keeps it (tensors and numbers)."""
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
        "numpy": {"key": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "gauss": float(np_state[4])},
        "python": random.getstate(),
    }


def set_rng_state(state: Mapping[str, Any], device: torch.device) -> None:
    """Put back what :func:`rng_state` saved."""
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda"], device)
    n = state["numpy"]
    np.random.set_state(("MT19937", n["key"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    random.setstate(state["python"])


@contextlib.contextmanager
def rng_untouched(device: torch.device) -> Iterator[None]:
    """Run the block without moving the training RNG streams (torch, CUDA, numpy, Python).

    Validation, sample grids and pictures run between epochs; if they drew from the training
    streams, a run's weights would depend on them (and on whether a cached feature extractor had
    to be trained first), and a resumed run would drift from an uninterrupted one.
    """
    state = rng_state(device)
    try:
        yield
    finally:
        set_rng_state(state, device)


@contextlib.contextmanager
def caller_state_kept() -> Iterator[None]:
    """Leave the caller's random streams and torch's thread count as they were: the API seeds and
    sets them for its own work, not for the program that called it. (The streams are saved and
    restored by the harness's own mechanism, the one that keeps validation off the training RNG.)"""
    threads = torch.get_num_threads()
    cuda = torch.device("cuda") if torch.cuda.is_available() and torch.cuda.is_initialized() else torch.device("cpu")
    try:
        with rng_untouched(cuda):
            yield
    finally:
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)
