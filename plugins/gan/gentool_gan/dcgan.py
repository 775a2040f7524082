"""DCGAN (Radford et al. 2015): transposed convolutions up, strided convolutions down, batch norm.

Sizes come from the data: an image side ``s`` is written ``s0 * 2**k`` with ``s0`` in 4..7 (28 =
7 * 4, 32 = 4 * 8, 64 = 4 * 16), or 2..3 for small sides so that there are at least two
up-sampling layers (8 = 2 * 4, 12 = 3 * 4). The generator projects z to ``[width * 2**(k-1), s0,
s0]`` and doubles the side k times, halving the channels; the discriminator mirrors it with
stride-2 convolutions down to ``s0`` and a linear score. Batch norm follows the paper (not on the
generator's output or the discriminator's input layer); the discriminator drops it for wgan-gp
(the penalty is per sample) and when spectral norm is on.
"""

from __future__ import annotations

import torch
from torch import nn

from gentool import DataError

from gentool_gan.configs import DCGANConfig


def plan(side: int) -> tuple[int, int]:
    """``(s0, k)`` with ``side == s0 * 2**k``, 4 <= s0 <= 7 (or 2..3 to get k >= 2) and k >= 1."""
    s0, k = side, 0
    while s0 > 7 and s0 % 2 == 0:
        s0, k = s0 // 2, k + 1
    while k < 2 and s0 >= 4 and s0 % 2 == 0:
        s0, k = s0 // 2, k + 1
    if not 2 <= s0 <= 7 or k < 1:
        raise DataError(
            f"dcgan cannot build networks for {side}x{side} images: the side must be 2..7 times a power of two "
            "(8, 28, 32, 64, ...); pass --image-size 32, say"
        )
    return s0, k


def _init(m: nn.Module) -> None:
    """The paper's initialisation: N(0, 0.02) weights, batch-norm scales N(1, 0.02)."""
    if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
        nn.init.normal_(m.weight, 0.0, 0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d)):
        nn.init.normal_(m.weight, 1.0, 0.02)
        nn.init.zeros_(m.bias)


class DCGenerator(nn.Module):
    """z ``[B, z_dim]`` -> images ``[B, C, s, s]`` in [-1, 1]."""

    def __init__(self, shape: tuple[int, int, int], cfg: DCGANConfig) -> None:
        super().__init__()
        c, h, w = shape
        if h != w:
            raise DataError(f"dcgan needs square images, got {h}x{w}; pass --image-size")
        s0, k = plan(h)
        ch = cfg.g_width * 2 ** (k - 1)
        self.start = (ch, s0, s0)
        self.project = nn.Sequential(nn.Linear(cfg.z_dim, ch * s0 * s0, bias=False), nn.BatchNorm1d(ch * s0 * s0),
                                     nn.ReLU(inplace=True))
        layers: list[nn.Module] = []
        for _ in range(k - 1):
            layers += [nn.ConvTranspose2d(ch, ch // 2, 4, 2, 1, bias=False), nn.BatchNorm2d(ch // 2), nn.ReLU(inplace=True)]
            ch //= 2
        layers += [nn.ConvTranspose2d(ch, c, 4, 2, 1), nn.Tanh()]
        self.net = nn.Sequential(*layers)
        self.apply(_init)

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        return self.net(self.project(z).view(-1, *self.start))


class DCDiscriminator(nn.Module):
    """images ``[B, C, s, s]`` in [-1, 1] -> scores ``[B]``."""

    def __init__(self, shape: tuple[int, int, int], cfg: DCGANConfig) -> None:
        super().__init__()
        c, h, _ = shape
        s0, k = plan(h)
        norm = cfg.loss != "wgan-gp" and not cfg.spectral_norm
        ch = cfg.d_width
        layers: list[nn.Module] = [nn.Conv2d(c, ch, 4, 2, 1), nn.LeakyReLU(0.2, inplace=True)]
        for _ in range(k - 1):
            layers += [nn.Conv2d(ch, ch * 2, 4, 2, 1, bias=not norm)]
            if norm:
                layers.append(nn.BatchNorm2d(ch * 2))
            layers.append(nn.LeakyReLU(0.2, inplace=True))
            ch *= 2
        self.net = nn.Sequential(*layers)
        self.out = nn.Linear(ch * s0 * s0, 1)
        self.apply(_init)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        return self.out(self.net(x).flatten(1)).squeeze(1)


def build(shape: tuple[int, int, int], num_classes: int | None, cfg: DCGANConfig) -> tuple[nn.Module, nn.Module]:
    """The DCGAN generator and discriminator for images of ``shape`` (C, H, W)."""
    return DCGenerator(shape, cfg), DCDiscriminator(shape, cfg)
