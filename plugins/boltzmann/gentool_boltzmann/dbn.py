"""Deep belief network: a stack of RBMs trained greedily, bottom up (Hinton, Osindero & Teh 2006).

The model: the top two layers form an RBM (undirected); every layer below is directed, with
``p(x_{l-1} | x_l) = sigmoid(b_l + W_l x_l)`` taken from the l-th RBM. Training is greedy: the
``--epochs`` are split evenly across the layers (the lower layers get any remainder), and during
its share layer l trains as an RBM (CD-k or PCD-k, :func:`rbm.rbm_gradients`) on data passed up
through the frozen layers below. That data is *sampled*: ``x_l ~ q(x_l | x_{l-1}) =
sigmoid(c_l + x_{l-1} W_l)``, fresh at every step. This is what the greedy argument asks for (each
new RBM should model the aggregated posterior, a distribution over binary vectors, which the
variational bound of the DBN then rewards), and it keeps the top RBM's data binary like its own
samples. Probabilities would give less noisy statistics but train the RBM on vectors it can never
produce.

One :class:`DBNTask` trains the whole stack; the layer a step trains is decided from the epoch,
so ``--resume`` and Ctrl-C work unchanged. Each layer has its own optimizer (``rbm0``, ``rbm1``,
...) and a learning rate that decays (``lr_schedule``) within its own share of the run. The checkpoint holds one
module per RBM, ``rbm0`` (visible to first hidden layer), ``rbm1``, ...

Samples: Gibbs sampling in the top RBM from noise, then one directed pass down.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

import gentool
from gentool import ConfigError, StepContext

from gentool_boltzmann.common import (
    BoltzmannTask, bernoulli, filters_image, flat, pseudo_log_likelihood, save_chain_pictures, sgd,
)
from gentool_boltzmann.configs import DBNConfig
from gentool_boltzmann.rbm import RBM, rbm_gradients


class DBN:
    """A bottom-up list of RBMs seen as one deep belief network (not a module: each RBM is one)."""

    def __init__(self, rbms: Sequence[RBM]):
        self.rbms = list(rbms)

    def up(self, v: torch.Tensor, layers: int, sample: bool, generator: torch.Generator | None = None) -> torch.Tensor:
        """Pass ``v`` up through the first ``layers`` RBMs: states (``sample``) or probabilities."""
        x = v
        for rbm in self.rbms[:layers]:
            p = rbm.hidden_probs(x)
            x = bernoulli(p, generator) if sample else p
        return x

    def down(self, x: torch.Tensor, top: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Directed pass from the visible layer of RBM ``top`` to the data: sampled states on the
        way, visible means (p(v | h_1)) at the bottom. With ``generator=None`` and ``top`` > 0 the
        intermediate layers are sampled from the global RNG."""
        for l in range(top - 1, -1, -1):
            mean = self.rbms[l].visible_mean(x)
            x = mean if l == 0 else bernoulli(mean, generator)
        return x

    def down_means(self, x: torch.Tensor, top: int) -> torch.Tensor:
        """Deterministic pass down with means all the way (smooth pictures of a chain)."""
        for l in range(top - 1, -1, -1):
            x = self.rbms[l].visible_mean(x)
        return x

    @torch.no_grad()
    def sample(self, n: int, steps: int, shape: tuple[int, ...], generator: torch.Generator,
               top: int | None = None, every: int = 0) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """``n`` samples: ``steps`` Gibbs steps in RBM ``top`` (default: the last) from noise,
        then a directed pass down. Also snapshots every ``every`` steps (chain pictures)."""
        top = len(self.rbms) - 1 if top is None else top
        rbm = self.rbms[top]
        device = rbm.W.device
        x = bernoulli(torch.full((n, rbm.W.shape[0]), 0.5, device=device), generator)
        frames = []
        for t in range(steps):
            mean = rbm.visible_mean(bernoulli(rbm.hidden_probs(x), generator))
            if every and t % every == 0:
                frames.append(self.down_means(mean, top).clamp(0, 1).reshape(-1, *shape))
            x = bernoulli(mean, generator)
        images = mean if top == 0 else self.down(x, top, generator)
        return images.clamp(0, 1).reshape(-1, *shape), frames


def layer_epochs(epochs: int, layers: int) -> list[int]:
    """Epochs per layer: an even split, the remainder going to the lowest layers."""
    if epochs < layers:
        raise ConfigError(f"a DBN with {layers} layers trains each for at least one epoch: pass --epochs >= {layers}")
    base, extra = divmod(epochs, layers)
    return [base + (1 if l < extra else 0) for l in range(layers)]


def lr_factor(kind: str, progress: float) -> float:
    """Learning-rate multiplier at ``progress`` (0..1) through a stage: constant, linear or cosine decay."""
    p = min(1.0, max(0.0, progress))
    if kind == "linear":
        return 1.0 - p
    if kind == "cosine":
        return 0.5 * (1 + math.cos(math.pi * p))
    return 1.0


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


class DBNTask(BoltzmannTask):
    """Trains a DBN greedily through the shared harness: one layer per share of the epochs.

    No ``monitor``: one layer's figures say nothing of the next, so there is no best epoch to
    keep; ``gentool sample`` and ``evaluate`` use the run's last checkpoint."""

    def __init__(self, cfg: DBNConfig, data: Any, lr: float, epochs: int, seed: int):
        self.cfg, self.lr = cfg, lr
        self.prepare(data, cfg.binarize, seed)
        sizes = [self.n_visible, *cfg.layers]
        self.dbn = DBN([RBM(a, b, "bernoulli", cfg.init_std) for a, b in zip(sizes, sizes[1:])])
        p = flat(self.data.as_float()).mean(0).clamp(1e-3, 1 - 1e-3)  # Hinton's guide: log-odds start
        self.dbn.rbms[0].b.data.copy_(torch.log(p / (1 - p)))
        self.epochs_per_layer = layer_epochs(epochs, len(cfg.layers))
        self.first_epoch = [sum(self.epochs_per_layer[:l]) for l in range(len(cfg.layers))]
        self.steps_per_epoch_ = 0  # set from the harness's total_steps in configure_optimizers
        self.step = 0  # steps taken (saved for resume): places the step in its layer's schedule
        self.layer = 0  # the layer the latest step trained
        self.chains: torch.Tensor | None = None  # PCD chains of the layer being trained ...
        self.chains_layer = -1  # ... and which layer that is

    @classmethod
    def from_job(cls, job: Any) -> "DBNTask":
        return cls(job.config, job.data, job.options.lr, job.options.epochs, job.options.seed)

    def layer_at(self, epoch: int) -> int:
        """Which RBM trains in ``epoch`` (0-based)."""
        return max(l for l, first in enumerate(self.first_epoch) if first <= epoch)

    def modules(self) -> dict[str, nn.Module]:
        return {f"rbm{l}": rbm for l, rbm in enumerate(self.dbn.rbms)}

    def configure_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        cfg = self.cfg
        # the harness has set total_steps (epochs * steps per epoch at the run's world size)
        self.steps_per_epoch_ = max(1, self.total_steps // sum(self.epochs_per_layer))
        return {f"rbm{l}": sgd([r.W], [r.b, r.c], self.lr, cfg.momentum, cfg.weight_decay)
                for l, r in enumerate(self.dbn.rbms)}

    @torch.no_grad()
    def training_step(self, batch: Any, ctx: StepContext) -> dict[str, Any]:
        x, _ = batch
        cfg = self.cfg
        l = self.layer = self.layer_at(ctx.epoch)
        rbm = self.dbn.rbms[l]
        v0 = self.dbn.up(flat(x), l, sample=True)  # the frozen layers below turn the batch into layer l's data
        if cfg.method == "pcd":
            if self.chains is None or self.chains_layer != l or self.chains.shape != v0.shape:
                self.chains, self.chains_layer = v0.clone(), l  # a new layer: its chains start at its data
            vk = self.chains = rbm.gibbs(self.chains, cfg.k)
        else:
            vk = rbm.gibbs(v0, cfg.k)
        grads, ph0 = rbm_gradients(rbm, v0, vk)
        spe = self.steps_per_epoch_  # the learning rate decays over the layer's own share of the run
        progress = (self.step - self.first_epoch[l] * spe) / (self.epochs_per_layer[l] * spe)
        set_lr(ctx.optimizers[f"rbm{l}"], self.lr * lr_factor(cfg.lr_schedule, progress))
        ctx.apply_gradients(f"rbm{l}", grads)
        self.step += 1
        recon = (rbm.visible_mean(bernoulli(ph0)) - v0).pow(2).sum(1).mean()
        return {"recon": recon, "layer": l + 1}

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        """Reconstruction error of the layer in training (on the held-out data passed up with
        probabilities) and the pseudo-log-likelihood of the first RBM."""
        v = flat(self.val.as_float().to(self.device))
        l = self.layer
        rbm = self.dbn.rbms[l]
        x = self.dbn.up(v, l, sample=False)
        recon = (rbm.visible_mean(rbm.hidden_probs(x)) - x).pow(2).sum(1).mean()
        g = torch.Generator().manual_seed(0)
        pll = pseudo_log_likelihood(self.dbn.rbms[0].free_energy, v, g).mean()
        return {"val_recon": float(recon), "val_layer": float(l + 1), "val_pll": float(pll)}

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        # the stack trained so far: the layers above are still at their random start
        return self.dbn.sample(n, self.cfg.sample_steps, self.shape, generator, top=self.layer)[0]

    def write_pictures(self, folder: Path, epoch: int) -> None:
        gentool.save_grid(filters_image(self.dbn.rbms[0].W, self.shape), folder / "filters.png")
        g = torch.Generator().manual_seed(epoch)
        _, frames = self.dbn.sample(8, 200, self.shape, g, top=self.layer, every=10)
        save_chain_pictures(frames, folder)

    def checkpoint_meta(self) -> dict[str, Any]:
        return {"layers_trained": self.layer + 1}

    def extra_state(self) -> dict[str, Any]:
        state: dict[str, Any] = {"step": self.step, "layer": self.layer, "chains_layer": self.chains_layer}
        if self.chains is not None:
            state["chains"] = self.chains
        return state

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.chains = state.get("chains")
        self.step = int(state.get("step", 0))
        self.layer = int(state.get("layer", 0))
        self.chains_layer = int(state.get("chains_layer", -1))


def load_dbn(checkpoint: Any, device: torch.device) -> tuple[DBN, DBNConfig]:
    """Rebuild the DBN a checkpoint describes. A checkpoint saved before the greedy schedule
    reached the top holds untrained upper layers: the DBN is then the stack trained so far."""
    cfg = gentool.config_from_dict(DBNConfig, checkpoint.config)
    sizes = [math.prod(checkpoint.data["shape"]), *cfg.layers]
    nets = checkpoint.build(lambda: {f"rbm{l}": RBM(a, b) for l, (a, b) in enumerate(zip(sizes, sizes[1:]))})
    rbms = [nets[f"rbm{l}"] for l in range(len(sizes) - 1)]
    trained = int(checkpoint.extra.get("layers_trained", len(rbms)))
    return DBN([r.to(device).eval() for r in rbms[:trained]]), cfg



# -- the plugin's hooks for "dbn" ----------------------------------------------------------------
def train(job: Any) -> Any:
    """``gentool train dbn``."""
    return gentool.fit(DBNTask.from_job(job), job)


def sample(job: Any) -> Any:
    """``gentool sample dbn``: Gibbs in the top RBM (of the layers trained so far), then down."""
    dbn, cfg = load_dbn(job.checkpoint, job.device)
    images, _ = dbn.sample(job.n, cfg.sample_steps, tuple(job.checkpoint.data["shape"]), job.generator)
    return gentool.SampleResult(images=images.cpu())


#: Draws of the recognition chain per test example for the DBN bound.
BOUND_SAMPLES = 10


def evaluate(job: Any) -> Any:
    """``gentool evaluate dbn``: the variational lower bound on the test log-likelihood (AIS for
    the top RBM's log Z), reconstruction error, the first RBM's pseudo-likelihood, probe."""
    from gentool_boltzmann import ais
    from gentool_boltzmann.evaluation import check_log_z, prepared, probe_accuracy

    dbn, _ = load_dbn(job.checkpoint, job.device)
    cfg = job.checkpoint.config
    opts = job.options
    test = prepared(job.data, cfg, job.seed, opts.max_test)
    train_data = prepared(job.split("train"), cfg, job.seed, 10_000, split="train")
    v = flat(test.as_float()).to(job.device)
    g = torch.Generator().manual_seed(job.seed)
    top = len(dbn.rbms) - 1
    with torch.no_grad():  # the top RBM's base rates: the training data passed up, sampled as in training
        top_data = dbn.up(flat(train_data.as_float()).to(job.device), top, sample=True, generator=g)
    params = [tuple(t.detach().double().cpu() for t in (r.W, r.b, r.c)) for r in dbn.rbms]
    est = ais.rbm_ais(*params[top], runs=opts.ais_runs, steps=opts.ais_steps,
                      base_bias=ais.base_rate_visible_bias(top_data.double().cpu()), generator=g)
    bound = ais.dbn_lower_bound(v.double().cpu(), params, est.log_z, samples=BOUND_SAMPLES, generator=g).mean()
    result = gentool.EvaluateResult(settings={"ais_method": est.method})
    out = result.metrics
    out.update({
        "test_log_likelihood_lower_bound": float(bound),
        # the AIS error bar of log Z_top carried over (a larger log Z means a lower bound)
        "bound_low": float(bound) - (est.log_z_high - est.log_z),
        "bound_high": float(bound) + (est.log_z - est.log_z_low) if math.isfinite(est.log_z_low) else None,
        "bound_samples": BOUND_SAMPLES,
        "layers": len(dbn.rbms),
        "log_z_top": est.log_z,
        "log_z_top_std": est.log_z_std,
        "ais_runs": est.runs,
        "ais_steps": est.steps,
    })
    # The training data passed up are binary states of the top RBM, whose unnormalised marginal
    # log p*_top is exact: a certain floor under log Z_top. AIS below it missed modes, and the
    # bound built on it (which would read too high, even above 0) is withdrawn.
    top_states = top_data.double().cpu()
    floor = ais.log_z_floor(top_states, ais.rbm_log_p_unnormalised(top_states, *params[top]))
    check_log_z(result, est.log_z, floor, "test_log_likelihood_lower_bound", float(bound) + est.log_z,
                ("bound_low", "bound_high"), states="the training data passed up to the top RBM")
    with torch.no_grad():
        h = dbn.up(v, len(dbn.rbms), sample=False)
        out["reconstruction_error"] = float((dbn.down_means(h, len(dbn.rbms)) - v).pow(2).sum(1).mean())
        out["rbm0_pseudo_log_likelihood"] = float(pseudo_log_likelihood(dbn.rbms[0].free_energy, v, g).mean())
    top_features = lambda x: dbn.up(flat(x).to(job.device), len(dbn.rbms), sample=False)  # noqa: E731
    acc = probe_accuracy(opts, train_data, test, top_features)
    if acc is not None:
        out["linear_probe_accuracy"] = acc
        result.settings["probe_features"] = "top hidden layer's probabilities, standardised"
    out["n_test"] = len(test)
    return result
