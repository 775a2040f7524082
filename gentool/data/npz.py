"""Arrays saved with ``np.savez``: the quickest way to hand gentool data from a notebook.

Keys (case-insensitive): images ``x`` or ``images`` (or ``x_train``/``x_test`` as in Keras'
``mnist.npz``, picked by split), labels ``y`` or ``labels`` (``y_train``/``y_test``), optional
``class_names`` (a string array). Layout NHW, NHWC or NCHW; uint8, or float in [0, 1]. Loaded
with ``allow_pickle=False``: a file holding object arrays is refused, never unpickled.
"""

from __future__ import annotations

import math
import zipfile
from pathlib import Path

import numpy as np
import torch

from gentool.data.checks import check_memory, format_bytes
from gentool.data.datasets import ImageDataset, check_split
from gentool.data.transforms import finish
from gentool.errors import DataError, MissingSplitError

_IMAGE_KEYS = ("x", "images")
_LABEL_KEYS = ("y", "labels")


def _to_nchw(x: np.ndarray, path: Path) -> np.ndarray:
    if x.ndim == 3:
        return x[:, None]
    if x.ndim == 4:
        if x.shape[1] in (1, 3):
            return x  # NCHW (also wins the rare tie, e.g. [N, 3, 5, 3])
        if x.shape[3] in (1, 3):
            return x.transpose(0, 3, 1, 2)
    raise DataError(
        f"cannot use the images in {path}: expected [N, H, W], [N, H, W, C] or [N, C, H, W] "
        f"with C 1 or 3, found shape {list(x.shape)}"
    )


def _to_uint8(x: np.ndarray, path: Path) -> np.ndarray:
    if x.dtype == np.uint8:
        return x
    if x.dtype == np.bool_:
        return x.astype(np.uint8) * 255
    if x.dtype.kind == "f":
        if x.size and not np.isfinite(x).all():
            raise DataError(f"images in {path} contain NaN or infinity")
        lo, hi = (float(x.min()), float(x.max())) if x.size else (0.0, 0.0)
        if lo < -1e-6 or hi > 1 + 1e-6:
            raise DataError(f"float images in {path} must be in [0, 1], found values in [{lo:g}, {hi:g}]")
        return np.rint(np.clip(x, 0.0, 1.0) * 255.0).astype(np.uint8)
    if x.dtype.kind in "iu":
        lo, hi = (int(x.min()), int(x.max())) if x.size else (0, 0)
        if lo < 0 or hi > 255:
            raise DataError(f"integer images in {path} must be in 0..255, found values in {lo}..{hi}")
        return x.astype(np.uint8)
    raise DataError(f"cannot use images of type {x.dtype} in {path}: save uint8, or float in [0, 1]")


def _pick(keys: dict[str, str], names: tuple[str, ...], split: str) -> list[str] | None:
    """The archive keys to use for ``names``, honouring ``*_train``/``*_test`` by split."""
    for n in names:
        if n in keys:
            return [keys[n]]
    for n in names:
        parts = ["train", "test"] if split == "all" else [split]
        if all(f"{n}_{p}" in keys for p in parts):
            return [keys[f"{n}_{p}"] for p in parts]
    return None


class _Archive:
    """The arrays of a ``.npz`` read member by member, each header checked before any allocation.

    ``np.load`` trusts an array's header: a few bytes claiming shape (10**7, 10**6) make it try
    to allocate 9 TB. Here the declared shape and dtype must match the bytes the member really
    holds, and fit in this machine's memory, before a byte is allocated.
    """

    def __init__(self, zf: zipfile.ZipFile, path: Path) -> None:
        self.zf, self.path = zf, path
        self.members: dict[str, zipfile.ZipInfo] = {}
        for info in zf.infolist():
            if info.is_dir():
                continue
            key = info.filename.removesuffix(".npy")
            self.members.setdefault(key, info)
        self.files = list(self.members)

    def header(self, key: str) -> tuple[tuple[int, ...], bool, np.dtype, int]:
        """(shape, fortran_order, dtype, data bytes the member holds) of array ``key``."""
        info = self.members[key]
        with self.zf.open(info) as f:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
            else:
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
            offset = f.tell()
        return tuple(int(d) for d in shape), bool(fortran), dtype, info.file_size - offset

    def read(self, key: str, budget: list[int]) -> np.ndarray:
        shape, fortran, dtype, held = self.header(key)
        where = f"array {key!r} in {self.path}"
        if dtype.hasobject:
            raise DataError(f"refusing {self.path}: it holds Python objects (pickle), save plain numeric arrays")
        if any(d < 0 for d in shape):
            raise DataError(f"bad {where}: its header declares shape {list(shape)}")
        declared = math.prod(shape) * dtype.itemsize
        if declared > held:
            raise DataError(
                f"bad {where}: its header declares shape {list(shape)} of {dtype} ({format_bytes(declared)}) "
                f"but the file holds only {format_bytes(held)} of data (truncated or corrupt)"
            )
        budget[0] += declared
        # the arrays, a concatenated/converted copy and the float copy training makes
        check_memory(2 * budget[0] + math.prod(shape) * 4,
                     f"{where} (shape {list(shape)} of {dtype}, with the copies loading and training make)")
        buf = bytearray(declared)
        view = memoryview(buf)
        with self.zf.open(self.members[key]) as f:
            f.read(self.members[key].file_size - held)  # skip the header
            got = 0
            while got < declared:
                n = f.readinto(view[got:])
                if not n:
                    break
                got += n
        if got < declared:
            raise DataError(f"truncated {where}: expected {declared} bytes of data, found {got}")
        return np.frombuffer(buf, dtype=dtype).reshape(shape, order="F" if fortran else "C")


def load_npz(
    path: str | Path,
    split: str = "train",
    *,
    name: str | None = None,
    image_size: int | None = None,
    channels: int | None = None,
) -> ImageDataset:
    """Load images (and optional labels and class names) from a ``.npz`` file."""
    path = Path(path)
    split = check_split(split)
    try:
        with zipfile.ZipFile(path) as zf:
            npz = _Archive(zf, path)
            keys = {k.lower(): k for k in npz.files}
            if split == "test" and not any(f"{n}_test" in keys for n in _IMAGE_KEYS):
                raise MissingSplitError(f"no test split in {path}: it holds no x_test (or images_test) array")
            image_keys = _pick(keys, _IMAGE_KEYS, split)
            if image_keys is None:
                raise DataError(
                    f"no images in {path}: expected an array named 'x' or 'images' "
                    f"(or x_train/x_test); found {', '.join(npz.files) or 'nothing'}"
                )
            label_keys = _pick(keys, _LABEL_KEYS, split)
            budget = [0]
            xs = [npz.read(k, budget) for k in image_keys]
            x = xs[0] if len(xs) == 1 else np.concatenate(xs)
            y = np.concatenate([npz.read(k, budget) for k in label_keys]) if label_keys else None
            names = npz.read(keys["class_names"], budget) if "class_names" in keys else None
    except DataError:
        raise
    except ValueError as exc:
        if "pickle" in str(exc):
            raise DataError(f"refusing {path}: it holds Python objects (pickle), save plain numeric arrays") from exc
        raise DataError(f"cannot read {path}: {exc}") from exc
    except (OSError, EOFError, zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, RuntimeError) as exc:
        raise DataError(f"cannot read {path}: not a valid .npz file ({exc})") from exc
    if x.ndim == 0 or (y is not None and y.ndim == 0):
        raise DataError(f"cannot use {path}: its images and labels must be arrays, not single values")
    images = np.ascontiguousarray(_to_nchw(_to_uint8(x, path), path))
    labels = None
    if y is not None:
        y = np.asarray(y).reshape(-1) if y.ndim == 2 and 1 in y.shape else y
        if y.ndim != 1 or len(y) != len(images):
            raise DataError(f"labels in {path} must be [N] with N={len(images)}, found shape {list(y.shape)}")
        if y.dtype.kind == "f" and np.all(np.isfinite(y)) and np.all(y == np.round(y)):
            y = y.astype(np.int64)
        if y.dtype.kind not in "iu" or (len(y) and y.min() < 0):
            raise DataError(f"labels in {path} must be non-negative integers")
        labels = torch.from_numpy(y.astype(np.int64))
    class_names = None
    if names is not None:
        if names.dtype.kind not in "US" or names.ndim != 1:
            raise DataError(f"class_names in {path} must be a 1-D string array")
        class_names = [n.decode() if isinstance(n, bytes) else str(n) for n in names.tolist()]
        if labels is not None and len(labels) and int(labels.max()) >= len(class_names):
            raise DataError(f"{path} has label {int(labels.max())} but only {len(class_names)} class_names")
    ds = ImageDataset(images=torch.from_numpy(images), labels=labels, class_names=class_names, name=name or str(path))
    return finish(ds, image_size, channels)
