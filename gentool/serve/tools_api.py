"""The plugins' tools over HTTP: ``GET /api/tools`` lists them, ``POST /v1/tools/NAME`` runs one.

A tool (``gentool.Tool``, registered through the ``gentool_register_tools`` hook) takes files and
options; here the files come as a multipart upload (``files``, repeated) and the options as a JSON
object in the form field ``options``. The answer has one result per file, in order: the tool's
fields, ``png_b64`` when it made an image, or ``error`` (one line) for a file it could not handle.
One call at a time per tool, in a worker thread, like the models. Options take JSON's own types
(:mod:`gentool.serve.strict`); a ``checkpoint`` is looked up in the served runs folder only
(:func:`tool_checkpoint`); the images of one request may hold at most ``--max-pixels`` pixels
together (read from their headers before the request queues), which bounds what one request costs
and how long the next one waits behind it.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

from fastapi import APIRouter, File, Form, Request, UploadFile

from gentool.serve.errors import APIError, bad_request, not_found
from gentool.serve.runs_api import inside, newest_checkpoint, option_fields
from gentool.serve.strict import check_json_options

router = APIRouter(tags=["tools"])


def tool_checkpoint(ref: str, runs: Path, model: str | None) -> Path:
    """The checkpoint file a tool's ``checkpoint`` option names, looked up in the served runs folder
    only: ``RUN`` (a run of the tool's model), ``MODEL/RUN``, ``MODEL/RUN/FILE``, or an absolute path
    inside the folder. A relative path is taken from the runs folder, never from the server's working
    folder; a symbolic link that leads out of the folder is refused like any outside path; a client
    may not make the server read other files, nor reach a hub (``hf://``)."""
    outside = bad_request(f"checkpoint must name a run of this server's runs folder (RUN, MODEL/RUN, or a file "
                          f"inside it), not {ref!r}", param="options")
    if "://" in ref or "\x00" in ref:
        raise outside
    root = runs.resolve()
    path = Path(ref).expanduser()
    if path.is_absolute():
        target = path
    elif len(path.parts) == 1 and model is not None:
        target = root / model / ref
    elif len(path.parts) == 1:  # a bare run name and a tool of no declared model: one run of that name
        found = [d / ref for d in sorted(root.iterdir()) if (d / ref).is_dir()] if root.is_dir() else []
        if len(found) != 1:
            raise bad_request(f"checkpoint {ref!r}: {'no' if not found else 'more than one'} run of that name in the "
                              "runs folder; name it as MODEL/RUN", param="options")
        target = found[0]
    else:
        target = root / path
    if not inside(root, target):
        raise outside
    if target.is_dir():
        files = [target / n for n in ("best.safetensors", "last.safetensors", "model.safetensors")]
        target = next((f for f in files if f.exists()), files[0])
        if not inside(root, target):
            raise outside
    if not target.is_file():
        raise bad_request(f"checkpoint {ref!r}: no such run or checkpoint file in the runs folder", param="options",
                          code="checkpoint_not_found")
    return target.resolve()


def count_pixels(uploads: list[tuple[str, bytes]], limit: int) -> int:
    """The pixels of the uploaded images (read from their headers, nothing decoded); a 400 naming the
    file when they exceed ``limit`` (a file that is not an image counts nothing: the tool says why)."""
    import io
    import warnings

    from PIL import Image

    total = 0
    for name, data in uploads:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                with Image.open(io.BytesIO(data)) as img:
                    w, h = img.size
        except Image.DecompressionBombError:
            w = h = limit + 1  # more than Pillow's own bound: certainly over ours
        except Exception:
            continue
        total += w * h
        if total > limit:
            what = f"{name} ({w}x{h})" if w * h > limit else f"{name}, with the files before it,"
            raise APIError(413, f"{what} is over this server's limit of {limit:,} image pixels per tool request "
                                "(gentool serve --max-pixels): send a smaller image or fewer at once",
                           param="files", code="too_many_pixels")
    return total


def _option_names(tool: Any) -> set[str]:
    import dataclasses

    return {f.name for f in dataclasses.fields(tool.options)} if dataclasses.is_dataclass(tool.options) else set()


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
    check_json_options(tool.options, values)  # JSON's own types: true is no number, "yes" no boolean
    try:
        tool.parse_options(values)  # a bad option is a 400 before anything runs
    except Exception as exc:
        raise bad_request(str(exc), param="options") from None
    uploads = [(f.filename or f"file{i}", await f.read()) for i, f in enumerate(files)]
    count_pixels(uploads, state.config.max_pixels)
    ref = values.get("checkpoint")
    runs = state.config.runs
    if isinstance(ref, str) and not ref.strip():  # not the newest run in disguise
        raise bad_request("checkpoint is empty: name a run (RUN, MODEL/RUN), or leave it out for the newest",
                          param="options")
    if isinstance(ref, str):
        values["checkpoint"] = str(tool_checkpoint(ref, runs, tool.model))
    elif tool.model is not None and "checkpoint" in _option_names(tool):  # the newest run, of this folder only
        newest = newest_checkpoint(runs.resolve(), tool.model)
        if newest is None:
            raise not_found(f"no {tool.model} run with a checkpoint in {runs}: train one, or name one with the "
                            "checkpoint option", param="options", code="checkpoint_not_found")
        values["checkpoint"] = str(newest.resolve())
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
