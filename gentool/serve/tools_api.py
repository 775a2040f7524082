"""The plugins' tools over HTTP: ``GET /api/tools`` lists them, ``POST /v1/tools/NAME`` runs one.

A tool (``gentool.Tool``, registered through the ``gentool_register_tools`` hook) takes files and
options; here the files come as a multipart upload (``files``, repeated) and the options as a JSON
object in the form field ``options``. The answer has one result per file, in order: the tool's
fields, ``png_b64`` when it made an image, or ``error`` (one line) for a file it could not handle.
One call at a time per tool, in a worker thread, like the models.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

from fastapi import APIRouter, File, Form, Request, UploadFile

from gentool.serve.errors import bad_request, not_found
from gentool.serve.runs_api import option_fields

router = APIRouter(tags=["tools"])


def _inside_runs(ref: str, runs: Path) -> bool:
    """Whether a tool's ``checkpoint`` option stays in the served runs folder: a run reference
    (``RUN``, ``MODEL/RUN``: looked up there), or a path that resolves inside it. A client may not
    make the server read other files, nor reach a hub (``hf://``)."""
    if "://" in ref:
        return False
    path = Path(ref).expanduser()
    if path.is_absolute() or ".." in path.parts or path.exists():
        return path.resolve().is_relative_to(runs.resolve())
    return True


def _tools() -> dict[str, Any]:
    from gentool.tools import list_tools

    return list_tools()


@router.get("/api/tools", summary="The installed plugins' tools and their options")
async def tools() -> dict[str, Any]:
    return {"tools": [{"name": t.name, "summary": t.summary, "plugin": t.plugin, "options": option_fields(t.options)}
                      for t in sorted(_tools().values(), key=lambda t: t.name)]}


@router.post("/v1/tools/{name}", summary="Run a plugin's tool (detect, ...) on uploaded files")
async def run_tool(name: str, request: Request, files: list[UploadFile] = File(..., description="the files"),
                   options: str = Form("{}", description="the tool's options as a JSON object")) -> dict[str, Any]:
    state = request.app.state.gentool
    tool = _tools().get(name)
    if tool is None:
        raise not_found(f"no tool {name!r}; tools: {', '.join(sorted(_tools())) or 'none installed'}",
                        param="name", code="tool_not_found")
    if len(files) > state.config.max_files:
        raise bad_request(f"at most {state.config.max_files} files per request, got {len(files)}", param="files")
    try:
        values = json.loads(options or "{}")
    except ValueError:
        raise bad_request("options must be a JSON object", param="options") from None
    if not isinstance(values, dict):
        raise bad_request("options must be a JSON object", param="options")
    try:
        tool.parse_options(values)  # a bad option is a 400 before anything runs
    except Exception as exc:
        raise bad_request(str(exc), param="options") from None
    ref = values.get("checkpoint")
    if isinstance(ref, str) and ref and not _inside_runs(ref, state.config.runs):
        raise bad_request(f"checkpoint must name a run of this server's runs folder (RUN, MODEL/RUN, or a file "
                          f"inside it), not {ref!r}", param="options")
    uploads = [(f.filename or f"file{i}", await f.read()) for i, f in enumerate(files)]
    slot = state.gate.slot(("tool", name), lambda: tool, label=f"tool {name}")
    answers = await state.gate.run(slot, lambda t: t(uploads, values))
    results = []
    for a in answers:
        doc: dict[str, Any] = {"file": a.file, **a.fields}
        if a.png is not None:
            doc["png_b64"] = base64.b64encode(a.png).decode("ascii")
        if a.error is not None:
            doc["error"] = a.error
        results.append(doc)
    return {"tool": name, "results": results}
