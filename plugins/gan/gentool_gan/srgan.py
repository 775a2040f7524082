"""SRGAN's networks (Ledig et al. 2017), sized for a CPU: a residual generator that up-samples by
sub-pixel convolution, and a strided convolutional discriminator.

The generator predicts the residual over bicubic up-scaling (its output is ``bicubic(x) + r``): the
same function class, but a network that starts at bicubic quality trains in minutes, not hours.
Images are in ``[0, 1]`` on both sides. Batch norm runs in eval mode at inference, so an output
pixel depends only on the input pixels within :func:`receptive_radius`: tiles with that much
overlap give the untiled result exactly (``gentool upscale``).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class ResidualBlock(nn.Module):
    """conv-BN-PReLU-conv-BN with an identity skip (SRResNet's block)."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(width, width, 3, padding=1), nn.BatchNorm2d(width), nn.PReLU(width),
                                  nn.Conv2d(width, width, 3, padding=1), nn.BatchNorm2d(width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class SRGenerator(nn.Module):
    """Low-resolution ``[N, C, h, w]`` in [0, 1] to ``[N, C, scale*h, scale*w]`` (unclamped)."""

    def __init__(self, channels: int, width: int, blocks: int, scale: int) -> None:
        super().__init__()
        self.scale = scale
        self.head = nn.Sequential(nn.Conv2d(channels, width, 9, padding=4), nn.PReLU(width))
        self.blocks = nn.Sequential(*[ResidualBlock(width) for _ in range(blocks)])
        self.neck = nn.Sequential(nn.Conv2d(width, width, 3, padding=1), nn.BatchNorm2d(width))
        ups: list[nn.Module] = []
        for _ in range(int(math.log2(scale))):
            ups += [nn.Conv2d(width, 4 * width, 3, padding=1), nn.PixelShuffle(2), nn.PReLU(width)]
        self.up = nn.Sequential(*ups)
        self.tail = nn.Conv2d(width, channels, 9, padding=4)
        nn.init.zeros_(self.tail.weight)  # start exactly at bicubic
        nn.init.zeros_(self.tail.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        base = F.interpolate(x, scale_factor=self.scale, mode="bicubic", align_corners=False)
        h = self.head(x * 2.0 - 1.0)
        h = h + self.neck(self.blocks(h))
        return base + self.tail(self.up(h)) / 2.0


class SRDiscriminator(nn.Module):
    """High-resolution image in [0, 1] to one logit: strided conv stages, LeakyReLU, global pooling."""

    def __init__(self, channels: int, width: int, side: int) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(channels, width, 3, padding=1), nn.LeakyReLU(0.2)]
        c, s = width, side
        while s > 4:
            layers += [nn.Conv2d(c, min(2 * c, 8 * width), 4, stride=2, padding=1), nn.LeakyReLU(0.2)]
            c, s = min(2 * c, 8 * width), s // 2
        self.body = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(c, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x * 2.0 - 1.0)).squeeze(1)


def receptive_radius(blocks: int, scale: int) -> int:
    """Low-resolution pixels on each side that one output pixel depends on (bicubic's 2 included)."""
    return 4 + 2 * blocks + 1 + int(math.log2(scale)) + 4 + 2


def crop_side(shape: tuple[int, ...], cfg: "object") -> int:
    """The side of the training crops (what the discriminator sees): ``patch``, or the images' side
    when smaller, a multiple of the scale."""
    side = min(cfg.patch, shape[-2], shape[-1])
    return side - side % cfg.scale


def build(shape: tuple[int, int, int], cfg: "object") -> tuple[SRGenerator, SRDiscriminator]:
    """The generator and discriminator for high-resolution images of ``shape`` (C, H, W)."""
    return SRGenerator(shape[0], cfg.width, cfg.blocks, cfg.scale), SRDiscriminator(shape[0], cfg.d_width, crop_side(shape, cfg))


@torch.no_grad()
def restore(g: nn.Module, lr: torch.Tensor, device: torch.device, batch: int = 64) -> torch.Tensor:
    """``g`` in eval mode over low-resolution images ``lr`` in batches: clamped to [0, 1], on the
    CPU; ``g``'s mode is left as it was."""
    was = g.training
    g.eval()
    out = torch.cat([g(b.to(device)).float().clamp(0, 1).cpu() for b in lr.split(batch)]) if len(lr) else lr
    g.train(was)
    return out
