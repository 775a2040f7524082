"""The training plan: what a ``gentool train`` will run, settled before the plugin's hook is called.

:func:`read_request` reads what the caller asked (flags or keywords, a TOML file, the model's
defaults; flags win over the file, the file over the defaults). :func:`plan_train` then takes one
of three branches, each returning the :class:`~gentool.api.TrainJob` the plugin gets, with the
device chosen once for the whole run:

- :func:`plan_fresh`: a new run;
- :func:`plan_resume`: the same run goes on exactly where it stopped (the options that the saved
  state depends on may not change: :data:`FIXED_ON_RESUME`, and the model's config);
- :func:`plan_finetune`: a new run that starts from a run's weights, with its config and the
  model's fine-tune options changed (``ModelSpec.finetune_options``).
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from gentool.errors import ConfigError
from gentool.report import say

if TYPE_CHECKING:
    from gentool.api import ModelSpec, TrainJob, TrainOptions
    from gentool.checkpoint import Checkpoint
    from gentool.distributed import World
    from gentool.plugins import Registry
    from gentool.runs import Run

#: Training options whose change would break an exact resume (the saved position in the data,
#: the optimizer's and scheduler's state depend on them).
FIXED_ON_RESUME = ("data", "batch_size", "seed", "image_size", "lr")


def train_option_names() -> set[str]:
    """The names of the options every model shares (``TrainOptions``' fields)."""
    from gentool.api import TrainOptions

    return {f.name for f in dataclasses.fields(TrainOptions)}


@dataclass
class TrainRequest:
    """What the caller asked for one training run, read and merged but not yet planned."""

    reg: "Registry"
    spec: "ModelSpec"
    #: training options asked: the config file's ``[train]`` table, then flags or keywords over it
    asked: dict[str, Any]
    #: model options asked: the config file's ``[model]`` table, then keywords or ``--set`` over it
    asked_model: dict[str, Any]
    name: str | None = None
    #: the run to resume or fine-tune from (its name, folder, or ``latest``), None for a fresh run
    resume: str | None = None
    quiet: bool = False
    world: "World" = field(default=None)  # type: ignore[assignment]

    @property
    def defaults(self) -> dict[str, Any]:
        """The model's own training defaults (``ModelSpec``), under the file and the flags."""
        spec = self.spec
        return {"epochs": spec.epochs, "batch_size": spec.batch_size, "lr": spec.lr, "image_size": spec.image_size}

    def options_of(self, values: Mapping[str, Any]) -> "TrainOptions":
        from gentool.api import TrainOptions
        from gentool.config import build_config

        return build_config(TrainOptions, values, where="train", flags=True)


def read_request(reg: "Registry", spec: "ModelSpec", *, train_doc: Mapping[str, Any], model_doc: Mapping[str, Any],
                 flags: Mapping[str, Any], model_options: Mapping[str, Any], name: str | None,
                 resume: "str | os.PathLike | bool | None", quiet: bool) -> TrainRequest:
    """Merge a config document's tables (:func:`split_config_doc`), flags (the training options
    given; None: not given) and model options (keywords, ``--set``) into a :class:`TrainRequest`."""
    from gentool.distributed import launched_world

    sets = {str(k).replace("-", "_"): v for k, v in model_options.items()}
    if resume is True:
        resume = "latest"
    elif resume is False:
        resume = None
    asked = {**train_doc, **{k: v for k, v in flags.items() if v is not None}}
    if asked.get("data") is not None:
        asked["data"] = canonical_data(str(asked["data"]), reg)
    return TrainRequest(reg=reg, spec=spec, asked=asked, asked_model={**model_doc, **sets}, name=name,
                        resume=None if resume is None else str(resume), quiet=quiet, world=launched_world())


def plan_train(req: TrainRequest) -> "TrainJob":
    """The job for ``req``: fresh, a resume, or a fine-tuning run (a fine-tune option that differs
    from the resumed run's config)."""
    if req.resume is None:
        return plan_fresh(req)
    from gentool.checkpoint import load_checkpoint
    from gentool.runs import resolve_run

    prior = resolve_run(req.spec.name, req.resume)
    ckpt = load_checkpoint(prior.last, model=req.spec.name)
    finetune = set(req.spec.finetune_options or {})
    tuned = {k: v for k, v in req.asked_model.items() if k in finetune}
    if tuned and _first_difference(req.spec, ckpt.config, tuned) is not None:
        return plan_finetune(req, prior, ckpt)
    return plan_resume(req, prior, ckpt)


def plan_fresh(req: TrainRequest) -> "TrainJob":
    """A new run: the model's defaults, then the file, then the flags."""
    from gentool.config import build_config

    opts = req.options_of({**req.defaults, **req.asked})
    return _job(req, opts, build_config(req.spec.config, req.asked_model))


def plan_finetune(req: TrainRequest, prior: "Run", ckpt: "Checkpoint") -> "TrainJob":
    """A new run that starts from ``prior``'s weights, with its config and the fine-tune fields (and
    any other option) changed; by default on the data it was trained on."""
    from gentool.config import build_config

    base_train = ckpt.meta.get("train", {})
    inherited = {k: base_train[k] for k in ("data", "image_size") if base_train.get(k) is not None}
    opts = req.options_of({**req.defaults, **inherited, **req.asked})
    cfg = build_config(req.spec.config, {**ckpt.config, **req.asked_model})
    base = {"run": str(prior.dir), "checkpoint": str(prior.last), "step": ckpt.step,
            "data": ckpt.data.get("name"), "config": ckpt.config}
    return _job(req, opts, cfg, init_from=prior.last, base=base)


def plan_resume(req: TrainRequest, prior: "Run", ckpt: "Checkpoint") -> "TrainJob":
    """The same run goes on, exactly: its saved config and options, of which only those that the
    saved state does not depend on may change (``--epochs``, say)."""
    from gentool.config import config_from_dict, unknown_key_error

    spec, asked = req.spec, req.asked
    if req.asked_model:
        names = {f.name for f in dataclasses.fields(spec.config)} if spec.config else set()
        unknown = [k for k in req.asked_model if k not in names]
        if unknown:
            raise unknown_key_error(unknown[0], sorted(names), "model")
        diff = _first_difference(spec, ckpt.config, req.asked_model)
        if diff is not None:
            key, was, now = diff
            raise ConfigError(f"model option {key} cannot change when resuming (the run was trained with "
                              f"{key}={was}, asked {now}); start a new run instead")
    saved = {k: v for k, v in ckpt.meta.get("train", {}).items() if k in train_option_names()}
    saved.pop("device", None)
    opts = req.options_of({**saved, **asked})
    saved_data = canonical_data(saved.get("data"), req.reg)  # runs before 0.2 kept paths as given
    for key in FIXED_ON_RESUME:
        was = saved_data if key == "data" else saved.get(key)
        if key in asked and getattr(opts, key) != was:
            why = ("its optimizer and learning-rate schedule were built with it" if key == "lr"
                   else "the saved position in the data depends on it")
            raise ConfigError(f"--{key.replace('_', '-')} cannot change when resuming (the run used "
                              f"{saved.get(key)}; {why}); start a new run instead")
    opts.data = saved_data if "data" not in asked else opts.data
    notes = []
    if "epochs" in asked and saved.get("epochs") not in (None, opts.epochs):
        notes.append(f"note: the run was planned for {saved['epochs']} epochs and now runs to {opts.epochs}: "
                     "learning-rate schedules that decay over the run stretch to the new end from here on")
    # a resumed fine-tuning run still knows its base
    return _job(req, opts, config_from_dict(spec.config, ckpt.config), run=prior, resume=prior.last,
                base=ckpt.meta.get("finetuned_from"), notes=notes)


def _job(req: TrainRequest, opts: "TrainOptions", cfg: Any, *, run: "Run | None" = None, resume: Path | None = None,
         init_from: Path | None = None, base: dict[str, Any] | None = None, notes: list[str] = ()) -> "TrainJob":
    """What every branch does next: the device (chosen here, once), threads, seed, the data, and the
    run folder (made for a new run once the data is known to be trainable)."""
    from gentool.api import TrainJob
    from gentool.data import check_trainable
    from gentool.data.registry import load_data
    from gentool.devices import busy_machine_note, check_precision, pick_device, set_threads
    from gentool.rng import seed_everything

    spec, world = req.spec, req.world
    for note in notes:
        say(note)
    device = pick_device(opts.device, local_rank=world.local_rank if world.distributed else None)
    check_precision(opts.precision, device, warn_slow=True)
    used = set_threads(opts.threads)
    if opts.threads is not None:  # an explicit count is recorded (and reused on resume); auto is not
        opts.threads = used
    seed_everything(opts.seed)
    opts.data = opts.data or spec.default_data
    dataset = load_data(opts.data, spec.modality, "train", opts.image_size, req.reg, channels=spec.channels)
    check_trainable(dataset, minimum=2 * world.size)  # each process needs a batch of two at least
    if run is None:
        run = _new_run(spec.name, req.name, world)
    job = TrainJob(spec=spec, config=cfg, options=opts, data=dataset, run=run, resume=resume, quiet=req.quiet,
                   init_from=init_from, base=base, device=device)
    if init_from is not None:
        say(f"fine-tuning from {init_from} into a new run: {run.dir}")
    note = busy_machine_note(opts.threads)
    if note:
        say(note)
    return job


# -- reading a config file ---------------------------------------------------------------------
def read_toml(path: str | os.PathLike) -> dict[str, Any]:
    """A TOML file as a dict; a missing or malformed file is a one-line ConfigError."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib  # type: ignore[no-redef]
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"--config {path} is a folder: name a TOML file")
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot parse {path}: {exc}") from None


def split_config_doc(doc: Mapping[str, Any], spec: "ModelSpec") -> tuple[dict[str, Any], dict[str, Any]]:
    """``[train]`` and ``[model]`` tables of a config document; top-level keys go to whichever knows them."""
    from gentool.config import unknown_key_error

    for table in ("train", "model"):
        if table in doc and not isinstance(doc[table], Mapping):
            raise ConfigError(f"[{table}] must be a table of options (e.g. [{table}] then key = value lines), "
                              f"not {type(doc[table]).__name__} {doc[table]!r}")
    train = dict(doc.get("train", {}))
    model = dict(doc.get("model", {}))
    option_names = train_option_names()
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


def _first_difference(spec: "ModelSpec", saved: Mapping[str, Any], asked: Mapping[str, Any]) -> tuple[str, Any, Any] | None:
    """The first model option whose asked value differs from the saved run's (parsed alike)."""
    from gentool.config import build_config, config_to_dict

    before = config_to_dict(build_config(spec.config, dict(saved)))
    after = config_to_dict(build_config(spec.config, {**saved, **asked}))
    for key in after:
        if after[key] != before.get(key):
            return key, before.get(key), after[key]
    return None


def canonical_data(ref: str | None, reg: Any) -> str | None:
    """``--data`` as a run records it: a data set's name as given, a path made absolute, so that
    evaluating, resuming and fine-tuning find the data from any working folder."""
    if ref is None:
        return None
    from gentool.data.names import BUILTIN_DATASET_NAMES

    key = str(ref).strip().lower().replace("_", "-")
    names = set(BUILTIN_DATASET_NAMES) | {str(n).lower().replace("_", "-") for n in reg.datasets}
    if key in names:
        return str(ref)
    path = Path(ref).expanduser()
    return str(path.resolve()) if path.exists() else str(ref)


def remove_if_empty(folder: Path) -> None:
    """Remove a new run's folder when training failed before it held anything but its config."""
    if folder.is_dir() and {p.name for p in folder.iterdir()} <= {"config.toml", ".lock"}:
        import shutil

        shutil.rmtree(folder, ignore_errors=True)


def _new_run(model: str, name: str | None, world: "World") -> "Run":
    from gentool.paths import runs_dir
    from gentool.runs import Run, new_run

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
