"""``gentool serve``: a local web page for runs, samples, tools and chat, and an OpenAI-compatible API.

The optional extra ``serve`` (FastAPI and uvicorn) is imported only here, inside :func:`serve`
and :func:`create_app`, so ``import gentool.serve`` (what the CLI does) stays light and says how
to install the extra when it is missing.

Layout: :mod:`.settings` (limits), :mod:`.errors` (OpenAI-style errors), :mod:`.queue` (one
generation at a time per loaded model, a bounded wait, an LRU of loaded models), :mod:`.app` (the
app, key and size checks, the page), :mod:`.runs_api`, :mod:`.openai_api`, :mod:`.images_api`,
:mod:`.tools_api`, and ``static/`` (the page: plain HTML, JavaScript and CSS, no build step).
"""

from __future__ import annotations

import os
import socket
from typing import TYPE_CHECKING, Any

from gentool.errors import GentoolError
from gentool.serve.settings import ServeConfig

if TYPE_CHECKING:
    from fastapi import FastAPI

INSTALL_HINT = 'gentool serve needs the serve extra: pip install -e ".[serve]"'
LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def require_extra() -> None:
    """One line saying how to install the extra when FastAPI or uvicorn is missing."""
    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError:
        raise GentoolError(INSTALL_HINT) from None


def create_app(config: ServeConfig) -> "FastAPI":
    """The ASGI app for ``config`` (for tests and for embedding under another server)."""
    require_extra()
    from gentool.serve.app import build_app

    return build_app(config)


def prepare(config: ServeConfig, *, runs_given: bool = True) -> None:
    """Check what ``config`` names before the server starts, one line each: the runs folder (a folder
    that exists and can be read; when ``runs_given`` is false, the default one may be missing: it is
    then shown empty) and the ``--chat-model``, which is opened here (a file that is no chat model
    is refused now, not at its first request) and kept loaded for the first request. Makes the runs
    folder ``GENTOOL_RUNS`` for this process, as :func:`serve` does."""
    runs = config.runs
    flag = "--runs" if runs_given else "the runs folder (GENTOOL_RUNS or ./runs)"
    if runs.exists() or runs_given:
        if not runs.exists():
            raise GentoolError(f"{flag} {runs} does not exist: name the folder gentool train writes runs into")
        if not runs.is_dir():
            raise GentoolError(f"{flag} {runs} is not a folder: name the folder gentool train writes runs into")
        if not os.access(runs, os.R_OK | os.X_OK):
            raise GentoolError(f"{flag} {runs} cannot be read (permission denied)")
    os.environ["GENTOOL_RUNS"] = str(runs)
    from gentool.chat import QUANTIZE

    if config.quantize not in QUANTIZE:
        raise GentoolError(f"--quantize must be one of {', '.join(QUANTIZE)}, not {config.quantize!r}")
    if config.chat_model is not None:
        import gentool

        if not config.chat_model.strip():
            raise GentoolError("--chat-model is empty: name a checkpoint, a run, a transformers folder or a hub id")
        try:
            config.chat_backend = gentool.open_chat(config.chat_model, device=config.device, quantize=config.quantize)
        except GentoolError as exc:
            raise GentoolError(f"--chat-model {config.chat_model}: {exc}") from None
    config.prepared = True


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port``; one line when the address is taken or not ours."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise GentoolError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    family, _, _, _, address = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
        sock.listen(128)
    except OSError as exc:
        sock.close()
        hint = " (pick another --port)" if exc.errno in (98, 48) else ""
        raise GentoolError(f"cannot listen on {host}:{port}: {exc.strerror or exc}{hint}") from None
    sock.set_inheritable(True)
    return sock


def serve(config: ServeConfig, host: str = "127.0.0.1", port: int = 8000, *, sock: socket.socket | None = None,
          log_level: str = "warning") -> None:
    """Serve ``config`` on ``host:port`` until interrupted (Ctrl-C, SIGTERM).

    The runs folder becomes ``GENTOOL_RUNS`` for this process, so plugins that look for their
    newest run (the detector, the default chat model) look there too. ``config`` is checked first
    (:func:`prepare`) unless the caller did so.
    """
    require_extra()
    import uvicorn

    if not config.prepared:
        prepare(config)
    app = create_app(config)
    sock = sock or bind(host, port)
    server = uvicorn.Server(uvicorn.Config(app, log_level=log_level, access_log=False, timeout_graceful_shutdown=5))
    server.run(sockets=[sock])


class Background:
    """A server running in a thread of this process (tests, benchmarks, notebooks): ``url``, ``app``
    (its state at ``app.state.gentool``), and :meth:`stop`. Made by :func:`start_background`."""

    def __init__(self, server: Any, thread: Any, app: Any, url: str):
        self.server, self.thread, self.app, self.url = server, thread, app, url

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)

    def __enter__(self) -> "Background":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def start_background(config: ServeConfig, host: str = "127.0.0.1", port: int = 0,
                     timeout: float = 30) -> Background:
    """Start the server in a daemon thread on ``host:port`` (0: a free port) and wait until it listens."""
    require_extra()
    import threading
    import time

    import uvicorn

    app = create_app(config)
    sock = bind(host, port)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True, name="gentool-serve")
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise GentoolError("gentool serve did not start")
        time.sleep(0.02)
    return Background(server, thread, app, f"http://{host}:{sock.getsockname()[1]}")


__all__ = ["INSTALL_HINT", "Background", "ServeConfig", "bind", "create_app", "prepare", "serve", "start_background"]
