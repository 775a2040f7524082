"""The ``gentool`` command line (Typer + rich).

Start-up stays instant: this module imports no torch; each command imports what it needs.
Errors a user can cause print one line and exit non-zero (``--debug`` shows the traceback).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any, List, Optional

import typer
from rich.markup import escape
from typer.core import TyperGroup

import gentool
from gentool.errors import ConfigError, DataError, GentoolError

class _Group(TyperGroup):
    """Turns errors into one line on stderr and an exit code, for every command (plugins' too)."""

    def invoke(self, ctx: typer.Context) -> Any:
        try:
            return super().invoke(ctx)
        except GentoolError as exc:
            if _debug():
                raise
            _console(stderr=True).print(f"[red]error:[/] {escape(str(exc))}", markup=True)
            ctx.exit(exc.exit_code)
        except (typer.Exit, typer.Abort, KeyboardInterrupt):
            raise
        except Exception as exc:
            if _debug() or exc.__class__.__module__.startswith(("click", "typer")):
                raise
            import traceback

            last = traceback.extract_tb(exc.__traceback__)[-1]
            _console(stderr=True).print(
                f"[red]error:[/] {escape(f'{type(exc).__name__}: {exc}')} (at {last.filename}:{last.lineno}; "
                "this is a bug: rerun with --debug for the traceback, and report it)", markup=True)
            ctx.exit(1)


def _debug() -> bool:
    return _state["debug"] or "--debug" in sys.argv or os.environ.get("GENTOOL_DEBUG") == "1"


app = typer.Typer(
    cls=_Group,
    name="gentool",
    help="Train, sample and evaluate deep generative models; models come from plugins.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain help: rich's help renderer imports pygments (+60 ms per start)
)

CORE_COMMANDS = {"list", "plugins", "train", "sample", "evaluate", "info", "push", "pull"}
_state = {"debug": False}


def _console(stderr: bool = False):
    from rich.console import Console

    return Console(stderr=stderr, highlight=False, soft_wrap=True)


def _registry():
    from gentool.plugins import get_registry

    return get_registry()


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"gentool {gentool.__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks for errors."),
    version: bool = typer.Option(False, "--version", callback=_version_callback, is_eager=True,
                                 help="Print the version and exit."),
) -> None:
    _state["debug"] = debug
    import warnings

    def show(message: Any, category: type, filename: str, lineno: int, file: Any = None, line: Any = None) -> None:
        _console(stderr=True).print(f"[yellow]warning:[/] {escape(str(message))}", markup=True)

    warnings.showwarning = show  # data problems a user should see, without our source lines


# -- list / plugins -------------------------------------------------------------------------
@app.command("list")
def list_models(as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table.")) -> None:
    """Every model of every installed plugin."""
    reg = _registry()
    rows = [{"name": s.name, "family": s.family, "plugin": s.plugin, "modality": s.modality, "summary": s.summary}
            for s in sorted(reg.models.values(), key=lambda s: (s.family, s.name))]
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        typer.echo("No models installed: install a plugin (see `gentool plugins` and docs/plugins.md).")
        return
    from rich.table import Table

    table = Table("model", "family", "plugin", "summary", box=None, header_style="bold")
    for r in rows:
        table.add_row(*(escape(str(r[k])) for k in ("name", "family", "plugin", "summary")))
    _console().print(table)


@app.command("plugins")
def list_plugins(as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table.")) -> None:
    """Installed plugins: versions, models, hooks, commands, and any that failed to load."""
    reg = _registry()
    _ensure_commands(reg)
    infos = [i.as_dict() for i in reg.plugins.values()]
    if as_json:
        typer.echo(json.dumps(infos, indent=2))
        return
    if not infos:
        typer.echo("No plugins installed (entry-point group 'gentool').")
        return
    from rich.table import Table

    table = Table("plugin", "version", "status", "models", "commands", "hooks", box=None, header_style="bold")
    for i in infos:
        status = "[green]ok[/]" if i["ok"] else "[red]failed[/]"
        hooks = ", ".join(h.removeprefix("gentool_") for h in i["hooks"])
        table.add_row(escape(i["name"]), escape(i["version"]), status, escape(", ".join(i["models"])),
                      escape(", ".join(i["commands"])), hooks)
    con = _console()
    con.print(table)
    for i in infos:
        if i["error"]:
            con.print(f"[red]{escape(i['name'])}[/]: {escape(i['error'])}", markup=True)
        for p in i["problems"]:
            con.print(f"[yellow]{escape(i['name'])}[/]: {escape(p)}", markup=True)


# -- train ----------------------------------------------------------------------------------
@app.command(add_help_option=False, context_settings={"help_option_names": [], "allow_extra_args": True,
                                                       "ignore_unknown_options": True})
def train(
    ctx: typer.Context,
    model: Optional[str] = typer.Argument(None, help="Model to train (see `gentool list`)."),
    data: Optional[str] = typer.Option(None, "--data", help="Data set name (digits, mnist, cifar10, ...) or path: image folder, IDX files, .npz, text file."),
    epochs: Optional[int] = typer.Option(None, "--epochs", min=1, help="Epochs to train (total, also when resuming)."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", min=1, help="Batch size per process."),
    lr: Optional[float] = typer.Option(None, "--lr", help="Learning rate."),
    device: Optional[str] = typer.Option(None, "--device", help="auto|cpu|cuda|mps (auto: cuda > mps > cpu)."),
    precision: Optional[str] = typer.Option(None, "--precision", help="fp32|bf16|fp16 autocast precision."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Random seed (same seed, same run)."),
    image_size: Optional[int] = typer.Option(None, "--image-size", min=4, help="Resize and crop images to this size."),
    name: Optional[str] = typer.Option(None, "--name", help="Run name (default run1, run2, ...)."),
    resume: Optional[str] = typer.Option(None, "--resume", help="Continue a run: its name, folder, or 'latest' (bare --resume)."),
    config: Optional[Path] = typer.Option(None, "--config", help="TOML file with [train] and [model] tables."),
    set_: Optional[List[str]] = typer.Option(None, "--set", help="Model option key=value (repeatable)."),
    save_every: Optional[int] = typer.Option(None, "--save-every", min=0, help="Also checkpoint every N steps (0: each epoch only)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress output."),
    help_: bool = typer.Option(False, "--help", "-h", help="Show this message (with MODEL: its options) and exit."),
) -> None:
    """Train a model; shows progress and writes runs/MODEL/RUN/ with safetensors checkpoints."""
    if help_ or model is None:
        typer.echo(ctx.get_help())
        if model is not None:
            _print_model_options(model)
        raise typer.Exit(0 if help_ else 2)

    from gentool.api import TrainJob, TrainOptions
    from gentool.config import build_config, config_from_dict, parse_set_options

    reg = _registry()
    spec = reg.model(model)
    file_doc = _read_toml(config) if config else {}
    train_doc, model_doc = _split_toml(file_doc, spec)
    flags = {k: v for k, v in dict(data=data, epochs=epochs, batch_size=batch_size, lr=lr, device=device,
                                   precision=precision, seed=seed, image_size=image_size,
                                   save_every=save_every).items() if v is not None}
    sets = {**_finetune_flags(ctx, spec), **parse_set_options(set_)}
    finetune = set(spec.finetune_options or {})

    resume_path = init_from = None
    if resume is not None and sets and finetune.intersection(sets):
        # Fine-tuning: a new run that starts from the resumed run's weights, with its config
        # and the fine-tune fields (and any other --set) changed.
        from gentool.checkpoint import load_checkpoint
        from gentool.runs import resolve_run

        base_run = resolve_run(model, resume)
        ckpt = load_checkpoint(base_run.last, model=model)
        base = {"epochs": spec.epochs, "batch_size": spec.batch_size, "lr": spec.lr, "image_size": spec.image_size}
        options = TrainOptions(**{**base, **train_doc, **flags})
        cfg = build_config(spec.config, {**ckpt.config, **model_doc, **sets})
        init_from = base_run.last
        run = None
    elif resume is not None:
        from gentool.checkpoint import load_checkpoint
        from gentool.runs import resolve_run

        run = resolve_run(model, resume)
        ckpt = load_checkpoint(run.last, model=model)
        if sets or model_doc:
            raise ConfigError("model options cannot change when resuming; start a new run instead")
        saved = {k: v for k, v in ckpt.meta.get("train", {}).items() if k in _TRAIN_OPTION_NAMES()}
        saved.pop("device", None)
        asked = {**train_doc, **flags}
        changed = [k for k in ("data", "batch_size", "seed", "image_size") if k in asked and asked[k] != saved.get(k)]
        if changed:
            raise ConfigError(f"--{changed[0].replace('_', '-')} cannot change when resuming (the saved position in "
                              "the data depends on it); start a new run instead")
        options = TrainOptions(**{**saved, **asked})
        cfg = config_from_dict(spec.config, ckpt.config)
        resume_path = run.last
    else:
        base = {"epochs": spec.epochs, "batch_size": spec.batch_size, "lr": spec.lr, "image_size": spec.image_size}
        options = TrainOptions(**{**base, **train_doc, **flags})
        cfg = build_config(spec.config, {**model_doc, **sets})
        run = None

    from gentool.devices import check_precision, pick_device
    from gentool.distributed import launched_world
    from gentool.training import seed_everything

    world = launched_world()
    check_precision(options.precision, pick_device(options.device, local_rank=world.local_rank if world.distributed else None))
    seed_everything(options.seed)
    options.data = options.data or spec.default_data
    dataset = _load_data(options.data, spec.modality, "train", options.image_size, reg, channels=spec.channels)
    fresh = run is None
    if fresh:
        run = _new_run(model, name)
    job = TrainJob(spec=spec, config=cfg, options=options, data=dataset, run=run, resume=resume_path, quiet=quiet,
                   init_from=init_from)
    if init_from is not None and world.is_main and not quiet:
        _console().print(f"fine-tuning from {init_from} into a new run: {run.dir}")
    try:
        result = reg.call("gentool_train", spec, job=job)
    except BaseException:
        if fresh and world.is_main:
            _remove_if_empty(run.dir)
        raise
    if world.is_main and not quiet:
        con = _console()
        con.print(f"run folder: {run.dir}")
        if getattr(result, "best", None):
            con.print(f"best checkpoint: {result.best}")
        con.print(f"next: gentool sample {model} -n 16   |   gentool evaluate {model}")


def _finetune_flags(ctx: typer.Context, spec: Any) -> dict[str, str]:
    """Flags left over after the train options: only the model's ``finetune_options`` pass."""
    from gentool.config import parse_extra_args, unknown_key_error

    extra = parse_extra_args(ctx.args)
    declared = spec.finetune_options or {}
    for key in extra:
        if key not in declared:
            known = sorted({o for p in ctx.command.params for o in p.opts if o.startswith("--")}
                           | {"--" + k.replace("_", "-") for k in declared})
            raise unknown_key_error("--" + key.replace("_", "-"), known, "train")
    return extra


def _TRAIN_OPTION_NAMES() -> set[str]:
    import dataclasses

    from gentool.api import TrainOptions

    return {f.name for f in dataclasses.fields(TrainOptions)}


def _remove_if_empty(folder: Path) -> None:
    """Remove a new run's folder when training failed before it held anything but its config."""
    if folder.is_dir() and {p.name for p in folder.iterdir()} <= {"config.toml"}:
        import shutil

        shutil.rmtree(folder, ignore_errors=True)


def _new_run(model: str, name: str | None):
    from gentool.distributed import launched_world
    from gentool.paths import runs_dir
    from gentool.runs import Run, new_run

    world = launched_world()
    if not world.distributed:
        return new_run(model, name)
    # Under torchrun every process must agree on the folder: a name all of them know, made by rank 0.
    run_id = os.environ.get("TORCHELASTIC_RUN_ID", "none")
    if name is None and run_id in ("", "none"):
        raise ConfigError("under torchrun, pass --name RUN (or use --standalone, whose run id names the run)")
    name = name or "run-" + "".join(c for c in run_id if c.isalnum())[:12]
    if world.is_main:
        return new_run(model, name)
    return Run(model, name, runs_dir() / model / name)


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib  # type: ignore[no-redef]
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot parse {path}: {exc}") from None


def _split_toml(doc: dict[str, Any], spec: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """``[train]`` and ``[model]`` tables; top-level keys go to whichever knows them."""
    import dataclasses

    from gentool.config import unknown_key_error

    train = dict(doc.get("train", {}))
    model = dict(doc.get("model", {}))
    option_names = _TRAIN_OPTION_NAMES()
    model_names = {f.name for f in dataclasses.fields(spec.config)} if spec.config else set()
    for key in train:
        if key not in option_names:
            raise unknown_key_error(key, sorted(option_names), "[train]")
    for key, value in doc.items():
        if key in ("train", "model"):
            continue
        if key in option_names:
            train[key] = value
        elif key in model_names:
            model[key] = value
        else:
            raise unknown_key_error(key, sorted(option_names | model_names), "config file")
    return train, model


def _print_model_options(model: str) -> None:
    from rich.table import Table

    from gentool.config import fields_of

    spec = _registry().model(model)
    con = _console()
    con.print(f"\n[bold]{escape(spec.name)}[/] ({escape(spec.family)}, plugin {escape(spec.plugin)}): {escape(spec.summary)}")
    con.print(f"defaults: --epochs {spec.epochs} --batch-size {spec.batch_size} --lr {spec.lr} --data {spec.default_data}"
              + (f" --image-size {spec.image_size}" if spec.image_size else ""), markup=False)
    for verb, declared in (("sample", spec.sample_options), ("evaluate", spec.evaluate_options)):
        if declared:
            con.print(f"gentool {verb} {spec.name} also takes: "
                      + "; ".join(f"--{k.replace('_', '-')} ({v})" for k, v in declared.items()), markup=False)
    if spec.finetune_options:
        con.print(f"gentool train {spec.name} also takes: "
                  + "; ".join(f"--{k.replace('_', '-')} ({v})" for k, v in spec.finetune_options.items())
                  + f"; with --resume RUN they fine-tune RUN's weights into a new run", markup=False)
    if spec.config is None:
        con.print("This model has no options of its own.")
        return
    table = Table("option (--set key=value)", "type", "default", "help", box=None, header_style="bold")
    for f in fields_of(spec.config):
        default = f.default if not isinstance(f.default, (tuple, list)) else ",".join(map(str, f.default))
        table.add_row(f.name, escape(f.type_name), escape(str(default)), escape(f.help))
    con.print(table)


def _load_data(ref: str, modality: str, split: str, image_size: int | None, reg: Any, channels: int | None = None):
    from gentool.data import load_dataset

    dataset = load_dataset(ref, split=split, image_size=image_size, channels=channels, extra=reg.datasets)
    kind = dataset.info().get("kind")
    if kind != modality:
        raise DataError(f"{ref} is {kind} data, but this model needs {modality} data")
    return dataset


# -- sample ---------------------------------------------------------------------------------
@app.command(context_settings={"help_option_names": ["-h", "--help"], "allow_extra_args": True,
                             "ignore_unknown_options": True})
def sample(
    ctx: typer.Context,
    model: str = typer.Argument(..., help="Model to sample from."),
    n: int = typer.Option(16, "-n", "--num", min=1, help="Number of samples."),
    checkpoint: Optional[str] = typer.Option(None, "--checkpoint", "-c", help="Checkpoint file, run name or folder, or hf://owner/repo (default: newest run)."),
    seed: int = typer.Option(0, "--seed", help="Random seed (same seed, same samples)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Output folder (default samples/MODEL)."),
    as_dataset: bool = typer.Option(False, "--as-dataset", help="Write an image folder with one subfolder per class (loadable with --data)."),
    device: str = typer.Option("auto", "--device", help="auto|cpu|cuda|mps."),
    set_: Optional[List[str]] = typer.Option(None, "--set", help="Model-specific sampling option key=value."),
) -> None:
    """Draw samples: single images and a grid (or text). Model-specific flags (--label 3, ...) pass through;
    `gentool train MODEL -h` lists them."""
    from gentool.api import SampleJob
    from gentool.checkpoint import load_checkpoint
    from gentool.config import parse_extra_args, parse_set_options
    from gentool.runs import resolve_checkpoint

    reg = _registry()
    spec = reg.model(model)
    options = _model_flags(spec, "sample", {**parse_extra_args(ctx.args), **parse_set_options(set_)})
    path = resolve_checkpoint(model, checkpoint)
    ckpt = load_checkpoint(path, model=model)

    import torch

    from gentool.devices import pick_device
    from gentool.training import seed_everything

    dev = pick_device(device)
    seed_everything(seed)
    out = out or Path("samples") / model
    generator = torch.Generator(device="cpu").manual_seed(seed)
    job = SampleJob(spec=spec, checkpoint=ckpt, n=n, device=dev, generator=generator, seed=seed,
                    options=options, out=out)
    with torch.no_grad():
        result = reg.call("gentool_sample", spec, job=job)
    written = write_samples(result, out, ckpt.data.get("class_names"), as_dataset=as_dataset)
    _console().print(f"wrote {written} from {path}")
    for f in result.files:
        _console().print(f"wrote {f}")


def _model_flags(spec: Any, verb: str, options: dict[str, str]) -> dict[str, str]:
    """Refuse flags the model did not declare for ``verb`` (when it declared any list)."""
    from gentool.config import unknown_key_error

    declared = spec.sample_options if verb == "sample" else spec.evaluate_options
    if declared is not None:
        flag = {k: "--" + k.replace("_", "-") for k in declared}
        for key in options:
            if key not in declared:
                raise unknown_key_error("--" + key.replace("_", "-"), sorted(flag.values()), f"{spec.name} {verb}")
    return options


def write_samples(result: Any, out: Path, class_names: list[str] | None = None, *, as_dataset: bool = False) -> str:
    """Write a SampleResult: single files plus ``grid.png`` or ``samples.txt``; say what.

    ``as_dataset`` writes ``out/<class>/<n>.png`` instead (no grid), an image folder that
    ``--data out`` and any ImageFolder reader load back with the labels.
    """
    out.mkdir(parents=True, exist_ok=True)
    if result.images is not None:
        from gentool.images import save_grid, save_images

        imgs = result.images.float().cpu()
        labels = [int(x) for x in result.labels.tolist()] if result.labels is not None else None

        def label_name(y: int) -> str:
            return _safe(class_names[y] if class_names and y < len(class_names) else str(y))

        if as_dataset:
            if labels is None:
                save_images(imgs, out / "images")
                return f"{imgs.shape[0]} unlabelled images to {out / 'images'}"
            for y in sorted(set(labels)):
                idx = [i for i, lab in enumerate(labels) if lab == y]
                save_images(imgs[idx], out / label_name(y), [f"{i:06d}.png" for i in idx])
            return f"{imgs.shape[0]} images in {len(set(labels))} class folders under {out}"
        names = [f"{i:06d}_{label_name(y)}.png" for i, y in enumerate(labels)] if labels is not None else None
        save_images(imgs, out, names)
        save_grid(imgs, out / "grid.png", result.nrow)
        return f"{imgs.shape[0]} images and grid.png to {out}"
    if result.texts is not None:
        for i, t in enumerate(result.texts):
            (out / f"{i:06d}.txt").write_text(t, encoding="utf-8")
        (out / "samples.txt").write_text("\n\n----\n\n".join(result.texts), encoding="utf-8")
        return f"{len(result.texts)} texts and samples.txt to {out}"
    raise GentoolError("the plugin returned neither images nor texts")


def _safe(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in text)[:40] or "x"


# -- evaluate -------------------------------------------------------------------------------
@app.command(context_settings={"help_option_names": ["-h", "--help"], "allow_extra_args": True,
                             "ignore_unknown_options": True})
def evaluate(
    ctx: typer.Context,
    model: str = typer.Argument(..., help="Model to evaluate."),
    checkpoint: Optional[str] = typer.Option(None, "--checkpoint", "-c", help="Checkpoint file, run, folder or hf://owner/repo."),
    data: Optional[str] = typer.Option(None, "--data", help="Data to evaluate on (default: what the model was trained on)."),
    split: str = typer.Option("test", "--split", help="Data split: test, train or all."),
    n: int = typer.Option(2000, "-n", "--num", min=1, help="Number of generated samples for sample-based metrics."),
    seed: int = typer.Option(0, "--seed", help="Random seed."),
    device: str = typer.Option("auto", "--device", help="auto|cpu|cuda|mps."),
    features: Optional[str] = typer.Option(None, "--features", help="Feature extractor: gentool-cnn (default, offline) or inception[:weights.safetensors]."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
    set_: Optional[List[str]] = typer.Option(None, "--set", help="Model-specific evaluation option key=value."),
) -> None:
    """Score a checkpoint on held-out data: a metrics table or JSON. Model-specific flags pass through;
    `gentool train MODEL -h` lists them."""
    from gentool.api import EvaluateJob
    from gentool.checkpoint import load_checkpoint
    from gentool.config import parse_extra_args, parse_set_options
    from gentool.runs import resolve_checkpoint

    reg = _registry()
    spec = reg.model(model)
    path = resolve_checkpoint(model, checkpoint)
    ckpt = load_checkpoint(path, model=model)
    data_ref = data or ckpt.data.get("name") or spec.default_data
    image_size = ckpt.data.get("shape", [None, None, None])[-1] if spec.modality == "image" else None

    from gentool.devices import pick_device
    from gentool.training import seed_everything

    seed_everything(seed)
    dataset = _load_data(data_ref, spec.modality, split, image_size, reg)
    job = EvaluateJob(spec=spec, checkpoint=ckpt, data=dataset, device=pick_device(device), seed=seed, n=n,
                      features=features,
                      options=_model_flags(spec, "evaluate", {**parse_extra_args(ctx.args), **parse_set_options(set_)}),
                      data_loader=lambda s: _load_data(data_ref, spec.modality, s, image_size, reg))
    metrics = reg.call("gentool_evaluate", spec, job=job)
    doc = {"model": model, "checkpoint": str(path), "data": data_ref, "split": split, "step": ckpt.step,
           "metrics": metrics}
    if (path.parent / "config.toml").exists():  # a run folder: keep the result beside the checkpoint
        from gentool.checkpoint import write_atomic

        write_atomic(path.parent / "eval.json", json.dumps(doc, indent=2).encode())
    if isinstance(metrics.get("warning"), str):  # a figure the plugin withdrew, and why: said on stderr too
        typer.echo(f"warning: {metrics['warning']}", err=True)
    if as_json:
        typer.echo(json.dumps(doc, indent=2))
        return
    from rich.table import Table

    table = Table("metric", "value", box=None, header_style="bold",
                  title=f"{model} @ step {ckpt.step} on {data_ref} ({split})")
    for k, v in metrics.items():
        table.add_row(escape(k), f"{v:.6g}" if isinstance(v, float) else escape(str(v)))
    _console().print(table)


# -- info -----------------------------------------------------------------------------------
@app.command()
def info(
    checkpoint: Path = typer.Argument(..., help="A gentool .safetensors checkpoint."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """What a checkpoint holds: model, plugin, versions, config, data, step, metrics, layers."""
    from gentool.checkpoint import TRAIN_PREFIX, load_checkpoint

    ckpt = load_checkpoint(checkpoint)
    counts = ckpt.parameter_counts()
    layers = {k: v for k, v in ckpt.tensor_shapes.items() if not k.startswith(TRAIN_PREFIX)}
    meta = {k: v for k, v in ckpt.meta.items() if k != "train_state"}
    if as_json:
        typer.echo(json.dumps({**meta, "parameters": counts, "resumable": ckpt.has_train_state,
                               "tensors": {k: {"shape": s, "dtype": d} for k, (s, d) in layers.items()}}, indent=2))
        return
    from rich.table import Table

    con = _console()
    con.print(f"[bold]{escape(str(checkpoint))}[/]")
    rows = [("model", ckpt.model), ("family", meta.get("family", "")),
            ("plugin", f"{ckpt.plugin} {meta.get('plugin_version', '')}".strip()),
            ("gentool", meta.get("gentool_version", "")), ("created", meta.get("created", "")),
            ("run", meta.get("run", "")), ("step / epoch", f"{ckpt.step} / {ckpt.epoch}"),
            ("resumable", "yes" if ckpt.has_train_state else "no (weights only)")]
    d = ckpt.data
    if d:
        rows.append(("data", f"{d.get('name')} {d.get('kind', '')} shape={d.get('shape')} count={d.get('count')}"))
        if d.get("class_names"):
            rows.append(("classes", ", ".join(map(str, d["class_names"]))))
    t = Table(box=None, show_header=False)
    for k, v in rows:
        t.add_row(f"[bold]{k}[/]", escape(str(v)))
    con.print(t)
    for title, section in (("config", ckpt.config), ("training", meta.get("train", {})), ("metrics", ckpt.metrics)):
        if section:
            tt = Table(title=title, box=None, show_header=False, title_justify="left")
            for k, v in section.items():
                tt.add_row(escape(k), f"{v:.6g}" if isinstance(v, float) else escape(str(v)))
            con.print(tt)
    lt = Table("tensor", "shape", "dtype", title="layers", box=None, title_justify="left", header_style="bold")
    for k, (s, dt) in layers.items():
        lt.add_row(escape(k), "x".join(map(str, s)) or "scalar", dt)
    con.print(lt)
    con.print("parameters: " + ", ".join(f"{m} {c:,}" for m, c in counts.items()) + f"  (total {sum(counts.values()):,})")


# -- hub ------------------------------------------------------------------------------------
@app.command()
def push(
    run: str = typer.Argument(..., help="Run folder, or MODEL/RUN under the runs folder."),
    repo_id: str = typer.Argument(..., help="Hub repository, owner/name."),
    private: bool = typer.Option(False, "--private", help="Create the repository as private."),
) -> None:
    """Upload a run's checkpoint, config.json and a model card to the hub."""
    from gentool.hub import push as do_push

    url = do_push(run, repo_id, private=private)
    _console().print(f"pushed to {url}")


@app.command()
def pull(repo_id: str = typer.Argument(..., help="Hub repository, owner/name.")) -> None:
    """Download a model from the hub into the cache; prints the checkpoint path."""
    from gentool.hub import pull as do_pull

    path = do_pull(repo_id)
    repo = repo_id.removeprefix("hf://")
    from gentool.checkpoint import load_checkpoint

    model = load_checkpoint(path).model
    _console().print(f"{path}\nsample with: gentool sample {model} --checkpoint hf://{repo}")


# -- entry point ----------------------------------------------------------------------------
_commands_added = False


def _ensure_commands(reg: Any) -> None:
    global _commands_added
    if not _commands_added:
        reg.add_commands(app, set(CORE_COMMANDS))
        _commands_added = True


def _fix_bare_resume(argv: list[str]) -> list[str]:
    """``--resume`` with no value means the newest run (click options need a value)."""
    out = list(argv)
    for i, a in enumerate(out):
        if a == "--resume" and (i + 1 == len(out) or out[i + 1].startswith("-")):
            out.insert(i + 1, "latest")
            break
    return out


def main(argv: list[str] | None = None) -> None:
    """Console entry point: ``gentool`` and ``python -m gentool``."""
    argv = _fix_bare_resume(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in CORE_COMMANDS:  # --help or a plugin's verb
        _ensure_commands(_registry())
    app(args=argv, prog_name="gentool")
