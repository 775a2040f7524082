"""gentool: one command-line tool for deep generative models, extended by plugins.

This module stays light (no torch) so that ``gentool --help`` is instant. Plugin authors
import :data:`hookimpl` from here and everything else from :mod:`gentool.api`.
"""

from __future__ import annotations

import pluggy

__version__ = "0.1.0"

#: Marker for hook implementations in plugins: ``@gentool.hookimpl``.
hookimpl = pluggy.HookimplMarker("gentool")

__all__ = ["__version__", "hookimpl"]
