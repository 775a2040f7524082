"""Shape fixes applied after loading: square resize/center-crop and 1 <-> 3 channel conversion.

Every source goes through :func:`finish`, so ``--image-size 32 --channels 3`` means the same
thing for MNIST, a ``.npz`` and an image folder.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from gentool.data.checks import check_image_memory
from gentool.data.datasets import ImageDataset
from gentool.errors import DataError

# ITU-R 601-2 luma, the weights PIL uses for RGB -> L, so both paths agree.
_LUMA = (0.299, 0.587, 0.114)
_CHUNK = 2048  # images resized at a time, to bound the float32 working memory
_CHUNK_BYTES = 256 << 20  # ... and at most about this many bytes of float32 per chunk
#: The largest ``image_size`` accepted: 4096 x 4096 is already 50 MB per colour image as uint8,
#: far beyond what gentool's models train on; anything above is a typo (or a hostile request).
MAX_IMAGE_SIZE = 4096
#: Above this aspect ratio an image is center-cropped before resizing rather than after.
_MAX_STRETCH = 16


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
    if nh * nw > _MAX_STRETCH * size * size:
        # a very long strip: resizing it whole would make a huge intermediate (a 1 x 10^6 image
        # at size 512 is 2 * 10^11 pixels), so crop the centre square first, then resize
        m = min(h, w)
        images = images[:, :, (h - m) // 2 : (h - m) // 2 + m, (w - m) // 2 : (w - m) // 2 + m]
        h = w = m
        nh = nw = size
    top, left = (nh - size) // 2, (nw - size) // 2
    out = torch.empty((n, c, size, size), dtype=torch.uint8)
    # float32 input + resized copy per image; big images go a few (or one) at a time
    per_image = 4 * c * (h * w + nh * nw)
    chunk = max(1, min(_CHUNK, _CHUNK_BYTES // max(1, per_image)))
    for start in range(0, n, chunk):
        x = images[start : start + chunk].to(torch.float32)
        if (nh, nw) != (h, w):
            if size < min(h, w):
                x = F.interpolate(x, size=(nh, nw), mode="bilinear", antialias=True, align_corners=False)
            else:
                x = F.interpolate(x, size=(nh, nw), mode="bicubic", align_corners=False)
        x = x[:, :, top : top + size, left : left + size]
        out[start : start + chunk] = x.round_().clamp_(0, 255).to(torch.uint8)
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
    """Validate a requested image size (an int in 1..MAX_IMAGE_SIZE) or raise :class:`DataError`."""
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise DataError(f"image size must be a positive integer, got {size!r}")
    if size > MAX_IMAGE_SIZE:
        raise DataError(f"image size {size} is too large: the largest gentool accepts is {MAX_IMAGE_SIZE}")
    return size


def check_channels(channels: int) -> int:
    """Validate a requested channel count (1 or 3) or raise :class:`DataError`."""
    if channels not in (1, 3) or isinstance(channels, bool):
        raise DataError(f"channels must be 1 or 3, got {channels!r}")
    return int(channels)


def finish(ds: ImageDataset, image_size: int | None = None, channels: int | None = None) -> ImageDataset:
    """Apply the requested ``image_size`` and ``channels`` to ``ds`` (no-op when already so)."""
    images = ds.images
    n, c, h, w = images.shape
    out_c = c if channels is None else check_channels(channels)
    if image_size is not None:
        check_image_size(image_size)
        if (h, w) != (image_size, image_size):
            check_image_memory(n, out_c, image_size, image_size, ds.name, image_size=image_size)
    elif out_c != c:
        check_image_memory(n, out_c, h, w, ds.name)
    if image_size is not None:
        images = resize_square(images, image_size)
    if channels is not None:
        images = convert_channels(images, channels)
    if images is ds.images:
        return ds
    return ImageDataset(images=images, labels=ds.labels, class_names=ds.class_names, name=ds.name)
