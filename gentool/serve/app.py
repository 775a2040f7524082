"""The FastAPI app: the routes of each part, the key and size checks, OpenAI-style errors, the page.

Every request to the API (``/v1/...``, ``/api/...``, ``/openapi.json``) needs the key when one is
set; the page's own files (``/``, ``/static/...``) hold no data and load without it, so the page
can ask for the key. Bodies are read whole, up to a limit (``max_body``; ``max_upload`` for tool
uploads), before any route sees them: a larger one is a 413 whatever its ``Content-Length`` says.
FastAPI's ``/docs`` page is off (it loads its scripts from a CDN, and this server works offline);
the schema is at ``/openapi.json``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, AsyncIterator

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

import gentool
from gentool.errors import GentoolError
from gentool.serve.errors import UNAUTHORIZED, APIError, error_body, too_large
from gentool.serve.queue import Gate
from gentool.serve.settings import ServeConfig

STATIC = Path(str(resources.files("gentool.serve") / "static"))
PUBLIC = ("/", "/static/", "/favicon.ico")


@dataclass
class State:
    """What the routes share: the settings and the loaded models' gate."""

    config: ServeConfig
    gate: Gate
    loop: asyncio.AbstractEventLoop | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def state_of(request: Request) -> State:
    return request.app.state.gentool


class Guard:
    """ASGI middleware: the API key, and bodies read whole up to their limit (413 beyond)."""

    def __init__(self, app: Any, config: ServeConfig):
        self.app, self.config = app, config

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope.get("path", "")
        if self.config.api_key and not self._public(path) and not self._authorized(scope):
            return await _send_error(send, UNAUTHORIZED)
        if scope.get("method") in ("POST", "PUT", "PATCH"):
            limit = self.config.max_upload if path.startswith("/v1/tools/") else self.config.max_body
            headers = dict(scope.get("headers") or [])
            declared = headers.get(b"content-length", b"")
            if declared.isdigit() and int(declared) > limit:
                return await _send_error(send, too_large(limit))
            chunks, size = [], 0
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return
                chunk = message.get("body", b"")
                size += len(chunk)
                if size > limit:
                    return await _send_error(send, too_large(limit))
                chunks.append(chunk)
                if not message.get("more_body"):
                    break
            body = b"".join(chunks)
            sent = False

            async def replay() -> dict:
                nonlocal sent
                if not sent:
                    sent = True
                    return {"type": "http.request", "body": body, "more_body": False}
                return await receive()  # after the body: the disconnect, when it comes

            return await self.app(scope, replay, send)
        return await self.app(scope, receive, send)

    @staticmethod
    def _public(path: str) -> bool:
        return path == "/" or path == "/favicon.ico" or path.startswith("/static/")

    def _authorized(self, scope: dict) -> bool:
        headers = dict(scope.get("headers") or [])
        value = headers.get(b"authorization", b"").decode("latin-1")
        scheme, _, token = value.partition(" ")
        return scheme.lower() == "bearer" and secrets.compare_digest(token.strip().encode(),
                                                                     str(self.config.api_key).encode())


async def _send_error(send: Any, err: APIError) -> None:
    body = json.dumps(err.body()).encode()
    await send({"type": "http.response.start", "status": err.status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def _validation_message(exc: RequestValidationError) -> tuple[str, str | None]:
    """The first validation error as one line and the field it is about (OpenAI's ``param``)."""
    errors = exc.errors()
    if not errors:
        return "invalid request", None
    first = errors[0]
    loc = [str(p) for p in first.get("loc", ()) if p not in ("body", "query", "path")]
    if first.get("type") == "json_invalid":
        return "the request body is not valid JSON", None
    param = ".".join(loc) or None
    if param is None and first.get("type") in ("model_attributes_type", "dict_type", "model_type"):
        return "the request body must be a JSON object (Content-Type: application/json)", None
    msg = str(first.get("msg", "invalid value"))
    if first.get("type") == "missing":
        if param is None:  # the whole body
            return "the request body is missing: send a JSON object (Content-Type: application/json)", None
        return f"missing required field {param!r}", param
    got = first.get("input")
    shown = json.dumps(got)[:80] if isinstance(got, (int, float, str, bool, type(None))) else type(got).__name__
    return (f"{param}: {msg} (got {shown})" if param else msg), param


def build_app(config: ServeConfig) -> FastAPI:
    """Assemble the app (see the module docstring)."""
    from gentool.serve import images_api, openai_api, runs_api, tools_api

    state = State(config=config, gate=Gate(queue_size=config.queue_size, max_models=config.max_models,
                                           workers=config.workers))
    if config.chat_model and config.chat_backend is not None:  # opened by prepare(): the first request uses it
        from gentool.serve.openai_api import chat_key

        slot = state.gate.slot(chat_key(config.chat_model), lambda: gentool.open_chat(config.chat_model,
                                                                                         device=config.device,
                                                                                         quantize=config.quantize),
                               label=f"model {config.chat_model}")
        slot.obj, config.chat_backend = config.chat_backend, None

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        state.loop = asyncio.get_running_loop()  # tests and benchmarks hand jobs to the server's loop
        yield
        state.gate.close()

    app = FastAPI(title="gentool serve", version=gentool.__version__, docs_url=None, redoc_url=None,
                  lifespan=lifespan,
                  description="gentool's models over HTTP: an OpenAI-compatible chat and image API, "
                              "the runs folder, and the plugins' tools.")
    app.state.gentool = state

    @app.exception_handler(APIError)
    async def _api_error(_: Request, exc: APIError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        message, param = _validation_message(exc)
        return JSONResponse(error_body(message, param=param), status_code=400)

    @app.exception_handler(GentoolError)
    async def _gentool_error(_: Request, exc: GentoolError) -> JSONResponse:
        return JSONResponse(error_body(str(exc)), status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code)
        return JSONResponse(error_body(str(exc.detail), param=None, code=code), status_code=exc.status_code)

    @app.exception_handler(Exception)
    async def _bug(_: Request, exc: Exception) -> JSONResponse:
        text = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
        return JSONResponse(error_body(f"internal error ({text}); this is a bug in gentool or a plugin",
                                       type="server_error"), status_code=500)

    for module in (openai_api, images_api, tools_api, runs_api):
        app.include_router(module.router)

    @app.get("/", include_in_schema=False)
    async def _page() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    @app.get("/static/{name}", include_in_schema=False)
    async def _static(name: str) -> FileResponse:
        path = STATIC / name
        if name not in {p.name for p in STATIC.iterdir()}:  # only the page's own files, by name
            raise APIError(404, f"no file {name!r}", param=None, code="not_found")
        return FileResponse(path, headers={"Cache-Control": "no-cache"})

    @app.get("/favicon.ico", include_in_schema=False)
    async def _icon() -> RedirectResponse:
        return RedirectResponse("/static/favicon.svg")

    app.add_middleware(Guard, config=config)
    return app
