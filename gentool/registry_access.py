"""The process-wide plugin registry, as the modules below :mod:`gentool.plugins` reach it.

:mod:`gentool.plugins` builds the registry from the hook contract and the records hooks return
(``api``, ``chat``, ``tools``, ``data``), so those modules may not import it: a plugin's data set,
chat backend or tool is looked up through :func:`get_registry` here instead. The package's
``__init__`` (which runs before any of gentool's modules) provides the builder, so the registry is
loaded on first use whichever module asks first. This module imports nothing of gentool.
"""

from __future__ import annotations

from typing import Any, Callable

_builder: Callable[[], Any] | None = None


def provide(builder: Callable[[], Any]) -> None:
    """Name the function that returns the process-wide registry (``gentool.plugins.get_registry``)."""
    global _builder
    _builder = builder


def get_registry() -> Any:
    """The process-wide :class:`gentool.plugins.Registry`, loading entry-point plugins on first use."""
    if _builder is None:
        raise RuntimeError("gentool's plugin registry has no builder: import gentool first")
    return _builder()
