"""The adversarial losses: non-saturating, hinge, least squares and Wasserstein with gradient penalty.

Every function takes the discriminator's raw scores (logits for ``ns``) and returns a scalar to
minimise. The gradient penalty is separate because it needs the discriminator itself.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F


def d_loss(kind: str, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """The discriminator's loss on scores of real and generated images (without any penalty)."""
    real, fake = real.float(), fake.float()
    if kind == "ns":  # -log sigmoid(real) - log(1 - sigmoid(fake))
        return F.softplus(-real).mean() + F.softplus(fake).mean()
    if kind == "hinge":
        return F.relu(1.0 - real).mean() + F.relu(1.0 + fake).mean()
    if kind == "lsgan":
        return 0.5 * ((real - 1.0).pow(2).mean() + fake.pow(2).mean())
    if kind == "wgan-gp":
        return fake.mean() - real.mean()
    raise ValueError(f"unknown GAN loss {kind!r}")


def g_loss(kind: str, fake: torch.Tensor) -> torch.Tensor:
    """The generator's loss on the discriminator's scores of its images."""
    fake = fake.float()
    if kind == "ns":  # -log sigmoid(fake): strong gradients early, when D rejects everything
        return F.softplus(-fake).mean()
    if kind in ("hinge", "wgan-gp"):
        return -fake.mean()
    if kind == "lsgan":
        return 0.5 * (fake - 1.0).pow(2).mean()
    raise ValueError(f"unknown GAN loss {kind!r}")


def gradient_penalty(
    critic: Callable[[torch.Tensor], torch.Tensor],
    real: torch.Tensor,
    fake: torch.Tensor,
    eps: torch.Tensor | None = None,
) -> torch.Tensor:
    """Gulrajani et al. 2017: ``mean((|grad_x critic(x_hat)|_2 - 1)^2)`` at random points
    ``x_hat = eps * real + (1 - eps) * fake`` on the lines between real and generated images.

    ``eps`` (shape ``[B]``) is drawn uniformly when not given.
    """
    b = real.shape[0]
    if eps is None:
        eps = torch.rand(b, device=real.device)
    eps = eps.to(real.dtype).view(b, *([1] * (real.dim() - 1)))
    x_hat = (eps * real.detach() + (1.0 - eps) * fake.detach()).requires_grad_(True)
    scores = critic(x_hat)
    (grad,) = torch.autograd.grad(scores.float().sum(), x_hat, create_graph=True)
    norms = grad.float().flatten(1).norm(2, dim=1)
    return (norms - 1.0).pow(2).mean()
