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
    """One feature-extractor folder for the whole session, no downloads, and under xdist a share
    of the threads.

    Tests isolate their runs and caches in temporary folders; the gentool-cnn extractors they
    train (about 20 s each for the digits on a 2-core CPU) go to one session folder
    (``GENTOOL_EXTRACTORS``, seen by the ``gentool`` subprocesses too), so each data set's is
    trained once per session, not once per test. Tests of the extractor cache itself unset it.
    The Hugging Face hub client is offline for the session (tests never download; set before it is
    imported, as it reads it once), so ``gentool.testing.invoke`` answers the tests that set it in
    this process. (Not TRANSFORMERS_OFFLINE: the hub client reads it too, and the hub tests that
    unset HF_* to reach a closed port would stay offline.)
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if "GENTOOL_EXTRACTORS" not in os.environ:
        import atexit
        import shutil
        import tempfile

        folder = tempfile.mkdtemp(prefix="gentool-extractors-")
        os.environ["GENTOOL_EXTRACTORS"] = folder
        atexit.register(shutil.rmtree, folder, True)
    _share_threads()


def _share_threads() -> None:
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
