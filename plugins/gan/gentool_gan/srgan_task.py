"""Training ``srgan``: the pixel-loss stage (SRResNet), then the adversarial stage, in one run.

Each step takes a batch of high-resolution images, crops a random ``patch`` when they are larger,
turns or mirrors the batch by one of the square's 8 symmetries (``dihedral``), makes the
low-resolution inputs (:mod:`gentool_gan.degrade`) and trains the generator ``g``:

- stage 1 (the first ``pixel_epochs``): mean squared error only, the PSNR-optimal SRResNet. ``g_pixel``
  follows ``g`` through this stage and is then frozen: every later checkpoint holds both generators,
  so ``gentool evaluate srgan`` compares the two stages from one file;
- stage 2: the discriminator ``d`` learns to tell restored crops from real ones (non-saturating loss),
  and ``g`` minimises ``pixel_weight * MSE + feature_weight * feature distance + adv_weight * adversarial``
  (``adv_weight`` by default 1e-3, and 1e-4 at x2: :meth:`SRGANConfig.adversarial_weight`).
  The feature (perceptual) distance is measured in the first two convolution stages of the data's
  gentool-cnn extractor (trained once per data set and cached), so nothing is downloaded.

After each epoch: PSNR of ``g`` on fixed training images, beside bicubic's on the same images.
There is no "best" epoch (a PSNR-best would always be stage 1): sampling uses the last checkpoint.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import nn

import gentool
from gentool import StepContext, Task

from gentool_gan import srgan
from gentool_gan.degrade import fit_scale, make_low_res, shrink, upscale_bicubic
from gentool_gan.task import recompute_batch_norm

#: Seed of the fixed images the per-epoch PSNR and the sample grid use.
VAL_SEED = 1_2017
#: Training crops whose batch statistics become the generators' batch-norm running statistics.
BN_CALIBRATION_IMAGES = 1024


def psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR in dB of ``a`` against ``b`` (both in [0, 1], compared as 8-bit images)."""
    qa, qb = (a.clamp(0, 1) * 255).round() / 255, (b.clamp(0, 1) * 255).round() / 255
    mse = ((qa - qb) ** 2).flatten(1).mean(1).clamp_min(1e-10)
    return 10 * torch.log10(1.0 / mse)


def dihedral(x: torch.Tensor, k: int) -> torch.Tensor:
    """``x`` (``[..., H, W]``) under symmetry ``k`` of 0..7 of the square: ``k % 4`` quarter
    turns, then a left-right mirror when ``k >= 4`` (0 is ``x`` itself)."""
    x = torch.rot90(x, k % 4, dims=(-2, -1))
    return x.flip(-1) if k >= 4 else x


def check_size(shape: tuple[int, ...], cfg: Any) -> None:
    side = min(shape[-2], shape[-1])
    if side < 2 * cfg.scale:
        raise gentool.ConfigError(f"images of {shape[-1]}x{shape[-2]} are too small for scale {cfg.scale}: "
                                  f"srgan needs at least {2 * cfg.scale} pixels a side (--set scale=2, or --image-size)")


class SRGANTask(Task):
    """srgan: the two stages, the pixel generator kept, PSNR after each epoch."""

    autocast = True

    def __init__(self, cfg: Any, data: Any, lr: float, epochs: int) -> None:
        check_size(tuple(data.shape), cfg)
        self.cfg, self.data, self.lr = cfg, data, lr
        self.g, self.d = srgan.build(tuple(data.shape), cfg)
        self.g_pixel = srgan.SRGenerator(data.shape[0], cfg.width, cfg.blocks, cfg.scale).requires_grad_(False)
        self.g_pixel.load_state_dict(self.g.state_dict())
        self.pixel_epochs = cfg.pixel_epochs if cfg.pixel_epochs is not None else max(1, epochs // 2)
        self.side = srgan.crop_side(tuple(data.shape), cfg)
        self._pixel_stage: bool | None = None  # the stage of the last step trained (None: none yet)
        self.monitor = None
        self._features: nn.Module | None = None
        g = torch.Generator().manual_seed(VAL_SEED)
        n = min(cfg.val_images or 16, len(data))
        self._val_idx = torch.randperm(len(data), generator=g)[:n]

    # -- harness contract ------------------------------------------------------------------
    def modules(self) -> dict[str, nn.Module]:
        return {"g": self.g, "d": self.d, "g_pixel": self.g_pixel}

    def configure_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"g": torch.optim.Adam(self.g.parameters(), lr=self.lr, betas=(0.9, 0.999)),
                "d": torch.optim.Adam(self.d.parameters(), lr=self.lr, betas=(0.9, 0.999))}

    def crop(self, x: torch.Tensor) -> torch.Tensor:
        """A random ``side`` x ``side`` crop of the batch (one offset per batch, global stream)."""
        h, w = x.shape[-2:]
        if h == self.side and w == self.side:
            return x
        top = int(torch.randint(0, h - self.side + 1, ()))
        left = int(torch.randint(0, w - self.side + 1, ()))
        return x[..., top: top + self.side, left: left + self.side]

    def training_step(self, batch: Any, ctx: StepContext) -> Mapping[str, Any]:
        cfg = self.cfg
        hr = self.crop(batch[0] if isinstance(batch, (tuple, list)) else batch)
        if cfg.dihedral:
            hr = dihedral(hr, int(torch.randint(0, 8, ())))
        lr = make_low_res(hr, cfg.scale, cfg.degrade)
        sr = self.g(lr)
        pixel = F.mse_loss(sr.float(), hr.float())
        self._pixel_stage = ctx.epoch < self.pixel_epochs
        if self._pixel_stage:
            ctx.step(pixel, "g")
            return {"pixel": pixel.detach()}
        d_loss = F.softplus(-self.d(hr)).mean() + F.softplus(self.d(sr.detach().clamp(0, 1))).mean()
        ctx.step(d_loss, "d")
        adv = F.softplus(-self.d(sr.clamp(0, 1))).mean()
        loss = cfg.pixel_weight * pixel + cfg.adversarial_weight() * adv
        out: dict[str, Any] = {"pixel": pixel.detach(), "d_loss": d_loss.detach(), "g_adv": adv.detach()}
        if cfg.feature_weight > 0:
            feat = self.features()
            distance = F.mse_loss(feat(sr.clamp(0, 1) * 2 - 1).float(), feat(hr * 2 - 1).float())
            loss = loss + cfg.feature_weight * distance
            out["feature"] = distance.detach()
        ctx.step(loss, "g")
        return out

    def features(self) -> nn.Module:
        """The first two convolution stages of the data's gentool-cnn extractor, frozen."""
        if self._features is None:
            import random

            import numpy as np

            from gentool.metrics import get_extractor

            # Trained on first use, or read from the cache: either way the training streams must
            # not move, or a resumed run (which finds it cached) would differ from a straight one.
            py, npy = random.getstate(), np.random.get_state()
            devices = [self.device.index or 0] if self.device.type == "cuda" else []
            with torch.random.fork_rng(devices=devices), torch.enable_grad():
                ext = get_extractor(None, self.data, device=self.device)
            random.setstate(py)
            np.random.set_state(npy)
            self._features = ext.net.body[:7].to(self.device).eval().requires_grad_(False)
        return self._features

    @torch.no_grad()
    def before_checkpoint(self) -> None:
        # Eval mode (validation, sampling, `gentool upscale`) normalises with the running statistics,
        # which lag far behind the weights in a short run: after one epoch on the digits the eval-mode
        # generator was 0.4 dB over bicubic where the same weights with batch statistics were 1.9 dB
        # over. So before every checkpoint (every process, off the training RNG) both generators'
        # statistics are recomputed as the plain average over fixed training crops.
        n = min(BN_CALIBRATION_IMAGES, len(self.data))
        idx = torch.randperm(len(self.data), generator=torch.Generator().manual_seed(VAL_SEED + 1))[:n]
        hr = self.data.images[idx].float() / 255.0
        top, left = (hr.shape[-2] - self.side) // 2, (hr.shape[-1] - self.side) // 2
        hr = hr[..., top: top + self.side, left: left + self.side]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(VAL_SEED + 2)
            lr = make_low_res(hr, self.cfg.scale, self.cfg.degrade)
        if self._pixel_stage:  # still the pixel stage: g_pixel follows g (then stays, frozen, at its end)
            self.g_pixel.load_state_dict(self.g.state_dict())
        for g in (self.g, self.g_pixel):
            recompute_batch_norm(g, ((b.to(self.device),) for b in lr.split(256)))

    def val_images(self) -> torch.Tensor:
        return fit_scale(self.data.images[self._val_idx].float() / 255.0, self.cfg.scale)

    def validate(self) -> dict[str, float]:
        if not self.cfg.val_images:
            return {}
        hr = self.val_images()
        lr = shrink(hr, self.cfg.scale)
        return {"psnr": float(psnr(srgan.restore(self.g, lr, self.device), hr).mean()),
                "psnr_bicubic": float(psnr(upscale_bicubic(lr, self.cfg.scale), hr).mean())}

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """Rows of (bicubic, srgan, original) for fixed training images: the epoch's grid."""
        hr = self.val_images()[:8]
        lr = shrink(hr, self.cfg.scale)
        rows = torch.stack([upscale_bicubic(lr, self.cfg.scale), srgan.restore(self.g, lr, self.device), hr], dim=1)
        return rows.flatten(0, 1)

    def checkpoint_meta(self) -> dict[str, Any]:
        return {"scale": self.cfg.scale, "pixel_epochs": self.pixel_epochs, "sampler": "g"}


def train(job: Any) -> Any:
    """The ``gentool_train`` hook body for ``srgan``."""
    return gentool.fit(SRGANTask(job.config, job.data, job.options.lr, job.options.epochs), job)
