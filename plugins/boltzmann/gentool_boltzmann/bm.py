"""General Boltzmann machine: visible-visible and hidden-hidden links (Ackley, Hinton & Sejnowski 1985).

Energy: E(v, h) = -1/2 v'Lv - 1/2 h'Jh - v'Wh - b.v - c.h, with L and J symmetric and zero on
the diagonal (each pair of units has one weight). Without the restrictions of an RBM neither
p(h | v) nor p(v | h) factorises, so learning (Salakhutdinov & Hinton 2009, section 2) uses

* the positive (data) phase: mean-field for the hidden units with the data clamped, ``mu <-
  damping mu + (1 - damping) sigmoid(c + v W + mu J)`` for ``mean_field_iters`` sweeps (damped, as
  a coupled J can make undamped updates oscillate); the statistics are <v v'>, <v mu'>, <mu mu'>;
* the negative (model) phase: ``chains`` persistent chains over all units, each update advanced by
  ``k`` sequential Gibbs sweeps: every unit in a fresh random order, each drawn from its exact
  conditional given all the others (parallel updates would be wrong with L and J).

After every update L and J are projected back to symmetric with a zero diagonal. It is meant for
small inputs (the 8x8 digits, or ``--image-size 4``): a sweep touches the units one by one.

Evaluation says which figures are exact and which approximate: log Z and the test
log-likelihood by enumeration when n_v + n_h is small, the pseudo-log-likelihood exactly (hidden
units enumerated) when n_h is small, and always its mean-field approximation.
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
    BoltzmannTask, bernoulli, filters_image, flat, lr_schedule, save_chain_pictures, sgd,
)
from gentool_boltzmann.configs import BMConfig

#: Damping of the mean-field updates (share of the old value kept).
DAMPING = 0.5


def _symmetric_zero_diagonal(M: torch.Tensor) -> torch.Tensor:
    M = (M + M.T) / 2
    return M.fill_diagonal_(0)


class BM(nn.Module):
    """The network: ``L [n_v, n_v]``, ``J [n_h, n_h]`` (symmetric, zero diagonal), ``W [n_v, n_h]``,
    visible bias ``b``, hidden bias ``c``."""

    def __init__(self, n_visible: int, n_hidden: int, init_std: float = 0.01):
        super().__init__()
        self.W = nn.Parameter(torch.randn(n_visible, n_hidden) * init_std)
        self.L = nn.Parameter(torch.zeros(n_visible, n_visible))
        self.J = nn.Parameter(torch.zeros(n_hidden, n_hidden))
        self.b = nn.Parameter(torch.zeros(n_visible))
        self.c = nn.Parameter(torch.zeros(n_hidden))

    @property
    def n_visible(self) -> int:
        return self.W.shape[0]

    @torch.no_grad()
    def project_(self) -> None:
        """Make L and J symmetric with a zero diagonal again (after an update)."""
        self.L.copy_(_symmetric_zero_diagonal(self.L))
        self.J.copy_(_symmetric_zero_diagonal(self.J))

    def couplings(self) -> tuple[torch.Tensor, torch.Tensor]:
        """All units as one network: the symmetric ``[n, n]`` weight matrix and the biases ``[n]``."""
        M = torch.cat([torch.cat([self.L, self.W], 1), torch.cat([self.W.T, self.J], 1)], 0)
        return M, torch.cat([self.b, self.c])

    def mean_field(self, v: torch.Tensor, iters: int) -> torch.Tensor:
        """Hidden means ``mu`` with ``v`` clamped: damped fixed-point sweeps from sigmoid(c + v W)."""
        drive = v @ self.W + self.c
        mu = torch.sigmoid(drive)
        for _ in range(iters):
            mu = DAMPING * mu + (1 - DAMPING) * torch.sigmoid(drive + mu @ self.J)
        return mu

    def mean_field_free_energy(self, v: torch.Tensor, iters: int) -> torch.Tensor:
        """F_mf(v) = E_q[E(v, h)] - H(q) with q the mean-field posterior: an upper bound on the
        free energy F(v) = -log sum_h exp(-E(v, h)), per example."""
        mu = self.mean_field(v, iters)
        m = mu.clamp(1e-7, 1 - 1e-7)
        entropy = -(m * m.log() + (1 - m) * (1 - m).log()).sum(1)
        neg_energy = (v @ self.b + 0.5 * ((v @ self.L) * v).sum(1) + mu @ self.c + ((v @ self.W) * mu).sum(1)
                      + 0.5 * ((mu @ self.J) * mu).sum(1))
        return -(neg_energy + entropy)

    def pseudo_log_likelihood_mf(self, v: torch.Tensor, iters: int) -> torch.Tensor:
        """Mean-field pseudo-log-likelihood per example: sum_i log p(v_i | v_-i) with the free
        energies replaced by their mean-field values (every bit flipped in turn; approximate)."""
        n, d = v.shape
        flipped = v.repeat_interleave(d, 0)  # [n * d, d]: example-major, bit i flipped in row i
        idx = torch.arange(n * d, device=v.device)
        flipped[idx, idx % d] = 1 - flipped[idx, idx % d]
        f_v = self.mean_field_free_energy(v, iters)
        f_flip = self.mean_field_free_energy(flipped, iters).reshape(n, d)
        return F.logsigmoid(f_flip - f_v[:, None]).sum(1)

    def sweep(self, x: torch.Tensor, M: torch.Tensor, theta: torch.Tensor, order: torch.Tensor,
              generator: torch.Generator | None = None) -> torch.Tensor:
        """One sequential Gibbs sweep over all units of the states ``x [chains, n]`` in ``order``.
        Each unit is drawn given the current values of all the others; the units' inputs are
        kept up to date with a rank-one correction after every change."""
        x = x.clone()
        field = x @ M + theta
        if generator is None:
            u = torch.rand_like(x)
        else:
            u = torch.rand(x.shape, generator=generator, dtype=x.dtype, device=generator.device).to(x.device)
        for i in order.tolist():
            new = (u[:, i] < torch.sigmoid(field[:, i])).to(x.dtype)
            field.addr_(new - x[:, i], M[i])
            x[:, i] = new
        return x

    def gibbs(self, x: torch.Tensor, sweeps: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``sweeps`` sequential sweeps, each in a fresh random order."""
        M, theta = self.couplings()
        for _ in range(sweeps):
            order = torch.randperm(x.shape[1], generator=generator)
            x = self.sweep(x, M, theta, order, generator)
        return x

    def visible_means(self, x: torch.Tensor) -> torch.Tensor:
        """p(v_i = 1 | everything else) for each visible unit of the states ``x`` (for pictures)."""
        n_v = self.n_visible
        return torch.sigmoid(x[:, :n_v] @ self.L + x[:, n_v:] @ self.W.T + self.b)

    def reconstruct(self, v: torch.Tensor, iters: int) -> torch.Tensor:
        """Hidden means inferred from ``v``, then the visible means from the hidden ones alone
        (mean-field over the coupled visible units, v itself not looked at again)."""
        mu = self.mean_field(v, iters)
        drive = mu @ self.W.T + self.b
        nu = torch.sigmoid(drive)
        for _ in range(iters):
            nu = DAMPING * nu + (1 - DAMPING) * torch.sigmoid(drive + nu @ self.L)
        return nu

    @torch.no_grad()
    def sample(self, n: int, sweeps: int, shape: tuple[int, ...], generator: torch.Generator,
               every: int = 0) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """``n`` chains from noise, ``sweeps`` sequential sweeps: the visible units' conditional
        means as images, plus snapshots every ``every`` sweeps (for the chain pictures)."""
        x = bernoulli(torch.full((n, self.W.shape[0] + self.W.shape[1]), 0.5, device=self.W.device), generator)
        M, theta = self.couplings()
        frames = []
        for t in range(sweeps):
            x = self.sweep(x, M, theta, torch.randperm(x.shape[1], generator=generator), generator)
            if every and t % every == 0:
                frames.append(self.visible_means(x).reshape(-1, *shape))
        return self.visible_means(x).reshape(-1, *shape), frames


#: Sweeps for the per-epoch sample grid and the chain pictures (a sweep costs one step per unit);
#: ``gentool sample bm`` uses the full ``sample_steps``.
PREVIEW_SWEEPS = 100


class BMTask(BoltzmannTask):
    """Trains a :class:`BM`: mean-field positive phase, persistent sequential-Gibbs negative phase."""

    monitor = "val_pll_mf"
    monitor_mode = "max"

    def __init__(self, cfg: BMConfig, data: Any, lr: float, seed: int):
        self.cfg, self.lr = cfg, lr
        self.prepare(data, cfg.binarize, seed)
        self.bm = BM(self.n_visible, cfg.hidden, cfg.init_std)
        p = flat(self.data.as_float()).mean(0).clamp(1e-3, 1 - 1e-3)  # visible biases at the pixels' log-odds
        self.bm.b.data.copy_(torch.log(p / (1 - p)))
        self.chains: torch.Tensor | None = None  # [chains, n_v + n_h]

    def modules(self) -> dict[str, nn.Module]:
        return {"bm": self.bm}

    def configure_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        bm, cfg = self.bm, self.cfg
        return {"sgd": sgd([bm.W, bm.L, bm.J], [bm.b, bm.c], self.lr, cfg.momentum, cfg.weight_decay)}

    def configure_schedulers(self, optimizers):
        # total_steps: set by the harness (this process's optimizer steps at the run's world size)
        return lr_schedule(optimizers["sgd"], self.cfg.lr_schedule, self.total_steps)

    @torch.no_grad()
    def training_step(self, batch: Any, ctx: StepContext) -> dict[str, Any]:
        x, _ = batch
        bm, cfg = self.bm, self.cfg
        v = flat(x)
        mu = bm.mean_field(v, cfg.mean_field_iters)  # positive phase
        if self.chains is None:  # chains start at data (rows reused when chains > batch)
            rows = torch.arange(cfg.chains, device=v.device) % v.shape[0]
            self.chains = torch.cat([v[rows], bernoulli(mu[rows])], 1)
        self.chains = bm.gibbs(self.chains, cfg.k)  # negative phase
        n_v = bm.n_visible
        xv, xh = self.chains[:, :n_v], self.chains[:, n_v:]
        n, c = v.shape[0], self.chains.shape[0]
        grads = {
            bm.W: xv.T @ xh / c - v.T @ mu / n,
            bm.L: (xv.T @ xv / c - v.T @ v / n).fill_diagonal_(0),
            bm.J: (xh.T @ xh / c - mu.T @ mu / n).fill_diagonal_(0),
            bm.b: xv.mean(0) - v.mean(0),
            bm.c: xh.mean(0) - mu.mean(0),
        }
        ctx.apply_gradients("sgd", grads)
        bm.project_()
        recon = (bm.reconstruct(v, cfg.mean_field_iters) - v).pow(2).sum(1).mean()
        return {"recon": recon, "free_energy_mf": bm.mean_field_free_energy(v, cfg.mean_field_iters).mean()}

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        bm, iters = self.bm, self.cfg.mean_field_iters
        v = flat(self.val.as_float().to(self.device))
        return {"val_recon": float((bm.reconstruct(v, iters) - v).pow(2).sum(1).mean()),
                "val_pll_mf": float(bm.pseudo_log_likelihood_mf(v, iters).mean())}

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        return self.bm.sample(n, min(self.cfg.sample_steps, PREVIEW_SWEEPS), self.shape, generator)[0]

    def write_pictures(self, folder: Path, epoch: int) -> None:
        gentool.save_grid(filters_image(self.bm.W, self.shape), folder / "filters.png")
        g = torch.Generator().manual_seed(epoch)
        _, frames = self.bm.sample(8, PREVIEW_SWEEPS, self.shape, g, every=5)
        save_chain_pictures(frames, folder)

    def extra_state(self) -> dict[str, Any]:
        return {"chains": self.chains} if self.chains is not None else {}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.chains = state.get("chains")


def load_bm(checkpoint: Any, device: torch.device) -> tuple[BM, BMConfig]:
    """Rebuild the BM a checkpoint describes and load its weights."""
    cfg = gentool.config_from_dict(BMConfig, checkpoint.config)
    bm = checkpoint.build(lambda: {"bm": BM(math.prod(checkpoint.data["shape"]), cfg.hidden)})["bm"]
    return bm.to(device).eval(), cfg


# -- the plugin's hooks for "bm" -----------------------------------------------------------------
def train(job: Any) -> Any:
    """``gentool train bm``."""
    return gentool.fit(BMTask.from_job(job), job)


def sample(job: Any) -> Any:
    """``gentool sample bm``: ``sample_steps`` sequential Gibbs sweeps from noise."""
    bm, cfg = load_bm(job.checkpoint, job.device)
    images, _ = bm.sample(job.n, cfg.sample_steps, tuple(job.checkpoint.data["shape"]), job.generator)
    return gentool.SampleResult(images=images.cpu())


#: Exact log Z and log-likelihood when n_v + n_h is at most this (2^24 states).
EXACT_MAX_UNITS = 24
#: Exact pseudo-log-likelihood (hidden units enumerated for every flipped bit) up to this many hidden units.
EXACT_PLL_MAX_HIDDEN = 12


def exact_pseudo_log_likelihood(v: torch.Tensor, params: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """sum_i log p(v_i | v_-i) per example, the hidden units summed out by enumeration."""
    from gentool_boltzmann import ais

    n, d = v.shape
    flipped = v.repeat_interleave(d, 0)
    idx = torch.arange(n * d)
    flipped[idx, idx % d] = 1 - flipped[idx, idx % d]
    log_p = ais.bm_log_p_unnormalised(v, *params)
    log_p_flip = ais.bm_log_p_unnormalised(flipped, *params).reshape(n, d)
    return F.logsigmoid(log_p[:, None] - log_p_flip).sum(1)


def evaluate(job: Any) -> Any:
    """``gentool evaluate bm``: exact log Z and test log-likelihood when the model is small enough to
    enumerate, pseudo-log-likelihood (exact when n_h is small, always the mean-field
    approximation), reconstruction error and the linear probe. Keys say which is which (and the
    ``figures`` setting says so in words). The AIS flags are accepted but unused: no AIS here."""
    from gentool_boltzmann import ais
    from gentool_boltzmann.evaluation import prepared, probe_accuracy

    bm, cfg = load_bm(job.checkpoint, job.device)
    opts = job.options
    test = prepared(job.data, job.checkpoint.config, job.seed, opts.max_test)
    train_data = prepared(job.split("train"), job.checkpoint.config, job.seed, 10_000, split="train")
    v = flat(test.as_float()).to(job.device)
    n_v, n_h = bm.W.shape
    params = tuple(t.detach().double().cpu() for t in (bm.L, bm.J, bm.b, bm.c, bm.W))
    result = gentool.EvaluateResult()
    out = result.metrics
    if n_v + n_h <= EXACT_MAX_UNITS:
        log_z = ais.bm_log_z_exact(*params)
        out["log_z_exact"] = log_z
        out["test_log_likelihood_exact"] = float((ais.bm_log_p_unnormalised(v.double().cpu(), *params) - log_z).mean())
    if n_h <= EXACT_PLL_MAX_HIDDEN:
        out["pseudo_log_likelihood_exact"] = float(exact_pseudo_log_likelihood(v.double().cpu(), params).mean())
    with torch.no_grad():
        out["pseudo_log_likelihood_mf"] = float(bm.pseudo_log_likelihood_mf(v, cfg.mean_field_iters).mean())
        out["reconstruction_error"] = float((bm.reconstruct(v, cfg.mean_field_iters) - v).pow(2).sum(1).mean())
    result.settings["figures"] = (
        "*_exact: by enumeration; *_mf: mean-field approximation"
        + ("" if "log_z_exact" in out else
           f"; no log-likelihood: {n_v + n_h} units are too many to enumerate (limit {EXACT_MAX_UNITS})"))
    features = lambda x: bm.mean_field(flat(x).to(job.device), cfg.mean_field_iters)  # noqa: E731
    acc = probe_accuracy(opts, train_data, test, features)
    if acc is not None:
        out["linear_probe_accuracy"] = acc
        result.settings["probe_features"] = "mean-field hidden means, standardised"
    out["n_test"] = len(test)
    return result
