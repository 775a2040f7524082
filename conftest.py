"""Repository-wide pytest settings: slow training tests run only with --runslow; under xdist each
worker gets its share of the CPU threads."""

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


def pytest_configure(config):
    """Under ``pytest -n N`` give each worker ``cores // N`` torch threads (and its subprocesses).

    Without this every worker, and every ``gentool`` subprocess a test starts, uses all the cores:
    eight workers on a 16-core GPU machine ran 128 threads. A ``OMP_NUM_THREADS`` already set wins.
    """
    workers = os.environ.get("PYTEST_XDIST_WORKER_COUNT")
    if not workers or "OMP_NUM_THREADS" in os.environ:
        return
    threads = max(1, (os.cpu_count() or 1) // int(workers))
    os.environ["OMP_NUM_THREADS"] = str(threads)
    import torch

    torch.set_num_threads(threads)
