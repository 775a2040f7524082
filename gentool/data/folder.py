"""Image folders as users really have them: class subfolders, mixed sizes, odd modes, stray files.

Layouts understood:

* ``folder/<class>/**/*.png``: labelled, class names are the sorted subfolder names;
* ``folder/*.png`` with no subfolders: unlabelled;
* ``folder/train/...`` and ``folder/test/...`` (or ``val/``): one of the above per split.

Every image becomes 8-bit grey or RGB whatever its mode (palette, alpha composited on white,
CMYK, 16-bit and float scaled rather than clipped, 1-bit). The set is grey (C=1) when every
image is grey, else RGB (C=3), unless ``channels`` says otherwise. Sizes: ``image_size`` if
given, else the most common size; when sizes differ each image is resized (shorter side) and
center-cropped to a square. Loading is two passes: headers first (sizes, bomb check,
unreadable files), then decoding straight to the target size (on a thread pool for large
images), so a folder of large photos never sits in memory at full resolution.
"""

from __future__ import annotations

import math
import os
import warnings
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, TypeVar

import numpy as np
import torch
from PIL import Image, ImageOps

from gentool.data.checks import check_image_memory
from gentool.data.datasets import ImageDataset, check_split
from gentool.data.transforms import check_channels, check_image_size
from gentool.errors import DataError, MissingSplitError

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"})
#: Files every OS sprinkles into folders; ignored without a warning.
_JUNK_FILES = frozenset({"thumbs.db", "desktop.ini", "icon\r"})
_SPLIT_DIRS = {"train": ("train",), "test": ("test", "val", "valid", "validation")}
_KNOWN_SPLIT_NAMES = frozenset(n for names in _SPLIT_DIRS.values() for n in names)
_MAX_WORKERS = 8
_THREAD_MIN_PIXELS = 256 * 256
_MAX_STRETCH = 16  # above this aspect ratio, crop before resizing (see _resize_crop)  # mean pixels per image above which decoding uses threads

T = TypeVar("T")
R = TypeVar("R")


# ----------------------------------------------------------------------------- scanning


def _is_hidden(name: str) -> bool:
    return name.startswith(".") or name.lower() in _JUNK_FILES


def _is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS


@dataclass
class _Scan:
    top: list[Path] = field(default_factory=list)  # images directly in the folder
    classes: dict[str, list[Path]] = field(default_factory=dict)  # subfolder -> its images (recursive)
    others: list[Path] = field(default_factory=list)  # files with non-image extensions


def _listdir(folder: Path) -> list[os.DirEntry]:
    try:
        with os.scandir(folder) as it:
            return sorted(it, key=lambda e: e.name)
    except OSError as exc:
        raise DataError(f"cannot read folder {folder}: {exc.strerror or exc}") from exc


def _walk_images(folder: Path, others: list[Path]) -> list[Path]:
    """Images under ``folder`` (recursive, sorted, hidden entries skipped)."""
    images: list[Path] = []
    for entry in _listdir(folder):
        if _is_hidden(entry.name):
            continue
        path = Path(entry.path)
        if entry.is_dir():
            images.extend(_walk_images(path, others))
        elif entry.is_file():
            (images if _is_image(path) else others).append(path)
    return images


def _scan(folder: Path) -> _Scan:
    scan = _Scan()
    for entry in _listdir(folder):
        if _is_hidden(entry.name):
            continue
        path = Path(entry.path)
        if entry.is_dir():
            images = _walk_images(path, scan.others)
            if images:  # a subfolder without images is not a class
                scan.classes[entry.name] = images
        elif entry.is_file():
            (scan.top if _is_image(path) else scan.others).append(path)
    return scan


def _warn_others(folder: Path, others: list[Path]) -> None:
    if not others:
        return
    shown = ", ".join(str(p.relative_to(folder)) if p.is_relative_to(folder) else str(p) for p in others[:3])
    more = f" and {len(others) - 3} more" if len(others) > 3 else ""
    warnings.warn(
        f"ignoring {len(others)} non-image file{'s' if len(others) != 1 else ''} in {folder}: {shown}{more}",
        UserWarning,
        stacklevel=3,
    )


def _split_dirs(folder: Path) -> dict[str, Path] | None:
    """``{"train": path, "test": path}`` when ``folder`` is a train/test layout, else None."""
    subdirs = {e.name.lower(): Path(e.path) for e in _listdir(folder) if e.is_dir() and not _is_hidden(e.name)}
    if not subdirs or not set(subdirs) <= _KNOWN_SPLIT_NAMES:
        return None
    if not any(n in subdirs for n in ("train", "test")):
        return None
    found = {}
    for split, names in _SPLIT_DIRS.items():
        for n in names:
            if n in subdirs:
                found[split] = subdirs[n]
                break
    return found


# ----------------------------------------------------------------------------- decoding


def _bomb_error(path: Path, pixels: int) -> DataError:
    return DataError(
        f"cannot read image {path}: {pixels} pixels is more than the limit of {Image.MAX_IMAGE_PIXELS} "
        "(possible decompression bomb; raise PIL.Image.MAX_IMAGE_PIXELS if the file is trusted)"
    )


def _read_error(path: Path, exc: BaseException) -> DataError:
    if isinstance(exc, Image.UnidentifiedImageError):
        reason = "not an image, or a format Pillow cannot decode"
    elif isinstance(exc, (Image.DecompressionBombError, Image.DecompressionBombWarning)):
        reason = f"possible decompression bomb ({exc})"
    else:
        reason = str(exc) or type(exc).__name__
    return DataError(f"cannot read image {path}: {reason}")


def _open(path: Path) -> Image.Image:
    img = Image.open(path)
    limit = Image.MAX_IMAGE_PIXELS
    if limit is not None and img.width * img.height > limit:
        img.close()
        raise _bomb_error(path, img.width * img.height)
    return img


_GREY_MODES = frozenset({"1", "L", "LA", "La", "I", "F"})


def _probe(path: Path) -> tuple[int, int, bool]:
    """(width, height) as displayed (EXIF rotation applied) and whether the image is in colour,
    reading the header only."""
    try:
        with _open(path) as img:
            w, h = img.size
            try:
                rotated = img.getexif().get(0x0112, 1) in (5, 6, 7, 8)
            except Exception:  # a broken EXIF block only loses the rotation
                rotated = False
            try:
                grey = img.mode in _GREY_MODES or img.mode.startswith("I;16") or (
                    img.mode in ("P", "PA") and _grey_palette(img))
            except Exception:  # a palette we cannot read: assume colour (the larger estimate)
                grey = False
            return (h, w, not grey) if rotated else (w, h, not grey)
    except DataError:
        raise
    except Exception as exc:
        raise _read_error(path, exc) from exc


def _composite_on_white(arr: np.ndarray) -> np.ndarray:
    """uint8 ``[H, W, C+1]`` with alpha last -> ``[H, W, C]`` over a white background."""
    colour = arr[..., :-1].astype(np.uint32)
    alpha = arr[..., -1:].astype(np.uint32)
    out = (colour * alpha + 255 * (255 - alpha) + 127) // 255
    return out.astype(np.uint8)


def _scale_wide(arr: np.ndarray, kind: str) -> np.ndarray:
    """16/32-bit integer or float pixels -> uint8, scaling the range rather than clipping."""
    a = arr.astype(np.float64)
    if kind == "float":
        a = np.nan_to_num(a, nan=0.0, posinf=0.0, neginf=0.0)
        lo, hi = float(a.min()), float(a.max())
        if lo >= 0.0 and hi <= 1.0:
            a = a * 255.0
        elif not (lo >= 0.0 and hi <= 255.0):
            a = (a - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(a)
    elif kind == "16":
        a = a / 257.0  # 65535 -> 255 exactly, 257 * k -> k
    else:  # 32-bit "I": usually 16-bit data (e.g. a 16-bit PNG on older Pillow)
        lo, hi = float(a.min()), float(a.max())
        if lo >= 0 and hi <= 65535:
            a = a / 257.0
        else:
            a = (a - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(a)
    return np.rint(a).clip(0, 255).astype(np.uint8)


def _grey_palette(img: Image.Image) -> bool:
    pal = img.getpalette() or []
    return all(pal[i] == pal[i + 1] == pal[i + 2] for i in range(0, len(pal) - 2, 3))


def _to_8bit(img: Image.Image) -> Image.Image:
    """Any PIL mode -> an 8-bit "L" (grey) or "RGB" image."""
    mode = img.mode
    if mode in ("L", "RGB"):
        return img
    if mode == "1":
        return img.convert("L")
    if mode in ("P", "PA"):
        grey = _grey_palette(img)
        if mode == "PA" or "transparency" in img.info:
            rgb = Image.fromarray(_composite_on_white(np.asarray(img.convert("RGBA"))), "RGB")
        else:
            rgb = img.convert("RGB")
        return rgb.convert("L") if grey else rgb
    if mode in ("LA", "La"):
        return Image.fromarray(_composite_on_white(np.asarray(img.convert("LA")))[..., 0], "L")
    if mode in ("RGBA", "RGBa"):
        return Image.fromarray(_composite_on_white(np.asarray(img.convert("RGBA"))), "RGB")
    if mode.startswith("I;16"):
        return Image.fromarray(_scale_wide(np.asarray(img), "16"), "L")
    if mode == "I":
        return Image.fromarray(_scale_wide(np.asarray(img), "32"), "L")
    if mode == "F":
        return Image.fromarray(_scale_wide(np.asarray(img), "float"), "L")
    return img.convert("RGB")  # CMYK, YCbCr, LAB, HSV, RGBX, ...


def _resize_crop(img: Image.Image, side: int) -> Image.Image:
    """Resize so the shorter side is ``side``, then center-crop to ``side`` x ``side``."""
    w, h = img.size
    if (w, h) == (side, side):
        return img
    scale = side / min(w, h)
    nw, nh = max(side, round(w * scale)), max(side, round(h * scale))
    if nw * nh > _MAX_STRETCH * side * side:
        # a very long strip: crop the centre square of the source while resizing, so no huge
        # intermediate image is ever made
        m = min(w, h)
        box = ((w - m) // 2, (h - m) // 2, (w - m) // 2 + m, (h - m) // 2 + m)
        return img.resize((side, side), Image.Resampling.BICUBIC, box=box, reducing_gap=3.0)
    if (nw, nh) != (w, h):
        img = img.resize((nw, nh), Image.Resampling.BICUBIC, reducing_gap=3.0)
    left, top = (nw - side) // 2, (nh - side) // 2
    return img.crop((left, top, left + side, top + side))


def _decode(path: Path, side: int | None, channels: int | None) -> np.ndarray:
    """Decode one image to uint8 ``[H, W]`` (grey) or ``[H, W, 3]``, at ``side`` x ``side`` if given."""
    try:
        with _open(path) as img:
            if side is not None and img.format == "JPEG":
                scale = side / min(img.size)
                img.draft(None, (math.ceil(img.width * scale), math.ceil(img.height * scale)))
            img.load()
            out = ImageOps.exif_transpose(img) or img
            out = _to_8bit(out)
            if channels is not None:
                out = out.convert("L" if channels == 1 else "RGB")
            if side is not None:
                out = _resize_crop(out, side)
            return np.asarray(out, dtype=np.uint8).copy()
    except DataError:
        raise
    except Exception as exc:
        raise _read_error(path, exc) from exc


def _map(fn: Callable[[T], R], items: list[T], threads: bool) -> list[R]:
    """``[fn(x) for x in items]``, on a thread pool when ``threads`` (large images only: for
    small ones the GIL makes threads slower than a plain loop, measured 0.7 s vs 2 s for the
    4,000 CIFAR PNGs on 2 cores)."""
    workers = min(_MAX_WORKERS, os.cpu_count() or 1, len(items))
    if not threads or workers <= 1:
        return [fn(x) for x in items]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(fn, items))


def decode_images(paths: list[Path], image_size: int | None = None, channels: int | None = None, *,
                  where: str | Path | None = None) -> torch.Tensor:
    """Decode ``paths`` into one uint8 tensor ``[N, C, H, W]`` (see the module doc for the rules).

    Before decoding anything, refuses (:class:`DataError` naming ``where``, default the first
    file's folder) a set whose decoded size would not fit in this machine's memory.
    """
    if image_size is not None:
        check_image_size(image_size)
    if channels is not None:
        check_channels(channels)
    with warnings.catch_warnings():
        # A file with more pixels than PIL's limit is refused, not just warned about.
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        probed = [_probe(p) for p in paths]  # headers only: cheap, Python-bound
        sizes = [(w, h) for w, h, _ in probed]
        side = image_size
        if side is None and len(set(sizes)) > 1:
            (w, h), _ = Counter(sizes).most_common(1)[0]
            side = min(w, h)
        if paths:
            out_c = channels or (3 if any(colour for _, _, colour in probed) else 1)
            out_w, out_h = (side, side) if side is not None else sizes[0]
            place = str(where if where is not None else paths[0].parent)
            check_image_memory(len(paths), out_c, out_h, out_w, place, image_size=image_size)
        big = sum(w * h for w, h in sizes) > _THREAD_MIN_PIXELS * len(sizes)
        arrays = _map(lambda p: _decode(p, side, channels), paths, threads=big)
    if side is None:
        # all files share one size; an EXIF quirk could still disagree, so check
        shapes = {a.shape[:2] for a in arrays}
        if len(shapes) > 1:
            side = min(min(s) for s in shapes)
            arrays = [_decode(p, side, channels) for p in paths]
    colour = any(a.ndim == 3 for a in arrays)
    if colour:
        arrays = [a if a.ndim == 3 else np.repeat(a[:, :, None], 3, axis=2) for a in arrays]
        stacked = np.stack(arrays).transpose(0, 3, 1, 2)
    else:
        stacked = np.stack(arrays)[:, None]
    return torch.from_numpy(np.ascontiguousarray(stacked))


# ----------------------------------------------------------------------------- loading


def _files_and_labels(folder: Path, scan: _Scan, class_names: list[str] | None) -> tuple[list[Path], list[int] | None]:
    if not scan.classes:
        return list(scan.top), None
    if scan.top:
        warnings.warn(
            f"ignoring {len(scan.top)} image(s) directly in {folder} because it has class subfolders "
            f"(e.g. {scan.top[0].name})",
            UserWarning,
            stacklevel=4,
        )
    index = {name: i for i, name in enumerate(class_names or sorted(scan.classes))}
    files: list[Path] = []
    labels: list[int] = []
    for name in sorted(scan.classes):
        files.extend(scan.classes[name])
        labels.extend([index[name]] * len(scan.classes[name]))
    return files, labels


def is_image_folder(folder: Path) -> bool:
    """True if ``folder`` (or its train/test subfolders) holds any image file."""
    try:
        for _root, dirs, files in os.walk(folder):
            dirs[:] = [d for d in dirs if not _is_hidden(d)]
            if any(_is_image(Path(f)) for f in files if not _is_hidden(f)):
                return True
    except OSError:
        return False
    return False


def load_image_folder(
    folder: str | Path,
    split: str = "train",
    *,
    name: str | None = None,
    image_size: int | None = None,
    channels: int | None = None,
) -> ImageDataset:
    """Load an image folder (see the module doc for layouts and conversions).

    ``split`` picks ``train/`` or ``test/`` (``val/``) in a split layout ("all" joins them);
    a folder without split subfolders is returned whole for "train" and "all", and has no "test"
    split (:class:`MissingSplitError`: its images are the training images). Raises
    :class:`DataError` naming the folder when it holds no images, and naming the file for an
    unreadable, truncated or oversized image. Files with other extensions give a warning.
    """
    folder = Path(folder)
    split = check_split(split)
    if not folder.is_dir():
        raise DataError(f"not a folder: {folder}")
    splits = _split_dirs(folder)
    if splits is None and split == "test":
        raise MissingSplitError(f"no test split in {folder}: it has no train/ and test/ subfolders")
    if splits is None:
        scans = [(folder, _scan(folder))]
        all_scans = [scans[0][1]]
    else:
        wanted = ["train", "test"] if split == "all" else [split]
        missing = [s for s in wanted if s not in splits]
        if missing:
            have = ", ".join(sorted(p.name + "/" for p in splits.values()))
            raise MissingSplitError(f"no {missing[0]} split in {folder}: it has only {have}")
        by_split = {s: _scan(p) for s, p in splits.items()}
        scans = [(splits[s], by_split[s]) for s in wanted]
        all_scans = list(by_split.values())
    # class indices must agree between train and test: names are the union over all splits
    class_union = sorted({c for scan in all_scans for c in scan.classes}) or None
    files: list[Path] = []
    labels: list[int] | None = []
    for sub, scan in scans:
        _warn_others(sub, scan.others)
        f, lab = _files_and_labels(sub, scan, class_union)
        files.extend(f)
        if lab is None or labels is None:
            labels = None
        else:
            labels.extend(lab)
    if not files:
        exts = " ".join(sorted(IMAGE_EXTENSIONS))
        where = scans[0][0] if len(scans) == 1 else folder
        raise DataError(f"no images in folder {where} (looked for {exts})")
    images = decode_images(files, image_size=image_size, channels=channels, where=folder)
    label_tensor = torch.tensor(labels, dtype=torch.int64) if labels else None
    return ImageDataset(
        images=images,
        labels=label_tensor,
        class_names=list(class_union) if label_tensor is not None and class_union else None,
        name=name or str(folder),
    )
