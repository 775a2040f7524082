"""The IDX format of MNIST and Fashion-MNIST, raw or gzip, parsed with numpy and validated.

An IDX file is a 4-byte magic (two zero bytes, a type code, the number of dimensions), one
big-endian uint32 per dimension, then the values. We check every part so that a truncated
download or a wrong file gives one clear line naming the file instead of a reshape error.
"""

from __future__ import annotations

import gzip
import math
import re
import zlib
from pathlib import Path

import numpy as np
import torch

from gentool.data.datasets import ImageDataset, check_split
from gentool.data.transforms import finish
from gentool.errors import DataError, MissingSplitError

DIGIT_NAMES = [str(i) for i in range(10)]
FASHION_NAMES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]  # fmt: skip

# type code -> big-endian numpy dtype
_IDX_DTYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

# "train-images-idx3-ubyte", "train-images.idx3-ubyte" (a common re-packaging), optional ".gz"
_IDX_NAME = re.compile(r"^(?P<prefix>.+)-(?P<what>images|labels)[-.](?P<idx>idx[13])-ubyte(?:\.gz)?$", re.I)
_SPLIT_PREFIX = {"train": "train", "test": "t10k"}


def _read_bytes(path: Path) -> bytes:
    try:
        with open(path, "rb") as f:
            head = f.read(2)
            f.seek(0)
            if head == b"\x1f\x8b":
                with gzip.GzipFile(fileobj=f) as g:
                    return g.read()
            return f.read()
    except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
        raise DataError(f"cannot read IDX file {path}: corrupt or truncated gzip ({exc or 'unexpected end'})") from exc
    except OSError as exc:
        raise DataError(f"cannot read IDX file {path}: {exc.strerror or exc}") from exc


def read_idx(path: str | Path) -> np.ndarray:
    """Read one IDX file (raw or gzip) into a numpy array of its declared type and shape.

    Raises :class:`DataError` naming the file for a bad magic number, an unknown type code,
    or a byte count that does not match the declared dimensions (truncated or padded file).
    """
    path = Path(path)
    data = _read_bytes(path)
    if len(data) < 4:
        raise DataError(f"not an IDX file: {path} (only {len(data)} bytes)")
    zero, code, ndim = data[0:2], data[2], data[3]
    if zero != b"\x00\x00" or code not in _IDX_DTYPES or not 1 <= ndim <= 8:
        raise DataError(f"not an IDX file: {path} (bad magic number {data[:4].hex()})")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"truncated IDX file {path}: header cut short")
    dims = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    dtype = _IDX_DTYPES[code]
    expected = math.prod(dims) * dtype.itemsize
    got = len(data) - header
    if got < expected:
        raise DataError(
            f"truncated IDX file {path}: expected {expected} data bytes for shape {list(dims)}, found {got}"
        )
    if got > expected:
        raise DataError(f"bad IDX file {path}: {got - expected} bytes more than shape {list(dims)} needs")
    arr = np.frombuffer(data, dtype=dtype, offset=header).reshape(dims)
    return arr.astype(dtype.newbyteorder("="), copy=True)


def _images_tensor(arr: np.ndarray, path: Path) -> torch.Tensor:
    if arr.ndim != 3 or arr.dtype != np.uint8:
        raise DataError(
            f"{path} is not an IDX image file: expected uint8 [N, H, W], found {arr.dtype} {list(arr.shape)}"
        )
    return torch.from_numpy(arr).unsqueeze(1)


def _labels_tensor(arr: np.ndarray, path: Path, count: int) -> torch.Tensor:
    if arr.ndim != 1 or arr.dtype.kind not in "iu":
        raise DataError(
            f"{path} is not an IDX label file: expected integers [N], found {arr.dtype} {list(arr.shape)}"
        )
    if len(arr) != count:
        raise DataError(f"{path} has {len(arr)} labels but its image file has {count} images")
    if len(arr) and arr.min() < 0:
        raise DataError(f"{path} holds negative labels")
    return torch.from_numpy(arr.astype(np.int64))


def find_idx_file(folder: Path, prefix: str, what: str) -> Path | None:
    """The file for e.g. prefix "t10k", what "images" in ``folder``, raw or gzip."""
    idx = "idx3" if what == "images" else "idx1"
    for sep in ("-", "."):
        for ext in ("", ".gz"):
            p = folder / f"{prefix}-{what}{sep}{idx}-ubyte{ext}"
            if p.is_file():
                return p
    return None


def is_idx_file(path: Path) -> bool:
    """True if the file name looks like an IDX file (``*-idx3-ubyte``, ``*-idx1-ubyte``, ``.gz``)."""
    return bool(_IDX_NAME.match(path.name))


def is_idx_dir(path: Path) -> bool:
    """True if ``path`` is a folder holding at least one IDX image file."""
    try:
        for p in path.iterdir():
            m = _IDX_NAME.match(p.name)
            if m and m["what"].lower() == "images" and p.is_file():
                return True
        return False
    except OSError:
        return False


def _class_names_for(path: Path, class_names: list[str] | None) -> list[str]:
    if class_names is not None:
        return class_names
    return FASHION_NAMES if "fashion" in path.resolve().name.lower() else DIGIT_NAMES


def _load_pair(images_path: Path, labels_path: Path | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    images = _images_tensor(read_idx(images_path), images_path)
    labels = None
    if labels_path is not None:
        labels = _labels_tensor(read_idx(labels_path), labels_path, images.shape[0])
    return images, labels


def load_idx_dir(
    folder: str | Path,
    split: str = "train",
    *,
    name: str | None = None,
    class_names: list[str] | None = None,
    image_size: int | None = None,
    channels: int | None = None,
) -> ImageDataset:
    """Load the MNIST-style split from ``folder``: ``train-*`` for "train", ``t10k-*`` for "test".

    Class names default to "0".."9", or the Fashion-MNIST names when the folder's name contains
    "fashion". A missing label file is an error (MNIST-style folders always carry one).
    """
    folder = Path(folder)
    split = check_split(split)
    parts = ["train", "test"] if split == "all" else [split]
    all_images, all_labels = [], []
    for part in parts:
        prefix = _SPLIT_PREFIX[part]
        images_path = find_idx_file(folder, prefix, "images")
        labels_path = find_idx_file(folder, prefix, "labels")
        if images_path is None and labels_path is None:  # the split is not there at all
            raise MissingSplitError(f"no {part} split in IDX folder {folder}: no {prefix}-images-idx3-ubyte[.gz]")
        if images_path is None or labels_path is None:  # half a split: a broken download, say
            missing = f"{prefix}-images-idx3-ubyte" if images_path is None else f"{prefix}-labels-idx1-ubyte"
            raise DataError(f"incomplete {part} split in IDX folder {folder}: {missing}[.gz] is missing")
        images, labels = _load_pair(images_path, labels_path)
        all_images.append(images)
        all_labels.append(labels)
    images = all_images[0] if len(all_images) == 1 else torch.cat(all_images)
    labels = all_labels[0] if len(all_labels) == 1 else torch.cat(all_labels)
    names = _class_names_for(folder, class_names)
    if labels.numel() and int(labels.max()) >= len(names):
        names = [str(i) for i in range(int(labels.max()) + 1)]
    ds = ImageDataset(images=images, labels=labels, class_names=names, name=name or str(folder))
    return finish(ds, image_size, channels)


def load_idx_file(
    path: str | Path, *, name: str | None = None, image_size: int | None = None, channels: int | None = None
) -> ImageDataset:
    """Load one IDX image file; labels come from the sibling ``*-labels-idx1-ubyte[.gz]`` if present."""
    path = Path(path)
    m = _IDX_NAME.match(path.name)
    if m and m["what"].lower() == "labels":
        raise DataError(f"{path} holds labels, not images: pass the *-images-idx3-ubyte file or its folder")
    labels_path = find_idx_file(path.parent, m["prefix"], "labels") if m else None
    images, labels = _load_pair(path, labels_path)
    names = None
    if labels is not None:
        names = _class_names_for(path.parent, None)
        if labels.numel() and int(labels.max()) >= len(names):
            names = [str(i) for i in range(int(labels.max()) + 1)]
    ds = ImageDataset(images=images, labels=labels, class_names=names, name=name or str(path))
    return finish(ds, image_size, channels)
