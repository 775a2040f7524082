"""The named sets ``mnist`` and ``fashion-mnist``: IDX files in the cache, downloaded when missing."""

from __future__ import annotations

from gentool.data.datasets import ImageDataset, check_split
from gentool.data.download import dataset_dir, fetch
from gentool.data.idx import DIGIT_NAMES, FASHION_NAMES, find_idx_file, load_idx_dir

_PREFIX = {"train": "train", "test": "t10k"}


def _load(
    name: str, class_names: list[str], split: str, image_size: int | None, channels: int | None
) -> ImageDataset:
    split = check_split(split)
    folder = dataset_dir(name)
    needed: list[str] = []
    for part in ("train", "test") if split == "all" else (split,):
        for what, idx in (("images", "idx3"), ("labels", "idx1")):
            # a file the user put there (raw or gzip) counts; otherwise fetch the .gz
            if find_idx_file(folder, _PREFIX[part], what) is None:
                needed.append(f"{_PREFIX[part]}-{what}-{idx}-ubyte.gz")
    if needed:
        fetch(name, needed, "the four IDX files")
    return load_idx_dir(
        folder, split, name=name, class_names=class_names, image_size=image_size, channels=channels
    )


def load_mnist(split: str = "train", image_size: int | None = None, channels: int | None = None) -> ImageDataset:
    """MNIST digits, 28x28 grey: 60,000 train / 10,000 test, labels 0-9."""
    return _load("mnist", DIGIT_NAMES, split, image_size, channels)


def load_fashion_mnist(
    split: str = "train", image_size: int | None = None, channels: int | None = None
) -> ImageDataset:
    """Fashion-MNIST clothing images, 28x28 grey: 60,000 train / 10,000 test, 10 classes."""
    return _load("fashion-mnist", FASHION_NAMES, split, image_size, channels)
