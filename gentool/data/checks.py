"""Sanity checks on data before it costs anything: memory a load would take, and whether a set
is big enough to train on.

Each check raises :class:`gentool.errors.DataError` with one line naming the file or folder and
the numbers, so a hostile or mistaken input never ends in a MemoryError, an allocator failure
deep inside numpy or torch, or a model's batch-norm error. Torch-free: safe to import anywhere.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

from gentool.errors import DataError

#: Bytes a loaded uint8 image element costs in all: the uint8 set itself plus the float32 copy
#: the models make of it (``ImageDataset.as_float`` or per-model conversion).
BYTES_PER_ELEMENT_IN_TRAINING = 1 + 4
#: Environment variable that caps the memory gentool assumes it may use (bytes, or with a
#: suffix: "8G", "500M"); below the machine's memory only (it never raises the limit).
MEMORY_LIMIT_ENV = "GENTOOL_MEMORY_LIMIT"

_UNITS = ("B", "kB", "MB", "GB", "TB", "PB", "EB")


def format_bytes(n: float) -> str:
    """``n`` bytes in decimal units, e.g. ``1.4 TB``, ``24 GB``, ``512 B``."""
    n = float(n)
    i = 0
    while n >= 1000 and i < len(_UNITS) - 1:
        n /= 1000.0
        i += 1
    if i == 0:
        return f"{int(n)} B"
    return f"{n:.1f} {_UNITS[i]}" if n < 10 else f"{n:.0f} {_UNITS[i]}"


def _parse_size(text: str) -> int | None:
    text = text.strip().upper().removesuffix("B").removesuffix("I")
    mult = 1
    for suffix, m in (("K", 10**3), ("M", 10**6), ("G", 10**9), ("T", 10**12)):
        if text.endswith(suffix):
            text, mult = text[:-1], m
            break
    try:
        value = float(text) * mult
    except ValueError:
        return None
    return int(value) if value > 0 and math.isfinite(value) else None


def _cgroup_limit() -> int | None:
    """The container's memory limit (cgroup v2 or v1), if one is set below "unlimited"."""
    for p in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            raw = Path(p).read_text().strip()
        except (OSError, ValueError):
            continue
        if raw.isdigit() and 0 < int(raw) < 1 << 60:  # v1 writes a huge number for "no limit"
            return int(raw)
    return None


def machine_memory() -> int | None:
    """Bytes of memory this process may use: physical memory, capped by a container limit and by
    ``GENTOOL_MEMORY_LIMIT``; None where it cannot be told (then memory checks are skipped)."""
    found: list[int] = []
    try:
        pages, page_size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
        if pages > 0 and page_size > 0:
            found.append(pages * page_size)
    except (AttributeError, ValueError, OSError):  # not POSIX (Windows), or the name is unknown
        pass
    limit = _cgroup_limit()
    if limit is not None:
        found.append(limit)
    env = os.environ.get(MEMORY_LIMIT_ENV)
    if env:
        parsed = _parse_size(env)
        if parsed is not None:
            found.append(parsed)
    return min(found) if found else None


def _have_phrase(have: int) -> str:
    env = os.environ.get(MEMORY_LIMIT_ENV)
    if env and _parse_size(env) == have:
        return f"{MEMORY_LIMIT_ENV} allows {format_bytes(have)}"
    return f"this machine has {format_bytes(have)}"


def check_memory(need: int, what: str) -> None:
    """Raise :class:`DataError` ``"<what> would need X; this machine has Y"`` when ``need`` bytes
    is more than :func:`machine_memory` (nothing happens where the memory is unknown)."""
    have = machine_memory()
    if have is not None and need > have:
        raise DataError(f"{what} would need {format_bytes(need)}; {_have_phrase(have)}")


def check_image_memory(count: int, channels: int, height: int, width: int, where: str, *,
                       image_size: int | None = None) -> None:
    """Refuse ``count`` images of ``channels x height x width`` when, as uint8 plus the float copy a
    model makes, they would not fit in this machine's memory. ``where`` names the file, folder or
    data set; ``image_size`` (when it is the reason for the size) is named in the message."""
    need = count * channels * height * width * BYTES_PER_ELEMENT_IN_TRAINING
    have = machine_memory()
    if have is None or need <= have:
        return
    images = f"{count:,} image{'s' if count != 1 else ''}"
    if image_size is not None:
        head = f"image size {image_size} would need {format_bytes(need)} for {images} of {where}"
    else:
        head = f"{where} would need {format_bytes(need)} for {images} of {channels}x{height}x{width}"
    raise DataError(
        f"{head} (uint8 plus the float copy training makes); {_have_phrase(have)}"
        + ("; pick a smaller image size" if image_size is not None else "")
    )


def check_trainable(dataset: Any, *, minimum: int = 2, what: str | None = None) -> Any:
    """Raise :class:`DataError` when ``dataset`` is too small to train on; return it otherwise.

    For an :class:`~gentool.data.ImageDataset` ``minimum`` counts images ("FOLDER holds 1 image;
    training needs at least 2"); for a :class:`~gentool.data.TextDataset` it counts characters.
    ``what`` names the data in the message (default: the data set's name, i.e. its path or
    registered name). Two images is the least a model with batch normalisation can train on.
    """
    minimum = max(1, int(minimum))
    name = what if what is not None else getattr(dataset, "name", None) or "the data"
    if getattr(dataset, "text", None) is not None and isinstance(dataset.text, str):
        count, unit = len(dataset.text), "character"
    else:
        count, unit = len(dataset), "image"
    if count < minimum:
        raise DataError(
            f"{name} holds {count:,} {unit}{'s' if count != 1 else ''}; "
            f"training needs at least {minimum:,}"
        )
    return dataset
