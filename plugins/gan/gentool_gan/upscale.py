"""``gentool upscale``: srgan applied to real images of any size and mode, tile by tile.

A photo is processed in tiles of ``--tile`` input pixels, each read with a margin of the
generator's receptive radius (:func:`gentool_gan.srgan.receptive_radius`) and cropped back to its
core: every output pixel sees the same inputs as in one pass over the whole image, so the tiled
result equals the untiled one (up to float rounding) and shows no seams, while memory stays that of
one tile. Alpha is up-scaled by bicubic and put back. Each file gets one line; a bad file (corrupt,
truncated, not an image, too large) gets its own error line and the others go on.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import torch

#: Largest input accepted, in pixels (Pillow's decompression-bomb guard is twice its default).
MAX_INPUT_PIXELS = 40_000_000
#: Largest output written, in pixels (a 4x up-scale of 16 MP is 256 MP: 768 MB of RGB).
MAX_OUTPUT_PIXELS = 300_000_000
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}


class BadImage(Exception):
    """One file that cannot be up-scaled, with the reason in one line."""


@torch.no_grad()
def upscale_tiled(g: torch.nn.Module, lr: torch.Tensor, scale: int, tile: int, margin: int,
                  device: torch.device) -> tuple[torch.Tensor, int]:
    """``g`` over ``lr`` ``[1, C, H, W]`` in tiles of ``tile`` with ``margin`` context; the up-scaled
    image ``[1, C, sH, sW]`` in [0, 1] on the CPU, and the number of tiles."""
    _, c, h, w = lr.shape
    out = torch.empty(1, c, h * scale, w * scale)
    count = 0
    for y0 in range(0, h, tile):
        for x0 in range(0, w, tile):
            y1, x1 = min(h, y0 + tile), min(w, x0 + tile)
            ya, xa = max(0, y0 - margin), max(0, x0 - margin)
            yb, xb = min(h, y1 + margin), min(w, x1 + margin)
            sr = g(lr[..., ya:yb, xa:xb].to(device)).float().clamp(0, 1).cpu()
            oy, ox = (y0 - ya) * scale, (x0 - xa) * scale
            out[..., y0 * scale: y1 * scale, x0 * scale: x1 * scale] = \
                sr[..., oy: oy + (y1 - y0) * scale, ox: ox + (x1 - x0) * scale]
            count += 1
    return out, count


def find_images(items: list[str]) -> list[Path]:
    """The files named, and the image files under the folders named (sorted, hidden files and folders
    skipped), in order: ``gentool.find_files``, the rule every verb's folder walk keeps."""
    import gentool

    return gentool.find_files(items, IMAGE_SUFFIXES)


def read_image(source: Path | bytes, channels: int, scale: int) -> tuple[torch.Tensor, Any]:
    """``source`` (a file, or an uploaded file's bytes) as a float tensor ``[1, channels, H, W]`` in
    [0, 1], and its alpha (a PIL image) or None."""
    import io

    from PIL import Image, ImageOps, UnidentifiedImageError

    if isinstance(source, Path) and not source.exists():
        raise BadImage("no such file")
    if isinstance(source, Path) and not source.is_file():
        raise BadImage("not a regular file")
    try:
        with Image.open(source if isinstance(source, Path) else io.BytesIO(source)) as img:
            w, h = img.size
            if w * h > MAX_INPUT_PIXELS:
                raise BadImage(f"{w}x{h} is too large: at most {MAX_INPUT_PIXELS:,} input pixels")
            if w * h * scale * scale > MAX_OUTPUT_PIXELS:
                raise BadImage(f"{w}x{h} up-scaled x{scale} would be {w * scale}x{h * scale}: "
                               f"at most {MAX_OUTPUT_PIXELS:,} output pixels")
            img.load()
            img = ImageOps.exif_transpose(img) or img  # a camera's rotation flag: the output has none
            alpha = None
            if img.mode in ("RGBA", "LA") or (img.mode == "P" and "transparency" in img.info):
                alpha = img.convert("RGBA").getchannel("A")
            if img.mode.startswith("I") or img.mode == "F":  # 16-bit, 32-bit, float: Pillow's convert clips
                import numpy as np

                a = np.nan_to_num(np.asarray(img, dtype=np.float64))
                lo, hi = float(a.min()), float(a.max())
                a = a / 257.0 if lo >= 0 and hi <= 65535 and img.mode != "F" else (a - lo) / max(hi - lo, 1e-12) * 255.0
                img = Image.fromarray(np.rint(a).clip(0, 255).astype(np.uint8), "L")
            rgb = img.convert("L" if channels == 1 else "RGB")
    except BadImage:
        raise
    except Image.DecompressionBombError as exc:
        raise BadImage(f"refused as a decompression bomb ({exc})") from None
    except UnidentifiedImageError:
        raise BadImage("not an image Pillow can read") from None
    except (OSError, ValueError, SyntaxError) as exc:  # truncated or corrupt data
        raise BadImage(f"cannot decode: {str(exc).splitlines()[0][:120]}") from None
    import numpy as np

    arr = torch.from_numpy(np.asarray(rgb).copy())
    arr = arr[None] if arr.ndim == 2 else arr.permute(2, 0, 1)
    return arr[None].float() / 255.0, alpha


def write_image(x: torch.Tensor, alpha: Any, path: Path) -> None:
    """``x`` ``[1, C, H, W]`` (with ``alpha`` put back, when there is one) as a PNG file, atomically."""
    from gentool import write_atomic

    write_atomic(path, png_bytes(x, alpha))


def png_bytes(x: torch.Tensor, alpha: Any) -> bytes:
    """``x`` ``[1, C, H, W]`` in [0, 1] as PNG bytes, with ``alpha`` (a PIL image) resized and put back."""
    from PIL import Image

    arr = (x[0].clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    img = Image.fromarray(arr[..., 0] if arr.shape[-1] == 1 else arr)
    if alpha is not None:
        a = alpha.resize((img.width, img.height), Image.BICUBIC)
        img = img.convert("LA" if img.mode == "L" else "RGBA")
        img.putalpha(a)
    import io

    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


class Upscaler:
    """An srgan checkpoint's generator ready to up-scale images one by one (what ``gentool upscale``
    and the ``upscale`` tool of ``gentool serve`` run per file)."""

    def __init__(self, checkpoint: str | None, *, stage: str = "gan", tile: int = 128, device: str = "auto"):
        import gentool
        from gentool import ConfigError, load_checkpoint, pick_device

        from gentool_gan.srgan import receptive_radius
        from gentool_gan.srgan_sample import load_generators

        if stage not in ("gan", "pixel"):
            raise ConfigError(f"--stage must be gan or pixel, got {stage!r}")
        if tile < 8:
            raise ConfigError(f"--tile must be at least 8 input pixels, got {tile}")
        self.path = gentool.resolve_checkpoint("srgan", checkpoint)
        ckpt = load_checkpoint(self.path, model="srgan")
        self.device = pick_device(device)
        nets, cfg = load_generators(ckpt, self.device)
        self.g, self.scale, self.stage, self.tile = nets[stage], cfg.scale, stage, tile
        self.channels = int(ckpt.data["shape"][0])
        self.margin = receptive_radius(cfg.blocks, cfg.scale)

    def __call__(self, source: Path | bytes) -> tuple[torch.Tensor, Any, dict[str, Any]]:
        """The up-scaled image ``[1, C, sH, sW]``, its alpha (or None) and what to report of it;
        :class:`BadImage` for a file that cannot be read or is too large."""
        lr, alpha = read_image(source, self.channels, self.scale)
        sr, tiles = upscale_tiled(self.g, lr, self.scale, self.tile, self.margin, self.device)
        h, w = lr.shape[-2:]
        return sr, alpha, {"input_size": [w, h], "output_size": [w * self.scale, h * self.scale], "tiles": tiles,
                           "stage": self.stage, "checkpoint": str(self.path)}


def run(items: list[str], *, checkpoint: str | None, out: Path, stage: str, tile: int, device: str,
        as_json: bool = False) -> int:
    """Up-scale every image named (see the module's docstring); the exit code."""
    files = image_files(items, out)
    up = Upscaler(checkpoint, stage=stage, tile=tile, device=device)
    used: set[str] = set()

    def one(f: Path) -> tuple[dict, str]:
        sr, alpha, info = up(f)
        target = unique_target(out, used, f.stem, f"_x{up.scale}.png")
        write_image(sr, alpha, target)
        (w, h), (ow, oh), tiles = info["input_size"], info["output_size"], info["tiles"]
        return ({"file": str(f), "output": str(target), **info},
                f"{f} -> {target} ({w}x{h} -> {ow}x{oh}, {tiles} tile{'s' * (tiles != 1)})")

    return answer_each(files, one, as_json)


def image_files(items: list[str], out: Path) -> list[Path]:
    """The images named (folders searched), with ``out`` made ready for the results: a verb's
    start, where a bad argument is one line before any model is loaded."""
    from gentool import ConfigError, GentoolError

    files = find_images(items)
    if not files:
        raise ConfigError(f"no images found in {', '.join(items)}")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise GentoolError(f"cannot write to {out}: {exc.strerror or exc}") from None
    return files


def unique_target(out: Path, used: set[str], stem: str, suffix: str) -> Path:
    """``out/STEM SUFFIX``, numbered (``STEM_2 SUFFIX``) when two inputs of one name came from
    different folders, so no result overwrites another."""
    name, k = f"{stem}{suffix}", 1
    while name in used:
        k += 1
        name = f"{stem}_{k}{suffix}"
    used.add(name)
    return out / name


def answer_each(files: list[Path], work: Any, as_json: bool) -> int:
    """``work(file)`` -> ``(json document, line)`` for each file, said as it comes; a file that
    cannot be read or written gets its own ``error:`` line and the others go on. The verb's exit
    code: 1 when any file failed, else 0."""
    failed = 0
    for f in files:
        try:
            doc, line = work(f)
        except BadImage as exc:
            failed += 1
            _report(as_json, {"file": str(f), "error": str(exc)}, f"error: {f}: {exc}", err=True)
        except OSError as exc:
            failed += 1
            _report(as_json, {"file": str(f), "error": f"cannot write: {exc.strerror or exc}"},
                    f"error: {f}: cannot write the result ({exc.strerror or exc})", err=True)
        else:
            _report(as_json, doc, line)
    return 1 if failed else 0


def _report(as_json: bool, doc: dict, line: str, err: bool = False) -> None:
    if as_json:
        print(json.dumps(doc), flush=True)
    else:
        print(line, file=sys.stderr if err else sys.stdout, flush=True)
