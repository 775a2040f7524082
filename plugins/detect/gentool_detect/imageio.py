"""Opening a user's image for detection: any mode to 8-bit grey or RGB, one clear error per bad
file (not an image, truncated, corrupt, or over Pillow's decompression-bomb pixel limit)."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

import gentool

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"})


class ImageReadError(gentool.GentoolError):
    """A file that cannot be scored (the message names it and says why)."""


def _eight_bit(img: Image.Image) -> Image.Image:
    mode = img.mode
    if mode in ("L", "RGB"):
        return img
    if mode in ("1", "P") and "transparency" not in img.info:
        return img.convert("RGB") if mode == "P" else img.convert("L")
    if mode in ("LA", "La", "RGBA", "RGBa", "PA", "P"):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        out = Image.alpha_composite(white, rgba).convert("RGB")
        return out.convert("L") if mode in ("LA", "La") else out
    if mode.startswith("I") or mode == "F":
        a = np.nan_to_num(np.asarray(img, dtype=np.float64))
        lo, hi = float(a.min()), float(a.max())
        a = a / 257.0 if lo >= 0 and hi <= 65535 and mode != "F" else (a - lo) / max(hi - lo, 1e-12) * 255.0
        return Image.fromarray(np.rint(a).clip(0, 255).astype(np.uint8), "L")
    return img.convert("RGB")


def open_image(path: str | Path, data: bytes | None = None) -> Image.Image:
    """The image at ``path`` (or, given ``data``, the uploaded bytes of a file named ``path``) as an
    8-bit "L" or "RGB" PIL image, EXIF rotation applied.

    Raises :class:`ImageReadError` (one line naming the file) for anything that is not a whole,
    decodable image within ``PIL.Image.MAX_IMAGE_PIXELS``.
    """
    path = Path(path)
    if data is None and not path.exists():
        raise ImageReadError(f"{path}: no such file")
    if data is None and not path.is_file():
        raise ImageReadError(f"{path}: not a regular file")
    limit = Image.MAX_IMAGE_PIXELS
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path if data is None else io.BytesIO(data)) as img:
                if limit is not None and img.width * img.height > limit:
                    raise ImageReadError(f"{path}: {img.width}x{img.height} is more than Pillow's limit of {limit} "
                                         "pixels (possible decompression bomb)")
                img.load()
                out = ImageOps.exif_transpose(img) or img
                return _eight_bit(out).copy()
    except ImageReadError:
        raise
    except Image.UnidentifiedImageError:
        raise ImageReadError(f"{path}: not an image, or a format Pillow cannot decode") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageReadError(f"{path}: possible decompression bomb ({exc})") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:  # truncated, corrupt, unreadable
        raise ImageReadError(f"{path}: cannot decode ({exc})") from None


def to_tensor(img: Image.Image, channels: int, as_float: bool = True):  # -> torch.Tensor
    """PIL image -> ``[C, H, W]`` with ``channels`` channels: float in ``[0, 1]``, or uint8 (a
    view of the pixels, no float copy of a large photo) when ``as_float`` is false."""
    import torch

    img = img.convert("L" if channels == 1 else "RGB")
    a = np.asarray(img, dtype=np.uint8)
    t = torch.from_numpy(a.copy()).unsqueeze(0) if a.ndim == 2 else torch.from_numpy(a.copy()).permute(2, 0, 1)
    return t.float().div_(255.0) if as_float else t


def collect(paths: list[str]) -> list[Path]:
    """Files to score (``gentool.find_files``, the rule every verb's folder walk keeps): each named
    file as it is; folders searched recursively for image files, hidden files and folders skipped."""
    return gentool.find_files(paths, IMAGE_EXTENSIONS)
