"""Writing images: single files and grids from ``[N, C, H, W]`` tensors in ``[0, 1]``."""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from gentool.io import write_atomic

if TYPE_CHECKING:
    import numpy as np
    import torch


def to_uint8(images: "torch.Tensor") -> "np.ndarray":
    """``[N, C, H, W]`` floats in ``[0, 1]`` (or uint8) -> ``[N, H, W, C]`` uint8 numpy."""
    import torch

    x = images.detach().to("cpu")
    if x.dtype != torch.uint8:
        x = (x.float().clamp(0, 1) * 255).round().to(torch.uint8)
    if x.ndim == 3:
        x = x.unsqueeze(1)
    return x.permute(0, 2, 3, 1).contiguous().numpy()


def make_grid(images: "torch.Tensor", nrow: int | None = None, pad: int = 2, scale: int | None = None) -> "np.ndarray":
    """Tile images into one ``[H, W, C]`` uint8 array, ``nrow`` images per row.

    Small images (e.g. 8x8 digits) are enlarged by an integer ``scale`` so the grid is legible.
    """
    import numpy as np

    arr = to_uint8(images)
    n, h, w, c = arr.shape
    nrow = nrow or max(1, int(math.ceil(math.sqrt(n))))
    if scale is None:
        scale = max(1, 64 // max(h, w)) if max(h, w) < 64 else 1
    if scale > 1:
        arr = arr.repeat(scale, axis=1).repeat(scale, axis=2)
        h, w = h * scale, w * scale
    rows = int(math.ceil(n / nrow))
    grid = np.full((rows * (h + pad) + pad, nrow * (w + pad) + pad, c), 255, dtype=np.uint8)
    for i in range(n):
        r, col = divmod(i, nrow)
        y, x = pad + r * (h + pad), pad + col * (w + pad)
        grid[y : y + h, x : x + w] = arr[i]
    return grid


def _png_bytes(arr: "np.ndarray") -> bytes:
    from PIL import Image

    img = Image.fromarray(arr[..., 0] if arr.shape[-1] == 1 else arr)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def save_grid(images: "torch.Tensor", path: str | Path, nrow: int | None = None) -> Path:
    """Save a grid of ``images`` as a PNG (atomically)."""
    write_atomic(path, _png_bytes(make_grid(images, nrow)))
    return Path(path)


def save_images(
    images: "torch.Tensor", folder: str | Path, names: Sequence[str] | None = None
) -> list[Path]:
    """Save each image as its own PNG in ``folder`` (``000000.png``... unless ``names`` given)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    arr = to_uint8(images)
    paths = []
    for i in range(arr.shape[0]):
        p = folder / (names[i] if names else f"{i:06d}.png")
        write_atomic(p, _png_bytes(arr[i]))
        paths.append(p)
    return paths
