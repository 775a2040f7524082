"""Errors a user can cause. The CLI prints them as one line and exits non-zero."""

from __future__ import annotations


class GentoolError(Exception):
    """An error with a message meant for the user (no traceback unless --debug)."""

    exit_code: int = 1


class DataError(GentoolError):
    """Bad or missing data: the message names the file or folder at fault."""


class MissingSplitError(DataError):
    """The data has no such split (a folder without ``test/``, an IDX folder without ``t10k-*``)."""


class CheckpointError(GentoolError):
    """A file that is not a usable gentool checkpoint for the request."""


class ConfigError(GentoolError):
    """A bad option, --set key or config file value."""


class PluginError(GentoolError):
    """A plugin that is missing, failed to load, or broke its contract."""
