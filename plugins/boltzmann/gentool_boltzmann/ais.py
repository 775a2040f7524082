"""Partition functions and log-likelihoods of Boltzmann machines: exact enumeration and AIS.

Everything here takes plain tensors (batch dimension first) and imports nothing else from the
plugin, so it can be tested and reused alone. Conventions, all energies in nats:

* Bernoulli-Bernoulli RBM, ``W [n_v, n_h]``, ``b [n_v]``, ``c [n_h]``:
  ``E(v, h) = -v.b - h.c - v'Wh`` and ``log p*(v) = v.b + sum_j softplus(c_j + (vW)_j)``.
* Gaussian-Bernoulli RBM (unit variance): ``E(v, h) = 1/2 |v - b|^2 - h.c - v'Wh`` and
  ``log p*(v) = -1/2 |v - b|^2 + sum_j softplus(c_j + (vW)_j)``; Z carries the (2 pi)^(n_v/2), so
  log-likelihoods are log densities.
* Deep Boltzmann machine, layers ``x_0 = v, x_1 .. x_L`` (all Bernoulli), ``Ws[l-1] = W_l
  [n_{l-1}, n_l]``, ``bs[l] = b_l``: ``E = -sum_l b_l.x_l - sum_l x_{l-1}' W_l x_l``.
* Deep belief network: a bottom-up list of RBMs ``[(W_1, b_1v, c_1), ..., (W_L, b_Lv, c_L)]``; the
  top RBM models (x_{L-1}, x_L), the layers below are directed: ``p(x_{l-1} | x_l) =
  sigmoid(b_lv + W_l x_l)``, recognised by ``q(x_l | x_{l-1}) = sigmoid(c_l + x_{l-1} W_l)``.
* General Boltzmann machine: ``E = -1/2 v'Lv - 1/2 h'Jh - v'Wh - b.v - c.h``.

AIS follows Neal (2001) and Salakhutdinov & Murray (2008): a path of distributions from a base
model A with a known Z to the model B, ``p_k ~ p*_A^(1 - beta_k) p*_B^beta_k``, one Gibbs
transition per intermediate distribution, importance weights accumulated in float64. The AIS
estimate of Z is unbiased; its logarithm is, on average, an underestimate of log Z.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

#: Exact enumeration refuses models with more states than this.
MAX_STATES = 2**24
_CHUNK_ELEMENTS = 2**22  # elements per [rows, states] block while enumerating
_LOG_2 = math.log(2.0)
_LOG_2PI = math.log(2.0 * math.pi)

__all__ = [
    "LogZEstimate",
    "MAX_STATES",
    "base_rate_visible_bias",
    "beta_schedule",
    "bm_log_p_unnormalised",
    "bm_log_z_exact",
    "dbm_ais",
    "dbm_log_p_unnormalised",
    "dbm_log_z_exact",
    "dbm_lower_bound",
    "dbm_mean_field",
    "dbn_lower_bound",
    "rbm_ais",
    "rbm_log_likelihood",
    "rbm_log_p_unnormalised",
    "rbm_log_z_exact",
]


# --------------------------------------------------------------------------------------------
# The estimate
# --------------------------------------------------------------------------------------------


@dataclass
class LogZEstimate:
    """An estimate of log Z with its error bar.

    For AIS with importance weights ``w_r`` (r = 1..runs) and base partition function Z_A:
    ``log_z = log mean(w) + log Z_A``; ``log_z_std = std(w) / (mean(w) sqrt(runs))`` (the delta
    method); ``log_z_low``/``log_z_high`` = ``log(mean(w) -/+ 3 std(w)/sqrt(runs)) + log Z_A``, with
    ``log_z_low`` NaN when the lower end is not positive. For ``method == "exact"`` all three equal
    ``log_z``, the std is 0 and runs = steps = 0.
    """

    log_z: float
    log_z_std: float
    log_z_low: float
    log_z_high: float
    runs: int
    steps: int
    method: str

    def as_dict(self) -> dict:
        """JSON-able dict (NaN and infinities become None), for ``gentool evaluate --json``."""
        out = asdict(self)
        for key, val in out.items():
            if isinstance(val, float) and not math.isfinite(val):
                out[key] = None
        return out

    @classmethod
    def exact(cls, log_z: float) -> LogZEstimate:
        """An exact value dressed as an estimate (zero error bar)."""
        return cls(float(log_z), 0.0, float(log_z), float(log_z), 0, 0, "exact")

    @classmethod
    def from_log_weights(cls, log_w: torch.Tensor, log_z_base: float, steps: int) -> LogZEstimate:
        """Summarise AIS log importance weights ``log_w [runs]`` (log Z_B - log Z_A per run)."""
        log_w = log_w.detach().to("cpu", torch.float64).flatten()
        runs = log_w.numel()
        if runs == 0:
            raise ValueError("AIS needs at least one run")
        if not bool(torch.isfinite(log_w).all()):
            raise FloatingPointError("AIS produced non-finite importance weights")
        shift = float(log_w.max())
        w = torch.exp(log_w - shift)  # the largest weight is 1: no overflow
        mean = float(w.mean())
        se = float(w.std(unbiased=True)) / math.sqrt(runs) if runs > 1 else 0.0
        offset = shift + float(log_z_base)
        low = math.log(mean - 3.0 * se) + offset if mean - 3.0 * se > 0 else float("nan")
        return cls(
            log_z=math.log(mean) + offset,
            log_z_std=se / mean,
            log_z_low=low,
            log_z_high=math.log(mean + 3.0 * se) + offset,
            runs=runs,
            steps=int(steps),
            method="ais",
        )


def log_z_floor(states: torch.Tensor, log_p_low: torch.Tensor) -> float:
    """A certain lower bound on log Z from binary states and lower bounds on their log p*.

    ``Z`` sums ``p*`` over every state, so for any set of *distinct* states,
    ``log Z >= logsumexp(log p*(state))``, and lower bounds on each ``log p*`` (a DBM's mean-field
    bound; an RBM's exact ``-F(v)``) keep that true. Duplicate rows of ``states`` count once, at
    their largest bound. With the data as the states this is a check AIS cannot fool: an AIS
    estimate below it has missed modes of the model that its chains never reached (every
    probability would otherwise have to exceed 1). Only for binary states: a density's integral
    is not bounded by its values at points.
    """
    states = states.reshape(states.shape[0], -1)
    if states.shape[0] != log_p_low.numel():
        raise ValueError("one log p* bound per state is needed")
    if states.shape[0] == 0:
        raise ValueError("no states")
    _, inverse = torch.unique(states, dim=0, return_inverse=True)
    low = log_p_low.detach().to(torch.float64).cpu().flatten()
    best = torch.full((int(inverse.max()) + 1,), -math.inf, dtype=torch.float64)
    best = best.scatter_reduce(0, inverse.cpu(), low, reduce="amax")
    return float(torch.logsumexp(best, 0))


# --------------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------------


def beta_schedule(steps: int = 14500) -> torch.Tensor:
    """Inverse temperatures ``beta_0 = 0 < beta_1 < ... < beta_steps = 1`` (float64, steps + 1 values).

    The shape of Salakhutdinov & Murray (2008): 0 -> 0.5 uniformly in 500/14500 of the steps,
    0.5 -> 0.9 in 4000/14500 and 0.9 -> 1 in 10000/14500, scaled to ``steps`` (the number of
    intermediate distributions after the base, i.e. of Gibbs transitions/weight factors).
    """
    steps = int(steps)
    if steps < 1:
        raise ValueError("steps must be at least 1")
    if steps < 3:
        betas = torch.linspace(0.0, 1.0, steps + 1, dtype=torch.float64)
    else:
        n1 = max(1, round(steps * 500 / 14500))
        n2 = max(1, round(steps * 4000 / 14500))
        n3 = steps - n1 - n2
        betas = torch.cat(
            [
                torch.linspace(0.0, 0.5, n1 + 1, dtype=torch.float64)[:-1],
                torch.linspace(0.5, 0.9, n2 + 1, dtype=torch.float64)[:-1],
                torch.linspace(0.9, 1.0, n3 + 1, dtype=torch.float64),
            ]
        )
    betas[0], betas[-1] = 0.0, 1.0
    return betas


def base_rate_visible_bias(data: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    """Visible biases of the zero-weight model that matches the data's marginals (float64).

    ``log(p / (1 - p))`` with ``p`` the per-unit mean of binary or [0, 1] data (batch first; any
    trailing shape is flattened), clipped to ``[eps, 1 - eps]``.
    """
    if data.ndim < 2 or data.shape[0] == 0:
        raise ValueError("data must be a non-empty batch [n, ...]")
    p = data.reshape(data.shape[0], -1).to(torch.float64).mean(0).clamp(eps, 1.0 - eps)
    return torch.log(p) - torch.log1p(-p)


def _as64(*ts: torch.Tensor) -> list[torch.Tensor]:
    return [torch.as_tensor(t).to(torch.float64) for t in ts]


def _check_states(n_bits: int, what: str) -> None:
    if (1 << n_bits) > MAX_STATES:
        raise ValueError(
            f"exact enumeration of {what} needs 2^{n_bits} states; the limit is 2^24 "
            f"(use AIS for larger models)"
        )


def _states(start: int, stop: int, n_bits: int, like: torch.Tensor) -> torch.Tensor:
    """Binary vectors of the integers start..stop-1, ``[stop - start, n_bits]`` (bit i = unit i)."""
    idx = torch.arange(start, stop, device=like.device, dtype=torch.int64)
    shifts = torch.arange(n_bits, device=like.device, dtype=torch.int64)
    return ((idx[:, None] >> shifts) & 1).to(like.dtype)


def _logsumexp_states(n_bits: int, per_state: int, fn: Callable[[torch.Tensor], torch.Tensor],
                      like: torch.Tensor) -> torch.Tensor:
    """``logsumexp`` over all 2^n_bits binary states s of ``fn(s)`` (shape ``[rows, m]`` or ``[m]``).

    States are visited in chunks of about ``2^22 / per_state`` (``per_state``: the numbers ``fn``
    holds per state) so memory stays bounded; returns ``[rows]`` or a scalar.
    """
    total = 1 << n_bits
    chunk = max(1, min(total, _CHUNK_ELEMENTS // max(1, per_state)))
    parts = []
    for start in range(0, total, chunk):
        vals = fn(_states(start, min(total, start + chunk), n_bits, like))
        parts.append(torch.logsumexp(vals, dim=-1))
    return torch.logsumexp(torch.stack(parts, dim=-1), dim=-1)


def _softplus_diff(base: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    """``softplus(base + delta) - softplus(base)`` with a rounding error relative to the result.

    ``relu(d) + log1p(y)``, ``y = sigmoid(-sign(d) base) expm1(-|d|)``: nothing overflows and
    y lies in (-1, 0], so float32 differences of 1e-5-sized AIS steps keep their digits (two
    float32 softplus values subtracted would lose them). Rounding is amplified by 1 / (1 + y)
    <= e^|d|, and only when base and delta have opposite signs (else 1 + y >= 1/2).
    """
    return torch.relu(delta) + torch.log1p(torch.sigmoid(-torch.sign(delta) * base) * torch.expm1(-delta.abs()))


def _layer_softplus_diff(u: torch.Tensor, bias_a: torch.Tensor | None, beta_prev: float, dbeta: float,
                         acc_dtype: torch.dtype) -> torch.Tensor:
    """``sum_j softplus(a_j + beta_k u_j) - softplus(a_j + beta_{k-1} u_j)`` per row, in ``acc_dtype``.

    Computed in u's dtype by :func:`_softplus_diff`. Only with a base bias can its rounding be
    amplified (see there), so then a step with ``dbeta * |u| > 2`` (a coarse schedule) is
    computed exactly in ``acc_dtype`` as a plain difference instead.
    """
    if bias_a is not None and u.dtype != acc_dtype and abs(dbeta) * float(u.abs().amax()) > 2.0:
        u = u.to(acc_dtype)
        a = 0.0 if bias_a is None else bias_a.to(acc_dtype)
        return (F.softplus(a + (beta_prev + dbeta) * u) - F.softplus(a + beta_prev * u)).sum(-1)
    base = beta_prev * u if bias_a is None else bias_a + beta_prev * u
    return _softplus_diff(base, dbeta * u).sum(-1, dtype=acc_dtype)


@contextmanager
def _threads_for(flops_per_step: float, threads: int | None, device: torch.device):
    """Run AIS chains on ``threads`` CPU threads, tiny ones on one (torch's setting restored after).

    A Gibbs step of a small model is a few microseconds of work; spreading it over threads only
    adds synchronisation, and when another process keeps the cores busy a threaded tiny matmul
    was measured 1000x slower than a single-threaded one here (8 ms against 7 us).
    """
    prev = torch.get_num_threads()
    want = prev if threads is None else max(1, int(threads))
    if device.type == "cpu" and flops_per_step < 2e6:
        want = 1
    if device.type == "cpu" and want != prev:
        torch.set_num_threads(want)
        try:
            yield
        finally:
            torch.set_num_threads(prev)
    else:
        yield


def _bernoulli(p: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    return (torch.rand(p.shape, generator=generator, device=p.device, dtype=p.dtype) < p).to(p.dtype)


def _check_visible(visible: str) -> str:
    if visible not in ("bernoulli", "gaussian"):
        raise ValueError(f"visible must be 'bernoulli' or 'gaussian', not {visible!r}")
    return visible


# --------------------------------------------------------------------------------------------
# RBM
# --------------------------------------------------------------------------------------------


def rbm_log_p_unnormalised(v: torch.Tensor, W: torch.Tensor, b: torch.Tensor, c: torch.Tensor, *,
                           visible: str = "bernoulli") -> torch.Tensor:
    """``log p*(v) = -F(v)`` per example (float64, ``[batch]``): hidden units summed out."""
    _check_visible(visible)
    v, W, b, c = _as64(v, W, b, c)
    v = v.reshape(v.shape[0], -1)
    hidden = F.softplus(torch.addmm(c, v, W)).sum(1)
    if visible == "bernoulli":
        return v @ b + hidden
    return -0.5 * (v - b).pow(2).sum(1) + hidden


def rbm_log_likelihood(v: torch.Tensor, W: torch.Tensor, b: torch.Tensor, c: torch.Tensor, log_z: float, *,
                       visible: str = "bernoulli") -> torch.Tensor:
    """Per-example ``log p(v) = log p*(v) - log Z`` in nats (float64, ``[batch]``).

    For ``visible="gaussian"`` this is a log density of v under the unit-variance model.
    """
    return rbm_log_p_unnormalised(v, W, b, c, visible=visible) - float(log_z)


def rbm_log_z_exact(W: torch.Tensor, b: torch.Tensor, c: torch.Tensor, *, visible: str = "bernoulli",
                    side: str | None = None) -> float:
    """Exact log Z of an RBM by enumeration (float64).

    Bernoulli: sums over the 2^min(n_v, n_h) states of the smaller layer (``side="visible"`` or
    ``"hidden"`` forces one), the other layer summed analytically. Gaussian visible: sums over the
    hidden states, v integrated analytically:
    ``log Z = n_v/2 log 2 pi + log sum_h exp(h.c + 1/2 |b + Wh|^2 - 1/2 |b|^2)``.
    Raises ValueError above 2^24 states.
    """
    _check_visible(visible)
    W, b, c = _as64(W, b, c)
    n_v, n_h = W.shape
    if side is None:
        side = "hidden" if (visible == "gaussian" or n_h <= n_v) else "visible"
    if side not in ("visible", "hidden"):
        raise ValueError(f"side must be 'visible', 'hidden' or None, not {side!r}")
    if visible == "gaussian":
        if side != "hidden":
            raise ValueError("a Gaussian-visible RBM is enumerated over its hidden units only")
        _check_states(n_h, "the hidden layer")
        half_bb = 0.5 * float(b @ b)
        lse = _logsumexp_states(
            n_h, n_v + n_h + 1, lambda h: h @ c + 0.5 * torch.addmm(b, h, W.T).pow(2).sum(1) - half_bb, W)
        return float(lse) + 0.5 * n_v * _LOG_2PI
    if side == "hidden":
        _check_states(n_h, "the hidden layer")
        lse = _logsumexp_states(n_h, n_v + n_h + 1, lambda h: h @ c + F.softplus(torch.addmm(b, h, W.T)).sum(1), W)
    else:
        _check_states(n_v, "the visible layer")
        lse = _logsumexp_states(n_v, n_v + n_h + 1, lambda v: v @ b + F.softplus(torch.addmm(c, v, W)).sum(1), W)
    return float(lse)


def rbm_ais(W: torch.Tensor, b: torch.Tensor, c: torch.Tensor, *, visible: str = "bernoulli", runs: int = 100,
            steps: int = 14500, base_bias: torch.Tensor | None = None, generator: torch.Generator | None = None,
            dtype: torch.dtype = torch.float64, sample_dtype: torch.dtype = torch.float32,
            threads: int | None = None) -> LogZEstimate:
    """AIS estimate of an RBM's log Z (Salakhutdinov & Murray 2008).

    Base model A: zero weights, hidden bias 0, visible bias ``base_bias`` (Bernoulli; default
    zeros, :func:`base_rate_visible_bias` of the training data is much better) or a unit-variance
    Gaussian with mean ``base_bias`` (Gaussian; default ``b``). Its hidden units are summed out:
    ``log Z_A = sum softplus(base_bias) + n_h log 2`` (Bernoulli) or ``n_v/2 log 2 pi + n_h log 2``.

    Intermediate distributions over v, for ``beta`` in :func:`beta_schedule` (``steps``):
    ``log p*_k(v) = (1 - beta_k) vis_A(v) + beta_k vis_B(v) + sum_j softplus(beta_k (c + vW)_j)``
    with ``vis`` the visible part of each log p* (``v.b`` or ``-1/2 |v - b|^2``). ``runs`` chains
    start from exact samples of p_A; at each k the weight gains ``log p*_k(v) - log p*_{k-1}(v)``
    and v moves by one Gibbs sweep that leaves p_k invariant (h ~ p_k(h | v), then v ~ p_k(v | h)).

    The matrix products and sampling run in ``sample_dtype`` (float32 by default: about 2x faster
    on a CPU), the weights accumulate in ``dtype`` (float64); the per-step log ratio is computed
    in a form whose rounding error is relative to the (tiny) ratio itself. Runs on W's device;
    ``generator`` must live there too. ``threads`` sets the CPU threads for the chains (default:
    torch's setting; tiny models always use one). On a machine whose cores other processes keep
    busy, ``threads=1`` can be several times faster than two contending threads.

    Cost: two ``[runs, n_v] x [n_v, n_h]`` matmuls per step; 100 runs x 14,500 steps of a
    784x500 RBM took 24 s on both threads of an otherwise idle 2-core AMD EPYC, 38-40 s on one
    (float32; float64 sampling doubles it), and minutes on two threads while another process
    kept a core busy.
    """
    _check_visible(visible)
    if runs < 1:
        raise ValueError("runs must be at least 1")
    device = W.device
    n_v, n_h = W.shape
    bB = b.to(device, dtype)
    if base_bias is None:
        bA = bB.clone() if visible == "gaussian" else torch.zeros(n_v, device=device, dtype=dtype)
    else:
        bA = base_bias.to(device, dtype).reshape(n_v)
    Ws = W.to(device, sample_dtype)
    Wt = Ws.T
    cs = c.to(device, sample_dtype)
    bBs, bAs = bB.to(sample_dtype), bA.to(sample_dtype)
    betas = beta_schedule(steps).tolist()

    if visible == "bernoulli":
        log_z_a = float(F.softplus(bA).sum()) + n_h * _LOG_2
        v = _bernoulli(torch.sigmoid(bAs).expand(runs, n_v), generator)
        lin_w = bB - bA  # vis_B(v) - vis_A(v) = v.(bB - bA)
        lin_c = 0.0
    else:
        log_z_a = 0.5 * n_v * _LOG_2PI + n_h * _LOG_2
        v = bAs + torch.randn(runs, n_v, generator=generator, device=device, dtype=sample_dtype)
        # vis_B(v) - vis_A(v) = -1/2|v - bB|^2 + 1/2|v - bA|^2 = v.(bB - bA) - 1/2(|bB|^2 - |bA|^2)
        lin_w = bB - bA
        lin_c = 0.5 * float(bB @ bB - bA @ bA)

    log_w = torch.zeros(runs, device=device, dtype=dtype)
    with _threads_for(4.0 * runs * n_v * n_h, threads, device):
        _rbm_ais_loop(v, log_w, betas, Ws, Wt, cs, bAs, bBs, lin_w, lin_c, visible, generator, dtype)
    return LogZEstimate.from_log_weights(log_w, log_z_a, steps)


def _rbm_ais_loop(v, log_w, betas, Ws, Wt, cs, bAs, bBs, lin_w, lin_c, visible, generator, dtype) -> None:
    """The AIS chains of :func:`rbm_ais`; adds the log weights into ``log_w`` in place."""
    for k in range(1, len(betas)):
        beta, beta_prev = betas[k], betas[k - 1]
        dbeta = beta - beta_prev
        x = torch.addmm(cs, v, Ws)  # c + vW, [runs, n_h]
        log_w += dbeta * (v.to(dtype) @ lin_w - lin_c)
        log_w += _layer_softplus_diff(x, None, beta_prev, dbeta, dtype)
        if k == len(betas) - 1:
            break  # the last transition would not change the weights
        h = _bernoulli(torch.sigmoid(beta * x), generator)
        mean = torch.addmm((1.0 - beta) * bAs + beta * bBs, h, Wt, alpha=beta)
        if visible == "bernoulli":
            v = _bernoulli(torch.sigmoid(mean), generator)
        else:
            v = mean + torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)


# --------------------------------------------------------------------------------------------
# DBM
# --------------------------------------------------------------------------------------------


def _check_dbm(Ws: Sequence[torch.Tensor], bs: Sequence[torch.Tensor]) -> None:
    if len(Ws) < 1 or len(bs) != len(Ws) + 1:
        raise ValueError("a DBM needs weights [W_1..W_L] (L >= 1) and biases [b_0..b_L]")
    for l, W in enumerate(Ws, start=1):
        if W.shape != (bs[l - 1].numel(), bs[l].numel()):
            raise ValueError(f"W_{l} has shape {tuple(W.shape)}, expected ({bs[l - 1].numel()}, {bs[l].numel()})")


def _layer_input(xs: dict[int, torch.Tensor], l: int, Ws: Sequence[torch.Tensor], bias: torch.Tensor) -> torch.Tensor:
    """``bias + x_{l-1} W_l + x_{l+1} W_{l+1}^T`` from whichever neighbours ``xs`` holds."""
    out = bias
    if l - 1 in xs:
        out = torch.addmm(out, xs[l - 1], Ws[l - 1])
    if l + 1 in xs and l < len(Ws):
        out = torch.addmm(out, xs[l + 1], Ws[l].T)
    return out


def _dbm_half_log_p(xs: dict[int, torch.Tensor], Ws: Sequence[torch.Tensor], bs: Sequence[torch.Tensor],
                    parity: int) -> torch.Tensor:
    """log p* of the layers of one parity (given in ``xs``), the other parity summed out exactly."""
    L = len(Ws)
    out = 0.0
    for l in range(L + 1):
        if l % 2 == parity:
            out = out + xs[l] @ bs[l]
        else:
            out = out + F.softplus(_layer_input(xs, l, Ws, bs[l])).sum(-1)
    return out


def _split(x: torch.Tensor, sizes: Sequence[int]) -> list[torch.Tensor]:
    return list(torch.split(x, list(sizes), dim=-1))


def dbm_log_z_exact(Ws: Sequence[torch.Tensor], bs: Sequence[torch.Tensor], *, parity: int | None = None) -> float:
    """Exact log Z of a DBM: enumerate the odd layers (x_1, x_3, ...), sum the even ones analytically.

    ``parity=0`` enumerates the even layers instead; by default the parity with fewer units is
    enumerated. Raises ValueError above 2^24 states.
    """
    _check_dbm(Ws, bs)
    Ws, bs = _as64(*Ws), _as64(*bs)
    sizes = [t.numel() for t in bs]
    n_par = [sum(sizes[0::2]), sum(sizes[1::2])]
    if parity is None:
        parity = 1 if n_par[1] <= n_par[0] else 0
    if parity not in (0, 1):
        raise ValueError("parity must be 0 (even layers), 1 (odd layers) or None")
    layers = list(range(parity, len(sizes), 2))
    _check_states(n_par[parity], "the " + ("odd" if parity else "even") + " layers")

    def fn(states: torch.Tensor) -> torch.Tensor:
        xs = dict(zip(layers, _split(states, [sizes[l] for l in layers])))
        return _dbm_half_log_p(xs, Ws, bs, parity)

    return float(_logsumexp_states(n_par[parity], 2 * sum(sizes) + 1, fn, Ws[0]))


def dbm_log_p_unnormalised(v: torch.Tensor, Ws: Sequence[torch.Tensor], bs: Sequence[torch.Tensor]) -> torch.Tensor:
    """Exact ``log p*(v) = log sum_h exp(-E(v, h))`` per example (float64, ``[batch]``).

    Enumerates the odd hidden layers (x_1, x_3, ...) and sums the even hidden layers (x_2, ...)
    analytically; raises ValueError above 2^24 states. With :func:`dbm_log_z_exact` this gives
    exact log-likelihoods of tiny DBMs.
    """
    _check_dbm(Ws, bs)
    Ws, bs = _as64(*Ws), _as64(*bs)
    v = torch.as_tensor(v).to(torch.float64)
    v = v.reshape(v.shape[0], -1)
    sizes = [t.numel() for t in bs]
    odd = list(range(1, len(sizes), 2))
    n_odd = sum(sizes[l] for l in odd)
    _check_states(n_odd, "the odd hidden layers")
    vW = v @ Ws[0]  # [batch, n_1]: the only term that couples v with the enumerated states

    def fn(states: torch.Tensor) -> torch.Tensor:
        xs = dict(zip(odd, _split(states, [sizes[l] for l in odd])))
        own = 0.0  # terms of the odd states alone: their biases, the even hidden layers summed out
        for l in range(1, len(sizes)):
            if l % 2 == 1:
                own = own + xs[l] @ bs[l]
            else:
                own = own + F.softplus(_layer_input(xs, l, Ws, bs[l])).sum(-1)
        return vW @ xs[1].T + own

    return v @ bs[0] + _logsumexp_states(n_odd, 2 * v.shape[0] + 2 * sum(sizes), fn, Ws[0])


def dbm_ais(Ws: Sequence[torch.Tensor], bs: Sequence[torch.Tensor], *, runs: int = 100, steps: int = 14500,
            base_visible_bias: torch.Tensor | None = None, generator: torch.Generator | None = None,
            dtype: torch.dtype = torch.float64, sample_dtype: torch.dtype = torch.float32,
            threads: int | None = None) -> LogZEstimate:
    """AIS estimate of a DBM's log Z (Salakhutdinov & Hinton 2009, with the even layers summed out).

    Base model A: all units independent, bias 0 except the visible layer's ``base_visible_bias``
    (default 0; :func:`base_rate_visible_bias` of the data is better), so
    ``log Z_A = sum_l sum softplus(bA_l)`` (= ``sum_l n_l log 2`` by default). Path on the joint
    state: ``p*_k = p*_A^(1 - beta_k) p*_B^beta_k``, i.e. biases ``(1 - beta) bA_l + beta b_l`` and
    weights ``beta W_l``. The chains' state is the odd layers (x_1, x_3, ...): the even layers
    (x_0, x_2, ...) are conditionally independent given them and are summed out exactly, so
    ``log p*_k(odd)`` is exact. Transition at beta_k: sample the even layers given the odd, then
    the odd given the even. Float32 sampling, float64 weights and ``threads`` as in :func:`rbm_ais`.
    """
    _check_dbm(Ws, bs)
    if runs < 1:
        raise ValueError("runs must be at least 1")
    path = _DBMPath(Ws, bs, base_visible_bias, dtype, sample_dtype)
    xs = {l: _bernoulli(torch.sigmoid(path.bAs[l]).expand(runs, -1), generator) for l in path.odd}
    log_w = path.run(xs, beta_schedule(steps).tolist(), generator, threads)
    return LogZEstimate.from_log_weights(log_w, path.log_z_a, steps)


def dbm_reverse_ais(Ws: Sequence[torch.Tensor], bs: Sequence[torch.Tensor], states: Sequence[torch.Tensor], *,
                    steps: int = 14500, base_visible_bias: torch.Tensor | None = None,
                    generator: torch.Generator | None = None, dtype: torch.dtype = torch.float64,
                    sample_dtype: torch.dtype = torch.float32, threads: int | None = None) -> LogZEstimate:
    """Reverse AIS: :func:`dbm_ais`'s path walked from the model (beta = 1) down to the base.

    ``states`` are samples of the full state ``[x_0, x_1, .., x_L]`` (one row per run) from the
    model; only the odd layers are used. The reverse weights have mean Z_A / Z_B, so the estimate
    ``log Z_A - log mean(w)`` errs high on average where forward AIS errs low: for exact samples
    it is a stochastic upper bound, and the two together bracket log Z (bidirectional Monte
    Carlo, Grosse et al. 2015). Samples from Gibbs chains are only approximately the model's, so
    a gap between the two directions says that at least one of them has not mixed.
    """
    _check_dbm(Ws, bs)
    if len(states) != len(bs) or len({int(x.shape[0]) for x in states}) != 1:
        raise ValueError("states must be one [runs, n_l] tensor per layer x_0 .. x_L, all with the same runs")
    path = _DBMPath(Ws, bs, base_visible_bias, dtype, sample_dtype)
    xs = {l: states[l].to(path.device, sample_dtype) for l in path.odd}
    log_w = path.run(xs, beta_schedule(steps).flip(0).tolist(), generator, threads)
    inverse = LogZEstimate.from_log_weights(log_w, -path.log_z_a, steps)  # estimates -log Z_B
    return LogZEstimate(-inverse.log_z, inverse.log_z_std, -inverse.log_z_high, -inverse.log_z_low,
                        inverse.runs, inverse.steps, "reverse-ais")


class _DBMPath:
    """The annealing path of :func:`dbm_ais` (base model A to the DBM B) and its chains."""

    def __init__(self, Ws, bs, base_visible_bias, dtype, sample_dtype) -> None:
        self.device = Ws[0].device
        L = len(Ws)
        self.Wss = [W.to(self.device, sample_dtype) for W in Ws]
        bB = [b.to(self.device, dtype).reshape(-1) for b in bs]
        bA = [torch.zeros_like(b) for b in bB]
        if base_visible_bias is not None:
            bA[0] = base_visible_bias.to(self.device, dtype).reshape(bB[0].shape)
        self.log_z_a = float(sum(F.softplus(a).sum() for a in bA))
        self.bAs = [a.to(sample_dtype) for a in bA]
        # softplus argument of layer l at beta: bA_l + beta * u_l, u_l = b_l - bA_l + neighbours' input
        self.du = [(b - a).to(sample_dtype) for b, a in zip(bB, bA)]
        self.odd, self.even = list(range(1, L + 1, 2)), list(range(0, L + 1, 2))
        self.lin = {l: (bB[l] - bA[l]) for l in self.odd}  # odd layers enter log p*_k linearly
        self.dtype = dtype
        self.flops = 4.0 * sum(W.numel() for W in Ws)

    def run(self, xs: dict[int, torch.Tensor], betas: list[float], generator, threads) -> torch.Tensor:
        """Anneal the odd-layer states ``xs`` along ``betas``; the log weights, one per run."""
        runs = next(iter(xs.values())).shape[0]
        log_w = torch.zeros(runs, device=self.device, dtype=self.dtype)
        with _threads_for(self.flops * runs, threads, self.device):
            _dbm_ais_loop(xs, log_w, betas, self.Wss, self.bAs, self.du, self.lin, self.odd, self.even,
                          generator, self.dtype)
        return log_w


def _dbm_ais_loop(xs, log_w, betas, Wss, bAs, du, lin, odd, even, generator, dtype) -> None:
    """The AIS chains of :func:`dbm_ais`; adds the log weights into ``log_w`` in place."""
    bias_a = {l: bAs[l] if bool(bAs[l].any()) else None for l in even}
    for k in range(1, len(betas)):
        beta, beta_prev = betas[k], betas[k - 1]
        dbeta = beta - beta_prev
        us = {l: _layer_input(xs, l, Wss, du[l]) for l in even}
        for l in odd:
            log_w += dbeta * (xs[l].to(dtype) @ lin[l])
        for l in even:
            log_w += _layer_softplus_diff(us[l], bias_a[l], beta_prev, dbeta, dtype)
        if k == len(betas) - 1:
            break
        for l in even:
            xs[l] = _bernoulli(torch.sigmoid(bAs[l] + beta * us[l]), generator)
        for l in odd:
            u = _layer_input(xs, l, Wss, du[l])
            xs[l] = _bernoulli(torch.sigmoid(bAs[l] + beta * u), generator)
        for l in even:
            del xs[l]


def dbm_mean_field(v: torch.Tensor, Ws: Sequence[torch.Tensor], bs: Sequence[torch.Tensor], *, iters: int = 30,
                   init: list[torch.Tensor] | None = None, damping: float = 0.0) -> list[torch.Tensor]:
    """Mean-field posterior means ``[mu_1, ..., mu_L]`` (float64) of a DBM with v clamped.

    Default start: a bottom-up pass with doubled input for the middle layers (they miss their
    top-down input; Salakhutdinov & Hinton 2009), ``mu_l = sigmoid(b_l + 2 mu_{l-1} W_l)`` for
    l < L and ``sigmoid(b_L + mu_{L-1} W_L)``. Then ``iters`` sweeps of fixed-point updates
    ``mu_l <- damping mu_l + (1 - damping) sigmoid(b_l + mu_{l-1} W_l + mu_{l+1} W_{l+1}^T)``, the odd
    layers first, then the even ones. Units of one parity are conditionally independent, so each
    half-sweep maximises the bound exactly in those layers: the bound never decreases, even with
    ``damping=0``.
    """
    _check_dbm(Ws, bs)
    if not 0.0 <= damping < 1.0:
        raise ValueError("damping must be in [0, 1)")
    Ws, bs = _as64(*Ws), _as64(*bs)
    v = torch.as_tensor(v).to(torch.float64)
    v = v.reshape(v.shape[0], -1)
    L = len(Ws)
    if init is None:
        mus = [v]
        for l in range(1, L + 1):
            scale = 2.0 if l < L else 1.0
            mus.append(torch.sigmoid(torch.addmm(bs[l], mus[-1], Ws[l - 1], alpha=scale)))
    else:
        if len(init) != L:
            raise ValueError(f"init needs {L} tensors, one per hidden layer")
        mus = [v] + [torch.as_tensor(m).to(torch.float64).clone() for m in init]
    order = list(range(1, L + 1, 2)) + list(range(2, L + 1, 2))
    for _ in range(iters):
        for l in order:
            xs = {l - 1: mus[l - 1]}
            if l < L:
                xs[l + 1] = mus[l + 1]
            new = torch.sigmoid(_layer_input(xs, l, Ws, bs[l]))
            mus[l] = new if damping == 0.0 else damping * mus[l] + (1.0 - damping) * new
    return mus[1:]


def _bernoulli_entropy(p: torch.Tensor) -> torch.Tensor:
    """Entropy in nats of independent Bernoulli units, summed over the last dimension."""
    return -(torch.special.xlogy(p, p) + torch.special.xlogy(1.0 - p, 1.0 - p)).sum(-1)


def dbm_lower_bound(v: torch.Tensor, Ws: Sequence[torch.Tensor], bs: Sequence[torch.Tensor], log_z: float, *,
                    iters: int = 30, mus: Sequence[torch.Tensor] | None = None) -> torch.Tensor:
    """Per-example variational lower bound on log p(v) of a DBM (float64, ``[batch]``).

    ``log p(v) >= E_q[-E(v, h)] + H(q) - log Z`` with the factorised q of :func:`dbm_mean_field`:
    ``b_0.v + sum_l b_l.mu_l + sum_l mu_{l-1}' W_l mu_l + sum_l H(mu_l) - log Z`` (mu_0 = v). It
    is a bound for every q; with an AIS ``log_z`` it inherits AIS's error. ``mus``: the means of
    :func:`dbm_mean_field` for ``v`` when the caller has them already (``iters`` is then unused).
    """
    if mus is None:
        mus = dbm_mean_field(v, Ws, bs, iters=iters)
    Ws, bs = _as64(*Ws), _as64(*bs)
    v = torch.as_tensor(v).to(torch.float64)
    xs = [v.reshape(v.shape[0], -1)] + [torch.as_tensor(m).to(torch.float64) for m in mus]
    out = xs[0] @ bs[0]
    for l in range(1, len(xs)):
        out = out + xs[l] @ bs[l] + ((xs[l - 1] @ Ws[l - 1]) * xs[l]).sum(1) + _bernoulli_entropy(xs[l])
    return out - float(log_z)


# --------------------------------------------------------------------------------------------
# DBN
# --------------------------------------------------------------------------------------------


def dbn_lower_bound(v: torch.Tensor, rbms: Sequence[tuple[torch.Tensor, torch.Tensor, torch.Tensor]],
                    log_z_top: float, *, samples: int = 10,
                    generator: torch.Generator | None = None) -> torch.Tensor:
    """Per-example variational lower bound on log p(v) of a DBN (float64, ``[batch]``).

    With recognition ``q(h_1..h_{L-1} | v) = prod_l q(x_l | x_{l-1})`` (x_0 = v):

        log p(v) >= E_q[ sum_{l=1}^{L-1} log p(x_{l-1} | x_l) + log p*_top(x_{L-1}) ] - log Z_top
                    + sum_{l=1}^{L-1} E_q[ H(q(x_l | x_{l-1})) ]

    i.e. ``E_q[log p(v, h) - log q(h | v)]`` (Jensen), where ``log p*_top(x) = x.b_Lv + sum
    softplus(c_L + x W_L)`` is the top RBM's unnormalised marginal. For L = 2 this is the bound
    Salakhutdinov & Murray (2008) estimate for a 2-layer DBN, with q(h_1 | v) the first RBM's
    posterior; deeper stacks chain the directed layers and recognition steps the same way. The
    expectations are estimated with ``samples`` draws of the recognition chain per example (the
    entropies are evaluated exactly at the sampled parents), so the returned value is an unbiased
    Monte Carlo estimate of the bound, not itself a bound; an AIS ``log_z_top`` adds its error. With one RBM it is that RBM's exact log p(v) = log p*(v) - log Z.
    """
    if len(rbms) < 1:
        raise ValueError("a DBN needs at least one RBM")
    if samples < 1:
        raise ValueError("samples must be at least 1")
    rbms = [tuple(_as64(*r)) for r in rbms]
    v = torch.as_tensor(v).to(torch.float64)
    v = v.reshape(v.shape[0], -1)
    n = v.shape[0]
    x = v.repeat(samples, 1) if len(rbms) > 1 else v  # [samples * batch, n_0], sample-major
    total = torch.zeros(x.shape[0], dtype=torch.float64, device=x.device)
    for W, bv, c in rbms[:-1]:
        q = torch.sigmoid(torch.addmm(c, x, W))
        total += _bernoulli_entropy(q)
        h = (torch.rand(q.shape, generator=generator, device=q.device, dtype=q.dtype) < q).to(q.dtype)
        logits = torch.addmm(bv, h, W.T)  # log p(x | h) = sum x logits - softplus(logits)
        total += (x * logits - F.softplus(logits)).sum(1)
        x = h
    W, bv, c = rbms[-1]
    total += x @ bv + F.softplus(torch.addmm(c, x, W)).sum(1) - float(log_z_top)
    return total.reshape(-1, n).mean(0)


# --------------------------------------------------------------------------------------------
# General Boltzmann machine
# --------------------------------------------------------------------------------------------


def _check_bm(L: torch.Tensor, J: torch.Tensor, b: torch.Tensor, c: torch.Tensor, W: torch.Tensor) -> None:
    n_v, n_h = b.numel(), c.numel()
    if L.shape != (n_v, n_v) or J.shape != (n_h, n_h) or W.shape != (n_v, n_h):
        raise ValueError("BM shapes must be L [n_v, n_v], J [n_h, n_h], W [n_v, n_h]")
    for name, M in (("L", L), ("J", J)):
        if M.numel() and (not torch.allclose(M, M.T, rtol=0.0, atol=1e-10)
                          or float(M.diagonal().abs().max()) > 1e-10):
            raise ValueError(f"{name} must be symmetric with a zero diagonal")


def bm_log_z_exact(L: torch.Tensor, J: torch.Tensor, b: torch.Tensor, c: torch.Tensor, W: torch.Tensor) -> float:
    """Exact log Z of a general Boltzmann machine by enumerating all 2^(n_v + n_h) states.

    ``E(v, h) = -1/2 v'Lv - 1/2 h'Jh - v'Wh - b.v - c.h`` with L, J symmetric and zero on the
    diagonal. Raises ValueError above 2^24 states.
    """
    L, J, b, c, W = _as64(L, J, b, c, W)
    _check_bm(L, J, b, c, W)
    n_v, n_h = b.numel(), c.numel()
    _check_states(n_v + n_h, "all units")
    M = torch.cat([torch.cat([L, W], 1), torch.cat([W.T, J], 1)], 0)  # couplings of s = [v, h]
    a = torch.cat([b, c])
    n = n_v + n_h
    return float(_logsumexp_states(n, 2 * n + 2, lambda s: 0.5 * ((s @ M) * s).sum(1) + s @ a, W))


def bm_log_p_unnormalised(v: torch.Tensor, L: torch.Tensor, J: torch.Tensor, b: torch.Tensor, c: torch.Tensor,
                          W: torch.Tensor) -> torch.Tensor:
    """``log sum_h exp(-E(v, h))`` per example (float64, ``[batch]``), enumerating the 2^n_h hidden states."""
    L, J, b, c, W = _as64(L, J, b, c, W)
    _check_bm(L, J, b, c, W)
    v = torch.as_tensor(v).to(torch.float64)
    v = v.reshape(v.shape[0], -1)
    n_h = c.numel()
    _check_states(n_h, "the hidden units")
    vW = v @ W
    fv = 0.5 * ((v @ L) * v).sum(1) + v @ b
    def fn(h: torch.Tensor) -> torch.Tensor:
        return vW @ h.T + (0.5 * ((h @ J) * h).sum(1) + h @ c)

    return fv + _logsumexp_states(n_h, 2 * v.shape[0] + 2 * n_h + 2, fn, W)
