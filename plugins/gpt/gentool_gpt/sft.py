"""Chat fine-tuning data: conversations split into training and held-out ones, and packed into
one token stream with per-token targets (the conversation files are read by
:mod:`gentool_gpt.conversations`, the same parser ``gentool chat`` uses)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from gentool_gpt.chat_template import IGNORE, render_with_labels
from gentool_gpt.conversations import Message, load_conversations, parse_conversations

if TYPE_CHECKING:
    import torch

    from gentool_gpt.tokenizer import Tokenizer

__all__ = ["load_conversations", "pack", "pad_to", "parse_conversations", "split_conversations", "windows"]


def split_conversations(convs: list[list[Message]], val_fraction: float) -> tuple[list, list]:
    """Training and held-out conversations: the last ``val_fraction`` of the file is held out."""
    n_val = max(1, int(round(len(convs) * val_fraction)))
    if len(convs) < 2:
        return convs, convs
    return convs[:-n_val], convs[-n_val:]


def pack(tokenizer: "Tokenizer", convs: list[list[Message]]) -> tuple[list[int], list[int]]:
    """All conversations rendered in the chat template, end to end: ids and per-token labels
    (the token itself on assistant turns and their ``<|eot|>``, -100 elsewhere)."""
    ids: list[int] = []
    labels: list[int] = []
    for conv in convs:
        i, lab = render_with_labels(tokenizer, conv, add_generation_prompt=False)
        ids.extend(i)
        labels.extend(lab)
    return ids, labels


def pad_to(ids: list[int], labels: list[int], length: int, pad_id: int) -> tuple[list[int], list[int]]:
    """``ids`` and ``labels`` lengthened to at least ``length`` with ``<|pad|>`` tokens that are
    never targets (a conversation set shorter than one context window still trains and scores)."""
    short = max(0, length - len(ids))
    return ids + [pad_id] * short, labels + [IGNORE] * short


def windows(ids: list[int], labels: list[int], block_size: int, pad_id: int,
            max_tokens: int = 0) -> tuple["torch.Tensor", "torch.Tensor"]:
    """Consecutive windows of ``block_size`` over a packed stream: inputs and next-token targets
    (``labels`` shifted by one). The last window is padded; ``max_tokens`` caps how many windows
    (at least one)."""
    import torch

    T = block_size
    n = max(1, -(-(len(ids) - 1) // T))
    if max_tokens:
        n = max(1, min(n, max_tokens // T))
    ids, labels = pad_to(ids, labels, n * T + 1, pad_id)
    x = torch.tensor(ids[: n * T], dtype=torch.long).view(n, T)
    y = torch.tensor(labels[1: n * T + 1], dtype=torch.long).view(n, T)
    return x, y
