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
from gentool.errors import GentoolError

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
    return _state["debug"] or os.environ.get("GENTOOL_DEBUG") == "1"


app = typer.Typer(
    cls=_Group,
    name="gentool",
    help="Train, sample and evaluate deep generative models; models come from plugins.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain help: rich's help renderer imports pygments (+60 ms per start)
    # -h beside --help for every verb, plugins' too (their contexts inherit it); train, sample and
    # evaluate print their own help (with MODEL: its options) and take both themselves
    context_settings={"help_option_names": ["-h", "--help"]},
)

CORE_COMMANDS = {"list", "plugins", "train", "sample", "evaluate", "info", "push", "pull", "serve"}
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
    _state["debug"] = debug or _state.pop("argv_debug", False)  # set afresh by every invocation
    import warnings

    from gentool.report import GentoolWarning

    warnings.simplefilter("always", GentoolWarning)  # in the CLI's own process: every message is shown

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
    failed = reg.failed()
    if failed:  # their models are missing from the list: say so, where it does not spoil the JSON
        _console(stderr=True).print(f"[yellow]note:[/] plugin {escape(', '.join(failed))} failed to load, so its "
                                    "models are missing: see `gentool plugins`", markup=True)
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
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help="CPU threads (default: GENTOOL_THREADS, OMP_NUM_THREADS, else one per core)."),
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

    from gentool.config import parse_set_options
    from gentool.distributed import launched_world
    from gentool.engine import train as run_training

    spec = _registry().model(model)
    options = {**_finetune_flags(ctx, spec), **parse_set_options(set_)}
    result = run_training(model, data=data, epochs=epochs, batch_size=batch_size, lr=lr, device=device,
                          precision=precision, seed=seed, image_size=image_size, threads=threads, name=name,
                          resume=resume, config=config, save_every=save_every, options=options, quiet=quiet)
    if launched_world().is_main and not quiet:
        con = _console()
        con.print(f"run folder: {result.dir}", markup=False)
        if result.best:
            con.print(f"best checkpoint: {result.best}", markup=False)
        hint = spec.next_steps or f"gentool sample {model} -n 16   |   gentool evaluate {model}"
        con.print(f"next: {hint}", markup=False)


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


def _options_table(config_cls: type, title: str) -> Any:
    from rich.table import Table

    from gentool.config import fields_of

    table = Table(title, "type", "default", "help", box=None, header_style="bold")
    for f in fields_of(config_cls):
        default = f.default if not isinstance(f.default, (tuple, list)) else ",".join(map(str, f.default))
        table.add_row(f.name if "--set" in title else "--" + f.name.replace("_", "-"), escape(f.type_name),
                      escape(str(default)), escape(f.help))
    return table


def _print_verb_options(spec: Any, verb: str, con: Any) -> None:
    """The model's own flags of ``verb`` (sample or evaluate): a table, or the older one-line list."""
    import dataclasses

    from gentool.hook_io import declared_options

    declared = declared_options(spec, verb)
    if isinstance(declared, type) and dataclasses.is_dataclass(declared):
        if dataclasses.fields(declared):
            con.print(f"\ngentool {verb} {spec.name} also takes:", markup=False)
            con.print(_options_table(declared, "option"))
    elif declared:
        con.print(f"gentool {verb} {spec.name} also takes: "
                  + "; ".join(f"--{k.replace('_', '-')} ({v})" for k, v in declared.items()), markup=False)


def _print_model_options(model: str) -> None:
    spec = _registry().model(model)
    con = _console()
    con.print(f"\n[bold]{escape(spec.name)}[/] ({escape(spec.family)}, plugin {escape(spec.plugin)}): {escape(spec.summary)}")
    con.print(f"defaults: --epochs {spec.epochs} --batch-size {spec.batch_size} --lr {spec.lr} --data {spec.default_data}"
              + (f" --image-size {spec.image_size}" if spec.image_size else ""), markup=False)
    for verb in ("sample", "evaluate"):
        _print_verb_options(spec, verb, con)
    if spec.finetune_options:
        con.print(f"gentool train {spec.name} also takes: "
                  + "; ".join(f"--{k.replace('_', '-')} ({v})" for k, v in spec.finetune_options.items())
                  + f"; with --resume RUN they fine-tune RUN's weights into a new run", markup=False)
    if spec.config is None:
        con.print("This model has no options of its own.")
        return
    con.print(_options_table(spec.config, "option (--set key=value)"))


def _verb_help(ctx: typer.Context, model: Optional[str], verb: str) -> None:
    typer.echo(ctx.get_help())
    if model is not None:
        spec = _registry().model(model)
        _print_verb_options(spec, verb, _console())
    raise typer.Exit(0)


def _open_model(ctx: typer.Context, model: Optional[str], verb: str, help_: bool, checkpoint: Optional[str],
                device: str, set_: Optional[List[str]]) -> tuple[Any, dict[str, str]]:
    """What sample and evaluate share: help, the model's checkpoint, and its own flags."""
    if help_:
        _verb_help(ctx, model, verb)
    if model is None:
        typer.echo(ctx.get_help())
        raise typer.Exit(2)
    from gentool.config import parse_extra_args, parse_set_options
    from gentool.engine import load

    _registry().model(model)  # an unknown name: "did you mean", before looking for its runs
    options = {**parse_extra_args(ctx.args), **parse_set_options(set_)}
    return load(checkpoint, model=model, device=device), options


# -- sample ---------------------------------------------------------------------------------
@app.command(add_help_option=False, context_settings={"help_option_names": [], "allow_extra_args": True,
                                                       "ignore_unknown_options": True})
def sample(
    ctx: typer.Context,
    model: Optional[str] = typer.Argument(None, help="Model to sample from."),
    n: int = typer.Option(16, "-n", "--num", min=1, help="Number of samples."),
    checkpoint: Optional[str] = typer.Option(None, "--checkpoint", "-c", help="Checkpoint file, run name or folder, or hf://owner/repo (default: newest run)."),
    seed: int = typer.Option(0, "--seed", help="Random seed (same seed, same samples)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Output folder (default samples/MODEL)."),
    as_dataset: bool = typer.Option(False, "--as-dataset", help="Write an image folder with one subfolder per class (loadable with --data)."),
    device: str = typer.Option("auto", "--device", help="auto|cpu|cuda|mps."),
    set_: Optional[List[str]] = typer.Option(None, "--set", help="Model-specific sampling option key=value."),
    help_: bool = typer.Option(False, "--help", "-h", help="Show this message (with MODEL: its own options) and exit."),
) -> None:
    """Draw samples: single images and a grid (or text).

    \b
    Model-specific flags (--label 3, ...) pass through:
    `gentool sample MODEL -h` lists them; `gentool train MODEL -h` lists every option of the model.
    """
    m, options = _open_model(ctx, model, "sample", help_, checkpoint, device, set_)
    out = out or Path("samples") / model
    saved = m.save_samples(n, out, seed=seed, as_dataset=as_dataset, options=options)
    con = _console()
    con.print(f"wrote {saved.summary} from {m.path}", markup=False)
    for f in saved.files:
        con.print(f"wrote {f}", markup=False)


# -- evaluate -------------------------------------------------------------------------------
@app.command(add_help_option=False, context_settings={"help_option_names": [], "allow_extra_args": True,
                                                       "ignore_unknown_options": True})
def evaluate(
    ctx: typer.Context,
    model: Optional[str] = typer.Argument(None, help="Model to evaluate."),
    checkpoint: Optional[str] = typer.Option(None, "--checkpoint", "-c", help="Checkpoint file, run, folder or hf://owner/repo."),
    data: Optional[str] = typer.Option(None, "--data", help="Data to evaluate on (default: what the model was trained on)."),
    split: Optional[str] = typer.Option(None, "--split", help="Data split: test (default; the training images when the data has none), train or all."),
    n: int = typer.Option(2000, "-n", "--num", min=1, help="Number of generated samples for sample-based metrics."),
    seed: int = typer.Option(0, "--seed", help="Random seed."),
    device: str = typer.Option("auto", "--device", help="auto|cpu|cuda|mps."),
    features: Optional[str] = typer.Option(None, "--features", help="Feature extractor: gentool-cnn (default, offline) or inception[:weights.safetensors]."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
    set_: Optional[List[str]] = typer.Option(None, "--set", help="Model-specific evaluation option key=value."),
    help_: bool = typer.Option(False, "--help", "-h", help="Show this message (with MODEL: its own options) and exit."),
) -> None:
    """Score a checkpoint on held-out data: a metrics table or JSON.

    \b
    Model-specific flags pass through:
    `gentool evaluate MODEL -h` lists them; `gentool train MODEL -h` lists every option of the model.
    """
    m, options = _open_model(ctx, model, "evaluate", help_, checkpoint, device, set_)
    result = m.evaluate(data=data, split=split, n=n, seed=seed, features=features, options=options)
    if as_json:
        typer.echo(json.dumps(result.as_dict(), indent=2))
        return
    from rich.table import Table

    table = Table("metric", "value", box=None, header_style="bold",
                  title=f"{model} @ step {result.step} on {result.data} ({result.split})")
    for k, v in result.metrics.items():
        table.add_row(escape(k), f"{v:.6g}" if isinstance(v, float) else escape(str(v)))
    for k, v in result.settings.items():
        table.add_row(escape(k), escape(v))
    _console().print(table)


# -- info -----------------------------------------------------------------------------------
def _describe_file(path: Path) -> "dict[str, Any] | None":
    """What a plugin says of a model file that is not a gentool checkpoint (``gentool_describe_file``)."""
    from gentool.plugins import get_registry

    from gentool.engine import _holds_checkpoint

    if not path.exists() or (path.is_dir() and _holds_checkpoint(path)):
        return None  # not found, or a run folder or a gentool push: the usual rules say what it is
    return get_registry().pm.hook.gentool_describe_file(path=path)


@app.command()
def info(
    checkpoint: Path = typer.Argument(..., help="A gentool .safetensors checkpoint, or a model file a plugin "
                                                "describes (a .gguf, a Hugging Face model folder)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """What a checkpoint holds: model, plugin, versions, config, data, step, metrics, layers."""
    from gentool.checkpoint import TRAIN_PREFIX, load_checkpoint

    described = _describe_file(checkpoint)
    if described is not None:
        if as_json:
            typer.echo(json.dumps(described, indent=2, default=str))
            return
        from rich.table import Table

        con = _console()
        con.print(f"[bold]{escape(str(checkpoint))}[/]")
        t = Table(box=None, show_header=False)
        for k, v in described.items():
            text = ", ".join(f"{a} {b}" for a, b in v.items()) if isinstance(v, dict) else str(v)
            t.add_row(f"[bold]{escape(str(k))}[/]", escape(text))
        con.print(t)
        return
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


# -- serve ----------------------------------------------------------------------------------
@app.command()
def serve(
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on (0.0.0.0: every interface; see the warning)."),
    port: int = typer.Option(8000, "--port", min=0, max=65535, help="Port to listen on."),
    runs: Optional[Path] = typer.Option(None, "--runs", help="Runs folder to show and serve (default: GENTOOL_RUNS or ./runs)."),
    api_key: Optional[str] = typer.Option(None, "--api-key", envvar="GENTOOL_API_KEY",
                                          help="Require 'Authorization: Bearer KEY' on every API request (or GENTOOL_API_KEY)."),
    chat_model: Optional[str] = typer.Option(None, "--chat-model", help="A chat model besides the runs' (a checkpoint, a .gguf, a transformers folder or hub id)."),
    device: str = typer.Option("auto", "--device", help="auto|cpu|cuda|mps."),
    quantize: str = typer.Option("auto", "--quantize", help="Weights of pretrained chat models (GGUF, Hugging Face): auto|none|bf16|int8|int4."),
    queue: int = typer.Option(8, "--queue", min=0, help="Requests that may wait for a busy model; one more gets a 503."),
    max_pixels: int = typer.Option(1 << 20, "--max-pixels", min=1,
                                   help="Most image pixels in one tool request, all files together (default: one 1024x1024 image)."),
) -> None:
    """A local web page (runs, samples, tools, chat) and an OpenAI-compatible API."""
    from gentool.serve import LOOPBACK, ServeConfig, bind, prepare, require_extra
    from gentool.serve import serve as run_server

    require_extra()
    from gentool.paths import runs_dir

    config = ServeConfig(runs=(runs or runs_dir()).expanduser().resolve(), api_key=api_key or None,
                         chat_model=chat_model, device=device, queue_size=queue, max_pixels=max_pixels,
                         quantize=quantize)
    sock = bind(host, port)  # a taken port is said at once, not after the chat model has loaded
    try:
        prepare(config, runs_given=runs is not None)  # --runs and --chat-model checked (one line each) before serving
    except BaseException:
        sock.close()
        raise
    port = sock.getsockname()[1]
    err = _console(stderr=True)
    if host not in LOOPBACK:
        err.print(f"[yellow]warning:[/] listening on {escape(host)}: other machines can reach this server"
                  + ("" if api_key else " and use it without a key (set --api-key)")
                  + "; it is meant for a trusted network", markup=True)
    shown = f"[{host}]" if ":" in host else host
    _console().print(f"gentool serve: http://{shown}:{port}/ (page), /v1 (OpenAI-compatible API), /openapi.json "
                     f"(schema); runs from {config.runs}; Ctrl-C stops", markup=False)
    run_server(config, host, port, sock=sock)


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


def _take_debug(argv: list[str]) -> list[str]:
    """``--debug`` is accepted anywhere (``gentool train made --debug``), not only before the verb."""
    _state["argv_debug"] = "--debug" in argv
    return [a for a in argv if a != "--debug"]


def main(argv: list[str] | None = None) -> None:
    """Console entry point: ``gentool`` and ``python -m gentool``."""
    argv = _fix_bare_resume(_take_debug(sys.argv[1:] if argv is None else list(argv)))
    if not argv or argv[0] not in CORE_COMMANDS:  # --help or a plugin's verb
        _ensure_commands(_registry())
    app(args=argv, prog_name="gentool")
