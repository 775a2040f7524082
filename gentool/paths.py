"""Where gentool keeps things: the runs folder, the cache and its feature extractors (each overridable by env)."""

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


def extractors_dir() -> Path:
    """Trained gentool-cnn feature extractors: ``$GENTOOL_EXTRACTORS``, else ``cache_dir()/extractors``.

    A folder of its own lets several caches (a test suite's many, or a team's machines) share
    extractors that take a minute or more to train; they are keyed by the data's fingerprint.
    """
    if os.environ.get("GENTOOL_EXTRACTORS"):
        return Path(os.environ["GENTOOL_EXTRACTORS"])
    return cache_dir() / "extractors"
