"""Restricted Boltzmann machine: Bernoulli-Bernoulli or Gaussian-Bernoulli, CD-k or PCD-k.

Energy (Bernoulli visible): E(v, h) = -v.b - h.c - v'Wh. With Gaussian visible units of unit
variance (data standardised per pixel): E(v, h) = |v - b|^2 / 2 - h.c - v'Wh. The gradient of
the log-likelihood is the data statistics minus the model statistics; the model statistics come
from k Gibbs steps started at the data (CD) or from persistent chains (PCD, Tieleman 2008).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

import gentool
from gentool import StepContext

from gentool_boltzmann.common import (
    BoltzmannTask, bernoulli, filters_image, flat, lr_schedule, normal_like, pseudo_log_likelihood,
    save_chain_pictures, sgd,
)
from gentool_boltzmann.configs import RBMConfig


class RBM(nn.Module):
    """The network: weights ``W [n_v, n_h]``, visible bias ``b``, hidden bias ``c``."""

    def __init__(self, n_visible: int, n_hidden: int, visible: str = "bernoulli", init_std: float = 0.01):
        super().__init__()
        self.visible = visible
        self.W = nn.Parameter(torch.randn(n_visible, n_hidden) * init_std)
        self.b = nn.Parameter(torch.zeros(n_visible))
        self.c = nn.Parameter(torch.zeros(n_hidden))
        # Gaussian visible units see standardised data; these undo it for samples.
        self.register_buffer("data_mean", torch.zeros(n_visible))
        self.register_buffer("data_std", torch.ones(n_visible))

    @property
    def gaussian(self) -> bool:
        return self.visible == "gaussian"

    def hidden_probs(self, v: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(v @ self.W + self.c)

    def visible_mean(self, h: torch.Tensor) -> torch.Tensor:
        pre = h @ self.W.T + self.b
        return pre if self.gaussian else torch.sigmoid(pre)

    def sample_visible(self, h: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        mean = self.visible_mean(h)
        return normal_like(mean, generator) if self.gaussian else bernoulli(mean, generator)

    def free_energy(self, v: torch.Tensor) -> torch.Tensor:
        """F(v) = -log sum_h exp(-E(v, h)), per example."""
        hidden = F.softplus(v @ self.W + self.c).sum(1)
        if self.gaussian:
            return 0.5 * (v - self.b).pow(2).sum(1) - hidden
        return -(v @ self.b) - hidden

    def gibbs(self, v: torch.Tensor, steps: int, generator: torch.Generator | None = None) -> torch.Tensor:
        for _ in range(steps):
            v = self.sample_visible(bernoulli(self.hidden_probs(v), generator), generator)
        return v

    def standardise(self, x: torch.Tensor) -> torch.Tensor:
        """Data in [0, 1] -> what the visible units see."""
        return (x - self.data_mean) / self.data_std if self.gaussian else x

    def to_images(self, v: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
        """Visible means -> images in [0, 1]."""
        x = v * self.data_std + self.data_mean if self.gaussian else v
        return x.clamp(0, 1).reshape(-1, *shape)

    @torch.no_grad()
    def sample(self, n: int, steps: int, shape: tuple[int, ...], generator: torch.Generator,
               every: int = 0) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Run ``n`` Gibbs chains from noise for ``steps`` steps: final visible means as images,
        plus snapshots every ``every`` steps (for the chain pictures)."""
        device = self.W.device
        v = bernoulli(torch.full((n, self.W.shape[0]), 0.5, device=device), generator)
        if self.gaussian:
            v = torch.randn(v.shape, generator=generator).to(device)
        frames = []
        for t in range(steps):
            h = bernoulli(self.hidden_probs(v), generator)
            mean = self.visible_mean(h)
            if every and t % every == 0:
                frames.append(self.to_images(mean, shape))
            v = normal_like(mean, generator) if self.gaussian else bernoulli(mean, generator)
        return self.to_images(mean, shape), frames


def rbm_gradients(rbm: RBM, v0: torch.Tensor, vk: torch.Tensor, sparsity_target: float = 0.0,
                  sparsity_cost: float = 0.0, *, ph0: torch.Tensor | None = None,
                  phk: torch.Tensor | None = None) -> tuple[dict[nn.Parameter, torch.Tensor], torch.Tensor]:
    """Gradients of the negative log-likelihood (model minus data statistics) from a positive
    batch ``v0`` and negative samples ``vk``; also returns p(h|v0). ``ph0``/``phk`` may be passed
    when already computed."""
    ph0 = rbm.hidden_probs(v0) if ph0 is None else ph0
    phk = rbm.hidden_probs(vk) if phk is None else phk
    n0, nk = v0.shape[0], vk.shape[0]
    # both outer products in one matrix product: [vk; v0]' [phk / nk; -ph0 / n0]
    gW = torch.cat([vk, v0]).T @ torch.cat([phk / nk, ph0 / -n0])
    gb = vk.mean(0) - v0.mean(0)
    gc = phk.mean(0) - ph0.mean(0)
    if sparsity_target > 0:
        gc = gc + sparsity_cost * (ph0.mean(0) - sparsity_target)
    return {rbm.W: gW, rbm.b: gb, rbm.c: gc}, ph0


class RBMTask(BoltzmannTask):
    """Trains an :class:`RBM` with CD-k or PCD-k through the shared harness.

    The recipe's schedules are options of :class:`RBMConfig`: ``k_schedule`` raises k at stated
    epochs, ``momentum_final`` replaces the momentum after ``momentum_epochs`` epochs; the
    learning rate decays per step (``lr_schedule``), weight decay applies to ``W`` only.

    ``--precision bf16`` runs the matrix products in bfloat16 (weights and updates stay float32):
    about twice the speed on CPUs with bf16 instructions.
    """

    autocast = True

    def __init__(self, cfg: RBMConfig, data: Any, lr: float, seed: int, epochs: int | None = None):
        self.cfg, self.lr = cfg, lr
        self.epochs = epochs  # the run's length, for k_schedule shares (P%)
        self.prepare(data, "none" if cfg.visible == "gaussian" else cfg.binarize, seed)
        self.rbm = RBM(self.n_visible, cfg.hidden, cfg.visible, cfg.init_std)
        x = flat(self.data.as_float())
        if cfg.visible == "gaussian":
            self.rbm.data_mean.copy_(x.mean(0))
            self.rbm.data_std.copy_(x.std(0).clamp_min(0.05))
        else:  # Hinton's guide: start the visible biases at the log-odds of the pixel means
            p = x.mean(0).clamp(1e-3, 1 - 1e-3)
            self.rbm.b.data.copy_(torch.log(p / (1 - p)))
        self.chains: torch.Tensor | None = None
        # Bernoulli: no best epoch; sample and evaluate use the last checkpoint. The validation
        # pseudo-likelihood (one random bit flipped per digit) is too noisy to choose by, and with
        # PCD the weights are only good to freeze once the learning rate has decayed: on MNIST
        # (500 hidden, 100 epochs) it chose epoch 50, -118.01 nats by AIS, where epoch 100 gave -88.09.
        self.monitor = "val_recon" if cfg.visible == "gaussian" else None
        self.monitor_mode = "min"

    @classmethod
    def from_job(cls, job: Any) -> "RBMTask":
        return cls(job.config, job.data, job.options.lr, job.options.seed, job.options.epochs)

    def modules(self) -> dict[str, nn.Module]:
        return {"rbm": self.rbm}

    def configure_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"sgd": sgd([self.rbm.W], [self.rbm.b, self.rbm.c], self.lr, self.cfg.momentum, self.cfg.weight_decay)}

    def configure_schedulers(self, optimizers):
        # total_steps: set by the harness for the run's world size (under torchrun with N
        # processes each takes N times fewer steps, and the decay must still end at 0)
        return lr_schedule(optimizers["sgd"], self.cfg.lr_schedule, self.total_steps)

    @torch.no_grad()
    def training_step(self, batch: Any, ctx: StepContext) -> dict[str, torch.Tensor]:
        """One CD-k / PCD-k update: 5 matrix products for k = 1 (positive hidden probabilities,
        k Gibbs half-steps down and up, and one fused product for the weight gradient)."""
        x, _ = batch
        rbm, cfg = self.rbm, self.cfg
        k = cfg.k_at(ctx.epoch, self.epochs)  # the schedules follow the harness's epoch (restored on resume)
        if cfg.momentum_final is not None:
            for group in ctx.optimizers["sgd"].param_groups:
                group["momentum"] = cfg.momentum_at(ctx.epoch)
        v0 = rbm.standardise(flat(x))
        ph0 = rbm.hidden_probs(v0)
        if cfg.method == "pcd":  # persistent chains, kept as hidden samples (Tieleman 2008)
            if self.chains is None or self.chains.shape != ph0.shape:
                self.chains = bernoulli(ph0)
            h = self.chains
        else:
            h = bernoulli(ph0)
        for _ in range(k):
            vk = rbm.sample_visible(h)
            phk = rbm.hidden_probs(vk)
            h = bernoulli(phk)
        if cfg.method == "pcd":
            self.chains = h
        grads, _ = rbm_gradients(rbm, v0, vk, cfg.sparsity_target, cfg.sparsity_cost, ph0=ph0, phk=phk)
        ctx.apply_gradients("sgd", grads)
        # The reconstruction costs a product: report it every 10th step. Its draw comes from the
        # global RNG, so which steps draw must follow the harness's step count (restored on
        # resume), not a counter of this process's own: a resumed run would drift otherwise.
        if ctx.step_count % 10 == 0:
            return {"recon": (rbm.visible_mean(bernoulli(ph0)) - v0).pow(2).sum(1).mean()}
        return {}

    def validate(self) -> dict[str, float]:
        rbm = self.rbm
        v = rbm.standardise(flat(self.val.as_float().to(self.device)))
        train = rbm.standardise(flat(self.data.subset(slice(0, len(self.val))).as_float().to(self.device)))
        recon = (rbm.visible_mean(rbm.hidden_probs(v)) - v).pow(2).sum(1).mean()
        out = {"val_recon": float(recon),
               # held-out minus training free energy: grows when the model overfits
               "free_energy_gap": float(rbm.free_energy(v).mean() - rbm.free_energy(train).mean())}
        if not rbm.gaussian:
            g = torch.Generator().manual_seed(0)
            out["val_pll"] = float(pseudo_log_likelihood(rbm.free_energy, v, g).mean())
        return out

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        # the per-epoch grid: a shorter chain than `gentool sample` runs, to keep epochs cheap
        return self.rbm.sample(n, min(200, self.cfg.sample_steps), self.shape, generator)[0]

    def write_pictures(self, folder: Path, epoch: int) -> None:
        gentool.save_grid(filters_image(self.rbm.W, self.shape), folder / "filters.png")
        g = torch.Generator().manual_seed(epoch)
        _, frames = self.rbm.sample(8, 200, self.shape, g, every=10)
        save_chain_pictures(frames, folder)

    def extra_state(self) -> dict[str, Any]:
        return {"chains": self.chains} if self.chains is not None else {}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.chains = state.get("chains")


def load_rbm(checkpoint: Any, device: torch.device) -> RBM:
    """Rebuild the RBM a checkpoint describes and load its weights."""
    cfg = gentool.config_from_dict(RBMConfig, checkpoint.config)
    n_visible = 1
    for d in checkpoint.data["shape"]:
        n_visible *= d
    rbm = checkpoint.build(lambda: {"rbm": RBM(n_visible, cfg.hidden, cfg.visible)})["rbm"]
    return rbm.to(device).eval()


# -- the plugin's hooks for "rbm" ----------------------------------------------------------------
def train(job: Any) -> Any:
    """``gentool train rbm``."""
    return gentool.fit(RBMTask.from_job(job), job)


def sample(job: Any) -> Any:
    """``gentool sample rbm``."""
    rbm = load_rbm(job.checkpoint, job.device)
    cfg = gentool.config_from_dict(RBMConfig, job.checkpoint.config)
    images, _ = rbm.sample(job.n, cfg.sample_steps, tuple(job.checkpoint.data["shape"]), job.generator)
    return gentool.SampleResult(images=images.cpu())


def evaluate(job: Any) -> Any:
    """``gentool evaluate rbm``: AIS log Z and test log-likelihood, reconstruction, PLL, probe."""
    from gentool_boltzmann import ais
    from gentool_boltzmann.evaluation import check_log_z, prepared, probe_accuracy

    rbm = load_rbm(job.checkpoint, job.device)
    cfg = job.checkpoint.config
    opts = job.options
    test = prepared(job.data, cfg, job.seed, opts.max_test)
    v = rbm.standardise(flat(test.as_float())).to(job.device)
    W, b, c = (t.detach().double().cpu() for t in (rbm.W, rbm.b, rbm.c))
    train_data = prepared(job.split("train"), cfg, job.seed, 10_000, split="train")
    g = torch.Generator().manual_seed(job.seed)
    result = gentool.EvaluateResult()
    out = result.metrics
    if rbm.gaussian:
        base = rbm.standardise(flat(train_data.as_float())).mean(0).double()
    else:
        base = ais.base_rate_visible_bias(flat(train_data.as_float()).double())
    est = ais.rbm_ais(W, b, c, visible=rbm.visible, runs=opts.ais_runs, steps=opts.ais_steps,
                      base_bias=base, generator=g)
    v_test = v.double().cpu()
    log_p = ais.rbm_log_p_unnormalised(v_test, W, b, c, visible=rbm.visible)  # -F(v), reused by the floor
    ll = log_p - est.log_z
    if rbm.gaussian:  # a density of the standardised data: add the Jacobian to get the data's density
        ll = ll - torch.log(rbm.data_std.double().cpu()).sum()
    out["test_log_likelihood_nats"] = float(ll.mean())
    out["log_z"] = est.log_z
    out["log_z_std"] = est.log_z_std
    # log Z +- 3 standard errors of the mean weight moves the log-likelihood the other way;
    # the lower end of log Z is undefined (None) when the weights vary more than their mean
    out["test_ll_low"] = float(ll.mean()) - (est.log_z_high - est.log_z)
    out["test_ll_high"] = float(ll.mean()) + (est.log_z - est.log_z_low) if math.isfinite(est.log_z_low) else None
    out.update({"ais_runs": est.runs, "ais_steps": est.steps})
    result.settings["ais_method"] = est.method
    if not rbm.gaussian:  # -F(v) is log p*(v) exactly: the data give a certain floor under log Z
        v_train = flat(train_data.as_float()).double()
        floor = ais.log_z_floor(torch.cat([v_test, v_train]),
                                torch.cat([log_p, ais.rbm_log_p_unnormalised(v_train, W, b, c)]))
        check_log_z(result, est.log_z, floor, "test_log_likelihood_nats", float(log_p.mean()),
                    ("test_ll_low", "test_ll_high"))
    with torch.no_grad():
        ph = rbm.hidden_probs(v)
        out["reconstruction_error"] = float((rbm.visible_mean(ph) - v).pow(2).sum(1).mean())
        if not rbm.gaussian:
            out["pseudo_log_likelihood"] = float(pseudo_log_likelihood(rbm.free_energy, v, g).mean())
    acc = probe_accuracy(opts, train_data, test, lambda x: rbm.hidden_probs(rbm.standardise(flat(x)).to(job.device)))
    if acc is not None:
        out["linear_probe_accuracy"] = acc
    out["n_test"] = len(test)
    return result
