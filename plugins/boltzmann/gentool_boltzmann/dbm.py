"""Deep Boltzmann machine (Salakhutdinov & Hinton 2009): layers v = x_0, x_1 .. x_L, all binary.

Energy: E(x) = -sum_l b_l.x_l - sum_l x_{l-1}' W_l x_l. Every layer talks to the one below and
the one above, so (unlike a DBN) the posterior over the hidden layers has no closed form.

Training has two phases, both through one :class:`DBMTask` (so ``--resume`` and Ctrl-C work):

1. Greedy pretraining, the first ``pretrain_fraction`` of the steps, split evenly across the L
   layer pairs. Pair l trains as an RBM (:class:`PretrainRBM`) on data passed up through the pairs
   below (sampled states), with the doubled-input correction: the bottom RBM sees two tied copies
   of v, ``p(h_1 | v) = sigmoid(2 v W_1 + c)``; the top RBM two tied copies of its hidden layer,
   ``p(x_{L-1} | x_L) = sigmoid(2 W_L x_L + b)``; middle RBMs both. A DBM layer gets input from
   both neighbours, a pretraining RBM from one: the copies make up for the missing one. The
   pretraining RBMs hold the DBM-scale weights and apply the doubling in their conditionals,
   which is the same as training an RBM on doubled input and halving its weights when composing,
   as the paper does. Composing copies W_l, takes b_0 from the bottom RBM, b_L from the top one
   and, for a middle layer, the mean of the two biases it had (averaging the two RBMs' inputs
   to that layer gives exactly W_l' x_{l-1} + W_{l+1} x_{l+1} + that mean).
2. Joint training, the rest: the data-dependent statistics from mean-field (``mean_field_iters``
   fixed-point sweeps, odd layers then even, started by a bottom-up pass with doubled input
   for the middle layers), the model's from ``chains`` persistent Gibbs chains (odd layers
   given even, then even given odd: ``k`` such steps per update). Updates go through
   ``ctx.apply_gradients``; the chains are saved with the training state.

Checkpoint modules: ``dbm`` (parameters ``W1..WL``, ``b0..bL``, and a ``composed`` flag) and the
pretraining RBMs ``pre1..preL``. A checkpoint saved during pretraining samples and evaluates the
pretraining RBMs composed as they are.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

import gentool
from gentool import StepContext

from gentool_boltzmann.common import BoltzmannTask, bernoulli, filters_image, flat, save_chain_pictures, sgd
from gentool_boltzmann.configs import DBMConfig
from gentool_boltzmann.dbn import lr_factor, set_lr


class DBM(nn.Module):
    """The network: ``W{l} [n_{l-1}, n_l]`` for l = 1..L, biases ``b{l} [n_l]`` for l = 0..L."""

    def __init__(self, sizes: Sequence[int], init_std: float = 0.01):
        super().__init__()
        self.sizes = list(sizes)
        self.L = len(sizes) - 1
        for l in range(1, self.L + 1):
            self.register_parameter(f"W{l}", nn.Parameter(torch.randn(sizes[l - 1], sizes[l]) * init_std))
        for l in range(self.L + 1):
            self.register_parameter(f"b{l}", nn.Parameter(torch.zeros(sizes[l])))
        # 1 once the pretrained RBMs were copied in (or pretraining was skipped)
        self.register_buffer("composed", torch.zeros(()))

    @property
    def Ws(self) -> list[nn.Parameter]:
        return [getattr(self, f"W{l}") for l in range(1, self.L + 1)]

    @property
    def bs(self) -> list[nn.Parameter]:
        return [getattr(self, f"b{l}") for l in range(self.L + 1)]

    def layer_input(self, xs: Sequence[torch.Tensor], l: int) -> torch.Tensor:
        """Total input to layer l from its neighbours in ``xs`` (x_0 .. x_L) plus its bias."""
        out = getattr(self, f"b{l}")
        if l > 0:
            out = out + xs[l - 1] @ getattr(self, f"W{l}")
        if l < self.L:
            out = out + xs[l + 1] @ getattr(self, f"W{l + 1}").T
        return out

    def mean_field(self, v: torch.Tensor, iters: int) -> list[torch.Tensor]:
        """Posterior means ``[v, mu_1 .. mu_L]`` with v clamped: a bottom-up start (middle layers
        see doubled input from below, standing in for the input from above), then ``iters``
        sweeps of ``mu_l = sigmoid(input to l)``, odd layers first, then even."""
        mus = [v]
        for l in range(1, self.L + 1):
            scale = 2.0 if l < self.L else 1.0
            mus.append(torch.sigmoid(scale * (mus[-1] @ getattr(self, f"W{l}")) + getattr(self, f"b{l}")))
        order = [*range(1, self.L + 1, 2), *range(2, self.L + 1, 2)]
        for _ in range(iters):
            for l in order:
                mus[l] = torch.sigmoid(self.layer_input(mus, l))
        return mus

    def gibbs(self, xs: list[torch.Tensor], steps: int,
              generator: torch.Generator | None = None) -> tuple[list[torch.Tensor], torch.Tensor]:
        """``steps`` alternating Gibbs steps on all layers (odd given even, then even given odd);
        returns the new states and the visible means of the last step."""
        xs = list(xs)
        v_mean = xs[0]
        for _ in range(steps):
            for parity in (1, 0):
                for l in range(parity, self.L + 1, 2):
                    p = torch.sigmoid(self.layer_input(xs, l))
                    xs[l] = bernoulli(p, generator)
                    if l == 0:
                        v_mean = p
        return xs, v_mean

    def noise(self, n: int, generator: torch.Generator | None = None) -> list[torch.Tensor]:
        """Chains' start: every unit a fair coin."""
        device = self.b0.device
        return [bernoulli(torch.full((n, s), 0.5, device=device), generator) for s in self.sizes]

    @torch.no_grad()
    def sample(self, n: int, steps: int, shape: tuple[int, ...], generator: torch.Generator,
               every: int = 0) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """``n`` chains from noise, ``steps`` Gibbs steps: visible means as images, plus snapshots
        every ``every`` steps (for the chain pictures)."""
        xs = self.noise(n, generator)
        frames = []
        v_mean = xs[0]
        for t in range(steps):
            xs, v_mean = self.gibbs(xs, 1, generator)
            if every and t % every == 0:
                frames.append(v_mean.reshape(-1, *shape))
        return v_mean.reshape(-1, *shape), frames

    def reconstruct(self, v: torch.Tensor, iters: int) -> torch.Tensor:
        """p(v | mu_1) after mean-field: the DBM's reconstruction of v."""
        mus = self.mean_field(v, iters)
        return torch.sigmoid(mus[1] @ self.W1.T + self.b0)

    def mean_field_free_energy(self, v: torch.Tensor, iters: int) -> torch.Tensor:
        """E_q[E(v, h)] - H(q) per example: log Z minus the variational lower bound on log p(v)."""
        mus = self.mean_field(v, iters)
        out = -(v @ self.b0)
        for l in range(1, self.L + 1):
            m = mus[l].clamp(1e-7, 1 - 1e-7)
            entropy = -(m * m.log() + (1 - m) * (1 - m).log()).sum(1)
            pair = ((mus[l - 1] @ getattr(self, f"W{l}")) * mus[l]).sum(1)
            out = out - mus[l] @ getattr(self, f"b{l}") - pair - entropy
        return out


class PretrainRBM(nn.Module):
    """Layer pair (x_{l-1} below, x_l above) pretrained as an RBM with tied copies of a layer:
    ``up`` copies of the lower layer drive the upper one, ``down`` copies of the upper layer drive
    the lower one. ``W`` is at the DBM's scale: the copies do the doubling."""

    def __init__(self, n_in: int, n_out: int, up: int, down: int, init_std: float = 0.01):
        super().__init__()
        self.up, self.down = up, down
        self.W = nn.Parameter(torch.randn(n_in, n_out) * init_std)
        self.b = nn.Parameter(torch.zeros(n_in))
        self.c = nn.Parameter(torch.zeros(n_out))

    def hidden_probs(self, x: torch.Tensor) -> torch.Tensor:
        """p(upper | lower copies all equal to x) = sigmoid(up * x W + c)."""
        return torch.sigmoid(self.up * (x @ self.W) + self.c)

    def gibbs(self, xs: torch.Tensor, steps: int) -> torch.Tensor:
        """Gibbs steps on the lower copies ``xs [up, n, n_in]`` (the upper copies sampled in between)."""
        for _ in range(steps):
            p_y = torch.sigmoid(xs.sum(0) @ self.W + self.c)
            ys = torch.bernoulli(p_y.expand(self.down, *p_y.shape))
            p_x = torch.sigmoid(ys.sum(0) @ self.W.T + self.b)
            xs = torch.bernoulli(p_x.expand(self.up, *p_x.shape))
        return xs

    def gradients(self, x0: torch.Tensor, xs: torch.Tensor) -> tuple[dict[nn.Parameter, torch.Tensor], torch.Tensor]:
        """Negative log-likelihood gradients (model minus data statistics, per pair of copies)
        from data ``x0`` and chain copies ``xs``; also returns p(upper | x0)."""
        ph0 = self.hidden_probs(x0)
        s = xs.sum(0) / self.up  # mean over the lower copies
        phk = torch.sigmoid(xs.sum(0) @ self.W + self.c)
        gW = s.T @ phk / s.shape[0] - x0.T @ ph0 / x0.shape[0]
        return {self.W: gW, self.b: s.mean(0) - x0.mean(0), self.c: phk.mean(0) - ph0.mean(0)}, ph0


def pretraining_stack(sizes: Sequence[int], init_std: float) -> list[PretrainRBM]:
    """The L pretraining RBMs with their copies: bottom (2, 1), middle (2, 2), top (1, 2)."""
    L = len(sizes) - 1
    return [PretrainRBM(sizes[l - 1], sizes[l], up=2 if l < L else 1, down=2 if l > 1 else 1, init_std=init_std)
            for l in range(1, L + 1)]


@torch.no_grad()
def compose(dbm: DBM, pres: Sequence[PretrainRBM]) -> DBM:
    """Copy the pretrained RBMs into the DBM (see the module docstring) and mark it composed."""
    L = dbm.L
    for l, pre in enumerate(pres, start=1):
        getattr(dbm, f"W{l}").copy_(pre.W)
    dbm.b0.copy_(pres[0].b)
    getattr(dbm, f"b{L}").copy_(pres[-1].c)
    for l in range(1, L):
        getattr(dbm, f"b{l}").copy_((pres[l - 1].c + pres[l].b) / 2)
    dbm.composed.fill_(1)
    return dbm


def stage_ends(total_steps: int, pretrain_fraction: float, layers: int) -> list[int]:
    """Step at which each pretraining stage ends (even split, the lower layers get the remainder)."""
    pre = round(pretrain_fraction * total_steps)
    base, extra = divmod(pre, layers)
    ends, at = [], 0
    for l in range(layers):
        at += base + (1 if l < extra else 0)
        ends.append(at)
    return ends


class DBMTask(BoltzmannTask):
    """Trains a DBM: greedy pretraining with the doubled-input correction, then joint training.

    No ``monitor``: joint training often raises the reconstruction error while it improves the
    likelihood, and the bound needs an AIS run, so no cheap figure picks a best epoch; ``gentool
    sample`` and ``evaluate`` use the run's last checkpoint."""

    def __init__(self, cfg: DBMConfig, data: Any, lr: float, seed: int):
        self.cfg, self.lr = cfg, lr
        self.prepare(data, cfg.binarize, seed)
        sizes = [self.n_visible, *cfg.layers]
        self.dbm = DBM(sizes, cfg.init_std)
        self.pres = pretraining_stack(sizes, cfg.init_std)
        p = flat(self.data.as_float()).mean(0).clamp(1e-3, 1 - 1e-3)  # visible biases at the pixels' log-odds
        for b in (self.dbm.b0, self.pres[0].b):
            b.data.copy_(torch.log(p / (1 - p)))
        #: step at which each pretraining stage ends: made from the harness's total_steps in
        #: configure_optimizers (it depends on the epochs, the batch size and the world size)
        self.ends: list[int] = []
        self.step = 0  # steps taken (saved for resume): decides the stage
        self.pre_chains: torch.Tensor | None = None  # PCD chains of the pretraining stage in progress
        self.pre_stage = -1
        self.chains: list[torch.Tensor] | None = None  # the joint phase's persistent chains, x_0 .. x_L

    def stage(self) -> int:
        """0-based pretraining layer of the next step, or L for the joint phase (which, once
        begun, goes on: also when a resumed run with more epochs moves the stage boundaries)."""
        if self.dbm.composed.item():
            return len(self.ends)
        return next((l for l, end in enumerate(self.ends) if self.step < end), len(self.ends))

    def modules(self) -> dict[str, nn.Module]:
        return {"dbm": self.dbm, **{f"pre{l}": pre for l, pre in enumerate(self.pres, start=1)}}

    def configure_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        cfg = self.cfg
        # the harness has set total_steps: the optimizer steps this process takes over the run
        self.ends = stage_ends(self.total_steps, cfg.pretrain_fraction, len(cfg.layers))
        opts = {f"pre{l}": sgd([p.W], [p.b, p.c], self.lr, cfg.momentum, cfg.weight_decay)
                for l, p in enumerate(self.pres, start=1)}
        opts["dbm"] = sgd(self.dbm.Ws, self.dbm.bs, self.lr, cfg.momentum, cfg.weight_decay)
        return opts

    def model(self) -> DBM:
        """The DBM as it stands: during pretraining, the pretraining RBMs composed (a copy)."""
        if self.dbm.composed.item():
            return self.dbm
        return compose(copy.deepcopy(self.dbm), self.pres)  # (deepcopy: no draw from the training RNG)

    @torch.no_grad()
    def training_step(self, batch: Any, ctx: StepContext) -> dict[str, Any]:
        x, _ = batch
        l = self.stage()
        out = self.pretrain_step(flat(x), l, ctx) if l < len(self.pres) else self.joint_step(flat(x), ctx)
        self.step += 1
        return out

    def pretrain_step(self, v: torch.Tensor, l: int, ctx: StepContext) -> dict[str, Any]:
        cfg, pre = self.cfg, self.pres[l]
        x0 = v
        for below in self.pres[:l]:  # the pretrained pairs below turn the batch into this pair's data
            x0 = bernoulli(below.hidden_probs(x0))
        copies = x0.expand(pre.up, *x0.shape)
        if cfg.method == "pcd":
            if self.pre_chains is None or self.pre_stage != l or self.pre_chains.shape != copies.shape:
                self.pre_chains, self.pre_stage = copies.clone(), l
            xs = self.pre_chains = pre.gibbs(self.pre_chains, cfg.k)
        else:
            xs = pre.gibbs(copies, cfg.k)
        grads, ph0 = pre.gradients(x0, xs)
        start = self.ends[l - 1] if l else 0  # the learning rate decays over this stage's steps
        progress = (self.step - start) / max(1, self.ends[l] - start)
        set_lr(ctx.optimizers[f"pre{l + 1}"], self.lr * lr_factor(cfg.lr_schedule, progress))
        ctx.apply_gradients(f"pre{l + 1}", grads)
        ys = bernoulli(ph0.expand(pre.down, *ph0.shape))
        recon = (torch.sigmoid(ys.sum(0) @ pre.W.T + pre.b) - x0).pow(2).sum(1).mean()
        return {"pretrain_recon": recon, "pretrain_layer": l + 1}

    def joint_step(self, v: torch.Tensor, ctx: StepContext) -> dict[str, Any]:
        cfg, dbm = self.cfg, self.dbm
        if not dbm.composed.item():
            if self.ends[-1] > 0:
                compose(dbm, self.pres)
            dbm.composed.fill_(1)
        mus = dbm.mean_field(v, cfg.mean_field_iters)  # data-dependent statistics
        if self.chains is None:  # start the chains at data (rows reused when chains > batch)
            rows = torch.arange(cfg.chains, device=v.device) % v.shape[0]
            self.chains = [bernoulli(m[rows]) for m in mus]
        self.chains, _ = dbm.gibbs(self.chains, cfg.k)  # model statistics
        xs = self.chains
        n, c = v.shape[0], xs[0].shape[0]
        grads: dict[nn.Parameter, torch.Tensor] = {}
        for l in range(1, dbm.L + 1):
            grads[getattr(dbm, f"W{l}")] = xs[l - 1].T @ xs[l] / c - mus[l - 1].T @ mus[l] / n
        for l in range(dbm.L + 1):
            grads[getattr(dbm, f"b{l}")] = xs[l].mean(0) - mus[l].mean(0)
        start = self.ends[-1]  # the learning rate decays over the joint phase
        progress = (self.step - start) / max(1, self.total_steps - start)
        set_lr(ctx.optimizers["dbm"], self.lr * lr_factor(cfg.lr_schedule, progress))
        ctx.apply_gradients("dbm", grads)
        recon = (torch.sigmoid(mus[1] @ dbm.W1.T + dbm.b0) - v).pow(2).sum(1).mean()
        return {"recon": recon}

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        """Mean-field reconstruction error of held-out data by the DBM as it stands, its
        mean-field free energy, and the held-out minus training free energy (overfitting)."""
        dbm, iters = self.model(), self.cfg.mean_field_iters
        v = flat(self.val.as_float().to(self.device))
        train = flat(self.data.subset(slice(0, len(self.val))).as_float().to(self.device))
        recon = (dbm.reconstruct(v, iters) - v).pow(2).sum(1).mean()
        f_val = dbm.mean_field_free_energy(v, iters).mean()
        return {"val_recon": float(recon), "val_free_energy": float(f_val),
                "free_energy_gap": float(f_val - dbm.mean_field_free_energy(train, iters).mean()),
                "pretraining": float(not self.dbm.composed.item())}

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        return self.model().sample(n, self.cfg.sample_steps, self.shape, generator)[0]

    def write_pictures(self, folder: Path, epoch: int) -> None:
        dbm = self.model()
        gentool.save_grid(filters_image(dbm.W1, self.shape), folder / "filters.png")
        g = torch.Generator().manual_seed(epoch)
        _, frames = dbm.sample(8, 200, self.shape, g, every=10)
        save_chain_pictures(frames, folder)

    def extra_state(self) -> dict[str, Any]:
        state: dict[str, Any] = {"step": self.step, "pre_stage": self.pre_stage}
        if self.pre_chains is not None:
            state["pre_chains"] = self.pre_chains
        if self.chains is not None:
            state["chains"] = list(self.chains)
        return state

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.step = int(state.get("step", 0))
        self.pre_stage = int(state.get("pre_stage", -1))
        self.pre_chains = state.get("pre_chains")
        self.chains = list(state["chains"]) if "chains" in state else None


def load_dbm(checkpoint: Any, device: torch.device) -> tuple[DBM, DBMConfig]:
    """Rebuild the DBM a checkpoint describes (composing its pretraining RBMs if it was saved
    before the joint phase began)."""
    cfg = gentool.config_from_dict(DBMConfig, checkpoint.config)
    sizes = [math.prod(checkpoint.data["shape"]), *cfg.layers]

    def networks() -> dict[str, Any]:
        return {"dbm": DBM(sizes), **{f"pre{l}": p for l, p in enumerate(pretraining_stack(sizes, cfg.init_std), start=1)}}

    nets = checkpoint.build(networks)  # checked against the file's shapes on the meta device first
    dbm, pres = nets["dbm"], [nets[f"pre{l}"] for l in range(1, len(sizes))]
    if not dbm.composed.item():
        compose(dbm, pres)
    return dbm.to(device).eval(), cfg


# -- the plugin's hooks for "dbm" ----------------------------------------------------------------
def train(job: Any) -> Any:
    """``gentool train dbm``."""
    return gentool.fit(DBMTask.from_job(job), job)


def sample(job: Any) -> Any:
    """``gentool sample dbm``: Gibbs chains over all layers from noise."""
    dbm, cfg = load_dbm(job.checkpoint, job.device)
    images, _ = dbm.sample(job.n, cfg.sample_steps, tuple(job.checkpoint.data["shape"]), job.generator)
    return gentool.SampleResult(images=images.cpu())


#: Mean-field sweeps for the evaluation's posterior (more than in training: a tighter bound).
EVAL_MEAN_FIELD_ITERS = 30
#: Enumerate exactly when the smaller parity of layers has at most this many units.
EXACT_MAX_UNITS = 20


def evaluate(job: Any) -> Any:
    """``gentool evaluate dbm``: AIS log Z and the variational lower bound on the test
    log-likelihood; exact log Z and log-likelihood when the model is small enough to enumerate;
    mean-field reconstruction error; linear probe on the mean-field hidden layers."""
    from gentool_boltzmann import ais
    from gentool_boltzmann.evaluation import check_log_z, prepared, probe_accuracy

    dbm, _ = load_dbm(job.checkpoint, job.device)
    cfg = job.checkpoint.config
    opts = job.options
    test = prepared(job.data, cfg, job.seed, opts.max_test)
    train_data = prepared(job.split("train"), cfg, job.seed, 10_000, split="train")
    v = flat(test.as_float()).double()
    Ws = [W.detach().double().cpu() for W in dbm.Ws]
    bs = [b.detach().double().cpu() for b in dbm.bs]
    v_train = flat(train_data.as_float()).double()
    g = torch.Generator().manual_seed(job.seed)
    est = ais.dbm_ais(Ws, bs, runs=opts.ais_runs, steps=opts.ais_steps,
                      base_visible_bias=ais.base_rate_visible_bias(v_train), generator=g)
    # mean-field once per split: the bound, the floor, the reconstruction and the probe share it
    mus = ais.dbm_mean_field(v, Ws, bs, iters=EVAL_MEAN_FIELD_ITERS)
    mus_train = ais.dbm_mean_field(v_train, Ws, bs, iters=EVAL_MEAN_FIELD_ITERS)
    # E_q[-E] + H(q) <= log p*(v) per example: the bound before log Z, and the floor's ingredients
    elbo = ais.dbm_lower_bound(v, Ws, bs, 0.0, mus=mus)
    floor = ais.log_z_floor(torch.cat([v, v_train]),
                            torch.cat([elbo, ais.dbm_lower_bound(v_train, Ws, bs, 0.0, mus=mus_train)]))
    bound = float(elbo.mean()) - est.log_z
    result = gentool.EvaluateResult(settings={"ais_method": est.method})
    out = result.metrics
    out.update({
        "test_log_likelihood_lower_bound": bound,
        # the AIS error bar of log Z carried over (a larger log Z means a lower bound)
        "bound_low": bound - (est.log_z_high - est.log_z),
        "bound_high": bound + (est.log_z - est.log_z_low) if math.isfinite(est.log_z_low) else None,
        "log_z": est.log_z,
        "log_z_std": est.log_z_std,
        "ais_runs": est.runs,
        "ais_steps": est.steps,
        "mean_field_iters": EVAL_MEAN_FIELD_ITERS,
    })
    check_log_z(result, est.log_z, floor, "test_log_likelihood_lower_bound", float(elbo.mean()), ("bound_low", "bound_high"))
    sizes = dbm.sizes
    odd, even = sum(sizes[1::2]), sum(sizes[0::2])
    if min(odd, even) <= EXACT_MAX_UNITS:
        log_z = ais.dbm_log_z_exact(Ws, bs)
        out["log_z_exact"] = log_z
        out["test_log_likelihood_lower_bound_exact_log_z"] = bound + est.log_z - log_z
        if odd <= EXACT_MAX_UNITS:
            out["test_log_likelihood_exact"] = float((ais.dbm_log_p_unnormalised(v, Ws, bs) - log_z).mean())
    out["reconstruction_error"] = float((torch.sigmoid(mus[0] @ Ws[0].T + bs[0]) - v).pow(2).sum(1).mean())
    # all hidden layers' mean-field means side by side: on small data the top layer alone can be
    # nearly constant while the layers below still carry the class
    acc = probe_accuracy(opts, train_data, test, (torch.cat(mus_train, 1), torch.cat(mus, 1)))
    if acc is not None:
        out["linear_probe_accuracy"] = acc
        result.settings["probe_features"] = "mean-field means of all hidden layers, standardised"
    out["n_test"] = len(test)
    return result
