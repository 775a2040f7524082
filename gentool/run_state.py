"""The state of a training run that its checkpoints keep, and the writing and reading of it.

A ``last`` checkpoint holds the weights and everything an exact resume needs: the optimizers',
schedulers' and gradient scaler's state, the random streams, the position in the data (epoch and
batch), the best monitored value, the task's own extra state and the running sums of the epoch's
losses. :class:`RunState` writes it (``last`` and ``best``), reads it back on ``--resume``, and
tidies what a killed process left in the run folder.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping

import torch

from gentool import distributed
from gentool.checkpoint import TRAIN_PREFIX, load_checkpoint, pack_state, save_checkpoint, unpack_state
from gentool.config import config_to_dict
from gentool.errors import CheckpointError
from gentool.rng import rng_state, rng_untouched, set_rng_state

if TYPE_CHECKING:
    from gentool.api import TrainJob
    from gentool.training import Task

#: Called as ``callback(kind, number)`` right after this process wrote a checkpoint that a crash
#: may follow: ``"last"`` for a ``--save-every`` checkpoint inside the loop (``number`` = the step)
#: and ``"best"`` at an epoch's end (``number`` = the epoch). None: nothing is called. Crash tests
#: (:mod:`gentool.testing`) install one with :func:`on_checkpoint`; production code installs none.
_saved_callback: Callable[[str, int], None] | None = None


def on_checkpoint(callback: Callable[[str, int], None] | None) -> None:
    """Install (or, with None, remove) the callback :func:`checkpoint_written` calls."""
    global _saved_callback
    _saved_callback = callback


def checkpoint_written(kind: str, number: int) -> None:
    """Tell the installed callback, if any, that a checkpoint of ``kind`` was written at ``number``."""
    if _saved_callback is not None:
        _saved_callback(kind, number)


class NonFiniteLoss(Exception):
    """A loss, metric or weight that is NaN or infinite (the harness turns it into TrainingDiverged)."""

    def __init__(self, name: str, value: float):
        super().__init__(f"{name} = {value}")
        self.name, self.value = name, value


class RunState:
    """Where a training run stands (step, position in the data, best value, the epoch's running
    loss sums) and the collaborators its checkpoints save: modules, optimizers, schedulers, scaler."""

    def __init__(self, task: "Task", job: "TrainJob", world: distributed.World, device: torch.device,
                 precision: str, modules: Mapping[str, torch.nn.Module], optimizers: Mapping[str, Any],
                 schedulers: Mapping[str, Any], scaler: Any):
        self.task, self.job, self.world, self.device, self.precision = task, job, world, device, precision
        self.opts, self.run_, self.spec = job.options, job.run, job.spec
        self.modules, self.optimizers, self.schedulers, self.scaler = modules, optimizers, schedulers, scaler
        self.step = 0
        self.position = [0, 0]  # (epoch, batches done in it) of the state in memory
        self.best_value: float | None = None
        self.last_metrics: dict[str, Any] = {}
        self.pending_rng: Mapping[str, Any] | None = None
        # running sums of the epoch's losses (saved with mid-epoch checkpoints, so that a resumed
        # epoch's mean covers the whole epoch, as an uninterrupted run's does)
        self.sums: dict[str, float] = {}
        self.counts: dict[str, int] = {}

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
        with torch.no_grad(), rng_untouched(self.device):
            self.task.before_checkpoint()

    def save_last(self) -> Path | None:
        if not self.world.is_main:
            return None
        _check_weights(self.modules)
        state = {
            "optimizers": {k: o.state_dict() for k, o in self.optimizers.items()},
            "schedulers": {k: s.state_dict() for k, s in self.schedulers.items()},
            "scaler": self.scaler.state_dict() if self.scaler else None,
            "rng": rng_state(self.device),
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
        with rng_untouched(self.device):  # a stream that cannot be set is found now, not mid-run
            set_rng_state(rng, self.device)
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


def _to_device(obj: Any, device: torch.device) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.to(device)
    if isinstance(obj, dict):
        return {k: _to_device(v, device) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_device(v, device) for v in obj)
    return obj


def _check_weights(modules: Mapping[str, torch.nn.Module]) -> None:
    for name, m in modules.items():
        for pname, p in m.named_parameters():
            if not torch.isfinite(p).all():
                raise NonFiniteLoss(f"weight {name}.{pname}", float("nan"))
