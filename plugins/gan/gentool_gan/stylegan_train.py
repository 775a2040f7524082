"""Training StyleGAN2: the losses and regularisers of Karras et al. 2020, through gentool's harness.

Each step: the discriminator's non-saturating loss on (augmented) real and generated images, with
the lazy R1 penalty on augmented real images every ``r1_every`` steps (weighted by ``r1_every``
so its average strength is ``r1_gamma / 2 * |grad|^2``); then the generator's non-saturating
loss on images whose latents are style-mixed with probability ``style_mixing`` (two z, the
layers from a random cut-off on taking the second one's w), and, with ``pl_weight`` > 0, the
lazy path-length penalty. Adam uses betas (0, 0.99) with the lazy-regularisation correction of
learning rate and betas. The EMA generator ``g_ema`` (sampling, validation, evaluation), the
per-epoch Fréchet-distance validation and best-checkpoint keeping come from :class:`GANTask`;
the EMA's half-life grows to ``ema_ramp`` of the images seen. The ADA probability, the
path-length mean and the images seen are saved with the run, so ``--resume`` is exact.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import torch
import torch.nn.functional as F

import gentool
from gentool import StepContext

from gentool_gan.augment import ADA, diff_augment
from gentool_gan.configs import StyleGANConfig
from gentool_gan.task import GANTask

#: ``augment=auto`` uses ADA below this many training images, no augmentation from it on.
SMALL_DATA = 30_000


def resolve_augment(cfg: StyleGANConfig, n_images: int) -> str:
    """``ada``, ``diffaug`` or ``none`` for a data set of ``n_images``."""
    if cfg.augment == "auto":
        return "ada" if n_images < SMALL_DATA else "none"
    return cfg.augment


def ramped_decay(decay: float, ramp: float, images_seen: int, batch: int) -> float:
    """The EMA decay of one update of ``batch`` images: ``decay``, or, where longer, a half-life of
    ``ramp * images_seen`` images: the average reaches further back as training goes on, smoothing
    out the slow swings of a long run that a fixed decay follows. (StyleGAN2-ADA ramps by the same
    share, but as a cap on a fixed half-life; here ``decay`` is the floor.)"""
    half_life = ramp * images_seen
    if half_life <= 0 or batch <= 0:
        return decay
    return max(decay, 0.5 ** (batch / half_life))


def r1_gamma(cfg: StyleGANConfig, shape: tuple[int, int, int], batch_size: int) -> float:
    """The R1 weight: the config's, or the reference code's heuristic 0.0002 * pixels / batch (at least 0.01)."""
    if cfg.r1_gamma is not None:
        return cfg.r1_gamma
    return max(0.01, 0.0002 * shape[1] * shape[2] / batch_size)


class StyleGANTask(GANTask):
    """StyleGAN2 with ADA / DiffAugment; conditional when the data has labels and ``cond`` is on."""

    def __init__(self, cfg: StyleGANConfig, data: Any, lr: float, batch_size: int) -> None:
        super().__init__("stylegan", cfg, data, lr)
        self.augment = resolve_augment(cfg, len(data))
        self.ada = ADA(cfg.ada_target, cfg.ada_kimg, cfg.ada_interval)
        self.gamma = r1_gamma(cfg, tuple(data.shape), batch_size)
        self.pl_mean = 0.0
        self.batch_size = batch_size
        self.images_seen = 0  # real images shown to the discriminator, all processes (the EMA ramp's clock)
        self.last_batch = batch_size  # set by each step before its EMA update, so not saved

    # -- harness contract ------------------------------------------------------------------
    def configure_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        cfg = self.cfg

        def adam(params: Any, lr: float, every: int) -> torch.optim.Optimizer:
            c = every / (every + 1) if every > 1 else 1.0  # lazy regularisation (StyleGAN2, appendix B)
            return torch.optim.Adam(params, lr=lr * c, betas=(cfg.beta1 ** c, cfg.beta2 ** c), eps=1e-8)

        g_every = cfg.pl_every if cfg.pl_weight > 0 else 1
        return {"d": adam(self.d.parameters(), self.d_lr, cfg.r1_every), "g": adam(self.g.parameters(), self.g_lr, g_every)}

    def ema_decay_now(self) -> float:
        return ramped_decay(super().ema_decay_now(), self.cfg.ema_ramp, self.images_seen, self.last_batch)

    def see(self, x: torch.Tensor) -> torch.Tensor:
        """What the discriminator is shown: ``x`` augmented as ``augment`` says."""
        if self.augment == "ada":
            return self.ada(x)
        if self.augment == "diffaug":
            return diff_augment(x)
        return x

    def mixed_ws(self, n: int, y: torch.Tensor | None, device: torch.device) -> torch.Tensor:
        """ws ``[n, num_ws, w_dim]`` for training: a second latent takes over the layers from a
        random cut-off on, for each sample with probability ``style_mixing``; w_avg is updated."""
        g = self.g
        ws = g.ws(torch.randn(n, self.cfg.z_dim, device=device), y, update_avg=True)
        if self.cfg.style_mixing <= 0:
            return ws
        ws2 = g.ws(torch.randn(n, self.cfg.z_dim, device=device), y)
        cut = torch.randint(1, g.num_ws, (n, 1), device=device)
        cut = torch.where(torch.rand(n, 1, device=device) < self.cfg.style_mixing, cut, torch.full_like(cut, g.num_ws))
        take2 = torch.arange(g.num_ws, device=device)[None, :] >= cut  # [n, num_ws]
        return torch.where(take2[..., None], ws2, ws)

    def training_step(self, batch: Any, ctx: StepContext) -> Mapping[str, Any]:
        cfg = self.cfg
        x, y = batch
        x = x * 2.0 - 1.0
        y = y if self.conditional else None
        n = x.shape[0]
        out: dict[str, Any] = {}

        # discriminator: non-saturating loss, lazy R1 on augmented real images
        with torch.no_grad():
            fake = self.g.synthesis(self.mixed_ws(n, y, x.device))
        real_logits = self.d(self.see(x), y)
        d_loss = F.softplus(self.d(self.see(fake), y)).float().mean() + F.softplus(-real_logits).float().mean()
        out["d_loss"] = d_loss.detach()
        if self.gamma > 0 and ctx.step_count % cfg.r1_every == 0:
            real = x.detach().requires_grad_(True)
            logits = self.d(self.see(real), y)
            (grad,) = torch.autograd.grad(logits.float().sum(), real, create_graph=True)
            r1 = grad.float().square().sum(dim=(1, 2, 3)).mean()
            d_loss = d_loss + r1 * (self.gamma / 2) * cfg.r1_every
            out["r1"] = r1.detach()
        ctx.step(d_loss, "d")

        self.last_batch = n * ctx.world.size
        self.images_seen += self.last_batch

        # generator: non-saturating loss through the same augmentation
        ws = self.mixed_ws(n, y, x.device)
        g_loss = F.softplus(-self.d(self.see(self.g.synthesis(ws)), y)).float().mean()
        out["g_loss"] = g_loss.detach()
        if cfg.pl_weight > 0 and ctx.step_count % cfg.pl_every == 0:
            pl = self.path_length_penalty(max(1, n // 2), y[: max(1, n // 2)] if y is not None else None, x.device)
            g_loss = g_loss + pl * cfg.pl_weight * cfg.pl_every
            out["pl"] = pl.detach()
        ctx.step(g_loss, "g")
        self.update_ema()

        if self.augment == "ada":
            self.ada.observe(real_logits)
            if (ctx.step_count + 1) % cfg.ada_interval == 0:
                if ctx.world.distributed:
                    s = ctx.all_reduce_mean(torch.tensor([self.ada.signs, float(self.ada.count)], device=x.device))
                    self.ada.signs, self.ada.count = float(s[0]), max(1, round(float(s[1])))
                self.ada.adjust(n * cfg.ada_interval * ctx.world.size)
            out["ada_p"] = self.ada.p
        return out

    def path_length_penalty(self, n: int, y: torch.Tensor | None, device: torch.device) -> torch.Tensor:
        """(|J_w^T r| - a)^2, with ``a`` the running mean of the path lengths (decay 0.99)."""
        ws = self.g.ws(torch.randn(n, self.cfg.z_dim, device=device), y).detach().requires_grad_(True)
        img = self.g.synthesis(ws)
        noise = torch.randn_like(img) / math.sqrt(img.shape[2] * img.shape[3])
        (grad,) = torch.autograd.grad((img * noise).float().sum(), ws, create_graph=True)
        lengths = grad.float().square().sum(2).mean(1).sqrt()
        self.pl_mean = self.pl_mean + 0.01 * (float(lengths.detach().mean()) - self.pl_mean)
        return (lengths - self.pl_mean).square().mean()

    def is_conditional(self) -> bool:
        """Conditional when the data has two or more classes, unless ``--set cond=false``."""
        return bool(self.cfg.cond and self.data.labels is not None and (self.data.num_classes or 0) >= 2)

    def extra_state(self) -> dict[str, Any]:
        return {"g_updates": self.g_updates, "pl_mean": self.pl_mean, "images_seen": self.images_seen,
                **self.ada.state()}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.g_updates = int(state.get("g_updates", 0))
        self.pl_mean = float(state.get("pl_mean", 0.0))
        # runs saved before the EMA ramp kept no count: their updates times the batch size
        self.images_seen = int(state.get("images_seen", self.g_updates * self.batch_size))
        self.ada.load(state)

    def checkpoint_meta(self) -> dict[str, Any]:
        return {"num_classes": self.num_classes, "sampler": "g_ema", "augment": self.augment,
                "ada_p": round(self.ada.p, 6), "r1_gamma": self.gamma}


def train(job: Any) -> Any:
    """The ``gentool_train`` hook body for stylegan."""
    task = StyleGANTask(job.config, job.data, job.options.lr, job.options.batch_size)
    if task.augment != "none":
        gentool.say(f"stylegan: augmenting what the discriminator sees with {task.augment} "
                    f"({len(job.data)} training images; --set augment=none turns it off)")
    return gentool.fit(task, job)
