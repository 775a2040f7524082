"""The in-memory data set types every model trains on, and the record a plugin registers.

Whatever the source (a named set, an IDX folder, an image folder, a ``.npz``), loading ends in
one of two plain containers: :class:`ImageDataset` (a uint8 tensor ``[N, C, H, W]`` plus optional
labels) or :class:`TextDataset` (a string). Models then need to know nothing about file formats.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Union

import numpy as np
import torch

from gentool.errors import DataError

#: The split names :func:`gentool.data.load_dataset` understands.
SPLITS = ("train", "test", "all")


def check_split(split: str) -> str:
    """Return ``split`` lower-cased, or raise :class:`DataError` for an unknown one."""
    s = str(split).strip().lower()
    if s not in SPLITS:
        raise DataError(f"unknown split {split!r}: use one of {', '.join(SPLITS)}")
    return s


@dataclass(eq=False, repr=False)
class ImageDataset:
    """Images as one uint8 tensor ``[N, C, H, W]`` (C is 1 or 3), with optional int64 labels.

    Kept as uint8 so that a 60,000-image set costs 47 MB rather than 188 MB; models call
    :meth:`as_float` (or convert per batch) when they need floats. (``eq=False``: comparing
    tensors field by field has no single truth value; ``repr`` is a one-line summary.)
    """

    images: torch.Tensor
    labels: torch.Tensor | None
    class_names: list[str] | None
    name: str

    def __post_init__(self) -> None:
        if not isinstance(self.images, torch.Tensor):
            self.images = torch.as_tensor(np.asarray(self.images))
        if self.images.dtype != torch.uint8 or self.images.dim() != 4:
            raise ValueError(
                f"ImageDataset.images must be a uint8 tensor [N, C, H, W], got "
                f"{self.images.dtype} of shape {list(self.images.shape)}"
            )
        if self.images.shape[1] not in (1, 3):
            raise ValueError(f"ImageDataset.images must have 1 or 3 channels, got {self.images.shape[1]}")
        if self.labels is not None:
            labels = torch.as_tensor(self.labels)
            if labels.dtype.is_floating_point or labels.dtype == torch.bool or labels.dim() != 1:
                raise ValueError("ImageDataset.labels must be a 1-D integer tensor")
            if labels.shape[0] != self.images.shape[0]:
                raise ValueError(
                    f"ImageDataset has {self.images.shape[0]} images but {labels.shape[0]} labels"
                )
            self.labels = labels.to(torch.int64)
        if self.class_names is not None:
            self.class_names = [str(c) for c in self.class_names]

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def __repr__(self) -> str:
        return (
            f"ImageDataset(name={self.name!r}, count={len(self)}, shape={self.shape}, "
            f"num_classes={self.num_classes})"
        )

    @property
    def shape(self) -> tuple[int, int, int]:
        """One image's shape ``(C, H, W)``."""
        c, h, w = self.images.shape[1:]
        return int(c), int(h), int(w)

    @property
    def num_classes(self) -> int | None:
        """Number of classes: from ``class_names``, else ``max(label) + 1``, else None."""
        if self.class_names is not None:
            return len(self.class_names)
        if self.labels is not None and len(self.labels) > 0:
            return int(self.labels.max()) + 1
        return None

    def as_float(self) -> torch.Tensor:
        """The images as float32 in ``[0, 1]`` (a new tensor)."""
        return self.images.to(torch.float32).div_(255.0)

    def info(self) -> dict[str, Any]:
        """A JSON-able summary, e.g. for ``gentool data info --json`` and run metadata."""
        return {
            "name": self.name,
            "kind": "image",
            "shape": list(self.shape),
            "count": len(self),
            "num_classes": self.num_classes,
            "class_names": list(self.class_names) if self.class_names is not None else None,
        }

    def subset(self, indices: Any) -> "ImageDataset":
        """The images (and labels) at ``indices``: a slice, a bool mask or a sequence of ints."""
        if isinstance(indices, slice):
            idx: Any = indices
        else:
            idx = torch.as_tensor(np.asarray(indices) if not isinstance(indices, torch.Tensor) else indices)
            if idx.dtype != torch.bool:
                idx = idx.to(torch.int64).reshape(-1)
        return ImageDataset(
            images=self.images[idx],
            labels=self.labels[idx] if self.labels is not None else None,
            class_names=list(self.class_names) if self.class_names is not None else None,
            name=self.name,
        )


@dataclass(repr=False)
class TextDataset:
    """A text corpus as one string (character-level models tokenize it themselves)."""

    text: str
    name: str

    def __len__(self) -> int:
        return len(self.text)

    def __repr__(self) -> str:
        return f"TextDataset(name={self.name!r}, chars={len(self.text)})"

    def info(self) -> dict[str, Any]:
        """A JSON-able summary: length in characters and number of distinct characters."""
        return {
            "name": self.name,
            "kind": "text",
            "chars": len(self.text),
            "vocab_size": len(set(self.text)),
        }
