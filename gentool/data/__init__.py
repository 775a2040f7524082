"""Data for gentool's models: named sets, IDX, image folders, ``.npz`` and text, one API.

Call :func:`load_dataset` with a name ("digits", "mnist", "fashion-mnist", "cifar10", or one a
plugin registers) or a path; get an :class:`ImageDataset` (uint8 ``[N, C, H, W]`` + labels)
or a :class:`TextDataset`. Problems a user can cause raise :class:`gentool.errors.DataError`
with one line naming the file or folder.
"""

from __future__ import annotations

from gentool.data.datasets import SPLITS, DatasetSpec, ImageDataset, TextDataset
from gentool.data.registry import BUILTIN_DATASETS, load_dataset

__all__ = [
    "BUILTIN_DATASETS",
    "SPLITS",
    "DatasetSpec",
    "ImageDataset",
    "TextDataset",
    "load_dataset",
]
