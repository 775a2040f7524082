"""The reporting channel: how the core and plugins tell people what is happening.

Plugins call :func:`gentool.say` for progress a person wants to see ("training the feature
extractor once, then cached") and :func:`gentool.warn` for something that may be wrong ("this CPU
has no bfloat16 instructions"), instead of printing. The core decides where it goes:

- ``say``: printed on standard error (standard output stays for data: ``--json``, listings),
  except under ``--quiet`` (``quiet=True`` in the Python API) and on every process but the main
  one under torchrun;
- ``warn``: a :class:`GentoolWarning` through Python's :mod:`warnings`, so the CLI prints it as
  one ``warning:`` line on standard error and Python users can filter or record it like any other
  warning. Every warning is also kept on the current :class:`Report`, which the Python API returns
  with its result (``run.warnings``, ``evaluation.warnings``).

Torch-free: imported by plugins' entry-point modules too.
"""

from __future__ import annotations

import contextlib
import contextvars
import sys
import warnings
from dataclasses import dataclass, field
from typing import Iterator


class GentoolWarning(UserWarning):
    """A warning from gentool or one of its plugins, meant for the user."""


@dataclass
class Report:
    """What one verb (train, sample, evaluate) said: its messages and warnings, in order."""

    quiet: bool = False
    main: bool = True
    messages: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


_current: contextvars.ContextVar[Report | None] = contextvars.ContextVar("gentool_report", default=None)


@contextlib.contextmanager
def reporting(*, quiet: bool = False, main: bool = True) -> Iterator[Report]:
    """Collect what is said inside the block into a fresh :class:`Report` (and print as configured).

    A block inside another (a plugin sampling another plugin's model while it trains) is at least
    as quiet as the enclosing one, and its warnings are passed up to it.
    """
    parent = _current.get()
    if parent is not None:
        quiet, main = quiet or parent.quiet, main and parent.main
    report = Report(quiet=quiet, main=main)
    token = _current.set(report)
    try:
        yield report
    finally:
        _current.reset(token)
        if parent is not None:
            parent.messages.extend(report.messages)
            parent.warnings.extend(w for w in report.warnings if w not in parent.warnings)


def current() -> Report | None:
    """The report of the verb now running, if any."""
    return _current.get()


def say(message: str) -> None:
    """Tell the user what is happening (stderr; silent under ``--quiet`` and off the main process)."""
    report = _current.get()
    if report is not None:
        report.messages.append(str(message))
        if report.quiet or not report.main:
            return
    print(str(message), file=sys.stderr, flush=True)


def warn(message: str) -> None:
    """Warn the user: a :class:`GentoolWarning` (the CLI prints each as one ``warning:`` line)."""
    report = _current.get()
    if report is not None:
        if str(message) in report.warnings:
            return
        report.warnings.append(str(message))
        if not report.main:
            return
    warnings.warn(str(message), GentoolWarning, stacklevel=2)
