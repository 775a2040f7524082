"""Repository-wide pytest settings: slow training tests run only with --runslow."""

from __future__ import annotations

import os

import pytest


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", default=False, help="also run slow training tests")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--runslow") or os.environ.get("GENTOOL_RUNSLOW") == "1":
        return
    skip = pytest.mark.skip(reason="slow: run with --runslow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)
