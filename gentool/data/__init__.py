"""Data for gentool's models: named sets, IDX, image folders, ``.npz`` and text, one API.

Call :func:`load_dataset` with a name ("digits", "mnist", "fashion-mnist", "cifar10", or one a
plugin registers) or a path; get an :class:`ImageDataset` (uint8 ``[N, C, H, W]`` + labels)
or a :class:`TextDataset`. Problems a user can cause raise :class:`gentool.errors.DataError`
with one line naming the file or folder.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from gentool.data.spec import DatasetSpec

if TYPE_CHECKING:
    from gentool.data.checks import check_trainable
    from gentool.data.datasets import SPLITS, ImageDataset, TextDataset
    from gentool.data.registry import BUILTIN_DATASETS, load_dataset

_LAZY = {"SPLITS": "datasets", "ImageDataset": "datasets", "TextDataset": "datasets",
         "BUILTIN_DATASETS": "registry", "load_dataset": "registry", "check_trainable": "checks"}


def __getattr__(name: str) -> Any:
    """Import the torch-backed parts on first use, so ``from gentool.data import DatasetSpec``
    (what a plugin's registration hook needs) stays free of torch and start-up stays fast."""
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(f"gentool.data.{_LAZY[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'gentool.data' has no attribute {name!r}")

__all__ = [
    "BUILTIN_DATASETS",
    "SPLITS",
    "DatasetSpec",
    "ImageDataset",
    "TextDataset",
    "check_trainable",
    "load_dataset",
]
