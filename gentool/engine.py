"""The Python API: the CLI's verbs as functions, for scripts, notebooks and other plugins.

    import gentool
    run = gentool.train("cgan", epochs=20, data="digits", lr=2e-4, latent_dim=8)
    m = run.load()                              # or gentool.load(a file, a run folder, "cgan/run1", "hf://owner/name")
    s = m.sample(16, seed=0, label=3)           # s.images [16, C, H, W] in [0, 1], s.labels
    e = m.evaluate()                            # e.metrics, e.settings, e.warnings

``gentool train|sample|evaluate`` only parse flags, call these, and print. Errors are the same
:class:`gentool.errors.GentoolError` subclasses the CLI prints as one line. A plugin that needs
another plugin's samples (the detector drawing fakes from any generator) calls
``gentool.load(path).sample(n)``: the core routes the call to the checkpoint's own plugin, so no
plugin ever imports another.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from gentool.errors import CheckpointError, ConfigError, DataError, MissingSplitError, PluginError
from gentool.hook_io import _check_sample_result, declared_options, evaluation_result, verb_options  # noqa: F401
from gentool.report import reporting, warn

if TYPE_CHECKING:
    import torch

    from gentool.api import ModelSpec, SampleResult
    from gentool.checkpoint import Checkpoint
    from gentool.plugins import Registry
    from gentool.sampling import SavedSamples

def _registry() -> "Registry":
    from gentool.plugins import get_registry

    return get_registry()


# -- results ------------------------------------------------------------------------------------
@dataclass
class TrainedRun:
    """What :func:`train` returns: the run folder and what it holds."""

    model: str
    name: str
    dir: Path
    step: int
    epoch: int
    metrics: dict[str, Any] = field(default_factory=dict)
    last: Path | None = None
    best: Path | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def checkpoint(self) -> Path | None:
        """The checkpoint to sample from: ``best`` if there is one, else ``last``."""
        return self.best or self.last

    def load(self, device: str = "auto") -> "Model":
        """The trained model (best checkpoint, else last)."""
        if self.checkpoint is None:
            raise CheckpointError(f"run {self.dir} wrote no checkpoint")
        return load(self.checkpoint, device=device)


@dataclass
class Samples:
    """What :meth:`Model.sample` returns: images in ``[0, 1]`` (and labels) or texts."""

    images: "torch.Tensor | None" = None
    labels: "torch.Tensor | None" = None
    texts: list[str] | None = None
    nrow: int | None = None
    files: list[Path] = field(default_factory=list)
    class_names: list[str] | None = None
    checkpoint: Path | None = None
    warnings: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.texts) if self.texts is not None else int(self.images.shape[0]) if self.images is not None else 0

    def save(self, out: str | os.PathLike, *, as_dataset: bool = False) -> str:
        """Write single files plus ``grid.png`` (or ``samples.txt``) into ``out``; say what was written.

        ``as_dataset`` writes ``out/<class>/<n>.png`` instead (no grid): an image folder that
        ``--data out`` and any ImageFolder reader load back with the labels.
        """
        from gentool.sampling import SampleWriter, write_error

        out = _path_arg("out", out)
        writer = SampleWriter(out, as_dataset=as_dataset, class_names=self.class_names)
        try:
            writer.add(self.images, self.labels, self.texts, self.nrow)
            return writer.finish()
        except OSError as exc:  # a file where a folder should be, a read-only place, /proc, a full disk
            raise write_error(exc, out, writer, len(self)) from None


def _check_n(n: Any) -> None:
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ConfigError(f"the number of samples must be a positive integer, got {n!r}")


# -- arguments of the Python API: a wrong type is a one-line ConfigError, never a TypeError from deep inside
def _shown(value: Any) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text if len(text) <= 40 else text[:40] + '...'}"


def _name_arg(what: str, value: Any, *, optional: bool = False) -> str | None:
    """A name (a model's, a run's, a device's): a non-empty string."""
    if value is None and optional:
        return None
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{what} must be a non-empty string, got {_shown(value)}")
    return value


def _path_arg(what: str, value: Any, *, optional: bool = False) -> Path | None:
    """A file or folder: a string or an ``os.PathLike``."""
    if value is None and optional:
        return None
    if isinstance(value, bytes) or not isinstance(value, (str, os.PathLike)):
        raise ConfigError(f"{what} must be a path (a string or pathlib.Path), got {_shown(value)}")
    if not str(value).strip():
        raise ConfigError(f"{what} is empty")
    return Path(value)


def _mapping_arg(what: str, value: Any) -> Mapping[str, Any]:
    """Options as a mapping (None: none)."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(f"{what} must be a dict of option name to value, got {_shown(value)}")
    return value


def _seed_arg(seed: Any) -> int:
    """A seed: a whole number in 0 .. 2**63-1, as ``--seed`` takes it."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63:
        raise ConfigError(f"seed must be a whole number in 0 .. 2**63-1, got {_shown(seed)}")
    return seed


def _ref_arg(ref: Any) -> str | os.PathLike | None:
    """A checkpoint reference: None, a string (file, folder, run, MODEL/RUN, hf://) or a path."""
    if ref is None:
        return None
    _path_arg("the checkpoint (a file, a run folder, MODEL/RUN or hf://owner/name)", ref)
    return ref


@dataclass
class Evaluation:
    """What :meth:`Model.evaluate` returns: the plugin's numbers, their settings, and warnings."""

    model: str
    checkpoint: Path
    data: str
    split: str
    step: int
    metrics: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    saved: Path | None = None

    def as_dict(self) -> dict[str, Any]:
        """The document ``gentool evaluate --json`` prints and ``eval.json`` holds."""
        return {"model": self.model, "checkpoint": str(self.checkpoint), "data": self.data, "split": self.split,
                "step": self.step, "metrics": dict(self.metrics), "settings": dict(self.settings),
                "warnings": list(self.warnings)}


# -- loading a model ------------------------------------------------------------------------------
def resolve_checkpoint(model: str | None, ref: str | os.PathLike | None) -> Path:
    """The checkpoint file that ``ref`` names for ``model``.

    ``ref``: None (the newest run of ``model``: its best, else last), a file, a run folder, a run
    name of ``model``, ``MODEL/RUN`` under the runs folder, or ``hf://owner/name`` (pulled into the
    cache through :mod:`gentool.hub`, then used offline).
    """
    from gentool import runs

    ref = _ref_arg(ref)
    model = _name_arg("model", model, optional=True)
    if ref is not None and str(ref).startswith("hf://"):
        from gentool.hub import pull

        return pull(str(ref)[len("hf://"):])
    if ref is None and model is None:
        raise ConfigError("name a checkpoint (file, run folder, MODEL/RUN or hf://owner/name) or a model")
    if ref is not None and not Path(ref).exists():
        head, sep, tail = str(ref).partition("/")
        if sep and tail and "/" not in tail and model in (None, head):
            return runs.resolve_checkpoint(head, tail)
        if model is None:
            raise CheckpointError(f"checkpoint not found: {ref} (a file, a run folder, MODEL/RUN or hf://owner/name)")
    return runs.resolve_checkpoint(model, None if ref is None else str(ref))


def load(ref: str | os.PathLike | None = None, *, model: str | None = None, device: str = "auto") -> "Model":
    """Open a trained model from a checkpoint (see :func:`resolve_checkpoint` for ``ref``).

    The checkpoint's own plugin serves it; ``model`` (if given) must match. ``device``:
    ``auto`` (cuda > mps > cpu), ``cpu``, ``cuda``, ``cuda:N`` or ``mps``.
    """
    from gentool.checkpoint import load_checkpoint
    from gentool.devices import pick_device

    device = _name_arg("device", device)
    foreign = _open_foreign(model, ref)
    if foreign is not None:  # a plugin read a file of another format (a .gguf) as a checkpoint
        return Model(_registry().model(foreign.model), foreign, foreign.path, pick_device(device))
    path = resolve_checkpoint(model, ref)
    ckpt = load_checkpoint(path, model=model)
    spec = _registry().model(ckpt.model)
    return Model(spec, ckpt, path, pick_device(device))


def _holds_checkpoint(folder: Path) -> bool:
    """Whether ``folder`` is a run folder or a gentool push (its model.safetensors ours, not a
    Hugging Face model's)."""
    from gentool.checkpoint import read_header

    if (folder / "best.safetensors").is_file() or (folder / "last.safetensors").is_file():
        return True
    if not (folder / "model.safetensors").is_file():
        return False
    try:
        return "gentool" in (read_header(folder / "model.safetensors").get("__metadata__") or {})
    except CheckpointError:
        return True  # a damaged checkpoint: the usual path says what is wrong with it


def _open_foreign(model: str | None, ref: Any) -> "Checkpoint | None":
    """The checkpoint a plugin makes of ``ref`` where it names an existing file or folder that is not
    a gentool checkpoint (``gentool_open_checkpoint``), else None (the usual rules apply)."""
    if ref is None or not isinstance(ref, (str, os.PathLike)) or str(ref).startswith("hf://"):
        return None
    path = Path(ref).expanduser()
    if not ((path.is_file() and path.suffix != ".safetensors") or (path.is_dir() and not _holds_checkpoint(path))):
        return None
    ckpt = _registry().pm.hook.gentool_open_checkpoint(path=path, model=model)
    if ckpt is not None and model is not None and ckpt.model != model:
        raise CheckpointError(f"{path} opens as a {ckpt.model} model, not {model}")
    return ckpt


class Model:
    """A trained model, ready to sample and evaluate (made by :func:`load`)."""

    def __init__(self, spec: "ModelSpec", checkpoint: "Checkpoint", path: Path, device: "torch.device"):
        self.spec, self.checkpoint, self.path, self.device = spec, checkpoint, Path(path), device

    @property
    def name(self) -> str:
        """The model's name (``cgan``, ``gpt``, ...)."""
        return self.spec.name

    def __repr__(self) -> str:
        return f"Model({self.name!r}, checkpoint={str(self.path)!r}, step={self.checkpoint.step}, device={self.device})"

    def sample(self, n: int = 16, *, seed: int = 0, out: str | os.PathLike | None = None,
               options: Mapping[str, Any] | None = None, quiet: bool = False, **model_options: Any) -> Samples:
        """Draw ``n`` samples into memory; the same seed gives the same samples (on the same device).

        Model-specific options come as keywords (``label=3``, ``trunc=0.7``, ``prompt="ROMEO:"``) or
        as ``options={...}``; they are checked against what the model declares. ``out`` is where a
        plugin may write extra files (an animation, say; default ``samples/MODEL``); the samples
        themselves are returned, and written only by :meth:`Samples.save`. A request too big for
        this machine's memory is refused: :meth:`save_samples` writes any number in chunks.
        """
        import torch

        from gentool.rng import caller_state_kept, seed_everything

        _check_n(n)
        seed = _seed_arg(seed)
        opts = verb_options(self.spec, "sample", {**_mapping_arg("options", options), **model_options})
        self._check_fits_in_memory(n)
        out_dir = _path_arg("out", out) if out is not None else Path("samples") / self.name
        generator = torch.Generator(device="cpu").manual_seed(seed)
        with caller_state_kept(), reporting(quiet=quiet) as report, torch.no_grad():
            seed_everything(seed)  # for plugins that draw from the global streams too
            try:
                result = self._draw(n, 0, n, seed, generator, opts, out_dir)
            except (MemoryError, RuntimeError) as exc:  # the allocator: more than the plan foresaw
                if not _out_of_memory(exc):
                    raise
                raise DataError(f"{n:,} samples did not fit in memory ({_first_line(exc)}): draw fewer, or write "
                                "them in chunks with Model.save_samples(n, out), what `gentool sample` does") from None
        return Samples(images=result.images, labels=result.labels, texts=result.texts, nrow=result.nrow,
                       files=list(result.files), class_names=self.checkpoint.data.get("class_names"),
                       checkpoint=self.path, warnings=list(report.warnings))

    def save_samples(self, n: int, out: str | os.PathLike, *, seed: int = 0, as_dataset: bool = False,
                     options: Mapping[str, Any] | None = None, quiet: bool = False,
                     **model_options: Any) -> "SavedSamples":
        """Draw ``n`` samples and write them to ``out`` in chunks: memory stays bounded for any ``n``,
        progress is shown, and a request the disk cannot hold is refused after a small first chunk
        (see :mod:`gentool.sampling`). Files as :meth:`Samples.save` writes them; ``gentool sample``
        is this call. The same seed and ``n`` give the same files (up to 1,024 samples, the ones
        :meth:`sample` draws)."""
        import torch

        from gentool.sampling import chunk_size, write_samples
        from gentool.rng import caller_state_kept, seed_everything

        _check_n(n)
        seed = _seed_arg(seed)
        opts = verb_options(self.spec, "sample", {**_mapping_arg("options", options), **model_options})
        out_dir = _path_arg("out", out)
        size = chunk_size(self.checkpoint.data.get("shape"), self.spec.modality)
        generator = torch.Generator(device="cpu").manual_seed(seed)
        with caller_state_kept(), reporting(quiet=quiet) as report, torch.no_grad():
            seed_everything(seed)
            saved = write_samples(lambda first, count: self._draw(count, first, n, seed, generator, opts, out_dir),
                                  n, out_dir, size=size, as_dataset=as_dataset,
                                  class_names=self.checkpoint.data.get("class_names"), label=f"sample {self.name}")
        saved.warnings = list(report.warnings)
        return saved

    def _draw(self, n: int, first: int, total: int, seed: int, generator: "torch.Generator", opts: Any,
              out_dir: Path) -> "SampleResult":
        """One call of the plugin's ``gentool_sample`` hook for samples ``first .. first + n`` of ``total``."""
        from gentool.api import SampleJob, SampleResult

        job = SampleJob(spec=self.spec, checkpoint=self.checkpoint, n=n, device=self.device, generator=generator,
                        seed=seed, options=opts, out=out_dir, first=first, total=total)
        result = _registry().call("gentool_sample", self.spec, job=job)
        _check_sample_result(result, self.spec, SampleResult)
        return result

    def _check_fits_in_memory(self, n: int, what: str | None = None) -> None:
        """Refuse an in-memory request whose images would not fit: the float tensor and a copy, with
        as much again for everything else (so at most half the machine's memory, or of the address
        space a ``ulimit -v`` leaves this process). ``what`` names the request in the message."""
        from gentool.data.checks import check_memory, format_bytes
        from gentool.sampling import float_image_bytes

        shape = self.checkpoint.data.get("shape")
        if self.spec.modality == "image" and shape:
            need = 4 * float_image_bytes(shape) * n
            what = what or (f"{n:,} samples of shape {list(shape)} in memory (write them in chunks with "
                            f"Model.save_samples(n, out), what `gentool sample` does)")
            check_memory(need, what)
            left = _address_space_left()
            if left is not None and need > left:
                raise DataError(f"{what} would need {format_bytes(need)}; this process's address-space limit "
                                f"(ulimit -v) leaves {format_bytes(max(left, 0))}")

    def discriminate(self, images: "torch.Tensor", labels: "torch.Tensor | None" = None, *,
                     batch_size: int = 256) -> "torch.Tensor":
        """The model's discriminator's logits ``[N]`` (higher: "real") for ``images``, uint8 or float
        in ``[0, 1]``, ``[N, C, H, W]`` of the checkpoint's image shape; ``labels`` for a
        conditional discriminator. For models whose plugin implements ``gentool_discriminate``
        (the GANs); others are refused in one line."""
        import torch

        from gentool.api import DiscriminateJob

        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ConfigError(f"batch_size must be a positive integer, got {_shown(batch_size)}")
        reg = _registry()
        missing = (f"{self.name} has no discriminator to score images with (plugin {self.spec.plugin!r} "
                   "implements no gentool_discriminate)")
        if self.spec.modality != "image":  # before the images are looked at: that is not what is wrong
            raise ConfigError(f"{self.name} has no discriminator: it is a {self.spec.modality} model, not a GAN")
        if not isinstance(images, torch.Tensor) or images.ndim != 4:
            raise ConfigError(f"discriminate takes a tensor [N, C, H, W], got {type(images).__name__}"
                              f"{list(images.shape) if isinstance(images, torch.Tensor) else ''}")
        shape = list(self.checkpoint.data.get("shape") or [])
        if shape and list(images.shape[1:]) != shape:
            raise ConfigError(f"{self.name}'s discriminator takes images of shape {shape}, got {list(images.shape[1:])}")
        x = images.float() / 255.0 if images.dtype == torch.uint8 else images.float()
        if x.numel() and (x.min() < 0 or x.max() > 1 or not torch.isfinite(x).all()):
            raise ConfigError("discriminate takes float images in [0, 1] (or uint8)")
        if labels is not None:
            try:
                labels = torch.as_tensor(labels)
            except (TypeError, ValueError, RuntimeError):
                raise ConfigError(f"labels must be a tensor of class indices, got {type(labels).__name__}") from None
        if labels is not None and (labels.ndim != 1 or len(labels) != len(x)):
            raise ConfigError(f"labels must be one per image ([{len(x)}]), got {list(labels.shape)}")
        from gentool.rng import caller_state_kept

        out = []
        with caller_state_kept(), torch.no_grad():
            for s in range(0, len(x), batch_size):
                y = labels[s: s + batch_size] if labels is not None else None
                job = DiscriminateJob(spec=self.spec, checkpoint=self.checkpoint, images=x[s: s + batch_size],
                                      device=self.device, labels=y)
                z = reg.call("gentool_discriminate", self.spec, job=job, unanswered=missing)
                if not isinstance(z, torch.Tensor) or z.shape != (len(job.images),):
                    raise PluginError(f"plugin {self.spec.plugin!r} returned {type(z).__name__} from "
                                      f"gentool_discriminate, not a tensor of {len(job.images)} logits")
                out.append(z.detach().float().cpu())
        return torch.cat(out) if out else torch.zeros(0)

    def evaluate(self, *, data: str | None = None, split: str | None = None, n: int = 2000, seed: int = 0,
                 features: str | None = None, save: bool = True, options: Mapping[str, Any] | None = None,
                 quiet: bool = False, **model_options: Any) -> Evaluation:
        """Score the model on held-out data and return an :class:`Evaluation`.

        ``data`` defaults to what the model was trained on; ``split`` to its test split, or its
        training images when it has none (said in ``settings["split"]`` and in a warning).
        ``n`` samples feed sample-based metrics; ``features`` picks their feature extractor.
        ``save`` keeps the result as ``eval.json`` beside a run's checkpoint.
        """
        from gentool.api import EvaluateJob
        from gentool.data.registry import load_data
        from gentool.rng import caller_state_kept, seed_everything

        spec, ckpt = self.spec, self.checkpoint
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ConfigError(f"n must be a positive integer, got {n!r}")
        seed = _seed_arg(seed)
        # sample-based metrics draw n samples at once: planned like Model.sample (-n of gentool evaluate)
        self._check_fits_in_memory(n, f"evaluating on n={n:,} samples of shape {list(ckpt.data.get('shape') or [])} "
                                      "(pass a smaller n)")
        data = None if data is None else str(_path_arg("data (a data set's name or a path)", data))
        split = _name_arg("split", split, optional=True)
        features = _name_arg("features", features, optional=True)
        opts = verb_options(spec, "evaluate", {**_mapping_arg("options", options), **model_options})
        trained_on = ckpt.data.get("name") or spec.default_data
        data_ref = data or trained_on
        shape = ckpt.data.get("shape") or [None]
        image_size = shape[-1] if spec.modality == "image" else None
        reg = _registry()
        with caller_state_kept(), reporting(quiet=quiet) as report:
            seed_everything(seed)
            dataset, used = _evaluation_data(data_ref, spec.modality, split, image_size, reg,
                                             held_out=data_ref != trained_on)
            job = EvaluateJob(spec=spec, checkpoint=ckpt, data=dataset, device=self.device, seed=seed, n=n,
                              features=features, options=opts, data_split=used,
                              data_loader=lambda s: load_data(data_ref, spec.modality, s, image_size, reg))
            try:
                raw = reg.call("gentool_evaluate", spec, job=job)
            except (MemoryError, RuntimeError) as exc:  # the allocator: more than the plan foresaw
                if not _out_of_memory(exc):
                    raise
                raise DataError(f"evaluating on n={n:,} samples did not fit in memory ({_first_line(exc)}): "
                                "pass a smaller n") from None
            result = evaluation_result(raw, spec)
            for message in result.warnings:  # said like every other warning (stderr in the CLI)
                warn(message)
            settings = dict(result.settings)
            if used == "train" and split is None:
                settings.setdefault("split", f"train ({data_ref} has no test split)")
            evaluation = Evaluation(model=spec.name, checkpoint=self.path, data=data_ref, split=used,
                                    step=ckpt.step, metrics=dict(result.metrics), settings=settings,
                                    warnings=report.warnings)
            if save and (self.path.parent / "config.toml").exists():  # a run folder: keep the result there
                from gentool.io import write_atomic

                target = self.path.parent / "eval.json"
                try:
                    write_atomic(target, json.dumps(evaluation.as_dict(), indent=2).encode())
                    evaluation.saved = target
                except OSError as exc:
                    warn(f"could not save {target} ({exc.strerror or exc}): the result is not kept")
        evaluation.warnings = list(report.warnings)
        return evaluation


def _out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` is an allocator's refusal (CPU or GPU), not another error."""
    import torch

    if isinstance(exc, (MemoryError, getattr(torch, "OutOfMemoryError", MemoryError))):
        return True
    text = str(exc).lower()
    return "alloc" in text and ("memory" in text or "can't allocate" in text)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:160]


def _address_space_left() -> int | None:
    """Bytes of address space this process may still map under ``ulimit -v`` (RLIMIT_AS), or None
    when there is no such limit (or it cannot be told)."""
    try:
        import resource

        soft, _ = resource.getrlimit(resource.RLIMIT_AS)
        if soft in (resource.RLIM_INFINITY, -1):
            return None
        with open("/proc/self/statm") as f:
            mapped = int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
        return soft - mapped
    except (ImportError, OSError, ValueError, AttributeError):
        return None


def _evaluation_data(ref: str, modality: str, split: str | None, image_size: int | None, reg: Any, *,
                     held_out: bool = False) -> tuple[Any, str]:
    """The evaluation data and the split it is: ``split`` as asked; by default the test split.

    Data without a test split: when it is other data than the model trained on (``held_out``:
    ``--data`` named it), all of it is held out; when it is the training data, its training
    images are the only reference there is (the usual one for FID): used, with a warning.
    """
    from gentool.data.registry import load_data

    if split is not None:
        return load_data(ref, modality, split, image_size, reg), split
    try:
        return load_data(ref, modality, "test", image_size, reg), "test"
    except MissingSplitError as exc:
        if held_out:
            return load_data(ref, modality, "all", image_size, reg), "all"
        warn(f"{exc}: evaluated on the training images instead (the usual reference for FID; "
             "optimistic for likelihoods). Pass --data with held-out images to score on those.")
        return load_data(ref, modality, "train", image_size, reg), "train"


# -- training ---------------------------------------------------------------------------------------
def train(model: str, *, data: str | None = None, epochs: int | None = None, batch_size: int | None = None,
          lr: float | None = None, device: str | None = None, precision: str | None = None,
          seed: int | None = None, image_size: int | None = None, save_every: int | None = None,
          threads: int | None = None, name: str | None = None, resume: str | os.PathLike | bool | None = None,
          config: str | os.PathLike | Mapping[str, Any] | None = None, options: Mapping[str, Any] | None = None,
          quiet: bool = False, **model_options: Any) -> TrainedRun:
    """Train ``model`` and return the run; what ``gentool train`` does, flag for keyword.

    Model options (the model's config fields, and its fine-tune options such as gpt's ``sft``)
    come as keywords (``latent_dim=8``) or as ``options={...}``. ``config`` is a TOML file (or a
    dict of the same shape: ``[train]`` and ``[model]`` tables); keywords win over it, it over the
    model's defaults. ``resume`` continues a run (its name, folder, or ``True``/``"latest"`` for the
    newest) exactly where it stopped; with a fine-tune option it starts a new run from that run's
    weights instead. ``quiet`` silences progress output.
    """
    from gentool.plan import plan_train, read_request, read_toml, remove_if_empty, split_config_doc
    from gentool.rng import caller_state_kept
    from gentool.training import Task, TrainResult, fit

    reg = _registry()
    spec = reg.model(_name_arg("the model to train", model))
    if config is not None and not isinstance(config, Mapping):
        config = _path_arg("config (a TOML file, or a dict with [train] and [model] tables)", config)
    doc = dict(config) if isinstance(config, Mapping) else read_toml(config) if config is not None else {}
    train_doc, model_doc = split_config_doc(doc, spec)
    name = _name_arg("name", name, optional=True)
    if resume is not None and not isinstance(resume, bool):
        resume = _path_arg("resume (a run's name or folder, or True for the newest)", resume)
    options = _mapping_arg("options", options)
    flags = dict(data=data, epochs=epochs, batch_size=batch_size, lr=lr, device=device, precision=precision,
                 seed=seed, image_size=image_size, save_every=save_every, threads=threads)
    request = read_request(reg, spec, train_doc=train_doc, model_doc=model_doc, flags=flags,
                           model_options={**(options or {}), **model_options}, name=name, resume=resume, quiet=quiet)
    world = request.world
    with caller_state_kept(), reporting(quiet=quiet, main=world.is_main) as report:
        job = plan_train(request)
        run = job.run
        try:
            with run.lock() if world.is_main else contextlib.nullcontext():
                result = reg.call("gentool_train", spec, job=job)
                if isinstance(result, Task):  # the hook handed back its task: the core trains it
                    result = fit(result, job)
        except BaseException:
            if job.resume is None and world.is_main:  # a new run (fresh or fine-tuning) that holds nothing
                remove_if_empty(run.dir)
            raise
    if not isinstance(result, TrainResult):
        raise PluginError(f"plugin {spec.plugin!r} broke the train contract for model {model!r}: gentool_train "
                          f"returned {type(result).__name__}; expected its gentool.Task or what gentool.fit(task, job) "
                          "returns")
    return TrainedRun(model=model, name=run.name, dir=run.dir, step=result.step, epoch=result.epoch,
                      metrics=dict(result.metrics), last=result.last, best=result.best,
                      warnings=list(report.warnings))


__all__ = ["Evaluation", "Model", "Samples", "TrainedRun", "load", "resolve_checkpoint", "train"]
