"""Typed model configs: dataclasses whose fields become command-line options.

A plugin declares its model's options as a dataclass; each field's type, default and
``metadata={"help": "..."}`` are all the core needs to show them in ``gentool train MODEL --help``,
read them from a TOML file and parse ``--set key=value``. Supported field types: ``int``,
``float``, ``bool``, ``str``, ``Literal[...]`` (choices), ``tuple[int, ...]`` / ``list[float]``
and the like (comma-separated on the command line), and ``X | None``.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass
from typing import Any, Literal, Mapping

from gentool.errors import ConfigError

_TRUE = {"1", "true", "yes", "on", "y"}
_FALSE = {"0", "false", "no", "off", "n"}


@dataclass(frozen=True)
class FieldInfo:
    """One option of a model config, as shown to users."""

    name: str
    type: Any
    default: Any
    help: str

    @property
    def type_name(self) -> str:
        """A short human name for the type: ``int``, ``float``, ``a|b|c``, ``int,int,...``."""
        return _type_name(self.type)


def _strip_optional(tp: Any) -> tuple[Any, bool]:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(tp)) == 2:
            return args[0], True
    return tp, False


def _type_name(tp: Any) -> str:
    tp, optional = _strip_optional(tp)
    origin = typing.get_origin(tp)
    if origin is Literal:
        name = "|".join(str(a) for a in typing.get_args(tp))
    elif origin in (tuple, list):
        args = [a for a in typing.get_args(tp) if a is not Ellipsis] or [str]
        name = f"{_type_name(args[0])},..."
    else:
        name = getattr(tp, "__name__", str(tp))
    return f"{name} or none" if optional else name


def fields_of(config_cls: type) -> list[FieldInfo]:
    """The options of a config dataclass, with resolved types, defaults and help text."""
    if not dataclasses.is_dataclass(config_cls):
        raise TypeError(f"{config_cls!r} is not a dataclass")
    hints = typing.get_type_hints(config_cls, include_extras=False)
    out = []
    for f in dataclasses.fields(config_cls):
        if not f.init:
            continue
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
            default = f.default_factory()  # type: ignore[misc]
        else:
            default = dataclasses.MISSING
        out.append(FieldInfo(f.name, hints.get(f.name, str), default, f.metadata.get("help", "")))
    return out


def parse_value(tp: Any, raw: Any, *, key: str = "value") -> Any:
    """Convert ``raw`` (a string from the command line, or a TOML value) to type ``tp``."""
    inner, optional = _strip_optional(tp)
    if optional and (raw is None or (isinstance(raw, str) and raw.strip().lower() in {"none", "null", ""})):
        return None
    tp = inner
    origin = typing.get_origin(tp)
    try:
        if origin is Literal:
            choices = typing.get_args(tp)
            for choice in choices:
                if raw == choice or str(raw).strip().lower() == str(choice).lower():
                    return choice
            raise ValueError(f"must be one of {', '.join(map(str, choices))}")
        if origin in (tuple, list):
            args = [a for a in typing.get_args(tp) if a is not Ellipsis] or [str]
            items = raw if isinstance(raw, (list, tuple)) else [s for s in str(raw).split(",") if s.strip()]
            values = [parse_value(args[0], item, key=key) for item in items]
            return tuple(values) if origin is tuple else values
        if tp is bool:
            if isinstance(raw, bool):
                return raw
            text = str(raw).strip().lower()
            if text in _TRUE:
                return True
            if text in _FALSE:
                return False
            raise ValueError("must be true or false")
        if tp is int:
            if isinstance(raw, bool) or (isinstance(raw, float) and not raw.is_integer()):
                raise ValueError("must be an integer")
            return int(str(raw).strip().replace("_", "")) if isinstance(raw, str) else int(raw)
        if tp is float:
            if isinstance(raw, bool):
                raise ValueError("must be a number")
            return float(raw)
        if tp is str:
            return str(raw)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"bad value {raw!r} for {key} ({_type_name(tp)}): {exc}") from None
    raise ConfigError(f"option {key} has a type gentool cannot parse: {tp!r}")


def parse_set_options(pairs: list[str] | None) -> dict[str, str]:
    """Split ``--set key=value`` strings into a dict (later keys win)."""
    out: dict[str, str] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set expects key=value, got {pair!r}")
        out[key.strip().replace("-", "_")] = value.strip()
    return out


def parse_extra_args(args: list[str] | None) -> dict[str, str]:
    """Model-specific flags passed through the core's commands: ``--label 3``, ``--label=3``,
    ``--interpolate`` (a bare flag means ``"true"``). Keys use underscores."""
    out: dict[str, str] = {}
    items = list(args or [])
    i = 0
    while i < len(items):
        arg = items[i]
        if not arg.startswith("--") or len(arg) == 2:
            raise ConfigError(f"unexpected argument {arg!r}: model-specific options look like --name value")
        key, sep, value = arg[2:].partition("=")
        if not sep:
            if i + 1 < len(items) and not items[i + 1].startswith("--"):
                value = items[i + 1]
                i += 1
            else:
                value = "true"
        out[key.replace("-", "_")] = value
        i += 1
    return out


def flag_value(options: Mapping[str, Any], key: str, tp: Any, default: Any, *, minimum: float | None = None) -> Any:
    """A model flag from ``job.options`` (``--key VALUE`` on sample/evaluate) as type ``tp``.

    ``default`` when absent; otherwise converted like a config field (a bare ``--flag`` is
    ``"true"``), and a bad value or one below ``minimum`` is a one-line ConfigError naming the flag.
    """
    if key not in options:
        return default
    flag = "--" + key.replace("_", "-")
    value = parse_value(tp, options[key], key=flag)
    if minimum is not None and value is not None and value < minimum:
        raise ConfigError(f"{flag} must be at least {minimum}, got {value}")
    return value


def unknown_key_error(key: str, known: list[str], where: str) -> ConfigError:
    """A ConfigError for an unknown option, with the closest known names."""
    close = difflib.get_close_matches(key, known, n=3)
    hint = f"; did you mean {' or '.join(close)}?" if close else (f"; known: {', '.join(known)}" if known else "")
    return ConfigError(f"unknown {where} option {key!r}{hint}")


def build_config(config_cls: type | None, values: Mapping[str, Any] | None = None, *, where: str = "model",
                 flags: bool = False) -> Any:
    """Make a config instance from defaults overridden by ``values`` (strings or typed values).

    Unknown keys and bad values raise :class:`ConfigError`; so does a ``ValueError`` raised by
    the dataclass's own ``__post_init__`` validation. ``where`` names the options in messages
    ("model", "cgan sample"); ``flags`` shows keys as the flags users type (``--max-tokens``).
    """
    values = dict(values or {})

    def shown(key: str) -> str:
        return "--" + key.replace("_", "-") if flags else key

    if config_cls is None:
        if values:
            raise unknown_key_error(shown(next(iter(values))), [], where)
        return None
    infos = {f.name: f for f in fields_of(config_cls)}
    kwargs = {}
    for key, raw in values.items():
        if key not in infos:
            raise unknown_key_error(shown(key), sorted(shown(k) for k in infos), where)
        kwargs[key] = parse_value(infos[key].type, raw, key=shown(key))
    try:
        return config_cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"invalid {where} options: {exc}") from None


def config_to_dict(config: Any) -> dict[str, Any]:
    """A JSON- and TOML-able dict of a config instance (tuples become lists)."""
    if config is None:
        return {}

    def plain(v: Any) -> Any:
        if isinstance(v, (tuple, list)):
            return [plain(x) for x in v]
        return v

    return {f.name: plain(getattr(config, f.name)) for f in dataclasses.fields(config) if f.init}


def config_from_dict(config_cls: type | None, data: Mapping[str, Any]) -> Any:
    """Rebuild a config saved by :func:`config_to_dict` (e.g. from a checkpoint).

    Keys the class no longer has are refused; fields added since take their defaults.
    """
    return build_config(config_cls, {k: v for k, v in data.items()})
