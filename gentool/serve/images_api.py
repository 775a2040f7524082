"""Image sampling in the shape of OpenAI's ``POST /v1/images/generations``, from any gentool image model.

``model`` is ``MODEL/RUN`` of the runs folder (``checkpoint``: ``best``, the default when there is
one, or ``last``); ``n`` and ``seed`` as ``gentool sample`` takes them; the model's own sample
options (``label``, ``trunc``, ...: ``GET /api/models`` lists them) in ``options``. The answer is
``{"created", "data": [{"b64_json": PNG}, ...]}`` (``response_format`` ``b64_json`` only: a local
server keeps no files to link to). The same seed gives the same images.
"""

from __future__ import annotations

import base64
import io
import time
from typing import Any, Literal

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field

import gentool
from gentool.serve.errors import bad_request, not_found
from gentool.serve.queue import GLOBAL_RNG
from gentool.serve.runs_api import checkpoint_of, split_ref
from gentool.serve.strict import check_json_options

router = APIRouter(prefix="/v1", tags=["images"])


class ImageRequest(BaseModel):
    """An image generation request (OpenAI's shape; ``prompt`` and ``size`` are accepted and ignored:
    gentool's image models are unconditional or class-conditional, at their trained size)."""

    model_config = ConfigDict(extra="ignore", strict=True)
    model: str = Field(description="MODEL/RUN of an image model's run (GET /v1/models)")
    n: int = Field(1, ge=1, description="number of images (bounded by the server)")
    seed: int = Field(0, ge=0, le=2**63 - 1, description="same seed, same images")
    checkpoint: Literal["best", "last"] | None = Field(None, description="default: best, else last")
    options: dict[str, Any] = Field(default_factory=dict,
                                    description="the model's own sample options, e.g. {\"label\": 3}")
    response_format: Literal["b64_json"] = "b64_json"
    prompt: str | None = None
    size: str | None = None


class ImageData(BaseModel):
    b64_json: str


class ImageResponse(BaseModel):
    created: int
    data: list[ImageData]
    gentool: dict[str, Any] = Field(default_factory=dict, description="shape, labels, checkpoint, warnings")


def _pngs(images: Any) -> list[str]:
    from PIL import Image

    from gentool.images import to_uint8

    out = []
    for arr in to_uint8(images):
        buf = io.BytesIO()
        Image.fromarray(arr[..., 0] if arr.shape[-1] == 1 else arr).save(buf, format="PNG")
        out.append(base64.b64encode(buf.getvalue()).decode("ascii"))
    return out


@router.post("/images/generations", summary="Sample images from a gentool image model (OpenAI-style)",
             response_model=ImageResponse)
async def generations(req: ImageRequest, request: Request) -> dict[str, Any]:
    state = request.app.state.gentool
    cfg = state.config
    if req.n > cfg.max_images:
        raise bad_request(f"n must be at most {cfg.max_images} on this server, got {req.n}", param="n")
    pair = split_ref(req.model)
    from gentool.plugins import get_registry

    spec = get_registry().models.get(pair[0]) if pair else None
    if pair is None or spec is None:
        raise not_found(f"the model {req.model!r} does not exist: use MODEL/RUN of an image run (GET /v1/models)")
    if spec.modality != "image":
        raise bad_request(f"{req.model} is a {spec.modality} model: use POST /v1/chat/completions",
                          param="model", code="model_not_image")
    path = checkpoint_of(cfg.runs, *pair, req.checkpoint).resolve()
    from gentool.hook_io import declared_options, verb_options

    check_json_options(declared_options(spec, "sample"), req.options)  # JSON's own types: "yes" is no boolean
    try:  # bad options are the caller's: a 400 before the model is loaded or queued
        verb_options(spec, "sample", req.options)
    except gentool.GentoolError as exc:
        raise bad_request(str(exc), param="options") from None
    device = cfg.device
    slot = state.gate.slot(("image", str(path), path.stat().st_mtime),
                           lambda: gentool.load(path, model=spec.name, device=device), label=f"model {req.model}")

    def job(model: Any) -> Any:
        with GLOBAL_RNG:
            return model.sample(req.n, seed=req.seed, options=req.options, quiet=True)

    samples = await state.gate.run(slot, job)
    if samples.images is None:
        raise bad_request(f"{req.model} gave texts, not images", param="model")
    labels = samples.labels.tolist() if samples.labels is not None else None
    names = samples.class_names
    return {"created": int(time.time()), "data": [{"b64_json": b} for b in _pngs(samples.images)],
            "gentool": {"model": req.model, "checkpoint": path.name, "seed": req.seed,
                        "shape": list(samples.images.shape[1:]), "labels": labels,
                        "class_names": names, "warnings": samples.warnings}}
