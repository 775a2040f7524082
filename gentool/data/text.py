"""Plain UTF-8 text files as a :class:`TextDataset` (for the character-level text models)."""

from __future__ import annotations

from pathlib import Path

from gentool.data.datasets import TextDataset
from gentool.errors import DataError

TEXT_EXTENSIONS = frozenset({".txt", ".md"})


#: Share of a text file held out as its ``test`` split (the last part of the file, as nanoGPT does).
TEST_FRACTION = 0.1


def load_text(path: str | Path, split: str = "all", *, name: str | None = None) -> TextDataset:
    """Read ``path`` as UTF-8 (a leading BOM is dropped); empty or undecodable -> DataError.

    ``split``: ``train`` is the first 90 % of the characters, ``test`` the last 10 %, ``all``
    the whole file.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read text file {path}: {exc.strerror or exc}") from exc
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(
            f"cannot read text file {path}: not UTF-8 (bad byte at offset {exc.start}); re-save it as UTF-8"
        ) from exc
    text = text.removeprefix("\ufeff")
    if not text.strip():
        raise DataError(f"text file {path} is empty")
    cut = int(len(text) * (1 - TEST_FRACTION))
    if split == "train":
        text = text[:cut]
    elif split == "test":
        text = text[cut:]
        if not text.strip():
            raise DataError(f"text file {path} is too short to hold out a test split")
    elif split != "all":
        raise DataError(f"unknown split {split!r} for text file {path}: use train, test or all")
    return TextDataset(text=text, name=name or str(path))
