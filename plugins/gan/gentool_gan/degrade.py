"""Making low-resolution inputs from high-resolution images, for super-resolution training.

Plain (the classic SRGAN setting): bicubic down-scaling with anti-aliasing. With ``degrade`` (what
Real-ESRGAN trains on, so the model copes with real photos rather than clean shrinks): a random
Gaussian blur before shrinking, Gaussian noise after it, and JPEG compression at a random quality.
Randomness comes from the global torch stream, which the harness saves with every checkpoint.
"""

from __future__ import annotations

import io

import torch
import torch.nn.functional as F


def shrink(hr: torch.Tensor, scale: int) -> torch.Tensor:
    """``hr`` ``[N, C, H, W]`` in [0, 1] down-scaled by ``scale`` (bicubic, anti-aliased), in [0, 1]."""
    h, w = hr.shape[-2] // scale, hr.shape[-1] // scale
    return F.interpolate(hr, size=(h, w), mode="bicubic", antialias=True, align_corners=False).clamp(0.0, 1.0)


def fit_scale(hr: torch.Tensor, scale: int) -> torch.Tensor:
    """``hr`` cropped (bottom and right) to sides that are multiples of ``scale``."""
    return hr[..., : hr.shape[-2] - hr.shape[-2] % scale, : hr.shape[-1] - hr.shape[-1] % scale]


def upscale_bicubic(lr: torch.Tensor, scale: int) -> torch.Tensor:
    """The bicubic baseline every super-resolution figure is compared with, in [0, 1]."""
    return F.interpolate(lr, scale_factor=scale, mode="bicubic", align_corners=False).clamp(0.0, 1.0)


def gaussian_blur(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Each image of ``x`` blurred with its own ``sigma`` (a separable 7-tap Gaussian, reflect padding)."""
    r = 3
    t = torch.arange(-r, r + 1, device=x.device, dtype=x.dtype)
    k = torch.exp(-(t[None, :] ** 2) / (2 * sigma[:, None].to(x.dtype) ** 2))
    k = k / k.sum(dim=1, keepdim=True)  # [N, 7]
    n, c, h, w = x.shape
    y = F.pad(x.reshape(1, n * c, h, w), (r, r, r, r), mode="reflect")
    kh = k.repeat_interleave(c, 0)[:, None, None, :]
    kv = k.repeat_interleave(c, 0)[:, None, :, None]
    y = F.conv2d(F.conv2d(y, kh, groups=n * c), kv, groups=n * c)
    return y.reshape(n, c, h, w)


def jpeg(x: torch.Tensor, quality: int) -> torch.Tensor:
    """``x`` in [0, 1] through a JPEG encode and decode at ``quality`` (Pillow), on the CPU."""
    from PIL import Image

    out = []
    arr = (x.detach().clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    for a in arr:
        img = Image.fromarray(a[..., 0] if a.shape[-1] == 1 else a)
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=int(quality))
        buf.seek(0)
        b = torch.from_numpy(__import__("numpy").asarray(Image.open(buf).convert(img.mode)).copy())
        out.append(b if b.ndim == 3 else b[..., None])
    return (torch.stack(out).permute(0, 3, 1, 2).float() / 255.0).to(x.device)


def make_low_res(hr: torch.Tensor, scale: int, degrade: bool) -> torch.Tensor:
    """The training input for ``hr``: a plain bicubic shrink, or a randomly degraded one."""
    if not degrade:
        return shrink(hr, scale)
    n = hr.shape[0]
    sigma = 0.2 + 1.8 * torch.rand(n)
    lr = shrink(gaussian_blur(hr, sigma.to(hr.device)), scale)
    noise = torch.randn(lr.shape) * (torch.rand(n) * 0.04)[:, None, None, None]
    lr = (lr + noise.to(lr.device)).clamp(0.0, 1.0)
    quality = int(torch.randint(40, 96, (1,)))
    return jpeg(lr, quality) if torch.rand(()) < 0.5 else lr
