"""The embedded default data set: scikit-learn's 1,797 handwritten digits, 8x8 grey.

It needs no network and loads in milliseconds, so every model can be tried (and tested) at
once. We read the CSV that ships inside scikit-learn rather than ``import sklearn``, which
would cost about a second of imports.
"""

from __future__ import annotations

import gzip
import importlib.util
from pathlib import Path

import numpy as np
import torch

from gentool.data.datasets import ImageDataset, check_split
from gentool.data.transforms import finish
from gentool.errors import DataError

DIGITS_COUNT = 1797
#: Every ``TEST_EVERY``-th image (index 4, 9, 14, ...) is the test split; the rest is train.
TEST_EVERY = 5


def _bundled_csv() -> Path | None:
    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        return None
    for loc in spec.submodule_search_locations:
        path = Path(loc) / "datasets" / "data" / "digits.csv.gz"
        if path.is_file():
            return path
    return None


def _read_digits() -> tuple[np.ndarray, np.ndarray]:
    """Pixels ``[1797, 64]`` in 0..16 and labels ``[1797]``."""
    path = _bundled_csv()
    if path is not None:
        with gzip.open(path, "rt") as f:
            table = np.loadtxt(f, delimiter=",", dtype=np.float64)
        return table[:, :-1], table[:, -1].astype(np.int64)
    try:
        from sklearn.datasets import load_digits
    except ImportError as exc:  # pragma: no cover - scikit-learn is a dependency
        raise DataError("cannot load the digits data set: scikit-learn is not installed") from exc
    bunch = load_digits()
    return np.asarray(bunch.data, dtype=np.float64), np.asarray(bunch.target, dtype=np.int64)


def load_digits(split: str = "train", image_size: int | None = None, channels: int | None = None) -> ImageDataset:
    """Load the 8x8 digits as uint8 ``[N, 1, 8, 8]`` (0..16 scaled to 0..255), labels 0-9.

    The split is fixed and deterministic: every 5th image is "test" (359 images), the rest
    "train" (1,438); "all" gives all 1,797.
    """
    split = check_split(split)
    pixels, labels = _read_digits()
    images = np.rint(pixels * (255.0 / 16.0)).clip(0, 255).astype(np.uint8).reshape(-1, 1, 8, 8)
    if split != "all":
        is_test = np.arange(len(images)) % TEST_EVERY == TEST_EVERY - 1
        keep = is_test if split == "test" else ~is_test
        images, labels = images[keep], labels[keep]
    ds = ImageDataset(
        images=torch.from_numpy(np.ascontiguousarray(images)),
        labels=torch.from_numpy(np.ascontiguousarray(labels)),
        class_names=[str(i) for i in range(10)],
        name="digits",
    )
    return finish(ds, image_size, channels)
