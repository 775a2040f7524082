"""A variational autoencoder (Kingma & Welling 2014) in one file, trained by gentool's harness."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from gentool import EvaluateResult, StepContext, Task, config_from_dict

from gentool_vae.plugin import VAEConfig


class VAE(nn.Module):
    """MLP encoder q(z|x) = N(mu, diag sigma^2), decoder p(x|z) = Bernoulli(sigmoid(logits))."""

    def __init__(self, shape: tuple[int, int, int], cfg: VAEConfig):
        super().__init__()
        self.shape = tuple(shape)
        self.latent_dim = cfg.latent_dim
        d = math.prod(shape)
        enc, width = [], d
        for h in cfg.hidden:
            enc += [nn.Linear(width, h), nn.SiLU()]
            width = h
        self.encoder = nn.Sequential(*enc)
        self.to_stats = nn.Linear(width, 2 * cfg.latent_dim)
        dec, width = [], cfg.latent_dim
        for h in reversed(cfg.hidden):
            dec += [nn.Linear(width, h), nn.SiLU()]
            width = h
        dec.append(nn.Linear(width, d))
        self.decoder = nn.Sequential(*dec)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, logvar = self.to_stats(self.encoder(x.flatten(1))).chunk(2, dim=1)
        return mu, logvar.clamp(-12, 8)

    def decode_logits(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z).view(-1, *self.shape)

    def losses(self, x: torch.Tensor, beta: float = 1.0) -> dict[str, torch.Tensor]:
        """Per-image negative ELBO parts in nats: reconstruction and KL."""
        mu, logvar = self.encode(x)
        z = mu + torch.randn_like(mu) * (0.5 * logvar).exp()
        logits = self.decode_logits(z)
        recon = F.binary_cross_entropy_with_logits(logits.float(), x.float(), reduction="none").flatten(1).sum(1)
        kl = 0.5 * (mu.float().pow(2) + logvar.float().exp() - 1 - logvar.float()).sum(1)
        return {"loss": (recon + beta * kl).mean(), "recon": recon.mean(), "kl": kl.mean()}

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator, temperature: float = 1.0) -> torch.Tensor:
        """Mean images of p(x|z) for z ~ N(0, temperature^2 I), in [0, 1]."""
        device = next(self.parameters()).device
        z = torch.randn(n, self.latent_dim, generator=generator, device=generator.device).to(device)
        return torch.sigmoid(self.decode_logits(z * temperature))


class VAETask(Task):
    """How the harness trains a VAE: one Adam optimizer on the negative ELBO."""

    monitor = "loss"

    def __init__(self, cfg: VAEConfig, data: Any, lr: float):
        self.cfg, self.data, self.lr = cfg, data, lr
        self.vae = VAE(data.shape, cfg)

    def modules(self) -> dict[str, nn.Module]:
        return {"vae": self.vae}

    def configure_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"adam": torch.optim.Adam(self.vae.parameters(), lr=self.lr)}

    def training_step(self, batch: Any, ctx: StepContext) -> dict[str, torch.Tensor]:
        x, _ = batch
        out = self.vae.losses(x, self.cfg.beta)
        ctx.step(out["loss"], "adam")
        return out

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        return self.vae.sample(n, generator)


def load_vae(checkpoint: Any, device: torch.device) -> VAE:
    """Rebuild the VAE a checkpoint describes and load its weights."""
    cfg = config_from_dict(VAEConfig, checkpoint.config)
    vae = checkpoint.build(lambda: {"vae": VAE(tuple(checkpoint.data["shape"]), cfg)})["vae"]
    return vae.to(device).eval()


def evaluate(job: Any) -> EvaluateResult:
    """Negative ELBO on held-out data (nats per image) and sample-quality metrics."""
    from gentool import DataError
    from gentool.metrics import compute_image_metrics, get_extractor

    vae = load_vae(job.checkpoint, job.device)
    data = job.data
    if tuple(data.shape) != vae.shape:
        raise DataError(f"data of shape {list(data.shape)} does not fit a VAE trained on {list(vae.shape)}")
    x = data.as_float().to(job.device)
    torch.manual_seed(job.seed)
    totals = {"loss": 0.0, "recon": 0.0, "kl": 0.0}
    with torch.no_grad():
        for i in range(0, len(x), 500):
            part = vae.losses(x[i : i + 500])
            for k in totals:
                totals[k] += float(part[k]) * len(x[i : i + 500])
    metrics: dict[str, Any] = {"neg_elbo_nats": totals["loss"] / len(x), "recon_nats": totals["recon"] / len(x),
                               "kl_nats": totals["kl"] / len(x)}
    fake = vae.sample(min(job.n, 10_000), torch.Generator().manual_seed(job.seed))
    extractor = get_extractor(job.features, job.split("train"), device=str(job.device))
    image_metrics = compute_image_metrics(data.as_float(), fake.cpu(), extractor)
    settings = {"features": image_metrics.pop("features")}
    metrics.update(image_metrics)
    return EvaluateResult(metrics=metrics, settings=settings)
