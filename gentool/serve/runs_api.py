"""The runs folder for the page: every run of every model, its config, metrics and sample grids,
and the models' own sample options (the Sample tab's form). gentool's own routes, under ``/api``."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse

import gentool
from gentool.plugins import get_registry
from gentool.serve.errors import APIError, not_found

router = APIRouter(prefix="/api", tags=["runs"])

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
GRID = re.compile(r"^epoch_\d{1,6}\.png$")
#: Step records sent per run at most (thinned evenly beyond): enough for a curve, small on the wire.
MAX_STEP_POINTS = 2000


def inside(root: Path, path: Path) -> bool:
    """Whether ``path``, every symbolic link on the way followed, lies in ``root``: the server reads
    nothing a link in the runs folder points to outside it."""
    try:
        return path.resolve().is_relative_to(root.resolve())
    except (OSError, RuntimeError):  # a link loop
        return False


def file_in(root: Path, path: Path) -> bool:
    """``path`` is a regular file (links followed) that lies in ``root``."""
    return path.is_file() and inside(root, path)


def run_dir(root: Path, model: str, run: str) -> Path:
    """``root/model/run`` for names that are plain names (no path tricks), or a 404."""
    if not NAME.match(model) or not NAME.match(run):
        raise not_found(f"no run {model}/{run}")
    path = root / model / run
    if not path.is_dir() or not inside(root, path):
        raise not_found(f"no run {model}/{run} in {root}")
    return path


def checkpoint_of(root: Path, model: str, run: str, which: str | None = None) -> Path:
    """The run's ``best`` (else ``last``) checkpoint, or the one ``which`` names."""
    folder = run_dir(root, model, run)
    names = {"best": ["best.safetensors"], "last": ["last.safetensors"],
             None: ["best.safetensors", "last.safetensors"]}.get(which)
    if names is None:
        raise APIError(400, f"checkpoint must be 'best' or 'last', not {which!r}", param="checkpoint")
    for name in names:
        if file_in(root, folder / name):
            return folder / name
    raise not_found(f"run {model}/{run} has no {which or 'best or last'} checkpoint yet")


def newest_checkpoint(root: Path, model: str) -> Path | None:
    """The checkpoint of ``model``'s run in ``root`` written last (its best, else last), as
    ``gentool`` picks one when none is named; runs and files that lead out of ``root`` are skipped."""
    newest: tuple[float, Path] | None = None
    base = root / model
    if not NAME.match(model) or not base.is_dir() or not inside(root, base):
        return None
    for folder in base.iterdir():
        if not (NAME.match(folder.name) and folder.is_dir() and inside(root, folder)):
            continue
        files = [folder / n for n in ("best.safetensors", "last.safetensors") if file_in(root, folder / n)]
        if files:
            stamp = (folder / "last.safetensors" if folder / "last.safetensors" in files else files[0]).stat().st_mtime
            if newest is None or stamp > newest[0]:
                newest = (stamp, files[0])
    return newest[1] if newest else None


def split_ref(ref: str) -> tuple[str, str] | None:
    """``MODEL/RUN`` as its two names, or None."""
    model, sep, run = ref.partition("/")
    return (model, run) if sep and NAME.match(model) and NAME.match(run) else None


def list_runs(root: Path) -> list[dict[str, Any]]:
    """Every run folder of every model under ``root`` (models of no installed plugin too)."""
    reg = get_registry()
    out = []
    if not root.is_dir():
        return out
    for mdir in sorted(p for p in root.iterdir() if NAME.match(p.name) and p.is_dir() and inside(root, p)):
        spec = reg.models.get(mdir.name)
        for rdir in sorted(p for p in mdir.iterdir() if NAME.match(p.name) and p.is_dir() and inside(root, p)):
            checkpoints = [n for n in ("best", "last") if file_in(root, rdir / f"{n}.safetensors")]
            grids = _grids(rdir)
            stamp = max((p.stat().st_mtime for p in (rdir / "metrics.jsonl", rdir / "last.safetensors")
                         if file_in(root, p)), default=rdir.stat().st_mtime)
            out.append({"id": f"{mdir.name}/{rdir.name}", "model": mdir.name, "run": rdir.name,
                        "modality": spec.modality if spec else None, "plugin": spec.plugin if spec else None,
                        "checkpoints": checkpoints, "grids": grids, "updated": stamp})
    return out


def _grids(folder: Path) -> list[str]:
    samples = folder / "samples"
    if not samples.is_dir() or not inside(folder, samples):
        return []
    return sorted(p.name for p in samples.iterdir() if GRID.match(p.name) and file_in(folder, p))


def _config(folder: Path) -> dict[str, Any]:
    path = folder / "config.toml"
    if not file_in(folder, path):
        return {}
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib  # type: ignore[no-redef]
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        return {"error": f"cannot read config.toml: {exc}"}


def _records(folder: Path) -> list[dict[str, Any]]:
    """``metrics.jsonl`` (torn lines skipped), step records thinned to :data:`MAX_STEP_POINTS`."""
    from gentool.runs import Run

    if not file_in(folder, folder / "metrics.jsonl"):
        return []
    records = Run("", folder.name, folder).records()
    steps = [r for r in records if r.get("type") == "step"]
    if len(steps) > MAX_STEP_POINTS:
        stride = -(-len(steps) // MAX_STEP_POINTS)
        keep = set(map(id, steps[::stride])) | {id(steps[-1])}
        records = [r for r in records if r.get("type") != "step" or id(r) in keep]
    return records


def _plain(value: Any) -> Any:
    """A JSON-able default value (tuples as lists, a missing default as None)."""
    if value is dataclasses.MISSING:
        return None
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    return value if isinstance(value, (int, float, str, bool, type(None))) else str(value)


def option_fields(cls: Any) -> list[dict[str, Any]]:
    """A dataclass's options for a form: name, type, default, help."""
    if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
        return []
    from gentool.config import fields_of

    return [{"name": f.name, "type": f.type_name, "default": _plain(f.default), "help": f.help} for f in fields_of(cls)]


@router.get("/runs", summary="Every run of every model in the runs folder")
async def runs(request: Request) -> dict[str, Any]:
    root = request.app.state.gentool.config.runs
    return {"runs_dir": str(root), "runs": list_runs(root)}


@router.get("/runs/{model}/{run}", summary="A run's config, metrics records and sample grids")
async def run_detail(model: str, run: str, request: Request) -> dict[str, Any]:
    root = request.app.state.gentool.config.runs
    folder = run_dir(root, model, run)
    evaluation = None
    if file_in(folder, folder / "eval.json"):
        try:
            evaluation = json.loads((folder / "eval.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            evaluation = None
    return {"id": f"{model}/{run}", "model": model, "run": run, "config": _config(folder),
            "metrics": _records(folder), "grids": _grids(folder), "eval": evaluation,
            "checkpoints": [n for n in ("best", "last") if file_in(root, folder / f"{n}.safetensors")]}


@router.get("/runs/{model}/{run}/grids/{name}", summary="One per-epoch sample grid (PNG)",
            response_class=FileResponse)
async def grid(model: str, run: str, name: str, request: Request) -> FileResponse:
    folder = run_dir(request.app.state.gentool.config.runs, model, run)
    path = folder / "samples" / name
    if not GRID.match(name) or not file_in(folder, path):
        raise not_found(f"no grid {name} in {model}/{run}", param=None, code="not_found")
    return FileResponse(path, media_type="image/png")


@router.get("/models", summary="Installed models and their own sample options")
async def models() -> dict[str, Any]:
    from gentool.hook_io import declared_options

    reg = get_registry()
    out = []
    for spec in sorted(reg.models.values(), key=lambda s: s.name):
        out.append({"name": spec.name, "family": spec.family, "modality": spec.modality, "plugin": spec.plugin,
                    "summary": spec.summary, "sample_options": option_fields(declared_options(spec, "sample"))})
    return {"models": out}


@router.get("/info", summary="Version, limits and what this server offers")
async def info(request: Request) -> dict[str, Any]:
    from gentool.tools import list_tools

    c = request.app.state.gentool.config
    return {"gentool": gentool.__version__, "runs_dir": str(c.runs), "chat_model": c.chat_model,
            "tools": sorted(list_tools()),
            "limits": {"max_tokens": c.max_tokens, "max_images": c.max_images, "max_body": c.max_body,
                       "max_upload": c.max_upload, "max_files": c.max_files, "max_pixels": c.max_pixels,
                       "queue_size": c.queue_size}}
