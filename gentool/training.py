"""The shared training harness: every plugin's models train through :func:`fit`.

A plugin describes *what* one training step does by subclassing :class:`Task`; the harness does
the rest, identically for every model: device placement and autocast precision, the data order
(seeded per epoch, sharded across processes), the progress bar with live losses, throughput and
ETA (plain log lines when output is not a terminal), ``metrics.jsonl``, a sample grid and loss
plot each epoch, checkpoints (``last`` each epoch and every ``save_every`` steps, ``best`` by the
monitored metric), exact resume (weights, optimizers, schedulers, RNG, position in the epoch),
Ctrl-C (save, then exit 130), the NaN guard (stop and keep the last good checkpoint) and
data-parallel training under ``torchrun`` (rank 0 alone writes).

This module is the loop; the rest lives by concern: :mod:`gentool.run_state` (what checkpoints
keep, saving and restoring it), :mod:`gentool.rng` (the random streams), :mod:`gentool.progress`
(the bar and log lines) and :mod:`gentool.stopping` (Ctrl-C and SIGTERM).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Mapping

import torch

from gentool import distributed
from gentool.devices import autocast, check_precision, pick_device
from gentool.errors import GentoolError
from gentool.progress import Reporter
from gentool.rng import rng_untouched, seed_everything, set_rng_state
from gentool.run_state import NonFiniteLoss, RunState, checkpoint_written
from gentool.stopping import GracefulStop

if TYPE_CHECKING:
    from gentool.api import TrainJob
    from gentool.data import ImageDataset


class TrainingInterrupted(GentoolError):
    """Ctrl-C during training: the state was saved; the CLI exits with 130."""

    exit_code = 130


class TrainingDiverged(GentoolError):
    """A loss or weight became NaN or infinite: training stopped, the last good checkpoint kept."""

    exit_code = 3


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


def fit(task: Task, job: "TrainJob") -> TrainResult:
    """Train ``task`` for ``job`` (see the module docstring for everything this takes care of)."""
    opts = job.options
    world = distributed.launched_world()
    device = job.device  # chosen by the training plan; a job made by hand may leave it to us
    if device is None:
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
        self.state = RunState(task, job, world, device, precision, self.modules, self.optimizers, self.schedulers,
                              self.scaler)

    # -- the loop --------------------------------------------------------------------------
    def run(self) -> TrainResult:
        opts, world, task, state = self.opts, self.world, self.task, self.state
        if self.job.resume is not None:
            state.restore(self.job.resume)
            if state.position[0] >= opts.epochs:
                # Nothing left to train: the epoch end wrote best before last, so the checkpoints
                # are complete; return, so that whatever the plugin does after training (gpt's
                # transformers export, say) is finished if a crash had cut it short.
                from gentool.report import say

                say(f"run {self.run_.name} has already trained {state.position[0]} epochs: nothing left to train "
                    f"(pass --epochs N with N > {state.position[0]} to go on)")
                if world.is_main:
                    from gentool.runs import plot_losses

                    state.tidy_run_folder()
                    plot_losses(self.run_)
                run = self.run_
                return TrainResult(run.dir, state.step, state.position[0], state.last_metrics,
                                   run.last if run.last.exists() else None, run.best if run.best.exists() else None)
        distributed.broadcast_parameters(self.modules.values(), world)
        if world.distributed and world.rank > 0:
            # Each process draws its own noise (and chains); rank 0's stream is the resumable one.
            seed_everything(opts.seed + 7919 * world.rank + state.step)
        steps_per_epoch = task.steps_per_epoch(opts.batch_size, world.size)
        total = opts.epochs * steps_per_epoch
        log_every = opts.log_every or max(1, min(50, steps_per_epoch // 5))
        if world.is_main:
            self.run_.dir.mkdir(parents=True, exist_ok=True)
            state.tidy_run_folder()
            m = state.meta()
            self.run_.write_config({"model": m["model"], "plugin": m["plugin"], "train": m["train"],
                                    "model_config": m["config"], "data": m["data"]})
        self.ctx.step_count = state.step
        reporter = Reporter(self.job, total, state.step, world.is_main)
        if self.job.resume is not None:
            reporter.say(f"resuming {self.spec.name}/{self.run_.name} at step {state.step} "
                         f"(epoch {state.position[0] + 1}, batch {state.position[1]})")
        stop = GracefulStop(reporter.say)
        epoch = state.position[0]
        try:
            samples_seen, t0, step0 = 0, time.perf_counter(), state.step
            for epoch in range(state.position[0], opts.epochs):
                self.ctx.epoch = epoch
                if not (epoch == state.position[0] and state.position[1] > 0):
                    state.sums, state.counts = {}, {}
                sums, counts = state.sums, state.counts
                t_epoch = time.perf_counter()
                for m in self.modules.values():
                    m.train()
                batches = iter(task.batches(epoch, opts.batch_size, world.rank, world.size, opts.seed))
                skip = state.position[1] if epoch == state.position[0] else 0
                for _ in range(skip):
                    next(batches, None)
                if state.pending_rng is not None:
                    set_rng_state(state.pending_rng, self.device)
                    state.pending_rng = None
                for b_idx, batch in enumerate(batches, start=skip):
                    with autocast(self.device, self.precision if task.autocast else "fp32"):
                        out = task.training_step(batch, self.ctx)
                    if self.scaler is not None:
                        self.scaler.update()  # once per iteration, after every optimizer stepped
                    losses = {k: float(v.detach()) if isinstance(v, torch.Tensor) else float(v) for k, v in out.items()}
                    bad = next((k for k, v in losses.items() if not math.isfinite(v)), None)
                    if distributed.any_flag(bad is not None, world) or bad is not None:
                        raise NonFiniteLoss(bad or "a loss on another process", losses.get(bad or "", float("nan")))
                    state.step += 1
                    state.position[:] = [epoch, b_idx + 1]
                    self.ctx.step_count = state.step
                    if task.scheduler_interval == "step":
                        for s in self.schedulers.values():
                            s.step()
                    for k, v in losses.items():  # per key: a step may report a loss only now and then
                        sums[k] = sums.get(k, 0.0) + v
                        counts[k] = counts.get(k, 0) + 1
                    samples_seen += _batch_len(batch) * world.size
                    elapsed = time.perf_counter() - t0
                    rate = samples_seen / elapsed if elapsed > 0 else 0.0
                    eta = (total - state.step) * elapsed / max(1, state.step - step0)
                    log_now = state.step % log_every == 0 or state.step == total
                    if log_now and world.is_main:
                        record = {"type": "step", "step": state.step, "epoch": epoch + 1, "losses": losses,
                                  "samples_per_s": round(rate, 2), "time": round(elapsed, 3)}
                        if self.optimizers:
                            record["lr"] = {k: o.param_groups[0]["lr"] for k, o in self.optimizers.items()}
                        self.run_.log(record)
                    reporter.update(state.step, epoch, losses, rate, eta, log_now)
                    if opts.save_every and state.step % opts.save_every == 0:
                        state.before_checkpoint()
                        state.save_last()
                        if world.is_main:
                            checkpoint_written("last", state.step)
                    if distributed.any_flag(stop.requested, world):
                        raise KeyboardInterrupt
                self.end_epoch(epoch, sums, counts, time.perf_counter() - t_epoch, reporter)
                if distributed.any_flag(stop.requested, world) and epoch + 1 < opts.epochs:
                    raise KeyboardInterrupt
        except KeyboardInterrupt:
            reporter.close()
            if stop.hard:
                kept = f"the last checkpoint is {self.run_.last}" if self.run_.last.exists() else "nothing was saved"
                raise TrainingInterrupted(f"stopped at once at step {state.step}, without saving; {kept}") from None
            try:
                state.before_checkpoint()
                saved = state.save_last()
            except NonFiniteLoss as exc:
                raise TrainingDiverged(f"interrupted, and the weights are not finite ({exc}): nothing saved") from None
            where = f"; saved {saved}" if saved else ""
            error = TrainingInterrupted(
                f"{'terminated (SIGTERM)' if stop.name == 'SIGTERM' else 'interrupted'} at step {state.step}{where}; "
                f"continue with: gentool train {self.spec.name} --resume {self.run_.name}"
            )
            if stop.name == "SIGTERM":
                error.exit_code = 143  # 128 + SIGTERM, as shells report a terminated job
            raise error from None
        except NonFiniteLoss as exc:
            reporter.close()
            kept = f"the last good checkpoint is {self.run_.last}" if self.run_.last.exists() else "no checkpoint had been written yet"
            raise TrainingDiverged(
                f"training diverged at step {state.step + 1} (epoch {epoch + 1}): {exc}; stopped, {kept}. "
                "Try a lower --lr or --precision fp32"
            ) from None
        finally:
            stop.restore()
            reporter.close()
        run = self.run_
        return TrainResult(run.dir, state.step, opts.epochs, state.last_metrics, run.last if run.last.exists() else None,
                           run.best if run.best.exists() else None)

    def end_epoch(self, epoch: int, sums: Mapping[str, float], counts: Mapping[str, int], seconds: float,
                  reporter: Reporter) -> None:
        task, world, state = self.task, self.world, self.state
        if task.scheduler_interval == "epoch":
            for s in self.schedulers.values():
                s.step()
        distributed.broadcast_buffers(self.modules.values(), world)
        means = {k: v / max(1, counts[k]) for k, v in sums.items()}
        state.position[:] = [epoch + 1, 0]
        improved = False
        state.before_checkpoint()
        if world.is_main:
            for m in self.modules.values():
                m.eval()
            with torch.no_grad(), rng_untouched(self.device):
                val = task.validate()
            state.last_metrics = {**{f"train_{k}": v for k, v in means.items()}, **val}
            bad = next((k for k, v in state.last_metrics.items() if isinstance(v, float) and not math.isfinite(v)), None)
        else:
            val, bad = {}, None
        if distributed.any_flag(bad is not None, world) or bad is not None:
            raise NonFiniteLoss(bad or "a metric on the main process", float("nan"))
        if world.is_main:
            monitor = task_monitor_name(task, means)
            value = _monitored(task, means, val)
            improved = value is not None and (
                state.best_value is None
                or (value < state.best_value if task.monitor_mode == "min" else value > state.best_value)
            )
            if improved:
                state.best_value = value
            self.run_.log({"type": "epoch", "epoch": epoch + 1, "step": state.step, **state.last_metrics,
                           "epoch_time": round(seconds, 3)})
            with rng_untouched(self.device):
                _save_samples(task, self.run_, epoch + 1, self.opts)
                with torch.no_grad():
                    task.write_pictures(self.run_.dir, epoch + 1)
            # best before last: a crash between the two leaves last one epoch behind, and resuming
            # redoes that epoch exactly; never a last that claims a best that was not written
            if improved:
                state.save_best(monitor)
                checkpoint_written("best", epoch + 1)
            state.save_last()
            from gentool.runs import plot_losses

            plot_losses(self.run_)
            summary = " ".join(f"{k} {v:.4g}" for k, v in state.last_metrics.items() if isinstance(v, (int, float)))
            reporter.say(f"epoch {epoch + 1}/{self.opts.epochs} {summary}" + ("  (best)" if improved else ""))
        distributed.barrier(world)


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
