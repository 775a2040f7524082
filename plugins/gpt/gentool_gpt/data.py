"""Text for ``gpt``: the embedded corpus, and fixed held-out windows of a token stream."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch
    from gentool import TextDataset


def resource_path(name: str) -> Path:
    """Path of a file shipped inside the package (``tales.txt``, ``chat.json``)."""
    return Path(str(resources.files("gentool_gpt").joinpath("resources", name)))


def load_tales(split: str = "train", **_: Any) -> "TextDataset":
    """The embedded fables corpus; ``train`` is the first 90 %, ``test`` the last 10 % (as text files)."""
    from gentool import load_text

    return load_text(resource_path("tales.txt"), split, name="tales")


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
