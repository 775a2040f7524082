"""The NPR residual (Tan et al., CVPR 2024, "Rethinking the up-sampling operations in CNN-based
generative networks"): an image minus its nearest-neighbour down-then-up-sampled copy.

Generators build images by up-sampling feature maps, which ties neighbouring pixels together;
subtracting the 2x nearest re-sampled copy keeps only the differences inside each 2x2 block, where
those ties show. Written from the paper's description, not copied.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def npr(x: torch.Tensor, factor: int = 2) -> torch.Tensor:
    """``x - up(down(x))`` with nearest sampling by ``factor``; ``x`` is ``[B, C, H, W]``.

    An odd side is padded by replication first and the result cropped back, so any size works.
    """
    h, w = x.shape[-2:]
    ph, pw = (-h) % factor, (-w) % factor
    xp = F.pad(x, (0, pw, 0, ph), mode="replicate") if ph or pw else x
    down = xp[..., ::factor, ::factor]
    up = down.repeat_interleave(factor, dim=-2).repeat_interleave(factor, dim=-1)
    return (xp - up)[..., :h, :w]
