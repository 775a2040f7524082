"""Run folders: ``runs/<model>/<run>/`` with config, metrics, checkpoints, samples and plots.

Layout of one run::

    config.toml          model, plugin, training options, model config, data
    metrics.jsonl        one JSON object per log interval and per epoch
    last.safetensors     weights + training state, rewritten each epoch (and every --save-every steps)
    best.safetensors     weights of the best epoch by the task's monitored metric
    samples/epoch_001.png  a grid of samples after each epoch
    loss.png             loss curves, redrawn each epoch
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping

from gentool.io import write_atomic
from gentool.errors import CheckpointError, GentoolError
from gentool.paths import runs_dir

_NAME_OK = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


@dataclass
class Run:
    """One training run's folder."""

    model: str
    name: str
    dir: Path

    @property
    def config_path(self) -> Path:
        return self.dir / "config.toml"

    @property
    def metrics_path(self) -> Path:
        return self.dir / "metrics.jsonl"

    @property
    def last(self) -> Path:
        return self.dir / "last.safetensors"

    @property
    def best(self) -> Path:
        return self.dir / "best.safetensors"

    @property
    def samples_dir(self) -> Path:
        return self.dir / "samples"

    @property
    def loss_plot(self) -> Path:
        return self.dir / "loss.png"

    def checkpoint(self) -> Path | None:
        """The checkpoint to sample from: ``best`` if there is one, else ``last``."""
        for p in (self.best, self.last):
            if p.exists():
                return p
        return None

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold this run for one training process: a second ``gentool train`` of the same run (two
        ``--resume`` at once, say) is refused with the holder's pid instead of both writing.

        An OS file lock (``flock`` on ``RUN/.lock``): the system releases it when its process dies,
        however it dies, so the lock of a killed run is taken over without any clean-up.
        """
        self.dir.mkdir(parents=True, exist_ok=True)
        path = self.dir / ".lock"
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as exc:
            raise GentoolError(f"cannot lock run folder {self.dir}: {exc.strerror or exc}") from None
        try:
            try:
                import fcntl
            except ImportError:  # no flock (Windows): no lock, as before
                fcntl = None
            if fcntl is not None:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError:
                    holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
                    raise GentoolError(
                        f"run {self.name} of {self.model} is being trained by another process (pid {holder}): "
                        "wait for it to finish or stop it, then resume") from None
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            yield
        finally:
            os.close(fd)  # releases the lock

    def write_config(self, doc: Mapping[str, Any]) -> None:
        """Write ``config.toml`` (None values are left out: TOML has no null)."""
        import tomli_w

        def clean(x: Any) -> Any:
            if isinstance(x, Mapping):
                return {str(k): clean(v) for k, v in x.items() if v is not None}
            if isinstance(x, (list, tuple)):
                return [clean(v) for v in x if v is not None]
            return x

        write_atomic(self.config_path, tomli_w.dumps(clean(doc)).encode())

    def log(self, record: Mapping[str, Any]) -> None:
        """Append one JSON line to ``metrics.jsonl`` (flushed, so a crash loses at most one line)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        with open(self.metrics_path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")
            fh.flush()

    def records(self) -> list[dict[str, Any]]:
        """Every readable record of ``metrics.jsonl`` (a torn last line from a crash is skipped)."""
        if not self.metrics_path.exists():
            return []
        out = []
        for line in self.metrics_path.read_text(encoding="utf-8").splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return out


def model_runs(model: str) -> Iterator[Run]:
    """All runs of ``model`` in the runs folder."""
    base = runs_dir() / model
    if base.is_dir():
        for d in sorted(base.iterdir()):
            if d.is_dir():
                yield Run(model, d.name, d)


def new_run(model: str, name: str | None = None) -> Run:
    """Create the folder of a new run: ``name`` as given (must be new), else ``run1``, ``run2``, ..."""
    base = runs_dir() / model
    if name is not None:
        if not _NAME_OK.match(name) or len(name) > 100:
            shown = name if len(name) <= 40 else name[:40] + "..."
            raise GentoolError(f"bad run name {shown!r}: use at most 100 letters, digits, '.', '_' and '-'")
        if (base / name).exists():
            raise GentoolError(
                f"run {name!r} of {model} already exists in {base}: pick another --name, or --resume {name}"
            )
    else:
        taken = {r.name for r in model_runs(model)}
        i = 1
        while f"run{i}" in taken:
            i += 1
        name = f"run{i}"
    run = Run(model, name, base / name)
    try:
        run.dir.mkdir(parents=True, exist_ok=False)
    except FileExistsError:
        raise GentoolError(f"run {name!r} of {model} already exists in {base}") from None
    except OSError as exc:  # GENTOOL_RUNS is a file, read-only, on a full disk...
        raise GentoolError(f"cannot create the run folder {run.dir}: {exc.strerror or exc}"
                           f" (the runs folder is {runs_dir()}; GENTOOL_RUNS moves it)") from None
    return run


def latest_run(model: str) -> Run | None:
    """The run of ``model`` whose checkpoint was written last, or None."""
    best: tuple[float, Run] | None = None
    for run in model_runs(model):
        ckpt = run.last if run.last.exists() else run.checkpoint()
        if ckpt is None:
            continue
        mtime = ckpt.stat().st_mtime
        if best is None or mtime > best[0]:
            best = (mtime, run)
    return best[1] if best else None


def resolve_run(model: str, ref: str | None) -> Run:
    """The run to resume: the newest (``ref`` None or ``latest``), a run name, or a run folder."""
    if ref in (None, "", "latest", "last"):
        run = latest_run(model)
        if run is None:
            raise CheckpointError(f"no run of {model} to resume in {runs_dir() / model}")
        return run
    path = Path(ref)
    if path.is_file():
        path = path.parent
    if path.is_dir() and (path / "last.safetensors").exists():
        return Run(model, path.name, path)
    candidate = runs_dir() / model / ref
    if candidate.is_dir():
        if not (candidate / "last.safetensors").exists():
            raise CheckpointError(f"run {ref} of {model} has no last.safetensors to resume from")
        return Run(model, ref, candidate)
    names = [r.name for r in model_runs(model)]
    hint = f" (runs of {model}: {', '.join(names)})" if names else ""
    raise CheckpointError(f"no run {ref!r} of {model} in {runs_dir() / model}{hint}")


def resolve_checkpoint(model: str | None, ref: str | None) -> Path:
    """The checkpoint file for sampling or evaluating ``model``.

    ``ref`` may be None (the newest run's best, else last), a run name, a run folder or a file.
    (``hf://owner/repo`` is resolved a level up, in :func:`gentool.engine.resolve_checkpoint`,
    which pulls it and hands the local file here.) ``model`` may be None when ``ref`` is a path.
    """
    if ref is None:
        if model is None:
            raise CheckpointError("no checkpoint named and no model given")
        run = latest_run(model)
        ckpt = run.checkpoint() if run else None
        if ckpt is None:
            raise CheckpointError(
                f"no trained {model} found in {runs_dir() / model}: train one with "
                f"`gentool train {model}` or pull one with `gentool pull OWNER/REPO`"
            )
        return ckpt
    path = Path(ref)
    if path.is_file():
        return path
    if path.is_dir():
        ckpt = Run(model or "", path.name, path).checkpoint() or (
            path / "model.safetensors" if (path / "model.safetensors").exists() else None
        )
        if ckpt is None:
            raise CheckpointError(f"{path} holds no best.safetensors, last.safetensors or model.safetensors")
        return ckpt
    if model is not None:
        run_dir = runs_dir() / model / ref
        if run_dir.is_dir():
            ckpt = Run(model, ref, run_dir).checkpoint()
            if ckpt is None:
                raise CheckpointError(f"run {ref} of {model} has no checkpoint yet")
            return ckpt
    raise CheckpointError(f"checkpoint not found: {ref} (neither a file, a folder, nor a run of {model or 'any model'})")


def plot_losses(run: Run) -> Path | None:
    """Draw the loss curves of ``metrics.jsonl`` into ``loss.png`` (step records, by key).

    Called after every epoch, so it is kept cheap (about 0.1 s): matplotlib's object API without
    pyplot's figure manager, and a fixed layout instead of ``tight_layout``.
    """
    records = [r for r in run.records() if r.get("type") == "step"]
    if not records:
        return None
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    keys = sorted({k for r in records for k in r.get("losses", {})})
    fig = Figure(figsize=(7, 4), dpi=100)
    FigureCanvasAgg(fig)
    fig.subplots_adjust(left=0.12, right=0.97, bottom=0.13, top=0.91)
    ax = fig.add_subplot()
    for key in keys:
        pts = [(r["step"], r["losses"][key]) for r in records if key in r.get("losses", {})]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], label=key)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(f"{run.model} / {run.name}")
    ax.grid(alpha=0.3)
    if keys:
        ax.legend()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    write_atomic(run.loss_plot, buf.getvalue())
    return run.loss_plot
