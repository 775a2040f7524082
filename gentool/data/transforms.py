"""Shape fixes applied after loading: square resize/center-crop and 1 <-> 3 channel conversion.

Every source goes through :func:`finish`, so ``--image-size 32 --channels 3`` means the same
thing for MNIST, a ``.npz`` and an image folder.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from gentool.data.datasets import ImageDataset
from gentool.errors import DataError

# ITU-R 601-2 luma, the weights PIL uses for RGB -> L, so both paths agree.
_LUMA = (0.299, 0.587, 0.114)
_CHUNK = 2048  # images resized at a time, to bound the float32 working memory


def resize_square(images: torch.Tensor, size: int) -> torch.Tensor:
    """Resize uint8 ``[N, C, H, W]`` so the shorter side is ``size``, then center-crop to square.

    Downscaling is antialiased (bilinear with antialias), upscaling is bicubic; the result is
    rounded back to uint8.
    """
    size = check_image_size(size)
    n, c, h, w = images.shape
    if (h, w) == (size, size):
        return images
    scale = size / min(h, w)
    nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
    top, left = (nh - size) // 2, (nw - size) // 2
    out = torch.empty((n, c, size, size), dtype=torch.uint8)
    for start in range(0, n, _CHUNK):
        x = images[start : start + _CHUNK].to(torch.float32)
        if (nh, nw) != (h, w):
            if scale < 1:
                x = F.interpolate(x, size=(nh, nw), mode="bilinear", antialias=True, align_corners=False)
            else:
                x = F.interpolate(x, size=(nh, nw), mode="bicubic", align_corners=False)
        x = x[:, :, top : top + size, left : left + size]
        out[start : start + _CHUNK] = x.round_().clamp_(0, 255).to(torch.uint8)
    return out


def convert_channels(images: torch.Tensor, channels: int) -> torch.Tensor:
    """Convert uint8 ``[N, C, H, W]`` to ``channels`` (1 or 3): grey is repeated, colour -> luma."""
    channels = check_channels(channels)
    c = images.shape[1]
    if c == channels:
        return images
    if channels == 3:
        return images.expand(-1, 3, -1, -1).contiguous()
    out = torch.empty((images.shape[0], 1, *images.shape[2:]), dtype=torch.uint8)
    for start in range(0, images.shape[0], _CHUNK):
        x = images[start : start + _CHUNK].to(torch.float32)
        y = x[:, 0:1] * _LUMA[0] + x[:, 1:2] * _LUMA[1] + x[:, 2:3] * _LUMA[2]
        out[start : start + _CHUNK] = y.round_().clamp_(0, 255).to(torch.uint8)
    return out


def check_image_size(size: int) -> int:
    """Validate a requested image size (a positive int) or raise :class:`DataError`."""
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise DataError(f"image size must be a positive integer, got {size!r}")
    return size


def check_channels(channels: int) -> int:
    """Validate a requested channel count (1 or 3) or raise :class:`DataError`."""
    if channels not in (1, 3) or isinstance(channels, bool):
        raise DataError(f"channels must be 1 or 3, got {channels!r}")
    return int(channels)


def finish(ds: ImageDataset, image_size: int | None = None, channels: int | None = None) -> ImageDataset:
    """Apply the requested ``image_size`` and ``channels`` to ``ds`` (no-op when already so)."""
    images = ds.images
    if image_size is not None:
        images = resize_square(images, image_size)
    if channels is not None:
        images = convert_channels(images, channels)
    if images is ds.images:
        return ds
    return ImageDataset(images=images, labels=ds.labels, class_names=ds.class_names, name=ds.name)
