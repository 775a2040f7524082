"""JSON's own types for a dataclass's options (a tool's, a model's sample options) sent over HTTP.

The command line hands options over as text, which :func:`gentool.config.build_config` converts
(``"yes"`` is true, ``"1e9"`` a whole number). A JSON client states the type itself, so the server
takes a value only in its own type: ``true`` is no number, ``"yes"`` no boolean, ``1e9`` or ``1.5``
no integer, ``false`` no string (a whole number may stand for a string: a class label's id).
Anything else is a 400 naming the field, before anything runs.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from typing import Any, Literal, Mapping

from gentool.serve.errors import bad_request


def _expected(tp: Any, value: Any) -> str | None:
    """What ``value`` should have been for type ``tp`` (None when it is fine, or the type is not checked)."""
    args = typing.get_args(tp)
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        problems = [_expected(a, value) for a in inner]
        return None if any(p is None for p in problems) else " or ".join(p for p in problems if p)
    if origin is Literal:
        return None if any(value == c and type(value) is type(c) for c in args) else \
            "one of " + ", ".join(json.dumps(c) for c in args)
    if origin in (list, tuple):
        if not isinstance(value, list):
            return "a JSON array"
        item = [a for a in args if a is not Ellipsis]
        bad = [p for p in (_expected(item[0], v) for v in value) if p] if item else []
        return f"an array of {bad[0]}" if bad else None
    if tp is bool:
        return None if isinstance(value, bool) else "true or false"
    if tp is int:
        return None if isinstance(value, int) and not isinstance(value, bool) else "a whole number (no fraction)"
    if tp is float:
        return None if isinstance(value, (int, float)) and not isinstance(value, bool) else "a number"
    if tp is str:  # a whole number too: a class label may be its id ({"label": 3})
        return None if isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool)) \
            else "a string"
    return None


def check_json_options(cls: Any, values: Mapping[str, Any], param: str = "options") -> None:
    """Refuse (400, naming the field) a value of ``values`` whose JSON type is not its field's type in
    the dataclass ``cls``. Unknown keys and ranges are left to ``build_config``."""
    if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
        return
    hints = typing.get_type_hints(cls)
    for key, value in values.items():
        tp = hints.get(str(key).replace("-", "_"))
        if tp is None:
            continue
        want = _expected(tp, value)
        if want is not None:
            shown = json.dumps(value)[:60] if isinstance(value, (int, float, str, bool, type(None))) else type(value).__name__
            raise bad_request(f"{param}.{key} must be {want}, got {shown}", param=param)
