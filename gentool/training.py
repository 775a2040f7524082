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

import math
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
    """What a model does in training. Subclass it in your plugin and pass it to ``job.fit``.

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
    #: Step schedulers after every optimizer step (``"step"``) or once per epoch (``"epoch"``).
    scheduler_interval: str = "step"
    #: Gradient clipping (max global norm) applied by :meth:`StepContext.step`; None for none.
    grad_clip: float | None = None
    #: Set by the harness before training: the device the modules live on.
    device: torch.device = torch.device("cpu")

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
        the NaN guard see. Runs under autocast when a reduced precision is asked for.
        """
        raise NotImplementedError

    def sample(self, n: int, generator: torch.Generator) -> "torch.Tensor | list[str] | None":
        """Samples for the per-epoch grid: images ``[n, C, H, W]`` in ``[0, 1]`` or texts."""
        return None

    def validate(self) -> dict[str, float]:
        """Metrics computed after each epoch (e.g. held-out loss); logged and monitorable."""
        return {}

    def extra_state(self) -> dict[str, Any]:
        """Extra training state to save for resume (tensors, numbers, strings; no modules)."""
        return {}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`extra_state` returned."""

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
        """The batches of one epoch for this process, in an order fixed by ``(seed, epoch)``."""
        data = self.data
        assert data is not None
        images = data.images.to(self.device) if self.device.type == "cuda" else data.images
        labels = data.labels
        if labels is not None and self.device.type == "cuda":
            labels = labels.to(self.device)
        g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
        order = torch.randperm(len(data), generator=g)[rank::world_size]
        steps = self.steps_per_epoch(batch_size, world_size)
        for i in range(steps):
            idx = order[i * batch_size : (i + 1) * batch_size]
            if self.device.type == "cuda":
                idx = idx.to(self.device)
            x = images[idx].to(self.device, non_blocking=True).float().div_(255)
            y = labels[idx].to(self.device, non_blocking=True) if labels is not None else None
            yield x, y

    # -- helpers ---------------------------------------------------------------------------
    def to(self, device: torch.device) -> None:
        """Move the modules to ``device`` (override if the task holds other tensors)."""
        self.device = device
        for m in self.modules().values():
            m.to(device)


@dataclass
class StepContext:
    """What a training step gets from the harness."""

    device: torch.device
    precision: str
    world: distributed.World
    optimizers: dict[str, torch.optim.Optimizer]
    grad_clip: float | None = None
    scaler: Any = None
    step_count: int = 0
    epoch: int = 0

    def step(self, loss: torch.Tensor, optimizer: str, *, retain_graph: bool = False) -> None:
        """Backward ``loss`` and step the named optimizer (zero grad, scaling, gradient
        averaging across processes, clipping). A non-finite loss stops training before any
        weight changes."""
        value = float(loss.detach())
        if not math.isfinite(value):
            raise NonFiniteLoss(f"loss for optimizer {optimizer!r}", value)
        try:
            opt = self.optimizers[optimizer]
        except KeyError:
            raise GentoolError(f"training step asked for unknown optimizer {optimizer!r}") from None
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device_type=self.device.type, enabled=False):
            (self.scaler.scale(loss) if self.scaler else loss).backward(retain_graph=retain_graph)
        params = [p for group in opt.param_groups for p in group["params"]]
        distributed.average_gradients(params, self.world)
        if self.grad_clip:
            if self.scaler:
                self.scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(params, self.grad_clip)
        if self.scaler:
            self.scaler.step(opt)
            self.scaler.update()
        else:
            opt.step()

    def all_reduce_mean(self, t: torch.Tensor) -> torch.Tensor:
        """Average ``t`` across processes (for updates computed by hand)."""
        return distributed.all_reduce_mean(t, self.world)


@dataclass
class TrainResult:
    """What :func:`fit` returns."""

    run_dir: Path
    step: int
    epoch: int
    metrics: dict[str, Any] = field(default_factory=dict)
    last: Path | None = None
    best: Path | None = None


def _rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": [s for s in torch.cuda.get_rng_state_all()] if torch.cuda.is_available() else [],
        "numpy": {"key": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "gauss": float(np_state[4])},
        "python": random.getstate(),
    }


def _set_rng_state(state: Mapping[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(list(state["cuda"]))
    n = state["numpy"]
    np.random.set_state(("MT19937", n["key"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    random.setstate(state["python"])


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
                               highlight=False, soft_wrap=True)

    def say(self, text: str) -> None:
        if self.enabled:
            self.console.print(text, highlight=False, soft_wrap=True)

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None


def fit(task: Task, job: "TrainJob") -> TrainResult:
    """Train ``task`` for ``job`` (see the module docstring for everything this takes care of)."""
    opts = job.options
    world = distributed.launched_world()
    device = pick_device(opts.device, local_rank=world.local_rank if world.distributed else None)
    precision = check_precision(opts.precision, device)
    distributed.init(world, device)
    try:
        return _fit(task, job, world, device, precision)
    finally:
        distributed.shutdown(world)


def _fit(task: Task, job: "TrainJob", world: distributed.World, device: torch.device, precision: str) -> TrainResult:
    opts, run, spec = job.options, job.run, job.spec
    task.to(device)
    modules = task.modules()
    optimizers = task.configure_optimizers()
    schedulers = task.configure_schedulers(optimizers)
    scaler = torch.amp.GradScaler(device.type) if precision == "fp16" else None
    ctx = StepContext(device, precision, world, optimizers, task.grad_clip, scaler)

    start_epoch, start_batch, step, best_value = 0, 0, 0, None
    if job.resume is not None:
        start_epoch, start_batch, step, best_value = _restore(task, job.resume, spec.name, modules, optimizers, schedulers, scaler)
        if start_epoch >= opts.epochs:
            raise GentoolError(
                f"run {run.name} has already trained {start_epoch} epochs: pass --epochs N with N > {start_epoch} to go on"
            )
    distributed.broadcast_parameters(modules.values(), world)

    steps_per_epoch = task.steps_per_epoch(opts.batch_size, world.size)
    total = opts.epochs * steps_per_epoch
    meta_base = {
        "model": spec.name, "plugin": spec.plugin, "plugin_version": spec.plugin_version,
        "family": spec.family, "modality": spec.modality, "config": config_to_dict(job.config),
        "train": {**vars(opts), "precision": precision, "device": device.type, "world_size": world.size},
        "data": job.data.info(), "run": run.name, "extra": task.checkpoint_meta(),
    }
    if world.is_main:
        run.write_config({"model": spec.name, "plugin": spec.plugin, "train": meta_base["train"],
                          "model_config": meta_base["config"], "data": meta_base["data"]})
    reporter = _Reporter(job, total, step, world.is_main)
    if job.resume is not None:
        reporter.say(f"resuming {spec.name}/{run.name} at step {step} (epoch {start_epoch + 1}, batch {start_batch})")
    epoch = start_epoch
    position = [start_epoch, start_batch]  # (epoch, batches done in it) of the state in memory
    last_metrics: dict[str, Any] = {}

    def save_last(epoch_done: int, batch_done: int) -> Path | None:
        if not world.is_main:
            return None
        _check_weights(modules)
        state = {
            "optimizers": {k: o.state_dict() for k, o in optimizers.items()},
            "schedulers": {k: s.state_dict() for k, s in schedulers.items()},
            "scaler": scaler.state_dict() if scaler else None,
            "rng": _rng_state(),
            "position": {"epoch": epoch_done, "batch": batch_done, "step": step},
            "best": best_value,
            "task": task.extra_state(),
        }
        tensors, doc = pack_state(state)
        meta = {**meta_base, "step": step, "epoch": epoch_done, "metrics": last_metrics}
        return save_checkpoint(run.last, modules, meta, train_state=(tensors, doc))

    samples_seen, t0, step0 = 0, time.perf_counter(), step
    stop = _GracefulStop(reporter)
    try:
        for epoch in range(start_epoch, opts.epochs):
            ctx.epoch = epoch
            sums: dict[str, float] = {}
            counts = 0
            skip = start_batch if epoch == start_epoch else 0
            t_epoch = time.perf_counter()
            for m in modules.values():
                m.train()
            batch_iter = task.batches(epoch, opts.batch_size, world.rank, world.size, opts.seed)
            for b_idx, batch in enumerate(batch_iter):
                if b_idx < skip:
                    continue
                with autocast(device, precision):
                    out = task.training_step(batch, ctx)
                losses = {k: float(v.detach()) if isinstance(v, torch.Tensor) else float(v) for k, v in out.items()}
                for k, v in losses.items():
                    if not math.isfinite(v):
                        raise NonFiniteLoss(k, v)
                step += 1
                position[:] = [epoch, b_idx + 1]
                ctx.step_count = step
                if task.scheduler_interval == "step":
                    for s in schedulers.values():
                        s.step()
                for k, v in losses.items():
                    sums[k] = sums.get(k, 0.0) + v
                counts += 1
                samples_seen += _batch_len(batch) * world.size
                elapsed = time.perf_counter() - t0
                rate = samples_seen / elapsed if elapsed > 0 else 0.0
                eta = (total - step) * elapsed / max(1, step - step0)
                log_now = step % max(1, opts.log_every) == 0 or step == total
                if log_now and world.is_main:
                    record = {"type": "step", "step": step, "epoch": epoch + 1, "losses": losses,
                              "samples_per_s": round(rate, 2), "time": round(elapsed, 3)}
                    lrs = {k: o.param_groups[0]["lr"] for k, o in optimizers.items()}
                    if lrs:
                        record["lr"] = lrs
                    run.log(record)
                reporter.update(step, epoch, losses, rate, eta, log_now)
                if opts.save_every and step % opts.save_every == 0:
                    save_last(*position)
                if stop.requested:
                    raise KeyboardInterrupt
            # end of epoch
            if task.scheduler_interval == "epoch":
                for s in schedulers.values():
                    s.step()
            means = {k: v / max(1, counts) for k, v in sums.items()}
            for m in modules.values():
                m.eval()
            with torch.no_grad():
                val = task.validate() if world.is_main else {}
            last_metrics = {**{f"train_{k}": v for k, v in means.items()}, **val}
            for k, v in last_metrics.items():
                if isinstance(v, float) and not math.isfinite(v):
                    raise NonFiniteLoss(k, v)
            monitor_value = _monitored(task, means, val)
            improved = monitor_value is not None and (
                best_value is None
                or (monitor_value < best_value if task.monitor_mode == "min" else monitor_value > best_value)
            )
            if improved:
                best_value = monitor_value
            position[:] = [epoch + 1, 0]
            if world.is_main:
                run.log({"type": "epoch", "epoch": epoch + 1, "step": step, **last_metrics,
                         "epoch_time": round(time.perf_counter() - t_epoch, 3)})
                _save_samples(task, run, epoch + 1, opts, device)
                save_last(epoch + 1, 0)
                if improved:
                    save_checkpoint(run.best, modules, {**meta_base, "step": step, "epoch": epoch + 1,
                                                        "metrics": last_metrics, "monitor": task_monitor_name(task, means)})
                from gentool.runs import plot_losses

                plot_losses(run)
                summary = " ".join(f"{k} {v:.4g}" for k, v in last_metrics.items() if isinstance(v, (int, float)))
                reporter.say(f"epoch {epoch + 1}/{opts.epochs} {summary}" + ("  (best)" if improved else ""))
            distributed.barrier(world)
            if stop.requested and epoch + 1 < opts.epochs:
                raise KeyboardInterrupt
    except KeyboardInterrupt:
        reporter.close()
        saved = save_last(*position)
        where = f"; saved {saved}" if saved else ""
        raise TrainingInterrupted(
            f"interrupted at step {step}{where}; continue with: gentool train {spec.name} --resume {run.name}"
        ) from None
    except NonFiniteLoss as exc:
        reporter.close()
        kept = f"the last good checkpoint is {run.last}" if run.last.exists() else "no checkpoint had been written yet"
        raise TrainingDiverged(
            f"training diverged at step {step + 1} (epoch {epoch + 1}): {exc}; stopped, {kept}. "
            "Try a lower --lr or --precision fp32"
        ) from None
    finally:
        stop.restore()
        reporter.close()
    return TrainResult(run.dir, step, opts.epochs, last_metrics, run.last if run.last.exists() else None,
                       run.best if run.best.exists() else None)


class _GracefulStop:
    """First Ctrl-C: finish the current step, save, stop. Second Ctrl-C: stop at once."""

    def __init__(self, reporter: _Reporter):
        import signal
        import threading

        self.requested = False
        self.previous = None
        self.reporter = reporter
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGINT, self._handle)

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        self.reporter.say("stopping after this step (Ctrl-C again to stop at once)")

    def restore(self) -> None:
        if self.previous is not None:
            import signal

            signal.signal(signal.SIGINT, self.previous)
            self.previous = None


def task_monitor_name(task: Task, means: Mapping[str, float]) -> str | None:
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


def _save_samples(task: Task, run: Any, epoch: int, opts: Any, device: torch.device) -> None:
    g = torch.Generator(device=device if device.type == "cuda" else "cpu").manual_seed(opts.seed + 12345)
    cpu_state = torch.get_rng_state()  # sampling must not disturb the training RNG stream
    try:
        with torch.no_grad():
            out = task.sample(opts.sample_count, g)
    finally:
        torch.set_rng_state(cpu_state)
    if out is None:
        return
    run.samples_dir.mkdir(parents=True, exist_ok=True)
    if isinstance(out, torch.Tensor):
        from gentool.images import save_grid

        save_grid(out.float(), run.samples_dir / f"epoch_{epoch:03d}.png")
    else:
        text = "\n\n----\n\n".join(out)
        (run.samples_dir / f"epoch_{epoch:03d}.txt").write_text(text, encoding="utf-8")


def _restore(task: Task, path: Path, model: str, modules, optimizers, schedulers, scaler) -> tuple[int, int, int, Any]:
    ckpt = load_checkpoint(path, model=model)
    if "train_state" not in ckpt.meta:
        raise CheckpointError(f"{path} holds weights only, no training state to resume from (use a run's last.safetensors)")
    ckpt.load_into(modules)
    tensors = {k[len(TRAIN_PREFIX):]: v for k, v in ckpt.tensors().items() if k.startswith(TRAIN_PREFIX)}
    state = unpack_state(ckpt.meta["train_state"], tensors)
    for name, opt in optimizers.items():
        if name not in state["optimizers"]:
            raise CheckpointError(f"{path} has no state for optimizer {name!r}")
        opt.load_state_dict(state["optimizers"][name])
    for name, sched in schedulers.items():
        if name in state["schedulers"]:
            sched.load_state_dict(state["schedulers"][name])
    if scaler is not None and state.get("scaler"):
        scaler.load_state_dict(state["scaler"])
    task.load_extra_state(state.get("task") or {})
    _set_rng_state(state["rng"])
    pos = state["position"]
    return int(pos["epoch"]), int(pos["batch"]), int(pos["step"]), state.get("best")
