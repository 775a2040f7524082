"""The shared training harness: every plugin's models train through :func:`fit`.

A plugin describes *what* one training step does by subclassing :class:`Task`; the harness does
the rest, identically for every model: device placement and autocast precision, the data order
(seeded per epoch, sharded across processes), the progress bar with live losses, throughput and
ETA (plain log lines when output is not a terminal), ``metrics.jsonl``, a sample grid and loss
plot each epoch, checkpoints (``last`` each epoch and every ``save_every`` steps, ``best`` by the
monitored metric), exact resume (weights, optimizers, schedulers, RNG, position in the epoch),
Ctrl-C (save, then exit 130), the NaN guard (stop and keep the last good checkpoint) and
data-parallel training under ``torchrun`` (rank 0 alone writes).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Mapping

import numpy as np
import torch

from gentool import distributed
from gentool.checkpoint import TRAIN_PREFIX, load_checkpoint, pack_state, save_checkpoint, unpack_state
from gentool.config import config_to_dict
from gentool.devices import autocast, check_precision, pick_device
from gentool.errors import CheckpointError, GentoolError

if TYPE_CHECKING:
    from gentool.api import TrainJob
    from gentool.data import ImageDataset


class TrainingInterrupted(GentoolError):
    """Ctrl-C during training: the state was saved; the CLI exits with 130."""

    exit_code = 130


class TrainingDiverged(GentoolError):
    """A loss or weight became NaN or infinite: training stopped, the last good checkpoint kept."""

    exit_code = 3


class NonFiniteLoss(Exception):
    def __init__(self, name: str, value: float):
        super().__init__(f"{name} = {value}")
        self.name, self.value = name, value


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch (all devices): same seed, same run on the same machine."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class Task:
    """What a model does in training. Subclass it in your plugin and pass it to ``gentool.fit(task, job)``.

    Required: :meth:`modules` and :meth:`training_step`. The default data order serves batches
    ``(x, y)`` of ``self.data`` (an :class:`~gentool.data.ImageDataset`): ``x`` float in
    ``[0, 1]`` of shape ``[B, C, H, W]`` on the device, ``y`` int64 labels or ``None``; override
    :meth:`batches` and :meth:`steps_per_epoch` for other data (text, say).
    """

    #: The data the default :meth:`batches` serves.
    data: "ImageDataset | None" = None
    #: Metric that picks the ``best`` checkpoint: a key of :meth:`validate`'s result or of the
    #: losses (their epoch mean). ``None``: ``loss`` if the step returns one, else no best.
    monitor: str | None = None
    #: ``"min"`` or ``"max"``: which direction of :attr:`monitor` is better.
    monitor_mode: str = "min"
    #: Step schedulers after every training step (``"step"``) or once per epoch (``"epoch"``).
    scheduler_interval: str = "step"
    #: Gradient clipping (max global norm) applied by :meth:`StepContext.step`; None for none.
    grad_clip: float | None = None
    #: Run :meth:`training_step` under autocast when ``--precision`` asks for it. Set False for
    #: hand-written updates that must stay in float32 (Gibbs sampling, say).
    autocast: bool = True
    #: Set by the harness before training: the device the modules live on.
    device: torch.device = torch.device("cpu")
    #: Set by the harness before :meth:`configure_optimizers`: the optimizer steps this process
    #: takes over the whole run (``epochs * steps_per_epoch`` at the run's world size, so under
    #: torchrun with N processes it is N times smaller). Learning-rate schedules decay over it.
    total_steps: int = 0
    #: Set by the harness with :attr:`total_steps`: the number of training processes.
    world_size: int = 1

    def modules(self) -> dict[str, torch.nn.Module]:
        """The networks to train and save, by name (names become checkpoint key prefixes)."""
        raise NotImplementedError

    def configure_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        """Optimizers by name (called once, after the modules are on the device)."""
        return {}

    def configure_schedulers(self, optimizers: Mapping[str, torch.optim.Optimizer]) -> dict[str, Any]:
        """Learning-rate schedulers by name (stepped per :attr:`scheduler_interval`)."""
        return {}

    def training_step(self, batch: Any, ctx: "StepContext") -> Mapping[str, Any]:
        """One step: compute losses, call ``ctx.step(loss, "optimizer name")``, return losses.

        The returned mapping (name -> float or 0-d tensor) is what the progress bar, the log and
        the NaN guard see; a costly figure may be reported every few steps only (epoch means are
        taken per key). Runs under autocast when a reduced precision is asked for (and
        :attr:`autocast` is true). Draw noise with the global torch RNG (``torch.randn``): the
        harness seeds it per process and restores it on resume.
        """
        raise NotImplementedError

    def sample(self, n: int, generator: torch.Generator) -> "torch.Tensor | list[str] | None":
        """Samples for the per-epoch grid: images ``[n, C, H, W]`` in ``[0, 1]`` or texts.

        ``generator`` is a CPU generator: draw noise on the CPU, then move it to the device.
        """
        return None

    def before_checkpoint(self) -> None:
        """Bring derived state up to date before the harness writes a checkpoint.

        Called on every process, under ``torch.no_grad`` with the training RNG restored
        afterwards: after each epoch (before :meth:`validate` and the sample grid, which see the
        result), and before a checkpoint written mid-epoch (``--save-every``, Ctrl-C). E.g. a GAN
        recomputes its EMA generator's batch-norm statistics here. Leave modules in the mode you
        found them.
        """

    def validate(self) -> dict[str, float]:
        """Metrics computed after each epoch (e.g. held-out loss); logged and monitorable.

        Called on the main process only, under ``torch.no_grad`` with modules in eval mode.
        """
        return {}

    def extra_state(self) -> dict[str, Any]:
        """Extra training state to save for resume (tensors, numbers, strings; no modules)."""
        return {}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`extra_state` returned (tensors arrive on :attr:`device`)."""

    def write_pictures(self, folder: Path, epoch: int) -> None:
        """Write pictures of the model into the run folder after each epoch (main process only,
        under ``no_grad``; the training RNG is restored afterwards). E.g. first-layer filters or
        a sampling chain; the core already writes ``samples/epoch_NNN.png`` from :meth:`sample`."""

    def checkpoint_meta(self) -> dict[str, Any]:
        """JSON-able facts to store in every checkpoint's header under ``extra`` (a tokenizer's
        vocabulary, say), so that sampling can rebuild everything from the file alone."""
        return {}

    # -- data ------------------------------------------------------------------------------
    def steps_per_epoch(self, batch_size: int, world_size: int) -> int:
        """Number of batches per epoch and process for the default :meth:`batches`."""
        if self.data is None:
            raise NotImplementedError("a Task without .data must override steps_per_epoch and batches")
        per_rank = len(self.data) // world_size
        return max(1, per_rank // batch_size) if per_rank >= batch_size else 1

    def batches(self, epoch: int, batch_size: int, rank: int, world_size: int, seed: int) -> Iterator[Any]:
        """The batches of one epoch for this process, in an order fixed by ``(seed, epoch)``.

        On resume the harness skips the batches already trained by drawing them from this
        iterator, then restores the RNG state, so randomness used here stays exact too.
        """
        data = self.data
        assert data is not None
        images, labels = self._data_on_device()
        g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
        order = torch.randperm(len(data), generator=g)[rank::world_size]
        steps = self.steps_per_epoch(batch_size, world_size)
        for i in range(steps):
            idx = order[i * batch_size : (i + 1) * batch_size].to(images.device)
            x = images[idx].to(self.device, non_blocking=True).float().div_(255)
            y = labels[idx].to(self.device, non_blocking=True) if labels is not None else None
            yield x, y

    def _data_on_device(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The uint8 images (and labels), kept on the GPU once moved there; on the CPU as they are."""
        data = self.data
        assert data is not None
        cached = getattr(self, "_device_data", None)
        if cached is not None and cached[0] == self.device:
            return cached[1], cached[2]
        images, labels = data.images, data.labels
        if self.device.type == "cuda":
            images = images.to(self.device)
            labels = labels.to(self.device) if labels is not None else None
        self._device_data = (self.device, images, labels)
        return images, labels

    # -- helpers ---------------------------------------------------------------------------
    def to(self, device: torch.device) -> None:
        """Move the modules to ``device`` (override if the task holds other tensors)."""
        self.device = device
        for m in self.modules().values():
            m.to(device)


@dataclass
class StepContext:
    """What a training step gets from the harness.

    ``step(loss, name)`` covers the usual case. For gradient accumulation call ``backward`` on
    each micro-batch's loss, then ``optimizer_step(name)``; for updates computed by hand
    (Boltzmann machines) call ``apply_gradients(name, {param: grad})``, which keeps the
    optimizer's momentum and weight decay and averages across processes.
    """

    device: torch.device
    precision: str
    world: distributed.World
    optimizers: dict[str, torch.optim.Optimizer]
    grad_clip: float | None = None
    scaler: Any = None
    step_count: int = 0
    epoch: int = 0

    def step(self, loss: torch.Tensor, optimizer: str, *, retain_graph: bool = False) -> None:
        """Zero the named optimizer's gradients, backward ``loss``, and step it.

        A non-finite loss (on any process) stops training before any weight changes.
        """
        self._optimizer(optimizer).zero_grad(set_to_none=True)
        self.backward(loss, retain_graph=retain_graph, name=f"loss for optimizer {optimizer!r}")
        self.optimizer_step(optimizer)

    def backward(self, loss: torch.Tensor, *, retain_graph: bool = False, name: str = "loss") -> None:
        """Backpropagate ``loss`` (scaled under fp16), then check it is finite on every process.

        The check comes after the backward pass is queued, not before: reading the loss waits for
        the GPU, and waiting before ``backward`` would leave the GPU idle while its kernels are
        launched. No optimizer has stepped yet, so a non-finite loss still changes no weight.
        """
        with torch.autocast(device_type=self.device.type, enabled=False):
            (self.scaler.scale(loss) if self.scaler else loss).backward(retain_graph=retain_graph)
        value = float(loss.detach())
        if distributed.any_flag(not math.isfinite(value), self.world) or not math.isfinite(value):
            raise NonFiniteLoss(name, value)

    def optimizer_step(self, optimizer: str) -> None:
        """Average gradients across processes, clip, step the optimizer, zero its gradients."""
        opt = self._optimizer(optimizer)
        params = [p for group in opt.param_groups for p in group["params"]]
        distributed.average_gradients(params, self.world)
        if self.grad_clip:
            if self.scaler:
                self.scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(params, self.grad_clip)
        if self.scaler:
            self.scaler.step(opt)
        else:
            opt.step()
        opt.zero_grad(set_to_none=True)

    def apply_gradients(self, optimizer: str, grads: Mapping[torch.nn.Parameter, torch.Tensor]) -> None:
        """Step the named optimizer with gradients computed by hand (no autograd).

        Give the gradient of the quantity to *minimise* (for a Boltzmann machine: negative
        phase minus positive phase statistics).
        """
        # a sum is NaN/inf if any element is (or if it overflows: then the update is useless too)
        bad = not math.isfinite(float(sum(g.float().sum() for g in grads.values())))
        if distributed.any_flag(bad, self.world) or bad:
            raise NonFiniteLoss(f"hand-computed gradient for optimizer {optimizer!r}", float("nan"))
        opt = self._optimizer(optimizer)
        for p, g in grads.items():
            p.grad = g.detach().to(p.dtype)
        scaler, self.scaler = self.scaler, None  # hand gradients are never loss-scaled
        try:
            self.optimizer_step(optimizer)
        finally:
            self.scaler = scaler

    def all_reduce_mean(self, t: torch.Tensor) -> torch.Tensor:
        """Average ``t`` across processes (for statistics computed by hand)."""
        return distributed.all_reduce_mean(t, self.world)

    def _optimizer(self, name: str) -> torch.optim.Optimizer:
        try:
            return self.optimizers[name]
        except KeyError:
            raise GentoolError(f"training step asked for unknown optimizer {name!r}") from None


@dataclass
class TrainResult:
    """What :func:`fit` returns."""

    run_dir: Path
    step: int
    epoch: int
    metrics: dict[str, Any] = field(default_factory=dict)
    last: Path | None = None
    best: Path | None = None


def _rng_state(device: torch.device) -> dict[str, Any]:
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
        "numpy": {"key": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "gauss": float(np_state[4])},
        "python": random.getstate(),
    }


@contextlib.contextmanager
def _rng_untouched(device: torch.device) -> Iterator[None]:
    """Run the block without moving the training RNG streams (torch, CUDA, numpy, Python).

    Validation, sample grids and pictures run between epochs; if they drew from the training
    streams, a run's weights would depend on them (and on whether a cached feature extractor had
    to be trained first), and a resumed run would drift from an uninterrupted one.
    """
    state = _rng_state(device)
    try:
        yield
    finally:
        _set_rng_state(state, device)


def _set_rng_state(state: Mapping[str, Any], device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda"], device)
    n = state["numpy"]
    np.random.set_state(("MT19937", n["key"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    random.setstate(state["python"])


def _to_device(obj: Any, device: torch.device) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.to(device)
    if isinstance(obj, dict):
        return {k: _to_device(v, device) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_device(v, device) for v in obj)
    return obj


class _Reporter:
    """Progress for people: a rich bar on a terminal, plain lines otherwise, nothing off rank 0."""

    def __init__(self, job: "TrainJob", total: int, start: int, enabled: bool):
        from rich.console import Console

        self.console = Console(stderr=False)
        self.enabled = enabled and not job.quiet
        self.live = self.enabled and self.console.is_terminal
        self.total, self.start = total, start
        self.label = f"{job.spec.name}/{job.run.name}"
        self.progress = None
        if self.live:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

            self.progress = Progress(
                TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(),
                console=self.console, transient=False,
            )
            self.progress.start()
            self.bar = self.progress.add_task(self.label, total=total, completed=start, info="")

    def update(self, step: int, epoch: int, losses: Mapping[str, float], rate: float, eta: float, log_line: bool) -> None:
        if not self.enabled:
            return
        info = " ".join(f"{k} {v:.4g}" for k, v in losses.items()) + f"  {rate:,.0f} samples/s"
        if self.live:
            self.progress.update(self.bar, completed=step, info=info, description=f"{self.label} ep {epoch + 1}")
        elif log_line:
            self.console.print(f"{self.label} step {step}/{self.total} epoch {epoch + 1} {info} eta {eta:.0f}s",
                               highlight=False, soft_wrap=True, markup=False)

    def say(self, text: str) -> None:
        if self.enabled:
            self.console.print(text, highlight=False, soft_wrap=True, markup=False)

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None


class _GracefulStop:
    """First Ctrl-C (SIGINT) or SIGTERM: finish the current step, save, stop. A second one: stop at
    once, unsaved. SIGTERM is what schedulers (SLURM, Kubernetes, systemd) send before they kill a
    job, so it gets the same care as Ctrl-C."""

    def __init__(self, reporter: _Reporter):
        import signal
        import threading

        self.requested = False
        self.hard = False
        self.signal: int | None = None
        self.previous: dict[int, Any] = {}
        self.reporter = reporter
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, getattr(signal, "SIGTERM", None)):
                if sig is not None:
                    self.previous[sig] = signal.signal(sig, self._handle)

    @property
    def name(self) -> str:
        import signal

        return "SIGTERM" if self.signal == getattr(signal, "SIGTERM", None) else "Ctrl-C"

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:
            self.hard = True
            raise KeyboardInterrupt
        self.requested, self.signal = True, signum
        self.reporter.say(f"{self.name}: stopping after this step (send it again to stop at once, without saving)")

    def restore(self) -> None:
        import signal

        for sig, previous in self.previous.items():
            signal.signal(sig, previous)
        self.previous = {}


def fit(task: Task, job: "TrainJob") -> TrainResult:
    """Train ``task`` for ``job`` (see the module docstring for everything this takes care of)."""
    opts = job.options
    world = distributed.launched_world()
    device = pick_device(opts.device, local_rank=world.local_rank if world.distributed else None)
    precision = check_precision(opts.precision, device)
    distributed.init(world, device)
    try:
        result = _Fit(task, job, world, device, precision).run()
    except BaseException:
        distributed.shutdown(world, synced=False)
        raise
    distributed.shutdown(world)
    return result


class _Fit:
    """One call of :func:`fit`: the state of the training loop and the operations on it."""

    def __init__(self, task: Task, job: "TrainJob", world: distributed.World, device: torch.device, precision: str):
        self.task, self.job, self.world, self.device, self.precision = task, job, world, device, precision
        self.opts, self.run_, self.spec = job.options, job.run, job.spec
        task.to(device)
        task.world_size = world.size
        task.total_steps = self.opts.epochs * task.steps_per_epoch(self.opts.batch_size, world.size)
        self.modules = task.modules()
        self.optimizers = task.configure_optimizers()
        self.schedulers = task.configure_schedulers(self.optimizers)
        self.scaler = torch.amp.GradScaler(device.type) if precision == "fp16" else None
        self.ctx = StepContext(device, precision, world, self.optimizers, task.grad_clip, self.scaler)
        self.step = 0
        self.position = [0, 0]  # (epoch, batches done in it) of the state in memory
        self.best_value: float | None = None
        self.last_metrics: dict[str, Any] = {}
        self.pending_rng: Mapping[str, Any] | None = None
        # running sums of the epoch's losses (saved with mid-epoch checkpoints, so that a resumed
        # epoch's mean covers the whole epoch, as an uninterrupted run's does)
        self.sums: dict[str, float] = {}
        self.counts: dict[str, int] = {}
        kill = os.environ.get("GENTOOL_TEST_KILL_AT_STEP", "")  # crash tests (gentool.testing)
        self.kill_at = int(kill) if kill.strip().isdigit() else None
        kill = os.environ.get("GENTOOL_TEST_KILL_AFTER_BEST", "")  # ... and the epoch end's crash window
        self.kill_after_best = int(kill) if kill.strip().isdigit() else None

    # -- checkpoints -----------------------------------------------------------------------
    def meta(self) -> dict[str, Any]:
        opts, spec = self.opts, self.spec
        return {
            "model": spec.name, "plugin": spec.plugin, "plugin_version": spec.plugin_version,
            "family": spec.family, "modality": spec.modality, "config": config_to_dict(self.job.config),
            "train": {**vars(opts), "precision": self.precision, "device": self.device.type,
                      "world_size": self.world.size},
            "data": self.job.data.info(), "run": self.run_.name, "extra": self.task.checkpoint_meta(),
            **({"finetuned_from": self.job.base} if getattr(self.job, "base", None) else {}),
        }

    def before_checkpoint(self) -> None:
        """The task's :meth:`Task.before_checkpoint`, on every process, off the training RNG."""
        with torch.no_grad(), _rng_untouched(self.device):
            self.task.before_checkpoint()

    def save_last(self) -> Path | None:
        if not self.world.is_main:
            return None
        _check_weights(self.modules)
        state = {
            "optimizers": {k: o.state_dict() for k, o in self.optimizers.items()},
            "schedulers": {k: s.state_dict() for k, s in self.schedulers.items()},
            "scaler": self.scaler.state_dict() if self.scaler else None,
            "rng": _rng_state(self.device),
            "position": {"epoch": self.position[0], "batch": self.position[1], "step": self.step},
            "best": self.best_value,
            "task": self.task.extra_state(),
            "epoch_losses": {"sums": dict(self.sums), "counts": dict(self.counts)},
        }
        tensors, doc = pack_state(state)
        meta = {**self.meta(), "step": self.step, "epoch": self.position[0], "metrics": self.last_metrics}
        return save_checkpoint(self.run_.last, self.modules, meta, train_state=(tensors, doc))

    def save_best(self, monitor: str | None) -> None:
        save_checkpoint(self.run_.best, self.modules, {**self.meta(), "step": self.step, "epoch": self.position[0],
                                                       "metrics": self.last_metrics, "monitor": monitor})

    def restore(self, path: Path) -> None:
        ckpt = load_checkpoint(path, model=self.spec.name)
        if "train_state" not in ckpt.meta:
            raise CheckpointError(f"{path} holds weights only, no training state to resume from (use a run's last.safetensors)")
        ckpt.load_into(self.modules)
        tensors = {k[len(TRAIN_PREFIX):]: v for k, v in ckpt.tensors(TRAIN_PREFIX).items()}
        try:
            self._apply_state(unpack_state(ckpt.meta["train_state"], tensors), path)
        except (KeyError, TypeError, ValueError, IndexError, AttributeError, RuntimeError, OverflowError) as exc:
            # A file from elsewhere, or one a tool rewrote: its weights may load, its training state not.
            if isinstance(exc, KeyError):
                detail = f"missing {exc}"
            else:
                detail = str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__
            raise CheckpointError(f"{path}: its training state is damaged ({detail}); resume from another "
                                  f"last.safetensors or start a new run") from None
        self.last_metrics = ckpt.metrics

    def _apply_state(self, state: Any, path: Path) -> None:
        """Put a checkpoint's unpacked training state back: optimizers, schedulers, task, position,
        and (checked now, set at the first batch) the random streams."""
        if not isinstance(state, dict):
            raise ValueError("the training state is not a table")
        for name, opt in self.optimizers.items():
            if name not in state["optimizers"]:
                raise CheckpointError(f"{path} has no state for optimizer {name!r}")
            opt.load_state_dict(state["optimizers"][name])
        for name, sched in self.schedulers.items():
            if name in state["schedulers"]:
                sched.load_state_dict(state["schedulers"][name])
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.task.load_extra_state(_to_device(state.get("task") or {}, self.device))
        pos = state["position"]
        position = [int(pos["epoch"]), int(pos["batch"])]
        step = int(pos["step"])
        if min(position + [step]) < 0:
            raise ValueError(f"negative position {position}, step {step}")
        self.position, self.step = position, step
        best = state.get("best")
        if best is not None and not isinstance(best, (int, float)):
            raise ValueError(f"best value {str(best)[:40]!r} is not a number")
        self.best_value = best
        partial = state.get("epoch_losses") or {}
        if self.position[1] > 0:  # mid-epoch: the steps before the stop count toward this epoch's means
            self.sums = {k: float(v) for k, v in (partial.get("sums") or {}).items()}
            self.counts = {k: int(v) for k, v in (partial.get("counts") or {}).items()}
        rng = state["rng"]
        with _rng_untouched(self.device):  # a stream that cannot be set is found now, not mid-run
            _set_rng_state(rng, self.device)
        # Set after the batches already trained are skipped (they may draw random numbers).
        self.pending_rng = rng if self.world.is_main else None

    def tidy_run_folder(self) -> None:
        """Remove temporary files a killed process left, and log records past the restored step."""
        for tmp in self.run_.dir.glob(".*.tmp"):
            tmp.unlink(missing_ok=True)
        records = self.run_.records()
        if any(r.get("step", 0) > self.step for r in records):
            from gentool.io import write_atomic

            kept = "".join(json.dumps(r) + "\n" for r in records if r.get("step", 0) <= self.step)
            write_atomic(self.run_.metrics_path, kept.encode())

    # -- the loop --------------------------------------------------------------------------
    def run(self) -> TrainResult:
        opts, world, task = self.opts, self.world, self.task
        if self.job.resume is not None:
            self.restore(self.job.resume)
            if self.position[0] >= opts.epochs:
                # Nothing left to train: the epoch end wrote best before last, so the checkpoints
                # are complete; return, so that whatever the plugin does after training (gpt's
                # transformers export, say) is finished if a crash had cut it short.
                from gentool.report import say

                say(f"run {self.run_.name} has already trained {self.position[0]} epochs: nothing left to train "
                    f"(pass --epochs N with N > {self.position[0]} to go on)")
                if world.is_main:
                    from gentool.runs import plot_losses

                    self.tidy_run_folder()
                    plot_losses(self.run_)
                run = self.run_
                return TrainResult(run.dir, self.step, self.position[0], self.last_metrics,
                                   run.last if run.last.exists() else None, run.best if run.best.exists() else None)
        distributed.broadcast_parameters(self.modules.values(), world)
        if world.distributed and world.rank > 0:
            # Each process draws its own noise (and chains); rank 0's stream is the resumable one.
            seed_everything(opts.seed + 7919 * world.rank + self.step)
        steps_per_epoch = task.steps_per_epoch(opts.batch_size, world.size)
        total = opts.epochs * steps_per_epoch
        log_every = opts.log_every or max(1, min(50, steps_per_epoch // 5))
        if world.is_main:
            self.run_.dir.mkdir(parents=True, exist_ok=True)
            self.tidy_run_folder()
            m = self.meta()
            self.run_.write_config({"model": m["model"], "plugin": m["plugin"], "train": m["train"],
                                    "model_config": m["config"], "data": m["data"]})
        self.ctx.step_count = self.step
        reporter = _Reporter(self.job, total, self.step, world.is_main)
        if self.job.resume is not None:
            reporter.say(f"resuming {self.spec.name}/{self.run_.name} at step {self.step} "
                         f"(epoch {self.position[0] + 1}, batch {self.position[1]})")
        stop = _GracefulStop(reporter)
        epoch = self.position[0]
        try:
            samples_seen, t0, step0 = 0, time.perf_counter(), self.step
            for epoch in range(self.position[0], opts.epochs):
                self.ctx.epoch = epoch
                if not (epoch == self.position[0] and self.position[1] > 0):
                    self.sums, self.counts = {}, {}
                sums, counts = self.sums, self.counts
                t_epoch = time.perf_counter()
                for m in self.modules.values():
                    m.train()
                batches = iter(task.batches(epoch, opts.batch_size, world.rank, world.size, opts.seed))
                skip = self.position[1] if epoch == self.position[0] else 0
                for _ in range(skip):
                    next(batches, None)
                if self.pending_rng is not None:
                    _set_rng_state(self.pending_rng, self.device)
                    self.pending_rng = None
                for b_idx, batch in enumerate(batches, start=skip):
                    with autocast(self.device, self.precision if task.autocast else "fp32"):
                        out = task.training_step(batch, self.ctx)
                    if self.scaler is not None:
                        self.scaler.update()  # once per iteration, after every optimizer stepped
                    losses = {k: float(v.detach()) if isinstance(v, torch.Tensor) else float(v) for k, v in out.items()}
                    bad = next((k for k, v in losses.items() if not math.isfinite(v)), None)
                    if distributed.any_flag(bad is not None, world) or bad is not None:
                        raise NonFiniteLoss(bad or "a loss on another process", losses.get(bad or "", float("nan")))
                    self.step += 1
                    self.position[:] = [epoch, b_idx + 1]
                    self.ctx.step_count = self.step
                    if task.scheduler_interval == "step":
                        for s in self.schedulers.values():
                            s.step()
                    for k, v in losses.items():  # per key: a step may report a loss only now and then
                        sums[k] = sums.get(k, 0.0) + v
                        counts[k] = counts.get(k, 0) + 1
                    samples_seen += _batch_len(batch) * world.size
                    elapsed = time.perf_counter() - t0
                    rate = samples_seen / elapsed if elapsed > 0 else 0.0
                    eta = (total - self.step) * elapsed / max(1, self.step - step0)
                    log_now = self.step % log_every == 0 or self.step == total
                    if log_now and world.is_main:
                        record = {"type": "step", "step": self.step, "epoch": epoch + 1, "losses": losses,
                                  "samples_per_s": round(rate, 2), "time": round(elapsed, 3)}
                        if self.optimizers:
                            record["lr"] = {k: o.param_groups[0]["lr"] for k, o in self.optimizers.items()}
                        self.run_.log(record)
                    reporter.update(self.step, epoch, losses, rate, eta, log_now)
                    if opts.save_every and self.step % opts.save_every == 0:
                        self.before_checkpoint()
                        self.save_last()
                        if self.kill_at == self.step and world.is_main:
                            _die_now()
                    if distributed.any_flag(stop.requested, world):
                        raise KeyboardInterrupt
                self.end_epoch(epoch, sums, counts, time.perf_counter() - t_epoch, reporter)
                if distributed.any_flag(stop.requested, world) and epoch + 1 < opts.epochs:
                    raise KeyboardInterrupt
        except KeyboardInterrupt:
            reporter.close()
            if stop.hard:
                kept = f"the last checkpoint is {self.run_.last}" if self.run_.last.exists() else "nothing was saved"
                raise TrainingInterrupted(f"stopped at once at step {self.step}, without saving; {kept}") from None
            try:
                self.before_checkpoint()
                saved = self.save_last()
            except NonFiniteLoss as exc:
                raise TrainingDiverged(f"interrupted, and the weights are not finite ({exc}): nothing saved") from None
            where = f"; saved {saved}" if saved else ""
            error = TrainingInterrupted(
                f"{'terminated (SIGTERM)' if stop.name == 'SIGTERM' else 'interrupted'} at step {self.step}{where}; "
                f"continue with: gentool train {self.spec.name} --resume {self.run_.name}"
            )
            if stop.name == "SIGTERM":
                error.exit_code = 143  # 128 + SIGTERM, as shells report a terminated job
            raise error from None
        except NonFiniteLoss as exc:
            reporter.close()
            kept = f"the last good checkpoint is {self.run_.last}" if self.run_.last.exists() else "no checkpoint had been written yet"
            raise TrainingDiverged(
                f"training diverged at step {self.step + 1} (epoch {epoch + 1}): {exc}; stopped, {kept}. "
                "Try a lower --lr or --precision fp32"
            ) from None
        finally:
            stop.restore()
            reporter.close()
        run = self.run_
        return TrainResult(run.dir, self.step, opts.epochs, self.last_metrics, run.last if run.last.exists() else None,
                           run.best if run.best.exists() else None)

    def end_epoch(self, epoch: int, sums: Mapping[str, float], counts: Mapping[str, int], seconds: float,
                  reporter: _Reporter) -> None:
        task, world = self.task, self.world
        if task.scheduler_interval == "epoch":
            for s in self.schedulers.values():
                s.step()
        distributed.broadcast_buffers(self.modules.values(), world)
        means = {k: v / max(1, counts[k]) for k, v in sums.items()}
        self.position[:] = [epoch + 1, 0]
        improved = False
        self.before_checkpoint()
        if world.is_main:
            for m in self.modules.values():
                m.eval()
            with torch.no_grad(), _rng_untouched(self.device):
                val = task.validate()
            self.last_metrics = {**{f"train_{k}": v for k, v in means.items()}, **val}
            bad = next((k for k, v in self.last_metrics.items() if isinstance(v, float) and not math.isfinite(v)), None)
        else:
            val, bad = {}, None
        if distributed.any_flag(bad is not None, world) or bad is not None:
            raise NonFiniteLoss(bad or "a metric on the main process", float("nan"))
        if world.is_main:
            monitor = task_monitor_name(task, means)
            value = _monitored(task, means, val)
            improved = value is not None and (
                self.best_value is None
                or (value < self.best_value if task.monitor_mode == "min" else value > self.best_value)
            )
            if improved:
                self.best_value = value
            self.run_.log({"type": "epoch", "epoch": epoch + 1, "step": self.step, **self.last_metrics,
                           "epoch_time": round(seconds, 3)})
            with _rng_untouched(self.device):
                _save_samples(task, self.run_, epoch + 1, self.opts)
                with torch.no_grad():
                    task.write_pictures(self.run_.dir, epoch + 1)
            # best before last: a crash between the two leaves last one epoch behind, and resuming
            # redoes that epoch exactly; never a last that claims a best that was not written
            if improved:
                self.save_best(monitor)
                if self.kill_after_best == epoch + 1:
                    _die_now()
            self.save_last()
            from gentool.runs import plot_losses

            plot_losses(self.run_)
            summary = " ".join(f"{k} {v:.4g}" for k, v in self.last_metrics.items() if isinstance(v, (int, float)))
            reporter.say(f"epoch {epoch + 1}/{self.opts.epochs} {summary}" + ("  (best)" if improved else ""))
        distributed.barrier(world)


def _die_now() -> None:
    """End this process at once, as SIGKILL does: no clean-up, no ``finally``, no flush."""
    import signal

    if hasattr(signal, "SIGKILL"):
        os.kill(os.getpid(), signal.SIGKILL)
    os._exit(137)


def task_monitor_name(task: Task, means: Mapping[str, float]) -> str | None:
    """The metric that picks ``best``: the task's :attr:`Task.monitor`, else ``loss`` if reported."""
    if task.monitor:
        return task.monitor
    return "loss" if "loss" in means else None


def _monitored(task: Task, means: Mapping[str, float], val: Mapping[str, Any]) -> float | None:
    name = task_monitor_name(task, means)
    if name is None:
        return None
    if name in val:
        return float(val[name])
    if name in means:
        return float(means[name])
    raise GentoolError(f"task monitors {name!r}, but neither validate() nor the losses report it")


def _batch_len(batch: Any) -> int:
    first = batch[0] if isinstance(batch, (tuple, list)) else batch
    return int(first.shape[0]) if hasattr(first, "shape") else 1


def _check_weights(modules: Mapping[str, torch.nn.Module]) -> None:
    for name, m in modules.items():
        for pname, p in m.named_parameters():
            if not torch.isfinite(p).all():
                raise NonFiniteLoss(f"weight {name}.{pname}", float("nan"))


def _save_samples(task: Task, run: Any, epoch: int, opts: Any) -> None:
    g = torch.Generator().manual_seed(opts.seed + 12345)  # the same noise every epoch: comparable grids
    with torch.no_grad():
        out = task.sample(opts.sample_count, g)
    if out is None:
        return
    run.samples_dir.mkdir(parents=True, exist_ok=True)
    if isinstance(out, torch.Tensor):
        from gentool.images import save_grid

        save_grid(out.float(), run.samples_dir / f"epoch_{epoch:03d}.png")
    else:
        from gentool.io import write_atomic

        write_atomic(run.samples_dir / f"epoch_{epoch:03d}.txt", "\n\n----\n\n".join(out).encode("utf-8"))
