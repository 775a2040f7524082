"""Typed model configs: parsing, validation and round trips."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Optional

import pytest

from gentool.config import build_config, config_from_dict, config_to_dict, fields_of, parse_set_options
from gentool.errors import ConfigError


@dataclass
class Cfg:
    layers: tuple[int, ...] = field(default=(500, 1000), metadata={"help": "hidden sizes"})
    visible: Literal["bernoulli", "gaussian"] = "bernoulli"
    lr_decay: float = 0.5
    sparse: bool = False
    k: Optional[int] = None

    def __post_init__(self):
        if self.lr_decay <= 0:
            raise ValueError("lr_decay must be positive")


def test_parse_every_supported_type():
    cfg = build_config(Cfg, parse_set_options(["layers=10,20,30", "visible=Gaussian", "lr-decay=0.1",
                                               "sparse=yes", "k=5"]))
    assert cfg == Cfg(layers=(10, 20, 30), visible="gaussian", lr_decay=0.1, sparse=True, k=5)
    assert build_config(Cfg, {"k": "none"}).k is None
    assert build_config(Cfg, {"layers": [1, 2]}).layers == (1, 2)  # TOML arrays


@pytest.mark.parametrize("values, message", [
    ({"visible": "poisson"}, "must be one of bernoulli, gaussian"),
    ({"sparse": "maybe"}, "must be true or false"),
    ({"layers": "1,x"}, "bad value 'x'"),
    ({"lr_decay": "-1"}, "lr_decay must be positive"),
    ({"layer": "1"}, "did you mean layers"),
    ({"k": 1.5}, "must be an integer"),
])
def test_bad_values_are_refused_clearly(values, message):
    with pytest.raises(ConfigError, match=message):
        build_config(Cfg, values)


def test_round_trip_through_a_dict():
    cfg = Cfg(layers=(3,), k=2)
    assert config_from_dict(Cfg, config_to_dict(cfg)) == cfg
    assert config_to_dict(cfg)["layers"] == [3]


def test_fields_show_types_and_help():
    info = {f.name: f for f in fields_of(Cfg)}
    assert info["layers"].help == "hidden sizes" and info["layers"].type_name == "int,..."
    assert info["visible"].type_name == "bernoulli|gaussian"
    assert info["k"].type_name == "int or none"


def test_flag_value_converts_defaults_and_refuses_bad_values():
    from gentool.config import flag_value

    opts = {"probe": "false", "runs": "3", "bare": "true", "word": "maybe", "small": "1"}
    assert flag_value(opts, "probe", bool, True) is False
    assert flag_value(opts, "bare", bool, False) is True
    assert flag_value(opts, "runs", int, 100, minimum=2) == 3
    assert flag_value(opts, "absent", int, 7) == 7
    with pytest.raises(ConfigError, match="--word"):
        flag_value(opts, "word", bool, True)
    with pytest.raises(ConfigError, match="--small must be at least 2, got 1"):
        flag_value(opts, "small", int, 100, minimum=2)
