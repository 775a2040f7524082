"""Training augmentation (after CNNDetection, Wang et al. 2020): Gaussian blur, JPEG
re-compression and down-then-up resizing, each applied to an image with probability ``p``, so
that the detector does not rely on traces that ordinary photo handling wipes out."""

from __future__ import annotations

import io

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Blur ``[B, C, H, W]`` with a Gaussian of ``sigma`` pixels (reflect padding)."""
    if sigma <= 0:
        return x
    radius = max(1, int(round(3 * sigma)))
    t = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()
    c = x.shape[1]
    pad = min(radius, x.shape[-1] - 1, x.shape[-2] - 1)
    if pad < radius:  # tiny images: cut the kernel to what reflect padding allows
        k = k[radius - pad: radius + pad + 1] / k[radius - pad: radius + pad + 1].sum()
        radius = pad
    x = F.pad(x, (radius, radius, radius, radius), mode="reflect")
    x = F.conv2d(x, k.view(1, 1, 1, -1).repeat(c, 1, 1, 1), groups=c)
    return F.conv2d(x, k.view(1, 1, -1, 1).repeat(c, 1, 1, 1), groups=c)


def jpeg(x: torch.Tensor, quality: int) -> torch.Tensor:
    """Re-compress each image of ``[B, C, H, W]`` in ``[0, 1]`` as JPEG at ``quality``."""
    out = []
    for img in x.detach().cpu():
        arr = (img.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
        pil = Image.fromarray(arr[..., 0] if arr.shape[2] == 1 else arr)
        buf = io.BytesIO()
        pil.save(buf, format="JPEG", quality=int(quality))
        buf.seek(0)
        back = np.asarray(Image.open(buf).convert(pil.mode), dtype=np.float32) / 255.0
        out.append(torch.from_numpy(back).reshape(arr.shape).permute(2, 0, 1))
    return torch.stack(out).to(x.device, x.dtype)


def resize_back(x: torch.Tensor, scale: float) -> torch.Tensor:
    """Resize by ``scale`` (bilinear, antialiased) and back to the original size."""
    h, w = x.shape[-2:]
    small = F.interpolate(x, size=(max(2, round(h * scale)), max(2, round(w * scale))), mode="bilinear",
                          antialias=True, align_corners=False)
    return F.interpolate(small, size=(h, w), mode="bilinear", align_corners=False).clamp(0, 1)


def augment(x: torch.Tensor, p: float) -> torch.Tensor:
    """Each image: blur (sigma 0.1..2) with prob ``p``, JPEG (quality 60..95) with prob ``p``,
    resize (0.5..1x and back) with prob ``p / 2``; randomness from the global RNG (the harness
    saves and restores it, so a resume is exact)."""
    if p <= 0:
        return x
    x = x.clone()
    n = x.shape[0]
    draws = torch.rand(n, 6)
    for i in range(n):
        r = draws[i]
        xi = x[i: i + 1]
        if r[0] < p:
            xi = gaussian_blur(xi, 0.1 + 1.9 * float(r[1]))
        if r[2] < p:
            xi = jpeg(xi, 60 + int(35 * float(r[3])))
        if r[4] < p / 2:
            xi = resize_back(xi, 0.5 + 0.5 * float(r[5]))
        x[i: i + 1] = xi
    return x
