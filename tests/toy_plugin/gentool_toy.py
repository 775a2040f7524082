"""A test-only gentool plugin: a tiny generator whose steps can be slowed down or made to diverge.

Used by the core's tests for resume after SIGKILL, Ctrl-C, the NaN guard, seeding and plugin
verbs. It imports no torch at module level, like a real plugin.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import gentool
from gentool import ModelSpec


@dataclass
class ToyConfig:
    width: int = field(default=8, metadata={"help": "Noise dimension."})
    sleep: float = field(default=0.0, metadata={"help": "Seconds to sleep in each step (for signal tests)."})
    nan_at_step: int = field(default=0, metadata={"help": "Make the loss NaN at this step (0: never)."})
    random_batches: bool = field(default=False, metadata={"help": "Draw batches with the global RNG (like random text crops)."})
    val_draws: int = field(default=0, metadata={"help": "Random numbers validate() draws from the global RNGs (0: no validate)."})
    count_checkpoints: bool = field(default=False, metadata={
        "help": "Record the steps at which before_checkpoint() ran (and draw from the global RNG there)."})
    tune: str = field(default="", metadata={"help": "A fine-tuning tag (a finetune option: --tune X with --resume RUN)."})


def _task(config, data, lr, init_from=None):
    import time

    import torch
    from torch import nn

    from gentool import Task

    class ToyTask(Task):
        def __init__(self):
            self.data = data
            c, h, w = data.shape
            self.net = nn.Sequential(nn.Linear(config.width, 32), nn.Tanh(), nn.Linear(32, c * h * w))
            self.shape = (c, h, w)
            self.steps_seen = 0
            self.prepared: list[int] = []
            if init_from is not None:
                gentool.load_checkpoint(init_from, model="toy").load_into({"net": self.net})

        def modules(self):
            return {"net": self.net}

        def configure_optimizers(self):
            return {"adam": torch.optim.Adam(self.net.parameters(), lr=lr)}

        def configure_schedulers(self, optimizers):
            return {"decay": torch.optim.lr_scheduler.StepLR(optimizers["adam"], step_size=10, gamma=0.9)}

        def training_step(self, batch, ctx):
            x, _ = batch
            if config.sleep:
                time.sleep(config.sleep)
            z = torch.randn(x.shape[0], config.width, device=x.device)
            fake = torch.sigmoid(self.net(z)).view(-1, *self.shape)
            # match the batch's mean image and per-pixel spread: learns the data's first two moments
            loss = (fake.mean(0) - x.mean(0)).pow(2).mean() + (fake.std(0) - x.std(0)).pow(2).mean()
            if config.nan_at_step and ctx.step_count + 1 >= config.nan_at_step:
                loss = loss * float("nan")
            ctx.step(loss, "adam")
            self.steps_seen += 1
            return {"loss": loss}

        def before_checkpoint(self):
            if config.count_checkpoints:
                self.prepared.append(self.steps_seen)
                torch.rand(100)  # the harness must hide this from the training stream

        def extra_state(self):
            return {"prepared": torch.tensor(self.prepared)} if config.count_checkpoints else {}

        def load_extra_state(self, state):
            if "prepared" in state:
                self.prepared = [int(x) for x in state["prepared"].tolist()]

        def batches(self, epoch, batch_size, rank, world_size, seed):
            if not config.random_batches:
                yield from super().batches(epoch, batch_size, rank, world_size, seed)
                return
            for _ in range(self.steps_per_epoch(batch_size, world_size)):
                idx = torch.randint(len(data), (batch_size,))
                yield data.images[idx].to(self.device).float() / 255, None

        def validate(self):
            if not config.val_draws:
                return {}
            import random

            import numpy as np

            draws = torch.rand(config.val_draws).sum() + np.random.rand(config.val_draws).sum()
            return {"val_noise": float(draws) + random.random()}

        def sample(self, n, generator):
            z = torch.randn(n, config.width, generator=generator)
            return torch.sigmoid(self.net(z.to(self.device))).view(-1, *self.shape)

    return ToyTask()


@gentool.hookimpl
def gentool_register_models(register):
    register(ModelSpec(name="toy", family="test", summary="Test-only tiny generator", config=ToyConfig,
                       epochs=2, batch_size=64, lr=1e-2, finetune_options={"tune": "Fine-tuning tag."}))


@gentool.hookimpl
def gentool_train(model, job):  # routed here only for "toy": no name check
    return gentool.fit(_task(job.config, job.data, job.options.lr, job.init_from), job)


def _load(job):
    import torch

    cfg = gentool.config_from_dict(ToyConfig, job.checkpoint.config)
    shape = job.checkpoint.data["shape"]
    fake = gentool.ImageDataset(images=torch.zeros(1, *shape, dtype=torch.uint8), labels=None, class_names=None,
                                name="x")
    task = _task(cfg, fake, 0.0)
    job.checkpoint.load_into(task.modules())
    return task


@gentool.hookimpl
def gentool_evaluate(model, job):
    """How far the mean generated image is from the data's mean image (and how many images)."""
    import torch

    task = _load(job)
    with torch.no_grad():
        fake = task.sample(job.n, torch.Generator().manual_seed(job.seed))
    gap = float((fake.mean(0) - job.data.as_float().mean(0)).abs().mean())
    return gentool.EvaluateResult(metrics={"mean_image_gap": gap, "n_data": len(job.data)},
                                  settings={"evaluated_split": job.data_split})


@gentool.hookimpl
def gentool_sample(model, job):
    import torch

    from gentool import ConfigError, SampleResult

    unknown = set(job.options) - {"label"}
    if unknown:
        raise ConfigError(f"toy does not know the sampling option(s) {', '.join(sorted(unknown))}")
    task = _load(job)
    labels = None
    if "label" in job.options:  # not a conditional model: labels are only tagged on, to test the core's writers
        n_classes = len(job.checkpoint.data.get("class_names") or [0])
        raw = job.options["label"]
        labels = torch.arange(job.n) % n_classes if raw == "all" else torch.full((job.n,), int(raw))
    return SampleResult(images=task.sample(job.n, job.generator), labels=labels)


@gentool.hookimpl
def gentool_register_commands(app):
    import typer

    @app.command("toy-hello")
    def hello(name: str = typer.Argument("world")) -> None:
        """Say hello (a plugin-provided verb)."""
        typer.echo(f"hello {name} from toy")

    group = typer.Typer(help="A plugin-provided group of verbs.")

    @group.command("ping")
    def ping() -> None:
        """Answer pong."""
        typer.echo("pong")

    app.add_typer(group, name="toy-tools")
