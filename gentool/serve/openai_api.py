"""OpenAI-compatible chat: ``POST /v1/chat/completions`` (streamed by server-sent events or whole)
and ``GET /v1/models``, so the ``openai`` library, curl and editors work against a local model.

Chat models are the runs of text models in the runs folder (``MODEL/RUN``, e.g. ``gpt/run2``), the
``--chat-model`` of the server, and ``default`` (``--chat-model``, else the newest text run); they
open through ``gentool.open_chat`` (the plugins' ``gentool_open_chat`` hook). Unknown request fields
are ignored; bad ones are a 400 in OpenAI's error shape. One answer at a time per loaded model, in
a worker thread (:mod:`gentool.serve.queue`); a streamed answer's pieces go into a buffer the
client drains at its own pace, bounded because ``max_tokens`` is, so the model is free for the next
request as soon as it has finished, however slowly the client reads.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import threading
import time
from typing import Any, AsyncIterator, Literal, Union

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

import gentool
from gentool.chat import MAX_SEED, ChatSettings
from gentool.errors import GentoolError
from gentool.plugins import get_registry
from gentool.serve.errors import APIError, bad_request, error_body, not_found
from gentool.serve.queue import Slot
from gentool.serve.runs_api import checkpoint_of, list_runs, split_ref

router = APIRouter(prefix="/v1", tags=["openai"])
DEFAULT = "default"


# -- request shapes (documented in /openapi.json; unknown fields ignored) ------------------------------
# Strict: JSON's own types only (``true`` is no number, ``"yes"`` no boolean, ``1.5`` no integer); a
# value of another type is a 400 naming the field, never silently converted.
class TextPart(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)
    type: Literal["text"] = "text"
    text: str


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)
    role: Literal["system", "developer", "user", "assistant"]
    content: Union[str, list[TextPart], None] = ""


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)
    include_usage: bool = False


class ChatRequest(BaseModel):
    """OpenAI's chat completion request, the fields a local model can honour (others are ignored)."""

    model_config = ConfigDict(extra="ignore", strict=True)
    model: str = Field(description="MODEL/RUN of the runs folder, the server's --chat-model, or 'default'")
    messages: list[ChatMessage] = Field(min_length=1)
    temperature: float | None = Field(None, ge=0, le=2, description="0: greedy (default 1)")
    top_p: float | None = Field(None, gt=0, le=1)
    top_k: int | None = Field(None, ge=1, description="not in OpenAI's API: sample among the k likeliest tokens")
    max_tokens: int | None = Field(None, ge=1, description="longest answer in tokens (default 256, bounded by the server)")
    max_completion_tokens: int | None = Field(None, ge=1, description="the newer name of max_tokens")
    stop: Union[str, list[str], None] = Field(None, description="up to 4 strings: the answer ends before the first")
    seed: int | None = Field(None, ge=0, le=MAX_SEED, description="same seed, same answer")
    n: int = Field(1, ge=1, le=1, description="one answer per request")
    stream: bool = False
    stream_options: StreamOptions | None = None


# -- which model -------------------------------------------------------------------------------------
def chat_models(state: Any) -> list[dict[str, Any]]:
    """The chat models ``/v1/models`` lists (text runs with a checkpoint, and ``--chat-model``)."""
    out = []
    if state.config.chat_model:
        out.append({"id": state.config.chat_model, "created": int(time.time()), "kind": "chat"})
    for r in list_runs(state.config.runs):
        if r["modality"] == "text" and r["checkpoints"]:
            out.append({"id": r["id"], "created": int(r["updated"]), "kind": "chat"})
    return out


def chat_ref(state: Any, model: str) -> str:
    """What ``gentool.open_chat`` gets for the request's ``model``, or a 404."""
    cfg = state.config
    if cfg.chat_model and model in (cfg.chat_model, DEFAULT):
        return cfg.chat_model
    if model == DEFAULT:
        runs = sorted((r for r in list_runs(cfg.runs) if r["modality"] == "text" and r["checkpoints"]),
                      key=lambda r: r["updated"])
        if not runs:
            raise not_found(f"no chat model: no text run with a checkpoint in {cfg.runs}, and no --chat-model")
        model = runs[-1]["id"]
    pair = split_ref(model)
    spec = get_registry().models.get(pair[0]) if pair else None
    if pair is None or spec is None:
        raise not_found(f"the model {model!r} does not exist: use an id of GET /v1/models (MODEL/RUN of the "
                        "runs folder)")
    if spec.modality != "text":
        raise bad_request(f"{model} is an {spec.modality} model: sample it with POST /v1/images/generations",
                          param="model", code="model_not_chat")
    return str(checkpoint_of(cfg.runs, *pair).resolve())


def chat_key(ref: str) -> tuple[str, str, float | None]:
    """The gate's key of a chat model: its reference and, for a file, its version (mtime)."""
    from pathlib import Path

    path = Path(ref)
    try:
        stamp = path.stat().st_mtime if path.is_file() else None
    except OSError:
        stamp = None
    return ("chat", ref, stamp)


def chat_slot(state: Any, model: str) -> Slot:
    """The slot of the request's chat model (loaded on its first job; reloaded when its file changes)."""
    ref = chat_ref(state, model)
    device, quantize = state.config.device, state.config.quantize
    return state.gate.slot(chat_key(ref), lambda: gentool.open_chat(ref, device=device, quantize=quantize),
                           label=f"model {model}")


def _messages(req: ChatRequest) -> list[dict[str, str]]:
    out = []
    for m in req.messages:
        content = m.content if isinstance(m.content, str) else "".join(p.text for p in m.content or [])
        out.append({"role": "system" if m.role == "developer" else m.role, "content": content or ""})
    return out


def _settings(req: ChatRequest, limit: int) -> ChatSettings:
    max_tokens = req.max_completion_tokens or req.max_tokens or 256
    if max_tokens > limit:
        field = "max_completion_tokens" if req.max_completion_tokens else "max_tokens"
        raise bad_request(f"{field} must be at most {limit} on this server, got {max_tokens}", param=field)
    settings = ChatSettings(temperature=1.0 if req.temperature is None else req.temperature, top_k=req.top_k,
                            top_p=req.top_p, max_tokens=max_tokens, seed=req.seed)
    try:
        return settings.check()
    except GentoolError as exc:
        raise bad_request(str(exc)) from None


def _stops(req: ChatRequest) -> list[str]:
    stops = [req.stop] if isinstance(req.stop, str) else list(req.stop or [])
    if len(stops) > 4:
        raise bad_request(f"stop takes at most 4 strings, got {len(stops)}", param="stop")
    return [s for s in stops if s]


# -- generation (in a worker thread) ---------------------------------------------------------------------
class StopCutter:
    """Cuts the answer before the first stop string; holds back a tail that may begin one."""

    def __init__(self, stops: list[str]):
        self.stops, self.held, self.hit = stops, "", False

    def push(self, piece: str) -> str:
        """The text that is safe to send after ``piece``."""
        text = self.held + piece
        cuts = [i for i in (text.find(s) for s in self.stops) if i >= 0]
        if cuts:
            self.held, self.hit = "", True
            return text[: min(cuts)]
        keep = max((k for s in self.stops for k in range(1, len(s)) if text.endswith(s[:k])), default=0)
        self.held = text[len(text) - keep:] if keep else ""
        return text[: len(text) - keep]

    def flush(self) -> str:
        out, self.held = self.held, ""
        return out


def _generate(backend: Any, messages: list[dict[str, str]], settings: ChatSettings, stops: list[str],
              emit: Any, cancel: threading.Event) -> None:
    """One answer: emits ``("start", None)``, ``("text", piece)``... and ``("end", info)``, or ``("error", exc)``."""
    try:
        backend.reseed(settings.seed)
        prompt = backend.count_tokens(messages)
        emit(("start", None))
        cutter = StopCutter(stops)
        stream = backend.chat_stream(messages, settings)
        try:
            for piece in stream:
                text = cutter.push(piece)
                if text:
                    emit(("text", text))
                if cutter.hit or cancel.is_set():
                    break
        finally:
            close = getattr(stream, "close", None)
            if close is not None:
                close()
        tail = "" if cutter.hit else cutter.flush()
        if tail:
            emit(("text", tail))
        finish = "stop" if cutter.hit or backend.stop_reason == "end of turn" else "length"
        used = max(0, prompt - int(getattr(backend, "cut_tokens", 0) or 0))
        emit(("end", {"finish_reason": finish, "prompt_tokens": used, "completion_tokens": int(backend.last_tokens)}))
    except Exception as exc:  # sent to the client as an error; the server goes on
        emit(("error", exc))


def _error_of(exc: BaseException) -> APIError:
    if isinstance(exc, APIError):
        return exc
    if isinstance(exc, GentoolError):
        return bad_request(str(exc))
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return APIError(500, f"internal error ({type(exc).__name__}: {first}); this is a bug in gentool or a plugin",
                    type="server_error")


async def _watch(request: Request, cancel: threading.Event, events: asyncio.Queue) -> None:
    """Until cancelled: wait for the client to hang up (the body is read: the next message is the
    disconnect); then the generation stops at its next token and the waiting handler ends, so no
    request outlives its client. (A streamed answer needs no watch once it streams: its response
    stops the stream when the client goes.)"""
    while True:
        message = await request.receive()
        if message.get("type") == "http.disconnect":
            cancel.set()
            events.put_nowait(("gone", None))
            return


async def _next(events: asyncio.Queue) -> tuple[str, Any]:
    """The generation's next event (a client gone: a 499 that nobody reads, and the handler ends)."""
    kind, value = await events.get()
    if kind == "gone":
        raise APIError(499, "the client closed the request", code="client_closed")
    return kind, value


def _usage(end: dict[str, Any]) -> dict[str, int]:
    p, c = end["prompt_tokens"], end["completion_tokens"]
    return {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}


@router.post("/chat/completions", summary="Chat completion (OpenAI-compatible; stream=true for server-sent events)")
async def chat_completions(req: ChatRequest, request: Request) -> Any:
    state = request.app.state.gentool
    settings = _settings(req, state.config.max_tokens)
    stops = _stops(req)
    messages = _messages(req)
    slot = chat_slot(state, req.model)
    loop = asyncio.get_running_loop()
    events: asyncio.Queue = asyncio.Queue()  # bounded by max_tokens: one piece per token at most
    cancel = threading.Event()

    def emit(event: tuple[str, Any]) -> None:
        loop.call_soon_threadsafe(events.put_nowait, event)

    future = await state.gate.start(slot, lambda backend: _generate(backend, messages, settings, stops, emit, cancel))

    def ended(f: "asyncio.Future[Any]") -> None:  # a job that never ran (cancelled at shutdown) still ends the wait
        if f.cancelled():
            events.put_nowait(("error", APIError(503, "the server is shutting down", type="server_error",
                                                 code="shutting_down")))
        elif f.exception() is not None:
            events.put_nowait(("error", f.exception()))

    future.add_done_callback(ended)
    watch = asyncio.create_task(_watch(request, cancel, events))
    try:
        return await _answer(req, events, cancel)
    finally:
        watch.cancel()


async def _answer(req: ChatRequest, events: asyncio.Queue, cancel: threading.Event) -> Any:
    """The answer to ``req`` from the generation's events: server-sent events, or one document."""
    kind, value = await _next(events)  # the prompt was read: errors still get their status code
    if kind == "error":
        raise _error_of(value)
    ident, created = "chatcmpl-" + secrets.token_hex(12), int(time.time())

    def chunk(delta: dict[str, Any], finish: str | None = None, usage: dict | None = None, choices: bool = True) -> str:
        doc: dict[str, Any] = {"id": ident, "object": "chat.completion.chunk", "created": created, "model": req.model,
                               "system_fingerprint": None,
                               "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]
                               if choices else []}
        if usage is not None:
            doc["usage"] = usage
        return f"data: {json.dumps(doc)}\n\n"

    if req.stream:
        include_usage = bool(req.stream_options and req.stream_options.include_usage)

        async def sse() -> AsyncIterator[str]:
            try:
                yield chunk({"role": "assistant", "content": ""})
                while True:
                    kind, value = await events.get()
                    if kind == "text":
                        yield chunk({"content": value})
                    elif kind == "error":
                        yield f"data: {json.dumps(_error_of(value).body())}\n\n"
                        break
                    elif kind == "end":
                        yield chunk({}, finish=value["finish_reason"])
                        if include_usage:
                            yield chunk({}, usage=_usage(value), choices=False)
                        break
                yield "data: [DONE]\n\n"
            finally:
                cancel.set()  # the client left early: the generation stops at its next token

        return StreamingResponse(sse(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
    pieces = []
    while True:
        kind, value = await _next(events)
        if kind == "text":
            pieces.append(value)
        elif kind == "error":
            raise _error_of(value)
        elif kind == "end":
            break
    return {"id": ident, "object": "chat.completion", "created": created, "model": req.model,
            "system_fingerprint": None,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "".join(pieces)},
                         "logprobs": None, "finish_reason": value["finish_reason"]}],
            "usage": _usage(value)}


def _model_doc(m: dict[str, Any]) -> dict[str, Any]:
    return {"id": m["id"], "object": "model", "created": m["created"], "owned_by": "gentool",
            "gentool": {"kind": m["kind"]}}


def all_models(state: Any) -> list[dict[str, Any]]:
    """Chat models, then image models (``MODEL/RUN`` of image runs with a checkpoint)."""
    out = chat_models(state)
    for r in list_runs(state.config.runs):
        if r["modality"] == "image" and r["checkpoints"]:
            out.append({"id": r["id"], "created": int(r["updated"]), "kind": "image"})
    return out


@router.get("/models", summary="Models this server answers for (OpenAI-compatible)")
async def list_models(request: Request) -> dict[str, Any]:
    return {"object": "list", "data": [_model_doc(m) for m in all_models(request.app.state.gentool)]}


@router.get("/models/{model_id:path}", summary="One model (OpenAI-compatible); a loaded chat model says what runs it")
async def get_model(model_id: str, request: Request) -> Any:
    state = request.app.state.gentool
    for m in all_models(state):
        if m["id"] == model_id:
            doc = _model_doc(m)
            if m["kind"] == "chat":  # loaded already: its backend, device, weight format (not loaded here)
                try:
                    slot = state.gate.slots.get(chat_key(chat_ref(state, model_id)))
                except Exception:  # noqa: BLE001 - a model that no longer resolves: just not described
                    slot = None
                backend = getattr(slot, "obj", None) if slot is not None else None
                if backend is not None and hasattr(backend, "describe"):
                    doc["gentool"]["loaded"] = {str(k): str(v) for k, v in backend.describe().items()}
            return doc
    return JSONResponse(error_body(f"the model {model_id!r} does not exist", param="model", code="model_not_found"),
                        status_code=404)
