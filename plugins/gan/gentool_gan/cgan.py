"""The conditional GAN (Mirza & Osindero 2014): the class label goes to both networks.

The generator sees ``[z, embedding(y)]``. The discriminator sees the label either by projection
(Miyato & Koyama 2018: score = w.h(x) + <embedding(y), h(x)>, which ties every score to the
asked class and is what keeps samples from collapsing onto one class whatever the label) or by
concatenating the one-hot label to the flat image (the original paper's form).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from gentool_gan.configs import CGANConfig
from gentool_gan.gan import mlp_features, mlp_generator_body, with_batch_spread


class ConditionalGenerator(nn.Module):
    """(z ``[B, z_dim]``, y ``[B]``) -> images ``[B, C, H, W]`` in [-1, 1]."""

    def __init__(self, shape: tuple[int, int, int], num_classes: int, cfg: CGANConfig) -> None:
        super().__init__()
        self.shape = tuple(shape)
        self.embed = nn.Embedding(num_classes, cfg.embed_dim)
        self.net = mlp_generator_body(cfg.z_dim + cfg.embed_dim, tuple(cfg.g_hidden), math.prod(self.shape))

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        if y is None:
            raise ValueError("the conditional generator needs labels")
        h = torch.cat([z, self.embed(y).to(z.dtype)], dim=1)
        return self.net(h).view(-1, *self.shape)


class ConditionalDiscriminator(nn.Module):
    """(images, labels) -> scores ``[B]``, by projection or concatenation."""

    def __init__(self, shape: tuple[int, int, int], num_classes: int, cfg: CGANConfig) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.projection = cfg.conditioning == "projection"
        in_dim = math.prod(shape) + (0 if self.projection else num_classes)
        self.body = mlp_features(in_dim, tuple(cfg.d_hidden), cfg.dropout)
        self.mbstd = cfg.mbstd
        self.out = nn.Linear(cfg.d_hidden[-1] + int(cfg.mbstd), 1)
        if self.projection:
            self.embed = nn.Embedding(num_classes, cfg.d_hidden[-1])
            nn.init.normal_(self.embed.weight, std=0.02)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        if y is None:
            raise ValueError("the conditional discriminator needs labels")
        x = x.flatten(1)
        if not self.projection:
            x = torch.cat([x, F.one_hot(y, self.num_classes).to(x.dtype)], dim=1)
        h = self.body(x)
        score = self.out(with_batch_spread(h) if self.mbstd else h).squeeze(1)
        if self.projection:
            score = score + (self.embed(y).to(h.dtype) * h).sum(1)
        return score


def build(shape: tuple[int, int, int], num_classes: int | None, cfg: CGANConfig) -> tuple[nn.Module, nn.Module]:
    """The conditional generator and discriminator; the data must have labels."""
    if not num_classes or num_classes < 2:
        from gentool import DataError

        raise DataError("cgan needs labelled data with at least 2 classes (an image folder with one subfolder per class, say)")
    return ConditionalGenerator(shape, num_classes, cfg), ConditionalDiscriminator(shape, num_classes, cfg)
