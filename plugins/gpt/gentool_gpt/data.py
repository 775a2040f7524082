"""Text for ``gpt``: the embedded corpus, and token streams cut into training windows."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch
    from gentool.data import TextDataset



def resource_path(name: str) -> Path:
    """Path of a file shipped inside the package (``tales.txt``, ``chat.json``)."""
    return Path(str(resources.files("gentool_gpt").joinpath("resources", name)))


def load_tales(split: str = "train", **_: Any) -> "TextDataset":
    """The embedded fables corpus; ``train`` is the first 90 %, ``test`` the last 10 % (as text files)."""
    from gentool.data.text import load_text

    return load_text(resource_path("tales.txt"), split, name="tales")


def random_windows(stream: "torch.Tensor", batch_size: int, block_size: int,
                   generator: "torch.Generator | None" = None) -> tuple["torch.Tensor", "torch.Tensor"]:
    """``batch_size`` random windows of the 1-D token ``stream``: inputs and next-token targets."""
    import torch

    starts = torch.randint(len(stream) - block_size - 1 + 1, (batch_size,), generator=generator)
    offsets = torch.arange(block_size + 1)
    chunk = stream[starts[:, None] + offsets[None, :]]
    return chunk[:, :-1], chunk[:, 1:]


def eval_windows(stream: "torch.Tensor", block_size: int, max_tokens: int = 0) -> tuple["torch.Tensor", "torch.Tensor"]:
    """Consecutive non-overlapping windows covering ``stream`` (or its first ``max_tokens``): a fixed,
    deterministic held-out set, so every evaluation of every model scores the same tokens."""
    n = len(stream) - 1
    if max_tokens:
        n = min(n, max_tokens)
    count = max(1, n // block_size)
    if n < block_size:
        raise ValueError(f"held-out text has {n + 1} tokens, fewer than a window of {block_size + 1}")
    x = stream[: count * block_size].view(count, block_size)
    y = stream[1: count * block_size + 1].view(count, block_size)
    return x, y
