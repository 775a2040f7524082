"""CycleGAN's networks (Zhu et al. 2017), scaled to the image size.

Generator: a 7x7 convolution, two stride-2 down-samplings, residual blocks, two up-samplings
(transposed convolutions) and a 7x7 convolution to tanh, with instance norm and reflection
padding; fully convolutional, so it runs on any size divisible by 4. Discriminator: a PatchGAN
(stride-2 convolutions with instance norm and LeakyReLU, then a 1-channel map): 70x70 patches at
256 px in the paper; here as many stride-2 stages as the image allows (at most three), so the
patch stays a fraction of the image. Images are in [-1, 1] inside the networks.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def _norm(c: int) -> nn.Module:
    return nn.InstanceNorm2d(c, affine=True)


class ResBlock(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.ReflectionPad2d(1), nn.Conv2d(c, c, 3), _norm(c), nn.ReLU(True),
                                  nn.ReflectionPad2d(1), nn.Conv2d(c, c, 3), _norm(c))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class ResnetGenerator(nn.Module):
    """``[N, C, H, W]`` in [-1, 1] to the same shape in [-1, 1] (H and W multiples of 4)."""

    def __init__(self, channels: int, width: int, blocks: int) -> None:
        super().__init__()
        w = width
        self.net = nn.Sequential(
            nn.ReflectionPad2d(3), nn.Conv2d(channels, w, 7), _norm(w), nn.ReLU(True),
            nn.Conv2d(w, 2 * w, 3, stride=2, padding=1), _norm(2 * w), nn.ReLU(True),
            nn.Conv2d(2 * w, 4 * w, 3, stride=2, padding=1), _norm(4 * w), nn.ReLU(True),
            *[ResBlock(4 * w) for _ in range(blocks)],
            nn.ConvTranspose2d(4 * w, 2 * w, 3, stride=2, padding=1, output_padding=1), _norm(2 * w), nn.ReLU(True),
            nn.ConvTranspose2d(2 * w, w, 3, stride=2, padding=1, output_padding=1), _norm(w), nn.ReLU(True),
            nn.ReflectionPad2d(3), nn.Conv2d(w, channels, 7), nn.Tanh(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class PatchDiscriminator(nn.Module):
    """A map of real/fake scores, one per overlapping patch of the input."""

    def __init__(self, channels: int, width: int, side: int) -> None:
        super().__init__()
        stages = max(1, min(3, int(math.log2(max(side, 4))) - 2))
        layers: list[nn.Module] = [nn.Conv2d(channels, width, 4, stride=2, padding=1), nn.LeakyReLU(0.2, True)]
        c = width
        for _ in range(stages - 1):
            layers += [nn.Conv2d(c, 2 * c, 4, stride=2, padding=1), _norm(2 * c), nn.LeakyReLU(0.2, True)]
            c *= 2
        layers += [nn.Conv2d(c, 2 * c, 3, padding=1), _norm(2 * c), nn.LeakyReLU(0.2, True),
                   nn.Conv2d(2 * c, 1, 3, padding=1)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def build(shape: tuple[int, int, int], cfg: "object") -> dict[str, nn.Module]:
    """The four networks for images of ``shape`` (C, H, W): g_ab, g_ba, d_a, d_b."""
    c, h, w = shape
    if h % 4 or w % 4:
        from gentool import ConfigError

        raise ConfigError(f"cyclegan needs image sides divisible by 4, got {w}x{h} (use --image-size)")
    return {"g_ab": ResnetGenerator(c, cfg.width, cfg.res_blocks), "g_ba": ResnetGenerator(c, cfg.width, cfg.res_blocks),
            "d_a": PatchDiscriminator(c, cfg.d_width, min(h, w)), "d_b": PatchDiscriminator(c, cfg.d_width, min(h, w))}
