"""Scoring a photo at its own resolution: resizing would wipe out the up-sampling traces the
detector looks for, so an image is cut into tiles of the detector's input size instead.

Tiles: a grid of ``size`` x ``size`` windows covering the image (the last row and column are
shifted inward to end at the border, so every pixel is covered); when that is more than
``max_tiles`` windows, ``max_tiles`` of them evenly spread over the grid. An image smaller than
``size`` on a side is padded by reflection (replication for very small ones) to ``size``.
Aggregation: the mean of the tiles' calibrated logits, then the sigmoid (a geometric mean of the
tiles' calibrated odds); the most suspicious tile is reported as well.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

AGGREGATION = "mean of calibrated tile logits (geometric mean of odds)"
MAX_TILES = 256


def _starts(length: int, size: int) -> list[int]:
    if length <= size:
        return [0]
    starts = list(range(0, length - size + 1, size))
    if starts[-1] != length - size:
        starts.append(length - size)
    return starts


def pad_to(x: torch.Tensor, size: int) -> torch.Tensor:
    """``[C, H, W]`` padded at the bottom/right to at least ``size`` on each side."""
    h, w = x.shape[-2:]
    ph, pw = max(0, size - h), max(0, size - w)
    if not ph and not pw:
        return x
    mode = "reflect" if ph < h and pw < w else "replicate"
    return F.pad(x[None], (0, pw, 0, ph), mode=mode)[0]


def tile_boxes(h: int, w: int, size: int, max_tiles: int = MAX_TILES) -> list[tuple[int, int]]:
    """Top-left corners of the tiles of an ``h`` x ``w`` image (see the module doc)."""
    boxes = [(t, left) for t in _starts(h, size) for left in _starts(w, size)]
    if len(boxes) > max_tiles:
        keep = np.linspace(0, len(boxes) - 1, max_tiles).round().astype(int)
        boxes = [boxes[i] for i in sorted(set(keep.tolist()))]
    return boxes


def tiles(x: torch.Tensor, size: int, max_tiles: int = MAX_TILES) -> tuple[torch.Tensor, list[tuple[int, int]]]:
    """``[C, H, W]`` image (float in [0, 1], or uint8) -> float ``[T, C, size, size]`` tiles in
    [0, 1] and their corners. A uint8 photo is cut first and only its tiles become floats."""
    if x.dtype == torch.uint8 and min(x.shape[-2:]) < size:
        x = x.float().div_(255.0)
    x = pad_to(x, size)
    boxes = tile_boxes(x.shape[-2], x.shape[-1], size, max_tiles)
    out = torch.stack([x[:, t: t + size, left: left + size] for t, left in boxes])
    return (out.float().div_(255.0) if out.dtype == torch.uint8 else out), boxes


def aggregate(logits: torch.Tensor) -> float:
    """One logit for the image from its tiles' logits (the mean)."""
    return float(logits.float().mean())
