"""The one training task all three GANs share, and the helpers that rebuild and run a generator.

Two optimizers (``d`` then ``g`` each step, the generator every ``n_critic`` steps), Adam with
betas (0.5, 0.999) and their own learning rates, the chosen adversarial loss, an EMA copy of the
generator (``g_ema``, saved in every checkpoint and used for sampling, validation and
evaluation) and, after each epoch, the Fréchet distance of EMA samples to real training images
in the offline ``gentool-cnn`` feature space, which picks ``best.safetensors``.
"""

from __future__ import annotations

import copy
import importlib
from typing import Any, Iterable, Iterator, Mapping

import numpy as np
import torch
from torch import nn

import gentool
from gentool import StepContext, Task

from gentool_gan import losses
from gentool_gan.configs import CGANConfig, DCGANConfig, GANConfig, MLPGANConfig, StyleGANConfig

CONFIGS: dict[str, type] = {"gan": MLPGANConfig, "cgan": CGANConfig, "dcgan": DCGANConfig, "stylegan": StyleGANConfig}
#: Real training images whose features the per-epoch Fréchet distance compares against.
VAL_REAL_IMAGES = 2000
#: Seed of the fixed noise used by validate(), so epochs are scored on the same draws.
VAL_SEED = 20_14
#: Generated images whose batch statistics become g_ema's batch-norm running statistics.
BN_CALIBRATION_IMAGES = 2048


def make_networks(model: str, shape: tuple[int, int, int], num_classes: int | None,
                  cfg: GANConfig) -> tuple[nn.Module, nn.Module]:
    """The generator and discriminator of ``model`` for images of ``shape`` (C, H, W)."""
    module = importlib.import_module(f"gentool_gan.{model}")
    g, d = module.build(tuple(shape), num_classes, cfg)
    if getattr(cfg, "spectral_norm", False):
        add_spectral_norm(d)
    return g, d


def add_spectral_norm(net: nn.Module) -> None:
    """Spectral normalisation (Miyato et al. 2018) on every linear and convolution layer of ``net``."""
    from torch.nn.utils.parametrizations import spectral_norm

    for name, child in list(net.named_children()):
        if isinstance(child, (nn.Linear, nn.Conv2d)):
            setattr(net, name, spectral_norm(child))
        else:
            add_spectral_norm(child)


@torch.no_grad()
def recalibrate_batch_norm(g: nn.Module, z_dim: int, device: torch.device, labels: torch.Tensor | None = None,
                           n: int = BN_CALIBRATION_IMAGES, batch: int = 256, seed: int = VAL_SEED + 1) -> bool:
    """Recompute the running statistics of ``g``'s batch-norm layers from its own forward passes.

    An EMA generator's weights are an average over many steps, so the raw generator's running
    statistics (which describe the raw weights' activations) do not fit them: sampled in eval
    mode with those statistics, an EMA DCGAN gave washed-out, low-recall images. Here the
    statistics are the plain average over ``n`` fresh noise draws (seeded: the global RNG is
    untouched) of the batch statistics that ``g`` itself produces. Returns whether ``g`` had any
    batch norm.
    """
    gen = torch.Generator().manual_seed(seed)

    def inputs() -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
        for s in range(0, n, batch):
            z = torch.randn(min(batch, n - s), z_dim, generator=gen).to(device)
            yield z, (labels[s : s + batch].to(device) if labels is not None else None)

    return recompute_batch_norm(g, inputs())


@torch.no_grad()
def recompute_batch_norm(net: nn.Module, inputs: Iterable[tuple[Any, ...]]) -> bool:
    """Set ``net``'s batch-norm running statistics to the plain average of the batch statistics it
    produces on ``inputs`` (each a tuple of forward arguments), instead of a lagging moving average.
    Returns whether ``net`` had any batch norm (without one, ``inputs`` is not consumed)."""
    norms = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    if not norms:
        return False
    momenta = [m.momentum for m in norms]
    was_training = net.training
    try:
        for m in norms:
            m.reset_running_stats()
            m.momentum = None  # a cumulative average over the calibration batches
        net.train()
        for args in inputs:
            net(*args)
    finally:
        for m, momentum in zip(norms, momenta):
            m.momentum = momentum
        net.train(was_training)
    return True


@torch.no_grad()
def generate(g: nn.Module, n: int, generator: torch.Generator, device: torch.device, z_dim: int,
             labels: torch.Tensor | None = None, z: torch.Tensor | None = None, batch: int = 500) -> torch.Tensor:
    """``n`` images in [0, 1] on the CPU from generator ``g`` (eval mode), noise drawn on the CPU
    from ``generator`` (so a seed gives the same images on any device)."""
    was_training = g.training
    g.eval()
    if z is None:
        z = torch.randn(n, z_dim, generator=generator)
    out = []
    for s in range(0, n, batch):
        zb = z[s : s + batch].to(device)
        yb = labels[s : s + batch].to(device) if labels is not None else None
        out.append(((g(zb, yb).float() + 1.0) / 2.0).clamp_(0.0, 1.0).cpu())
    g.train(was_training)
    return torch.cat(out) if out else torch.zeros(0)


class GANTask(Task):
    """gan, cgan and dcgan: one adversarial training step, EMA, and a Fréchet-distance validation."""

    monitor_mode = "min"

    def __init__(self, model: str, cfg: GANConfig, data: Any, lr: float) -> None:
        self.model, self.cfg, self.data = model, cfg, data
        self.conditional = self.is_conditional()
        self.num_classes = data.num_classes if self.conditional else None
        if self.conditional and data.labels is None:
            raise gentool.DataError(f"{model} needs labelled data, and {data.name} has no labels")
        self.g, self.d = make_networks(model, data.shape, self.num_classes, cfg)
        self.g_ema = copy.deepcopy(self.g).requires_grad_(False).eval()
        self.g_lr, self.d_lr = getattr(cfg, "g_lr", None) or lr, getattr(cfg, "d_lr", None) or lr
        self.g_updates = 0
        self.monitor = "fd" if cfg.val_samples else None
        self._extractor: Any = None
        self._real_stats: tuple[np.ndarray, np.ndarray] | None = None

    def is_conditional(self) -> bool:
        """Whether the networks take the label: cgan always (it needs labels)."""
        return self.model == "cgan"

    # -- harness contract ------------------------------------------------------------------
    def modules(self) -> dict[str, nn.Module]:
        return {"g": self.g, "d": self.d, "g_ema": self.g_ema}

    def configure_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        betas = (self.cfg.beta1, self.cfg.beta2)
        return {"d": torch.optim.Adam(self.d.parameters(), lr=self.d_lr, betas=betas),
                "g": torch.optim.Adam(self.g.parameters(), lr=self.g_lr, betas=betas)}

    def training_step(self, batch: Any, ctx: StepContext) -> Mapping[str, Any]:
        cfg = self.cfg
        x, y = batch
        x = x * 2.0 - 1.0
        y = y if self.conditional else None
        z = torch.randn(x.shape[0], cfg.z_dim, device=x.device)
        fake = self.g(z, y)  # fakes get the real batch's labels: the data's class frequencies
        d_loss = losses.d_loss(cfg.loss, self.d(x, y), self.d(fake.detach(), y))
        out: dict[str, Any] = {"d_loss": d_loss.detach()}
        if cfg.loss == "wgan-gp":
            gp = losses.gradient_penalty(lambda t: self.d(t, y), x, fake)
            d_loss = d_loss + cfg.gp_weight * gp
            out["gp"] = gp.detach()
        ctx.step(d_loss, "d")
        if ctx.step_count % cfg.n_critic == 0:
            g_loss = losses.g_loss(cfg.loss, self.d(fake, y))
            ctx.step(g_loss, "g")
            self.update_ema()
            out["g_loss"] = g_loss.detach()
        return out

    @torch.no_grad()
    def update_ema(self) -> None:
        """g_ema <- decay * g_ema + (1 - decay) * g, with a warm-up so early epochs are not stuck
        at the initial weights. Buffers (batch-norm statistics) are copied as a stopgap; before
        any checkpoint (:meth:`before_checkpoint`) :func:`recalibrate_batch_norm` replaces them
        with g_ema's own."""
        self.g_updates += 1
        decay = self.ema_decay_now()
        ema_p = list(self.g_ema.parameters())
        torch._foreach_lerp_(ema_p, [p.detach() for p in self.g.parameters()], 1.0 - decay)
        torch._foreach_copy_(list(self.g_ema.buffers()), list(self.g.buffers()))  # one launch, not one per buffer

    def ema_decay_now(self) -> float:
        """This update's EMA decay: ``ema_decay``, held lower by a warm-up over the first updates."""
        return min(self.cfg.ema_decay, (1.0 + self.g_updates) / (10.0 + self.g_updates))

    def labels_for(self, n: int) -> torch.Tensor | None:
        """Balanced labels 0, 1, ..., C-1, 0, 1, ... for a conditional model (None otherwise)."""
        return torch.arange(n) % self.num_classes if self.conditional else None

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        if self.conditional and self.num_classes <= 16:
            n = self.num_classes ** 2  # a square grid: one row per class
            labels = torch.arange(self.num_classes).repeat_interleave(self.num_classes)
        else:
            labels = self.labels_for(n)
        return generate(self.g_ema, n, generator, self.device, self.cfg.z_dim, labels)

    def before_checkpoint(self) -> None:
        # after every epoch (before validation and the grid) and before any mid-epoch checkpoint,
        # on every process: give g_ema batch-norm statistics of its own
        recalibrate_batch_norm(self.g_ema, self.cfg.z_dim, self.device, self.labels_for(BN_CALIBRATION_IMAGES))

    def validate(self) -> dict[str, float]:
        n = self.cfg.val_samples
        if not n:
            return {}
        from gentool.metrics import feature_stats, frechet_distance_from_stats, hit_share

        ext = self.extractor()
        labels = self.labels_for(n)
        fake = generate(self.g_ema, n, torch.Generator().manual_seed(VAL_SEED), self.device, self.cfg.z_dim, labels)
        ff = ext.features(fake)
        result = {"fd": frechet_distance_from_stats(*self._real_stats, *feature_stats(ff))}
        if labels is not None and getattr(ext, "task", None) == "labels":
            result["class_acc"] = hit_share(ext.predict(fake), labels)
        return result

    def extractor(self) -> Any:
        """The offline gentool-cnn extractor of the training data (trained once, then cached)
        and the feature statistics of a fixed subset of real training images."""
        if self._extractor is None:
            from gentool.metrics import dataset_fingerprint, feature_stats, get_extractor

            fp = dataset_fingerprint(self.data.images, self.data.labels if (self.data.num_classes or 0) >= 2 else None)
            if not (gentool.extractors_dir() / f"{fp}.safetensors").exists():
                gentool.say(f"training the gentool-cnn feature extractor on {self.data.name} for validation "
                            "(once per data set, then cached)")
            with torch.enable_grad():  # validate() runs under no_grad; a first use trains the extractor
                self._extractor = get_extractor(None, self.data, device=self.device)
            g = torch.Generator().manual_seed(VAL_SEED)
            idx = torch.randperm(len(self.data), generator=g)[:VAL_REAL_IMAGES]
            self._real_stats = feature_stats(self._extractor.features(self.data.images[idx]))
        return self._extractor

    def extra_state(self) -> dict[str, Any]:
        return {"g_updates": self.g_updates}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.g_updates = int(state.get("g_updates", 0))

    def checkpoint_meta(self) -> dict[str, Any]:
        return {"num_classes": self.num_classes, "sampler": "g_ema"}


def train(model: str, job: Any) -> Any:
    """The ``gentool_train`` hook body for ``model``."""
    return gentool.fit(GANTask(model, job.config, job.data, job.options.lr), job)
