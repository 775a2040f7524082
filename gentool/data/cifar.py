"""CIFAR-10 from its BINARY distribution (never the pickle one: no pickle for downloaded data).

``cifar-10-binary.tar.gz`` holds ``data_batch_1..5.bin`` and ``test_batch.bin``: records of
one label byte followed by 3,072 bytes (1,024 red, 1,024 green, 1,024 blue, row-major 32x32),
plus ``batches.meta.txt`` with the class names. We read the members straight from the tar
(no extraction, so hostile member names can do nothing) or from an extracted folder.
"""

from __future__ import annotations

import tarfile
import zlib
from pathlib import Path, PurePosixPath

import numpy as np
import torch

from gentool.data.datasets import ImageDataset, check_split
from gentool.data.download import dataset_dir, fetch
from gentool.data.transforms import finish
from gentool.errors import DataError

ARCHIVE = "cifar-10-binary.tar.gz"
EXTRACTED = "cifar-10-batches-bin"
CLASS_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
TRAIN_FILES = [f"data_batch_{i}.bin" for i in range(1, 6)]
TEST_FILES = ["test_batch.bin"]
META_FILE = "batches.meta.txt"
_RECORD = 1 + 3 * 32 * 32
_MAX_MEMBER = 64 << 20  # a real batch is 30 MB; refuse anything absurd before reading it


def _files_for(split: str) -> list[str]:
    return {"train": TRAIN_FILES, "test": TEST_FILES, "all": TRAIN_FILES + TEST_FILES}[split]


def _safe_member_name(name: str) -> str | None:
    """The base name of a tar member if its path is harmless (relative, no ``..``), else None."""
    p = PurePosixPath(name.replace("\\", "/"))
    if p.is_absolute() or ".." in p.parts or not p.parts:
        return None
    return p.name


def _read_archive(path: Path, wanted: set[str]) -> dict[str, bytes]:
    found: dict[str, bytes] = {}
    try:
        with tarfile.open(path, "r:*") as tar:
            for member in tar:
                base = _safe_member_name(member.name)
                if base not in wanted or base in found or not member.isfile():
                    continue
                if member.size > _MAX_MEMBER:
                    raise DataError(f"bad CIFAR-10 archive {path}: member {member.name} is {member.size} bytes")
                f = tar.extractfile(member)
                if f is None:
                    continue
                found[base] = f.read()
    except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
        raise DataError(f"cannot read CIFAR-10 archive {path}: {exc or 'truncated'}") from exc
    return found


def _read_folder(folder: Path, wanted: set[str]) -> dict[str, bytes]:
    found = {}
    for name in wanted:
        p = folder / name
        if p.is_file():
            try:
                found[name] = p.read_bytes()
            except OSError as exc:
                raise DataError(f"cannot read {p}: {exc.strerror or exc}") from exc
    return found


def _parse_batch(data: bytes, where: str) -> tuple[np.ndarray, np.ndarray]:
    if len(data) == 0 or len(data) % _RECORD:
        raise DataError(
            f"truncated CIFAR-10 batch {where}: {len(data)} bytes is not a whole number of {_RECORD}-byte records"
        )
    rec = np.frombuffer(data, dtype=np.uint8).reshape(-1, _RECORD)
    labels = rec[:, 0].astype(np.int64)
    if labels.max() >= len(CLASS_NAMES):
        raise DataError(f"bad CIFAR-10 batch {where}: label {labels.max()} out of range 0-9")
    return rec[:, 1:].reshape(-1, 3, 32, 32), labels


def _parse_meta(data: bytes | None) -> list[str]:
    if data is None:
        return list(CLASS_NAMES)
    names = [line.strip() for line in data.decode("utf-8", errors="replace").splitlines() if line.strip()]
    return names if len(names) == len(CLASS_NAMES) else list(CLASS_NAMES)


def is_cifar_dir(path: Path) -> bool:
    """True for a folder holding the extracted binary batches (or a ``cifar-10-batches-bin`` in it)."""
    return any((path / n).is_file() for n in TRAIN_FILES[:1] + TEST_FILES) or (path / EXTRACTED).is_dir()


def load_cifar10_binary(
    source: str | Path,
    split: str = "train",
    *,
    name: str | None = None,
    image_size: int | None = None,
    channels: int | None = None,
) -> ImageDataset:
    """Load CIFAR-10 from ``cifar-10-binary.tar.gz`` or a folder of the extracted ``*.bin`` files."""
    source = Path(source)
    split = check_split(split)
    files = _files_for(split)
    wanted = set(files) | {META_FILE}
    if source.is_dir():
        folder = source / EXTRACTED if (source / EXTRACTED).is_dir() else source
        found = _read_folder(folder, wanted)
    else:
        found = _read_archive(source, wanted)
    missing = [f for f in files if f not in found]
    if missing:
        raise DataError(f"{source} is not a complete CIFAR-10 binary set: missing {', '.join(missing)}")
    parts = [_parse_batch(found[f], f"{source}:{f}") for f in files]
    images = np.concatenate([p[0] for p in parts]) if len(parts) > 1 else parts[0][0].copy()
    labels = np.concatenate([p[1] for p in parts])
    ds = ImageDataset(
        images=torch.from_numpy(images),
        labels=torch.from_numpy(labels),
        class_names=_parse_meta(found.get(META_FILE)),
        name=name or str(source),
    )
    return finish(ds, image_size, channels)


def load_cifar10(split: str = "train", image_size: int | None = None, channels: int | None = None) -> ImageDataset:
    """The named set ``cifar10``: 50,000 train / 10,000 test 32x32 colour images, 10 classes.

    Uses an extracted ``cifar-10-batches-bin/`` in the cache if present, else the archive,
    downloading it (170 MB, md5-checked) when missing.
    """
    split = check_split(split)
    folder = dataset_dir("cifar10")
    if (folder / EXTRACTED).is_dir():
        source = folder
    else:
        source = fetch("cifar10", [ARCHIVE], ARCHIVE) / ARCHIVE
    return load_cifar10_binary(source, split, name="cifar10", image_size=image_size, channels=channels)
