"""How a plugin registers a named data set: :class:`DatasetSpec`, torch-free.

It lives with the data (the loaders read it) and is handed on by :mod:`gentool.api` with the other
records a hook returns, so ``from gentool import DatasetSpec`` and ``from gentool.api import
DatasetSpec`` name this one class.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    from gentool.data.datasets import ImageDataset, TextDataset


@dataclass(frozen=True)
class DatasetSpec:
    """A named data set as a plugin registers it.

    ``loader`` is called as ``loader(split=..., image_size=..., channels=...)`` and returns an
    :class:`ImageDataset` or :class:`TextDataset`; ``kind`` is ``"image"`` or ``"text"``.
    """

    name: str
    summary: str
    loader: Callable[..., "ImageDataset | TextDataset"]
    kind: str = "image"
