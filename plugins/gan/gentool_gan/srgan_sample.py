"""``gentool sample srgan`` and ``gentool evaluate srgan``: restoring held-out images.

A super-resolution model has no noise to sample from: its "samples" are held-out images of the data
it was trained on (the test split where there is one), shrunk by its scale and restored. Evaluate
scores both stages against bicubic up-scaling on the test images: PSNR and SSIM (on 8-bit RGB or
grey, whole image), and the Fréchet distance of each restored set to the originals.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from gentool import config_from_dict

from gentool_gan import srgan
from gentool_gan.degrade import fit_scale, shrink, upscale_bicubic
from gentool_gan.srgan_config import SRGANConfig
from gentool_gan.srgan_task import psnr


def load_generators(ckpt: Any, device: torch.device) -> tuple[dict[str, torch.nn.Module], SRGANConfig]:
    """``{"gan": g, "pixel": g_pixel}`` of an srgan checkpoint on ``device`` (eval mode), and its config."""
    cfg = config_from_dict(SRGANConfig, ckpt.config)
    shape = tuple(ckpt.data["shape"])

    def networks() -> dict[str, torch.nn.Module]:
        g, d = srgan.build(shape, cfg)
        nets = {"g": g, "g_pixel": srgan.SRGenerator(shape[0], cfg.width, cfg.blocks, cfg.scale)}
        if any(k.startswith("d.") for k in ckpt.tensor_shapes):
            nets["d"] = d
        return nets

    nets = ckpt.build(networks)
    return {"gan": nets["g"].to(device).eval(), "pixel": nets["g_pixel"].to(device).eval()}, cfg


def sample(job: Any) -> Any:
    """The ``gentool_sample`` hook body for ``srgan``."""
    from gentool import SampleResult, save_grid

    from gentool_gan.sampling import held_out_data, request_indices

    nets, cfg = load_generators(job.checkpoint, job.device)
    ref = held_out_data(job.checkpoint)
    hr = fit_scale(ref.images[request_indices(len(ref), job)].float() / 255.0, cfg.scale)
    lr = shrink(hr, cfg.scale)
    sr = srgan.restore(nets[job.options.stage], lr, job.device)
    files = []
    if getattr(job, "first", 0) == 0:
        k = min(8, len(hr))
        sheet = torch.stack([upscale_bicubic(lr[:k], cfg.scale), sr[:k], hr[:k]], dim=1).flatten(0, 1)
        files.append(save_grid(sheet, Path(job.out) / "compare.png", nrow=3))
    return SampleResult(images=sr, files=files)


def ssim(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-image SSIM (Wang et al. 2004) of images in [0, 1]: Gaussian window of sigma 1.5 (11 taps,
    fewer on images under 11 pixels), constants K1 = 0.01, K2 = 0.03, mean over channels and pixels."""
    a, b = (a.clamp(0, 1) * 255).round() / 255, (b.clamp(0, 1) * 255).round() / 255
    size = min(11, a.shape[-1], a.shape[-2])
    size -= 1 - size % 2
    t = torch.arange(size, dtype=torch.float32) - size // 2
    g = torch.exp(-(t ** 2) / (2 * 1.5 ** 2))
    g = (g / g.sum())
    c = a.shape[1]
    win = (g[:, None] * g[None, :]).expand(c, 1, size, size).contiguous()

    def blur(x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, win, groups=c)

    mu_a, mu_b = blur(a), blur(b)
    var_a = blur(a * a) - mu_a ** 2
    var_b = blur(b * b) - mu_b ** 2
    cov = blur(a * b) - mu_a * mu_b
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    m = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a ** 2 + mu_b ** 2 + c1) * (var_a + var_b + c2))
    return m.flatten(1).mean(1)


def evaluate(job: Any) -> Any:
    """The ``gentool_evaluate`` hook body for ``srgan``: both stages against bicubic."""
    from gentool import EvaluateResult
    from gentool.metrics import frechet_distance, get_extractor

    nets, cfg = load_generators(job.checkpoint, job.device)
    hr = fit_scale(job.data.images.float() / 255.0, cfg.scale)
    if len(hr) > job.n:
        hr = hr[torch.randperm(len(hr), generator=torch.Generator().manual_seed(job.seed))[: job.n]]
    lr = shrink(hr, cfg.scale)
    restored = {"bicubic": upscale_bicubic(lr, cfg.scale), "pixel": srgan.restore(nets["pixel"], lr, job.device),
                "gan": srgan.restore(nets["gan"], lr, job.device)}
    metrics: dict[str, float | None] = {}
    for name, x in restored.items():
        metrics[f"psnr_{name}"] = float(psnr(x, hr).mean())
        metrics[f"ssim_{name}"] = float(ssim(x, hr).mean())
    settings = {"images": f"{len(hr)} of {job.data.name} ({job.data_split}), shrunk x{cfg.scale} by bicubic "
                          "with anti-aliasing, then restored",
                "psnr": "8-bit, all channels, whole image", "ssim": "Gaussian window sigma 1.5, all channels"}
    warnings = []
    if job.options.fd:
        ext = get_extractor(job.features, job.data, device=job.device)
        real = ext.features(hr)
        for name, x in restored.items():
            metrics[f"fd_{name}"] = float(frechet_distance(real, ext.features(x)))
        settings["features"] = getattr(ext, "name", str(ext))
    if job.data_split == "train":
        warnings.append("scored on training images: the data has no test split")
    return EvaluateResult(metrics=metrics, settings=settings, warnings=warnings)
