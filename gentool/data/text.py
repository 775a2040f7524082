"""Plain UTF-8 text files as a :class:`TextDataset` (for the character-level text models)."""

from __future__ import annotations

from pathlib import Path

from gentool.data.datasets import TextDataset
from gentool.errors import DataError

TEXT_EXTENSIONS = frozenset({".txt", ".md"})


def load_text(path: str | Path, *, name: str | None = None) -> TextDataset:
    """Read ``path`` as UTF-8 (a leading BOM is dropped); empty or undecodable -> DataError."""
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
    return TextDataset(text=text, name=name or str(path))
