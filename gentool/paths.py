"""Where gentool keeps things: the runs folder and the cache (both overridable by env)."""

from __future__ import annotations

import os
from pathlib import Path


def runs_dir() -> Path:
    """The runs folder: ``$GENTOOL_RUNS`` or ``./runs`` (like ``yolo``'s ``runs/``)."""
    return Path(os.environ.get("GENTOOL_RUNS", "runs"))


def cache_dir() -> Path:
    """Cache for downloaded data sets, feature extractors and hub pulls.

    ``$GENTOOL_CACHE``, else ``$XDG_CACHE_HOME/gentool``, else ``~/.cache/gentool``.
    """
    if "GENTOOL_CACHE" in os.environ:
        return Path(os.environ["GENTOOL_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "gentool"
