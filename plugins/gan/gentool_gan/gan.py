"""The vanilla GAN (Goodfellow et al. 2014): a fully connected generator and discriminator.

The generator maps z to a flat image through hidden layers with batch norm and ReLU, ending in
tanh (images in [-1, 1]); the discriminator maps a flat image through LeakyReLU layers to one
score. Both take an optional label argument, ignored, so that every GAN shares one call form.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from gentool_gan.configs import MLPGANConfig


def mlp_generator_body(in_dim: int, hidden: tuple[int, ...], out_dim: int) -> nn.Sequential:
    """Linear -> BatchNorm -> ReLU per hidden width, then Linear -> tanh."""
    layers: list[nn.Module] = []
    for width in hidden:
        layers += [nn.Linear(in_dim, width), nn.BatchNorm1d(width), nn.ReLU(inplace=True)]
        in_dim = width
    layers += [nn.Linear(in_dim, out_dim), nn.Tanh()]
    return nn.Sequential(*layers)


def mlp_features(in_dim: int, hidden: tuple[int, ...], dropout: float) -> nn.Sequential:
    """Linear -> LeakyReLU(0.2) (-> Dropout) per hidden width: the discriminator's body."""
    layers: list[nn.Module] = []
    for width in hidden:
        layers += [nn.Linear(in_dim, width), nn.LeakyReLU(0.2, inplace=True)]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        in_dim = width
    return nn.Sequential(*layers)


def with_batch_spread(h: torch.Tensor) -> torch.Tensor:
    """``h`` with one more feature: the mean over features of their standard deviation across the
    batch (Karras et al. 2018). A collapsed generator's batch has a small spread, which the
    discriminator can then see and punish."""
    spread = h.float().std(0, unbiased=False).mean().to(h.dtype)
    return torch.cat([h, spread.expand(h.shape[0], 1)], dim=1)


class MLPGenerator(nn.Module):
    """z ``[B, z_dim]`` -> images ``[B, C, H, W]`` in [-1, 1]."""

    def __init__(self, shape: tuple[int, int, int], cfg: MLPGANConfig) -> None:
        super().__init__()
        self.shape = tuple(shape)
        self.net = mlp_generator_body(cfg.z_dim, tuple(cfg.g_hidden), math.prod(self.shape))

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        return self.net(z).view(-1, *self.shape)


class MLPDiscriminator(nn.Module):
    """images ``[B, C, H, W]`` in [-1, 1] -> scores ``[B]``."""

    def __init__(self, shape: tuple[int, int, int], cfg: MLPGANConfig) -> None:
        super().__init__()
        self.body = mlp_features(math.prod(shape), tuple(cfg.d_hidden), cfg.dropout)
        self.mbstd = cfg.mbstd
        self.out = nn.Linear(cfg.d_hidden[-1] + int(cfg.mbstd), 1)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        h = self.body(x.flatten(1))
        return self.out(with_batch_spread(h) if self.mbstd else h).squeeze(1)


def build(shape: tuple[int, int, int], num_classes: int | None, cfg: MLPGANConfig) -> tuple[nn.Module, nn.Module]:
    """The generator and discriminator for images of ``shape`` (C, H, W)."""
    return MLPGenerator(shape, cfg), MLPDiscriminator(shape, cfg)
