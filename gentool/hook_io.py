"""What goes into the sample and evaluate hooks and what comes out, checked at the border.

In: a model's own options of ``gentool sample`` / ``gentool evaluate`` (``ModelSpec.sample_options``
and ``evaluate_options``), parsed into the dataclass it declares (or, for the older dict form,
strings) before the hook runs. Out: the hook's ``SampleResult`` or ``EvaluateResult`` (or a gentool
0.1 flat dict), checked, so that a plugin that broke the contract is named in one line.
"""

from __future__ import annotations

import dataclasses
import numbers
from typing import TYPE_CHECKING, Any, Mapping

from gentool.errors import PluginError

if TYPE_CHECKING:
    from gentool.api import ModelSpec


def _flag(key: str) -> str:
    return "--" + key.replace("_", "-")


def _as_flag_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return ",".join(map(str, value))
    return str(value)


def declared_options(spec: "ModelSpec", verb: str) -> Any:
    """What ``spec`` declares for ``verb`` (``sample`` or ``evaluate``): a dataclass, a dict, or None."""
    return spec.sample_options if verb == "sample" else spec.evaluate_options


def verb_options(spec: "ModelSpec", verb: str, values: Mapping[str, Any]) -> Any:
    """Parse the model-specific options of ``verb``: a dataclass instance when the model declares
    a dataclass; else the values as strings (checked against a declared dict of flag names)."""
    from gentool.config import build_config, unknown_key_error

    declared = declared_options(spec, verb)
    values = {str(k).replace("-", "_"): v for k, v in values.items()}
    if isinstance(declared, type) and dataclasses.is_dataclass(declared):
        return build_config(declared, values, where=f"{spec.name} {verb}", flags=True)
    text = {k: _as_flag_text(v) for k, v in values.items()}
    if isinstance(declared, Mapping):
        for key in text:
            if key not in declared:
                raise unknown_key_error(_flag(key), sorted(_flag(k) for k in declared), f"{spec.name} {verb}")
    return text


def _check_sample_result(result: Any, spec: "ModelSpec", expected: type) -> None:
    """A clear PluginError, naming the plugin, for a sample hook that broke its contract."""
    import torch

    def broke(what: str) -> PluginError:
        return PluginError(f"plugin {spec.plugin!r} broke the sample contract for model {spec.name!r}: {what}")

    if not isinstance(result, expected):
        raise broke(f"gentool_sample returned {type(result).__name__}; expected gentool.SampleResult(images=...) "
                    "or SampleResult(texts=[...])")
    if result.images is None and result.texts is None:
        raise broke("the SampleResult holds neither images nor texts")
    if result.images is not None:
        x = result.images
        if not isinstance(x, torch.Tensor) or x.dim() != 4 or x.shape[1] not in (1, 3) or not x.is_floating_point():
            got = f"{type(x).__name__} {tuple(x.shape)} {x.dtype}" if isinstance(x, torch.Tensor) else type(x).__name__
            raise broke(f"images must be a float tensor [N, C, H, W] with C 1 or 3, in [0, 1]; got {got}")
        if result.labels is not None and (not isinstance(result.labels, torch.Tensor)
                                          or result.labels.shape[:1] != x.shape[:1]):
            raise broke("labels must be a tensor with one label per image")
    if result.texts is not None and (not isinstance(result.texts, list)
                                     or not all(isinstance(t, str) for t in result.texts)):
        raise broke("texts must be a list of strings")


def evaluation_result(raw: Any, spec: "ModelSpec") -> Any:
    """An :class:`~gentool.api.EvaluateResult` from what ``gentool_evaluate`` returned.

    A plugin written for gentool 0.1 returns a flat dict: its numbers become metrics, its strings
    settings, and its ``"warning"`` string a warning. Anything else (a tensor, nested data) is a
    PluginError that names the plugin, the key and what was expected.
    """
    from gentool.api import EvaluateResult

    def broke(what: str) -> PluginError:
        return PluginError(f"plugin {spec.plugin!r} broke the evaluate contract for model {spec.name!r}: {what}")

    if isinstance(raw, EvaluateResult):
        metrics, settings, warnings = dict(raw.metrics), dict(raw.settings), list(raw.warnings)
    elif isinstance(raw, Mapping):
        metrics, settings, warnings = {}, {}, []
        for key, value in raw.items():
            if key == "warning" and isinstance(value, str):
                warnings.append(value)
            elif isinstance(value, str):
                settings[str(key)] = value
            else:
                metrics[str(key)] = value
    else:
        raise broke(f"gentool_evaluate returned {type(raw).__name__}; expected gentool.EvaluateResult "
                    "(or a flat dict of metric name to number)")
    clean: dict[str, Any] = {}
    for key, value in metrics.items():
        if value is None or isinstance(value, bool):
            clean[key] = value
        elif isinstance(value, numbers.Integral):
            clean[key] = int(value)
        elif isinstance(value, numbers.Real):
            clean[key] = float(value)
        else:
            raise broke(f"metric {key!r} is a {type(value).__name__}; a metric must be a number, a bool or None "
                        "(give a tensor as float(t); put text in settings)")
    for key, value in settings.items():
        if not isinstance(value, str):
            raise broke(f"setting {key!r} is a {type(value).__name__}; settings are strings")
    if not all(isinstance(w, str) for w in warnings):
        raise broke("warnings must be strings")
    return EvaluateResult(metrics=clean, settings=settings, warnings=warnings)
