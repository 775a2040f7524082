"""The records hooks receive and return: model specs, jobs, results.

Everything here imports without torch; the jobs reference torch objects only through their
attributes at run time. Plugin authors import these through the facade (``from gentool import
ModelSpec, SampleResult``); this module is where they live.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Literal

from gentool.data.spec import DatasetSpec  # handed on with the other records

if TYPE_CHECKING:
    import torch

    from gentool.checkpoint import Checkpoint
    from gentool.data import ImageDataset, TextDataset
    from gentool.runs import Run
    from gentool.training import Task, TrainResult

Modality = Literal["image", "text"]


@dataclass(frozen=True)
class ModelSpec:
    """A model a plugin offers, registered through ``gentool_register_models``.

    ``config`` is a dataclass type whose fields are the model's options (see
    :mod:`gentool.config`); ``None`` means the model has no options of its own. ``epochs``,
    ``batch_size`` and ``lr`` are the training defaults used when the user gives none.
    ``finetune_options`` names config fields (flag name to help text) that ``gentool train``
    also accepts as flags (``--sft FILE``) and that may be given with ``--resume RUN``: that
    starts a *new* run whose weights begin from RUN's last checkpoint (``TrainJob.init_from``),
    with RUN's config and these fields changed (chat fine-tuning of a pretrained model, say).
    ``sample_options`` and ``evaluate_options`` declare the model's own flags of ``gentool sample``
    and ``gentool evaluate``: best as a dataclass (like ``config``: fields with types, defaults and
    ``metadata={"help": ...}``), whose parsed instance the hook then receives as ``job.options``
    (``gentool sample MODEL --help`` lists the fields; ``--label 3`` and ``m.sample(label=3)`` fill
    them; a mistyped flag or bad value is refused before the hook runs). The older form, a dict of
    flag name to help text, still works: the hook then gets the flags as a dict of strings.
    ``None`` leaves the flags unchecked. ``next_steps`` is what ``gentool train`` suggests running
    once training is done (default ``gentool sample NAME -n 16 | gentool evaluate NAME``): a model
    used through a verb of its own says so (``gentool detect IMAGE``).
    ``plugin`` and ``plugin_version`` are filled in by the core from the registering plugin.
    """

    name: str
    family: str
    summary: str
    config: type | None = None
    modality: Modality = "image"
    default_data: str = "digits"
    epochs: int = 10
    batch_size: int = 64
    lr: float = 1e-3
    image_size: int | None = None
    channels: int | None = None
    sample_options: type | dict[str, str] | None = None
    evaluate_options: type | dict[str, str] | None = None
    finetune_options: dict[str, str] | None = None
    next_steps: str | None = None
    plugin: str = ""
    plugin_version: str = ""


@dataclass
class TrainOptions:
    """The options every model shares (``gentool train`` flags and the ``[train]`` TOML table)."""

    data: str | None = None
    epochs: int = 10
    batch_size: int = 64
    lr: float = 1e-3
    device: str = "auto"
    precision: str = "fp32"  # fp32, bf16 or fp16: checked against the device by the core
    seed: int = 0
    image_size: int | None = None
    save_every: int = 0
    log_every: int = 0
    sample_count: int = 64
    threads: int | None = None

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("lr", "save_every", "log_every", "sample_count"):
            value = getattr(self, name)
            if not value >= 0 or value == float("inf"):  # refuses nan too
                raise ValueError(f"{name} must be a finite number >= 0, got {value}")
        if not 0 <= self.seed < 2**63:
            raise ValueError(f"seed must lie in 0 .. 2**63-1, got {self.seed}")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"threads must be at least 1, got {self.threads}")
        if self.image_size is not None and self.image_size < 4:
            raise ValueError(f"image_size must be at least 4, got {self.image_size}")


@dataclass
class TrainJob:
    """What ``gentool_train`` receives: everything needed to train one run.

    ``resume`` is the checkpoint to continue from (``None`` for a fresh run); the harness
    restores weights, optimizers, schedulers, RNG state and the position in the epoch from it.
    ``init_from`` is a checkpoint of the same model whose weights a fine-tuning run starts from
    (see ``ModelSpec.finetune_options``); the task loads them itself, the optimizer starts fresh.
    ``base`` then describes where those weights came from (run folder, checkpoint, its data and
    step); the core records it in every checkpoint of the new run as ``finetuned_from``.
    ``device`` is the device the core chose for the run (``options.device`` resolved, the process's
    own GPU under torchrun); :func:`gentool.fit` trains there. A job made by hand may leave it
    None: ``fit`` then resolves ``options.device`` itself.
    """

    spec: ModelSpec
    config: Any
    options: TrainOptions
    data: "ImageDataset | TextDataset"
    run: "Run"
    resume: Path | None = None
    quiet: bool = False
    init_from: Path | None = None
    base: dict[str, Any] | None = None
    device: "torch.device | None" = None

    def fit(self, task: "Task") -> "TrainResult":
        """Deprecated: call ``gentool.fit(task, job)``. Kept so that plugins written for gentool
        0.1 keep working; it warns (DeprecationWarning) and then does exactly that."""
        import warnings

        warnings.warn("TrainJob.fit(task) is deprecated: return gentool.fit(task, job) instead",
                      DeprecationWarning, stacklevel=2)
        from gentool.training import fit

        return fit(task, self)


@dataclass
class SampleJob:
    """What ``gentool_sample`` receives.

    ``options`` holds the model-specific flags: an instance of the dataclass the spec declared as
    ``sample_options`` (``gentool sample cgan --label 3 --interpolate`` or ``m.sample(label=3,
    interpolate=True)`` give ``options.label == "3"``, ``options.interpolate is True``), already
    parsed and checked; with the older dict declaration, a dict of strings (``{"label": "3",
    "interpolate": "true"}``). ``device`` is where to run the networks; ``generator`` is a **CPU**
    generator seeded by the core (draw noise on the CPU, then move it to ``device``: the same seed
    gives the same samples on every device). ``out`` is the folder the core writes the samples
    to; a plugin may add files of its own there (an animation, say) and list them in
    :attr:`SampleResult.files`.

    A large request comes in chunks (``gentool sample -n 10000000`` keeps memory bounded): the hook
    is then called once per chunk, ``n`` samples each, with ``first`` the index of the chunk's first
    sample in the whole request and ``total`` the request's size, and the same ``generator``
    running on. Draw in order from ``generator`` and each chunk continues the last; a file made for
    the whole request (an animation) is written when ``first == 0``. A request that fits one chunk
    (always so up to 1,024 samples) is one call with ``first == 0`` and ``total == n``.
    """

    spec: ModelSpec
    checkpoint: "Checkpoint"
    n: int
    device: "torch.device"
    generator: "torch.Generator"
    seed: int
    options: Any = field(default_factory=dict)
    out: Path = Path("samples")
    first: int = 0
    total: int | None = None

    def __post_init__(self) -> None:
        if self.total is None:
            self.total = self.n


@dataclass
class SampleResult:
    """What ``gentool_sample`` returns: images in ``[0, 1]`` (with optional labels) or texts.

    ``nrow`` sets the grid's row length (e.g. one row per class); ``None`` lets the core choose.
    ``files`` lists extra files the plugin wrote into ``SampleJob.out`` (reported to the user).
    """

    images: "torch.Tensor | None" = None
    labels: "torch.Tensor | None" = None
    texts: list[str] | None = None
    nrow: int | None = None
    files: list[Path] = field(default_factory=list)


@dataclass
class DiscriminateJob:
    """What ``gentool_discriminate`` receives: images in ``[0, 1]`` of the checkpoint's shape."""

    spec: ModelSpec
    checkpoint: "Checkpoint"
    images: "torch.Tensor"
    device: "torch.device"
    labels: "torch.Tensor | None" = None


@dataclass
class EvaluateJob:
    """What ``gentool_evaluate`` receives: a checkpoint and held-out data to score it on.

    ``data`` is the held-out split named by ``data_split`` (``"test"`` unless the user chose another;
    ``"train"`` when the data has no test split, which the core then says in the result).
    ``features`` names the feature extractor for sample-quality metrics (``None``: gentool's
    offline default; ``inception`` or ``inception:/path/weights.safetensors``); pass it to
    :func:`gentool.metrics.get_extractor`. ``options`` holds the model's own evaluation flags, as
    for :class:`SampleJob`.
    """

    spec: ModelSpec
    checkpoint: "Checkpoint"
    data: "ImageDataset | TextDataset"
    device: "torch.device"
    seed: int
    n: int = 2000
    features: str | None = None
    options: Any = field(default_factory=dict)
    data_loader: "Callable[[str], ImageDataset | TextDataset] | None" = None
    data_split: str = "test"

    def split(self, name: str) -> "ImageDataset | TextDataset":
        """Another split of the evaluation data (e.g. ``"train"`` to fit a feature extractor or
        a classifier on), loaded on demand with the same size and options."""
        if self.data_loader is None:
            raise RuntimeError("this EvaluateJob has no data loader")
        return self.data_loader(name)


@dataclass
class NoOptions:
    """Declare ``sample_options=NoOptions`` (or ``evaluate_options``) for a verb that takes no
    model-specific flags: a mistyped flag is then refused before the hook runs."""


@dataclass
class EvaluateResult:
    """What ``gentool_evaluate`` returns: numbers, the settings behind them, and warnings.

    ``metrics`` maps a metric name to a number (``None`` for a figure the plugin's own checks
    withdrew: say why in ``warnings``); ``settings`` maps a name to a string describing how the
    numbers were made (the feature extractor, the sampler, the AIS method); ``warnings`` are
    sentences the user must see (``gentool evaluate`` prints them on stderr and in the JSON).
    """

    metrics: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """``{"metrics": ..., "settings": ..., "warnings": [...]}`` (JSON-able)."""
        return {"metrics": dict(self.metrics), "settings": dict(self.settings), "warnings": list(self.warnings)}
