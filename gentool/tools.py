"""Tools: what a plugin does to files a user gives (detect, upscale, translate), framework-free.

A plugin registers its tools through the ``gentool_register_tools`` hook::

    @gentool.hookimpl
    def gentool_register_tools(register):
        register(gentool.Tool("detect", "probability each image is generated", run=run_detect,
                              options=DetectOptions))

``run(files, options)`` takes ``[(filename, bytes), ...]`` and an instance of the ``options``
dataclass (parsed and checked by the core), and returns one :class:`ToolAnswer` per file, in order.
A file it cannot handle gets an answer with ``error`` (one line) and the others are still answered.
``gentool serve`` publishes each tool as ``POST /v1/tools/NAME`` and a panel of its page; nothing
here knows about HTTP. :func:`find_files` is the one rule by which the verbs behind the tools
(``gentool detect``, ``upscale``, ``translate``) pick the files of the folders they are given.
No torch at import time.
"""

from __future__ import annotations

import dataclasses
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from gentool.errors import ConfigError, GentoolError, PluginError


@dataclass
class ToolAnswer:
    """A tool's answer for one file: JSON-able ``fields``, an optional PNG, or a one-line ``error``."""

    file: str
    fields: dict[str, Any] = field(default_factory=dict)
    png: bytes | None = None
    error: str | None = None


@dataclass
class Tool:
    """A tool a plugin offers (see the module docstring)."""

    name: str
    summary: str
    run: Callable[[list[tuple[str, bytes]], Any], list[ToolAnswer]]
    #: A dataclass of the tool's options (fields with defaults and ``metadata={"help": ...}``), or None.
    options: type | None = None
    #: Set by the core: the plugin that registered the tool.
    plugin: str = ""
    #: The model whose checkpoints the tool's ``checkpoint`` option names (``"srgan"`` for upscale):
    #: ``gentool serve`` then looks a bare run name up among that model's runs, and finds the newest
    #: run of it itself when no checkpoint is given (None: the tool's plugin does).
    model: str | None = None

    def parse_options(self, values: Mapping[str, Any] | None) -> Any:
        """``values`` checked and typed into the options dataclass (a one-line ConfigError if bad)."""
        from gentool.config import build_config

        values = dict(values or {})
        if self.options is None:
            if values:
                raise ConfigError(f"tool {self.name} takes no options, got {', '.join(sorted(values))}")
            return None
        return build_config(self.options, values, where=f"tool {self.name}")

    def __call__(self, files: list[tuple[str, bytes]], options: Mapping[str, Any] | None = None) -> list[ToolAnswer]:
        """Run the tool on ``files`` with ``options`` (a dict); check that the plugin kept the contract."""
        if isinstance(files, (str, bytes)) or not isinstance(files, (list, tuple)) or not all(
                isinstance(f, tuple) and len(f) == 2 and isinstance(f[0], str) and isinstance(f[1], bytes)
                for f in files):
            raise ConfigError(f"tool {self.name} takes files as a list of (filename, bytes) pairs, got "
                              f"{type(files).__name__}")
        if options is not None and not isinstance(options, Mapping):
            raise ConfigError(f"tool {self.name} takes options as a dict, got {type(options).__name__}")
        answers = self.run(list(files), self.parse_options(options))
        if not isinstance(answers, list) or len(answers) != len(files) or not all(
                isinstance(a, ToolAnswer) for a in answers):
            raise PluginError(f"plugin {self.plugin!r} broke the tool contract for {self.name!r}: run must return "
                              f"one gentool.ToolAnswer per file ({len(files)}), got {type(answers).__name__}")
        return answers


#: What tools keep loaded between calls: (checkpoint file, its mtime, the caller's key) -> object.
_LOADED: "dict[tuple, Any]" = {}
#: Loaded objects kept at most (the oldest is dropped first).
KEEP_LOADED = 3
#: Guards ``_LOADED``: the server runs different tools in different threads at once.
_LOADED_LOCK = threading.Lock()


def keep_loaded(path: str | Path, make: Callable[[str], Any], *key: Any) -> Any:
    """``make(path)``, loaded once per version of the file and ``key`` (a tool's options that shape
    what is loaded) and kept for the next call: a tool's run is called per request, its model should
    load once. A rewritten file (new mtime) is loaded afresh; at most :data:`KEEP_LOADED` are kept."""
    p = Path(path).resolve()
    k = (str(p), p.stat().st_mtime, key)
    with _LOADED_LOCK:
        if k not in _LOADED:
            if len(_LOADED) >= KEEP_LOADED:
                _LOADED.pop(next(iter(_LOADED)))
            _LOADED[k] = make(str(p))
        return _LOADED[k]


def hidden(name: str) -> bool:
    """A hidden entry of a folder (``.name``: ``.DS_Store``, ``._photo.jpg``, ``.git/``), which folder
    walks skip."""
    return name.startswith(".")


def find_files(items: "list[str | Path]", suffixes: "set[str] | frozenset[str]") -> list[Path]:
    """The files a verb works on, one rule for every verb (``gentool detect``, ``upscale``,
    ``translate``): a file named is always taken, whatever its name (the verb says if it cannot
    read it); a folder named is searched recursively for files whose suffix is in ``suffixes``
    (lower case, with the dot), hidden files and folders skipped and linked folders not entered,
    in sorted order. Items keep their order."""
    import os

    if isinstance(items, (str, os.PathLike)):  # one file or folder, not its characters
        items = [items]
    found: list[Path] = []
    for item in items:
        p = Path(item)
        if not p.is_dir():
            found.append(p)
            continue
        inner: list[Path] = []
        for base, dirs, files in os.walk(p):  # followlinks=False: a linked folder is not entered
            dirs[:] = [d for d in dirs if not hidden(d)]
            inner += [Path(base) / f for f in files
                      if not hidden(f) and Path(f).suffix.lower() in suffixes and (Path(base) / f).is_file()]
        found += sorted(inner, key=lambda f: f.relative_to(p).parts)
    return found


def list_tools() -> dict[str, Tool]:
    """Every tool of every loaded plugin, by name (a name taken twice: the first plugin's; a plugin
    whose hook raises is noted in ``gentool plugins`` and skipped)."""
    from gentool.registry_access import get_registry

    reg = get_registry()
    found: dict[str, Tool] = {}
    for impl in reg.pm.hook.gentool_register_tools.get_hookimpls():
        got: list[Any] = []
        info = reg.plugins.get(impl.plugin_name)
        try:
            impl.function(register=got.append)
        except Exception as exc:
            if info is not None:
                info.problems.append(f"raised while registering tools: {type(exc).__name__}: {exc}")
            continue
        for tool in got:
            if not isinstance(tool, Tool) or not tool.name or tool.name in found:
                if info is not None:
                    info.problems.append(f"tool {getattr(tool, 'name', tool)!r} is not a gentool.Tool or is "
                                         "already registered: ignored")
                continue
            found[tool.name] = dataclasses.replace(tool, plugin=impl.plugin_name)
    return found


def get_tool(name: str) -> Tool:
    """The tool ``name``, or a one-line error naming the tools there are."""
    known = list_tools()
    if name not in known:
        raise GentoolError(f"no tool {name!r}" + (f"; tools: {', '.join(sorted(known))}" if known
                                                  else ": no installed plugin registers tools"))
    return known[name]


__all__ = ["Tool", "ToolAnswer", "find_files", "get_tool", "keep_loaded", "list_tools"]
