"""AIS and exact partition functions of Boltzmann machines, checked against brute force.

Every model here is small enough to enumerate, so each estimate meets the exact answer. The
784x500 timing of the issue runs only with ``--runslow`` (or GENTOOL_RUNSLOW=1).
"""

from __future__ import annotations

import itertools
import json
import math
import time

import pytest
import torch
import torch.nn.functional as F

from gentool_boltzmann import ais

D = torch.float64


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Every tensor here is small: one thread is fastest, and on a 2-core machine that other jobs
    keep busy two threads contending for small ops were measured 10-50x slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def rand(*shape, seed: int, std: float = 1.0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=D) * std


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def all_states(n: int) -> torch.Tensor:
    return torch.tensor(list(itertools.product([0.0, 1.0], repeat=n)), dtype=D).reshape(-1, n)


# ---------------------------------------------------------------------------------------------
# Brute-force references, written from the energy functions alone
# ---------------------------------------------------------------------------------------------


def brute_rbm_log_z(W, b, c) -> float:
    n_v, n_h = W.shape
    vs, hs = all_states(n_v), all_states(n_h)
    neg_e = (vs @ b)[:, None] + (hs @ c)[None, :] + vs @ W @ hs.T  # -E(v, h)
    return float(torch.logsumexp(neg_e.flatten(), 0))


def dbm_neg_energy(xs, Ws, bs) -> torch.Tensor:
    out = sum(x @ b for x, b in zip(xs, bs))
    return out + sum(((xs[l - 1] @ Ws[l - 1]) * xs[l]).sum(-1) for l in range(1, len(xs)))


def brute_dbm_states(sizes):
    """All joint states of the layers as a list of [m, n_l] tensors."""
    s = all_states(sum(sizes))
    return list(torch.split(s, sizes, dim=1))


def brute_dbm_log_z(Ws, bs) -> float:
    xs = brute_dbm_states([b.numel() for b in bs])
    return float(torch.logsumexp(dbm_neg_energy(xs, Ws, bs), 0))


def brute_dbm_log_p_star(v, Ws, bs) -> torch.Tensor:
    hidden = brute_dbm_states([b.numel() for b in bs[1:]])
    out = []
    for row in v:
        xs = [row.expand(hidden[0].shape[0], -1)] + hidden
        out.append(torch.logsumexp(dbm_neg_energy(xs, Ws, bs), 0))
    return torch.stack(out)


def brute_bm_log_z(L, J, b, c, W) -> float:
    n_v, n_h = b.numel(), c.numel()
    vals = []
    for bits in itertools.product([0.0, 1.0], repeat=n_v + n_h):
        v = torch.tensor(bits[:n_v], dtype=D)
        h = torch.tensor(bits[n_v:], dtype=D)
        vals.append(0.5 * v @ L @ v + 0.5 * h @ J @ h + v @ W @ h + b @ v + c @ h)
    return float(torch.logsumexp(torch.stack(vals), 0))


def bernoulli_log_prob(x, logits) -> torch.Tensor:
    return (x * logits - F.softplus(logits)).sum(-1)


def top_log_p_star(x, W, bv, c) -> torch.Tensor:
    return x @ bv + F.softplus(c + x @ W).sum(-1)


def brute_dbn_log_p(v, rbms) -> torch.Tensor:
    """Exact log p(v) of a DBN: enumerate h_1..h_{L-1}, top RBM normalised exactly."""
    *lower, (Wt, bvt, ct) = rbms
    log_z_top = brute_rbm_log_z(Wt, bvt, ct)
    hs = brute_dbm_states([r[2].numel() for r in lower])  # all (h_1, ..., h_{L-1}) jointly
    out = []
    for row in v:
        xs = [row.expand(hs[0].shape[0], -1)] + hs
        lp = top_log_p_star(xs[-1], Wt, bvt, ct)
        for l, (W, bv, _) in enumerate(lower, start=1):
            lp = lp + bernoulli_log_prob(xs[l - 1], bv + xs[l] @ W.T)
        out.append(torch.logsumexp(lp, 0) - log_z_top)
    return torch.stack(out)


@pytest.fixture(scope="module")
def digits() -> torch.Tensor:
    """The 8x8 digits, binarised at half intensity: [1797, 64]."""
    datasets = pytest.importorskip("sklearn.datasets")
    return torch.tensor(datasets.load_digits().data >= 8, dtype=D)


@pytest.fixture(scope="module")
def digits_rbm(digits):
    """A 64x16 RBM trained by CD-1 for 30 epochs on the digits (enumerable: 2^16 hidden states)."""
    g = gen(0)
    W = rand(64, 16, seed=1, std=0.01)
    b, c = ais.base_rate_visible_bias(digits).clone(), torch.zeros(16, dtype=D)
    for _ in range(30):
        perm = torch.randperm(len(digits), generator=g)
        for i in range(0, len(digits), 50):
            v0 = digits[perm[i:i + 50]]
            ph0 = torch.sigmoid(c + v0 @ W)
            h0 = (torch.rand(ph0.shape, generator=g, dtype=D) < ph0).to(D)
            v1 = (torch.rand(v0.shape, generator=g, dtype=D) < torch.sigmoid(b + h0 @ W.T)).to(D)
            ph1 = torch.sigmoid(c + v1 @ W)
            lr = 0.1 / len(v0)
            W += lr * (v0.T @ ph0 - v1.T @ ph1)
            b += lr * (v0 - v1).sum(0)
            c += lr * (ph0 - ph1).sum(0)
    assert W.abs().max() > 1.0  # it learnt something: the model is far from the base
    return W, b, c


def assert_ais_agrees(est: ais.LogZEstimate, exact: float, tol: float = 0.1) -> None:
    assert est.method == "ais"
    assert abs(est.log_z - exact) < tol, (est, exact)
    assert est.log_z_low <= exact <= est.log_z_high, (est, exact)
    assert 0.0 < est.log_z_std < tol  # a real error bar, small enough to mean something


# ---------------------------------------------------------------------------------------------
# Schedule, base rates, the estimate object
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("steps", [1, 2, 3, 10, 1000, 14500])
def test_beta_schedule_runs_from_0_to_1_strictly_increasing(steps):
    betas = ais.beta_schedule(steps)
    assert betas.dtype == D and betas.shape == (steps + 1,)
    assert betas[0] == 0.0 and betas[-1] == 1.0
    assert bool((betas[1:] > betas[:-1]).all())


def test_beta_schedule_has_salakhutdinov_murray_shape():
    betas = ais.beta_schedule(14500)
    assert betas[500] == pytest.approx(0.5) and betas[4500] == pytest.approx(0.9)
    steps = betas.diff()
    assert steps[:500].mean() == pytest.approx(1e-3) and steps[4500:].mean() == pytest.approx(1e-5)
    assert ais.beta_schedule(1450)[50] == pytest.approx(0.5)  # scaled down keeps the shape
    with pytest.raises(ValueError):
        ais.beta_schedule(0)


def test_base_rate_visible_bias_is_the_logit_of_clipped_means():
    data = torch.tensor([[1, 0, 0, 1], [1, 0, 1, 1], [1, 0, 0, 0], [1, 0, 1, 0]], dtype=torch.uint8)
    bias = ais.base_rate_visible_bias(data, eps=0.01)
    assert torch.allclose(bias, torch.tensor([math.log(99), -math.log(99), 0.0, 0.0], dtype=D))


def test_log_z_estimate_from_weights_and_json():
    w = torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=D)
    est = ais.LogZEstimate.from_log_weights(torch.log(w) + 100.0, log_z_base=5.0, steps=7)
    se = float(w.std()) / 2.0
    assert est.log_z == pytest.approx(math.log(2.5) + 105.0)
    assert est.log_z_std == pytest.approx(se / 2.5)
    assert est.log_z_high == pytest.approx(math.log(2.5 + 3 * se) + 105.0)
    assert est.log_z_low == pytest.approx(math.log(2.5 - 3 * se) + 105.0)
    # one dominant weight: mean - 3 se < 0, so no lower end
    est = ais.LogZEstimate.from_log_weights(torch.log(torch.tensor([1.0, 1.0, 1.0, 100.0])), log_z_base=0.0, steps=7)
    assert math.isnan(est.log_z_low) and est.log_z_high > est.log_z
    d = est.as_dict()
    assert d["log_z_low"] is None and d["runs"] == 4 and d["steps"] == 7 and d["method"] == "ais"
    json.dumps(d, allow_nan=False)
    exact = ais.LogZEstimate.exact(3.0)
    assert exact.as_dict() == {"log_z": 3.0, "log_z_std": 0.0, "log_z_low": 3.0, "log_z_high": 3.0,
                               "runs": 0, "steps": 0, "method": "exact"}


def test_softplus_difference_keeps_its_digits_in_float32():
    u = torch.linspace(-60.0, 60.0, 2001, dtype=D)
    for beta, dbeta in [(0.0, 1e-3), (0.5, 1e-4), (0.95, 1e-5), (0.3, 0.2)]:
        exact = (F.softplus((beta + dbeta) * u) - F.softplus(beta * u)).sum()
        got = ais._layer_softplus_diff(u.float()[None], None, beta, dbeta, D)
        assert abs(float(got) - float(exact)) < 1e-6 * max(1.0, abs(float(exact)))
    # a large step against a base bias of the other sign (a DBM's visible layer) would cancel
    # catastrophically in float32: it takes the exact float64 path
    bias = torch.full_like(u, -30.0)
    got = ais._layer_softplus_diff(u.float()[None], bias.float(), 0.0, 1.0, D)
    assert float(got) == pytest.approx(float((F.softplus(bias + u) - F.softplus(bias)).sum()), rel=1e-6)


# ---------------------------------------------------------------------------------------------
# Exact log Z
# ---------------------------------------------------------------------------------------------


def test_rbm_log_z_exact_matches_brute_force_on_both_sides():
    W, b, c = rand(3, 2, seed=0, std=2.0), rand(3, seed=1), rand(2, seed=2)
    brute = brute_rbm_log_z(W, b, c)
    for side in (None, "visible", "hidden"):
        assert ais.rbm_log_z_exact(W, b, c, side=side) == pytest.approx(brute, abs=1e-9)
    W, b, c = rand(9, 5, seed=3, std=2.0), rand(9, seed=4), rand(5, seed=5)
    assert ais.rbm_log_z_exact(W, b, c, side="visible") == pytest.approx(ais.rbm_log_z_exact(W, b, c), abs=1e-9)


def test_rbm_log_likelihood_normalises():
    W, b, c = rand(6, 4, seed=0, std=1.5), rand(6, seed=1), rand(4, seed=2)
    ll = ais.rbm_log_likelihood(all_states(6), W, b, c, ais.rbm_log_z_exact(W, b, c))
    assert float(torch.logsumexp(ll, 0)) == pytest.approx(0.0, abs=1e-10)


def test_gaussian_rbm_log_z_exact_matches_numerical_integration():
    W, b, c = rand(2, 3, seed=0, std=1.0), rand(2, seed=1), rand(3, seed=2)
    step = 0.02
    axis = torch.arange(-14.0, 14.0 + step / 2, step, dtype=D)
    grid = torch.cartesian_prod(axis, axis)
    log_p = ais.rbm_log_p_unnormalised(grid, W, b, c, visible="gaussian")
    numeric = float(torch.logsumexp(log_p, 0)) + 2 * math.log(step)
    assert ais.rbm_log_z_exact(W, b, c, visible="gaussian") == pytest.approx(numeric, abs=1e-4)


def test_exact_enumeration_refuses_huge_models():
    with pytest.raises(ValueError, match="2\\^25"):
        ais.rbm_log_z_exact(torch.zeros(30, 25), torch.zeros(30), torch.zeros(25))
    with pytest.raises(ValueError):
        ais.rbm_log_z_exact(torch.zeros(4, 25), torch.zeros(4), torch.zeros(25), visible="gaussian")
    with pytest.raises(ValueError):
        z = torch.zeros
        ais.dbm_log_z_exact([z(30, 13), z(13, 30)], [z(30), z(13), z(30)], parity=0)
    with pytest.raises(ValueError):
        z = torch.zeros
        ais.bm_log_z_exact(z(13, 13), z(12, 12), z(13), z(12), z(13, 12))


def small_dbm(sizes, seed, std=1.0):
    Ws = [rand(sizes[i], sizes[i + 1], seed=seed + i, std=std) for i in range(len(sizes) - 1)]
    bs = [rand(n, seed=seed + 10 + i, std=0.5) for i, n in enumerate(sizes)]
    return Ws, bs


@pytest.mark.parametrize("sizes", [(4, 3, 2), (3, 2, 3, 2), (2, 3, 2, 2, 2)])
def test_dbm_log_z_exact_matches_brute_force_for_both_parities(sizes):
    Ws, bs = small_dbm(sizes, seed=len(sizes))
    brute = brute_dbm_log_z(Ws, bs)
    for parity in (None, 0, 1):
        assert ais.dbm_log_z_exact(Ws, bs, parity=parity) == pytest.approx(brute, abs=1e-9)


def test_dbm_with_one_hidden_layer_is_an_rbm():
    W, b, c = rand(7, 5, seed=0, std=1.5), rand(7, seed=1), rand(5, seed=2)
    assert ais.dbm_log_z_exact([W], [b, c]) == pytest.approx(ais.rbm_log_z_exact(W, b, c), abs=1e-9)
    v = all_states(7)[::5]
    assert torch.allclose(ais.dbm_log_p_unnormalised(v, [W], [b, c]), ais.rbm_log_p_unnormalised(v, W, b, c))


@pytest.mark.parametrize("sizes", [(4, 3, 2), (3, 2, 3, 2)])
def test_dbm_log_p_unnormalised_matches_brute_force_and_normalises(sizes):
    Ws, bs = small_dbm(sizes, seed=7)
    v = all_states(sizes[0])
    got = ais.dbm_log_p_unnormalised(v, Ws, bs)
    assert torch.allclose(got, brute_dbm_log_p_star(v, Ws, bs), atol=1e-9)
    assert float(torch.logsumexp(got, 0)) == pytest.approx(ais.dbm_log_z_exact(Ws, bs), abs=1e-9)


def test_bm_log_z_exact_matches_brute_force():
    n_v, n_h = 4, 3
    A, B = rand(n_v, n_v, seed=0), rand(n_h, n_h, seed=1)
    L = (A + A.T) / 2 - torch.diag(A.diagonal())
    J = (B + B.T) / 2 - torch.diag(B.diagonal())
    b, c, W = rand(n_v, seed=2), rand(n_h, seed=3), rand(n_v, n_h, seed=4)
    brute = brute_bm_log_z(L, J, b, c, W)
    assert ais.bm_log_z_exact(L, J, b, c, W) == pytest.approx(brute, abs=1e-9)
    log_p = ais.bm_log_p_unnormalised(all_states(n_v), L, J, b, c, W)
    assert float(torch.logsumexp(log_p, 0)) == pytest.approx(brute, abs=1e-9)
    with pytest.raises(ValueError, match="symmetric"):
        ais.bm_log_z_exact(A, J, b, c, W)


def test_bm_without_lateral_connections_is_an_rbm():
    W, b, c = rand(6, 5, seed=0, std=1.5), rand(6, seed=1), rand(5, seed=2)
    L, J = torch.zeros(6, 6, dtype=D), torch.zeros(5, 5, dtype=D)
    assert ais.bm_log_z_exact(L, J, b, c, W) == pytest.approx(ais.rbm_log_z_exact(W, b, c), abs=1e-9)
    v = all_states(6)
    assert torch.allclose(ais.bm_log_p_unnormalised(v, L, J, b, c, W), ais.rbm_log_p_unnormalised(v, W, b, c))


# ---------------------------------------------------------------------------------------------
# AIS against the exact answer (the acceptance test)
# ---------------------------------------------------------------------------------------------


def test_rbm_ais_within_0_1_nats_of_exact():
    W, b, c = rand(20, 14, seed=0, std=0.5), rand(20, seed=1, std=0.5), rand(14, seed=2, std=0.5)
    exact = ais.rbm_log_z_exact(W, b, c)
    est = ais.rbm_ais(W, b, c, runs=100, steps=3000, generator=gen(1))
    assert est.runs == 100 and est.steps == 3000
    assert_ais_agrees(est, exact)


def test_rbm_ais_with_base_rate_bias_on_a_trained_rbm(digits, digits_rbm):
    W, b, c = digits_rbm
    exact = ais.rbm_log_z_exact(W, b, c)
    base = ais.base_rate_visible_bias(digits)
    est = ais.rbm_ais(W, b, c, runs=100, steps=3000, base_bias=base, generator=gen(2))
    assert_ais_agrees(est, exact)
    # the data's base rates make a far better start than the uniform model
    uniform = ais.rbm_ais(W, b, c, runs=100, steps=3000, generator=gen(2))
    assert est.log_z_std < uniform.log_z_std / 2
    # and the resulting test log-likelihood is what enumeration says
    ll = ais.rbm_log_likelihood(digits, W, b, c, est.log_z)
    assert float(ll.mean()) == pytest.approx(float(ais.rbm_log_likelihood(digits, W, b, c, exact).mean()), abs=0.1)


def test_gaussian_rbm_ais_within_0_1_nats_of_exact():
    W, b, c = rand(16, 12, seed=3, std=0.3), rand(16, seed=4), rand(12, seed=5, std=0.5)
    exact = ais.rbm_log_z_exact(W, b, c, visible="gaussian")
    est = ais.rbm_ais(W, b, c, visible="gaussian", runs=100, steps=3000, generator=gen(3))
    assert_ais_agrees(est, exact)
    # a base far from the data's mean still gets there, with a wider error bar
    est0 = ais.rbm_ais(W, b, c, visible="gaussian", runs=100, steps=3000, base_bias=torch.zeros(16), generator=gen(3))
    assert_ais_agrees(est0, exact)


def test_rbm_ais_is_reproducible_and_sampling_precision_does_not_matter():
    W, b, c = rand(12, 10, seed=6, std=0.8), rand(12, seed=7), rand(10, seed=8)
    a = ais.rbm_ais(W, b, c, runs=50, steps=500, generator=gen(4))
    assert a == ais.rbm_ais(W, b, c, runs=50, steps=500, generator=gen(4))
    f64 = ais.rbm_ais(W, b, c, runs=50, steps=500, generator=gen(4), sample_dtype=torch.float64)
    exact = ais.rbm_log_z_exact(W, b, c)
    assert abs(a.log_z - exact) < 0.1 and abs(f64.log_z - exact) < 0.1


def test_ais_is_unbiased_for_z_even_with_very_few_steps():
    # E[w] = Z_B / Z_A for any schedule: with 10 coarse steps and many runs the estimate still
    # meets the exact value within its error bar. A transition that does not leave p_k invariant
    # (say, sampling at beta_{k-1}) is biased here, where thousands of steps would hide it.
    def agrees(est, exact):
        assert est.log_z_std < 0.05 and abs(est.log_z - exact) < 4 * est.log_z_std, (est, exact)

    W, b, c = rand(8, 5, seed=1, std=1.5), rand(8, seed=2), rand(5, seed=3)
    agrees(ais.rbm_ais(W, b, c, runs=20000, steps=10, generator=gen(12)), ais.rbm_log_z_exact(W, b, c))
    W, b, c = rand(4, 5, seed=4, std=0.7), rand(4, seed=5), rand(5, seed=6)
    agrees(ais.rbm_ais(W, b, c, visible="gaussian", runs=20000, steps=10, base_bias=torch.zeros(4), generator=gen(13)),
           ais.rbm_log_z_exact(W, b, c, visible="gaussian"))
    Ws, bs = small_dbm((5, 4, 3), seed=14, std=1.5)
    exact = ais.dbm_log_z_exact(Ws, bs)
    agrees(ais.dbm_ais(Ws, bs, runs=20000, steps=10, generator=gen(15)), exact)
    base = torch.full((5,), -2.0)
    agrees(ais.dbm_ais(Ws, bs, runs=20000, steps=10, base_visible_bias=base, generator=gen(16)), exact)


def test_ais_leaves_torch_thread_setting_alone():
    torch.set_num_threads(2)
    before = torch.get_num_threads()
    W, b, c = rand(64, 200, seed=0, std=0.05), torch.zeros(64, dtype=D), torch.zeros(200, dtype=D)
    ais.rbm_ais(W, b, c, runs=100, steps=3, threads=1, generator=gen(0))  # big enough to honour threads
    ais.rbm_ais(W[:5, :5], b[:5], c[:5], runs=10, steps=3, generator=gen(0))  # tiny: one thread inside
    ais.dbm_ais([W, W.T.contiguous()], [b, c, b], runs=10, steps=3, threads=1, generator=gen(0))
    assert torch.get_num_threads() == before
    torch.set_num_threads(1)


@pytest.mark.parametrize("base", ["uniform", "base_rate"])
def test_dbm_ais_within_0_1_nats_of_exact(base):
    Ws, bs = small_dbm((10, 8, 6), seed=20, std=0.7)
    exact = ais.dbm_log_z_exact(Ws, bs)
    base_bias = None
    if base == "base_rate":  # the model's own samples' marginals would do; any rates give a valid base
        base_bias = ais.base_rate_visible_bias(torch.sigmoid(bs[0] + 0.3)[None])
    est = ais.dbm_ais(Ws, bs, runs=100, steps=3000, base_visible_bias=base_bias, generator=gen(5))
    assert_ais_agrees(est, exact)


def test_dbm_reverse_ais_from_exact_samples_agrees_with_exact_and_with_forward_ais():
    """Bidirectional check: reverse AIS started from exact model samples (drawn by enumerating the
    odd layer) lands within 0.1 nats of the exact log Z, like forward AIS; from samples that are
    not the model's (all-zero states) and a path too short to forget them, it is far off."""
    Ws, bs = small_dbm((10, 8, 6), seed=20, std=0.7)
    exact = ais.dbm_log_z_exact(Ws, bs)
    h1 = all_states(8)
    log_p = ais._dbm_half_log_p({1: h1}, Ws, bs, parity=1)  # h1's exact unnormalised marginal
    assert float(torch.logsumexp(log_p, 0)) == pytest.approx(exact, abs=1e-9)
    runs = 200
    pick = torch.multinomial(torch.softmax(log_p, 0), runs, replacement=True, generator=gen(3))
    states = [torch.zeros(runs, 10), h1[pick].float(), torch.zeros(runs, 6)]
    rev = ais.dbm_reverse_ais(Ws, bs, states, steps=3000, generator=gen(4))
    fwd = ais.dbm_ais(Ws, bs, runs=runs, steps=3000, generator=gen(5))
    assert rev.method == "reverse-ais"
    assert abs(rev.log_z - exact) < 0.1 and rev.log_z_low <= exact <= rev.log_z_high, (rev, exact)
    assert abs(rev.log_z - fwd.log_z) < 0.15
    wrong = [torch.zeros(runs, 10), torch.zeros(runs, 8), torch.zeros(runs, 6)]
    off = ais.dbm_reverse_ais(Ws, bs, wrong, steps=3, generator=gen(6))  # too short to forget the start
    assert abs(off.log_z - exact) > 0.5, (off, exact)
    with pytest.raises(ValueError, match="one \\[runs, n_l\\] tensor per layer"):
        ais.dbm_reverse_ais(Ws, bs, states[:2], steps=10)


def test_log_z_floor_is_exact_over_all_states_and_below_log_z_over_some():
    """Over every state the floor is log Z itself; over a subset (with duplicates, which count
    once) it lies below; with lower bounds in place of log p* it stays below."""
    Ws, bs = small_dbm((6, 5, 4), seed=3, std=0.8)
    exact = ais.dbm_log_z_exact(Ws, bs)
    v = all_states(6)
    log_p = ais.dbm_log_p_unnormalised(v, Ws, bs)
    assert ais.log_z_floor(v, log_p) == pytest.approx(exact, abs=1e-9)
    some = torch.cat([v[:20], v[:5]])
    part = ais.log_z_floor(some, torch.cat([log_p[:20], log_p[:5]]))
    assert part == pytest.approx(float(torch.logsumexp(log_p[:20], 0)), abs=1e-9) and part < exact
    elbo = ais.dbm_lower_bound(v, Ws, bs, 0.0, iters=30)
    assert bool((elbo <= log_p + 1e-9).all()) and ais.log_z_floor(v, elbo) < exact
    with pytest.raises(ValueError, match="one log p"):
        ais.log_z_floor(v, log_p[:3])


def test_an_ais_estimate_below_the_floor_withdraws_the_likelihood():
    from gentool import EvaluateResult
    from gentool_boltzmann.evaluation import check_log_z

    def result() -> EvaluateResult:
        return EvaluateResult(metrics={"test_log_likelihood_nats": -90.0, "test_ll_low": -91.0, "test_ll_high": -89.0},
                              settings={"ais_method": "ais"})

    good = result()
    check_log_z(good, log_z=500.0, floor=480.0, headline="test_log_likelihood_nats", mean_log_p_low=410.0,
                error_keys=("test_ll_low", "test_ll_high"))
    m = good.metrics
    assert m["ais_consistent"] and m["test_log_likelihood_nats"] == -90.0 and good.warnings == []
    assert m["log_z_floor"] == 480.0 and "test_log_likelihood_nats_at_most" not in m
    bad = result()
    check_log_z(bad, log_z=500.0, floor=510.0, headline="test_log_likelihood_nats", mean_log_p_low=410.0,
                error_keys=("test_ll_low", "test_ll_high"))
    m = bad.metrics
    assert not m["ais_consistent"] and m["test_log_likelihood_nats"] is None and m["test_ll_low"] is None
    assert m["test_log_likelihood_nats_at_most"] == -100.0
    assert len(bad.warnings) == 1 and "missed modes" in bad.warnings[0] and "warning" not in m
    assert bad.settings == {"ais_method": "ais"}  # the warning is a warning, not a setting


def test_dbm_ais_along_the_other_parity_agrees_with_exact():
    """The second AIS path of benchmarks/dbm_ais_steps.py: a linkless one-unit layer below v makes
    (v, h2) the chains' state and h1 the summed-out layer; log Z grows by exactly log 2."""
    g = torch.Generator().manual_seed(0)
    Ws = [torch.randn(12, 8, generator=g, dtype=torch.float64) * 0.8,
          torch.randn(8, 6, generator=g, dtype=torch.float64) * 0.8]
    bs = [torch.randn(n, generator=g, dtype=torch.float64) * 0.5 for n in (12, 8, 6)]
    exact = ais.dbm_log_z_exact(Ws, bs)
    pad_W = [torch.zeros(1, 12, dtype=torch.float64)] + Ws
    pad_b = [torch.zeros(1, dtype=torch.float64)] + bs
    assert ais.dbm_log_z_exact(pad_W, pad_b) == pytest.approx(exact + math.log(2), abs=1e-9)
    est = ais.dbm_ais(pad_W, pad_b, runs=200, steps=5000, generator=torch.Generator().manual_seed(1))
    assert abs(est.log_z - math.log(2) - exact) < 0.1


def test_dbm_ais_three_hidden_layers_and_rbm_as_dbm():
    Ws, bs = small_dbm((6, 5, 4, 5), seed=30, std=0.8)  # odd layers 9 units, even 10: both enumerable
    est = ais.dbm_ais(Ws, bs, runs=100, steps=3000, generator=gen(6))
    assert_ais_agrees(est, ais.dbm_log_z_exact(Ws, bs))
    W, b, c = rand(20, 14, seed=0, std=0.5), rand(20, seed=1, std=0.5), rand(14, seed=2, std=0.5)
    est = ais.dbm_ais([W], [b, c], runs=100, steps=3000, generator=gen(7))  # hiddens as the chain state
    assert_ais_agrees(est, ais.rbm_log_z_exact(W, b, c))


# ---------------------------------------------------------------------------------------------
# Bounds
# ---------------------------------------------------------------------------------------------


def test_dbm_lower_bound_is_below_and_near_the_exact_log_likelihood():
    Ws, bs = small_dbm((10, 8, 6), seed=20, std=0.7)
    log_z = ais.dbm_log_z_exact(Ws, bs)
    v = all_states(10)[::7]
    exact = ais.dbm_log_p_unnormalised(v, Ws, bs) - log_z
    bound = ais.dbm_lower_bound(v, Ws, bs, log_z)
    assert bound.shape == (v.shape[0],)
    assert bool((bound <= exact + 1e-9).all())
    gap = exact - bound
    assert float(gap.mean()) < 2.0 and float(gap.max()) < 5.0
    # more mean-field sweeps never loosen it (block coordinate ascent)
    assert bool((ais.dbm_lower_bound(v, Ws, bs, log_z, iters=1) <= bound + 1e-9).all())


def test_dbm_mean_field_is_a_fixed_point_and_exact_when_layers_decouple():
    Ws, bs = small_dbm((10, 8, 6), seed=21, std=0.7)
    v = all_states(10)[::31]
    # the start: a bottom-up pass, input doubled for all but the top layer
    start = ais.dbm_mean_field(v, Ws, bs, iters=0)
    assert torch.allclose(start[0], torch.sigmoid(bs[1] + 2 * v @ Ws[0]))
    assert torch.allclose(start[1], torch.sigmoid(bs[2] + start[0] @ Ws[1]))
    mu1, mu2 = ais.dbm_mean_field(v, Ws, bs, iters=200)
    assert torch.allclose(mu1, torch.sigmoid(bs[1] + v @ Ws[0] + mu2 @ Ws[1].T), atol=1e-8)
    assert torch.allclose(mu2, torch.sigmoid(bs[2] + mu1 @ Ws[1]), atol=1e-8)
    flat = [torch.full_like(mu1, 0.5), torch.full_like(mu2, 0.5)]
    damped = ais.dbm_mean_field(v, Ws, bs, iters=400, damping=0.5, init=flat)
    assert torch.allclose(damped[0], mu1, atol=1e-6)
    # with W_2 = 0 the posterior factorises: mean field is exact and the bound is log p(v)
    Ws0 = [Ws[0], torch.zeros_like(Ws[1])]
    log_z = ais.dbm_log_z_exact(Ws0, bs)
    exact = ais.dbm_log_p_unnormalised(v, Ws0, bs) - log_z
    assert torch.allclose(ais.dbm_lower_bound(v, Ws0, bs, log_z), exact, atol=1e-9)


def random_dbn(sizes, seed, std=1.0):
    return [(rand(sizes[i], sizes[i + 1], seed=seed + i, std=std), rand(sizes[i], seed=seed + 10 + i, std=0.5),
             rand(sizes[i + 1], seed=seed + 20 + i, std=0.5)) for i in range(len(sizes) - 1)]


def test_one_layer_dbn_bound_is_the_rbm_log_likelihood():
    (W, b, c), = random_dbn((7, 5), seed=0)
    log_z = ais.rbm_log_z_exact(W, b, c)
    v = all_states(7)[::3]
    got = ais.dbn_lower_bound(v, [(W, b, c)], log_z)
    assert torch.allclose(got, ais.rbm_log_likelihood(v, W, b, c, log_z), atol=1e-12)


def test_two_layer_dbn_bound_matches_its_definition_and_stays_below_log_p():
    rbms = random_dbn((6, 5, 4), seed=40, std=1.2)
    (W1, b1, c1), (W2, b2, c2) = rbms
    log_z_top = ais.rbm_log_z_exact(W2, b2, c2)
    v = all_states(6)[::4]
    exact = brute_dbn_log_p(v, rbms)
    # the bound by enumerating h_1 under the factorised q(h_1 | v)
    hs = all_states(5)
    q = torch.sigmoid(c1 + v @ W1)  # [batch, 5]
    log_q = hs @ torch.log(q).T + (1 - hs) @ torch.log1p(-q).T  # [m, batch]
    joint = bernoulli_log_prob(v[None], b1 + (hs @ W1.T)[:, None]) + top_log_p_star(hs, W2, b2, c2)[:, None] - log_z_top
    bound = (log_q.exp() * (joint - log_q)).sum(0)
    assert bool((bound <= exact + 1e-9).all()) and float((exact - bound).max()) > 1e-3  # a real gap
    est = ais.dbn_lower_bound(v, rbms, log_z_top, samples=4000, generator=gen(8))
    assert torch.allclose(est, bound, atol=0.05)
    assert bool((est <= exact).all())


def test_three_layer_dbn_bound_stays_below_log_p():
    rbms = random_dbn((5, 4, 4, 3), seed=50, std=1.2)
    log_z_top = ais.rbm_log_z_exact(*rbms[-1])
    v = all_states(5)
    exact = brute_dbn_log_p(v, rbms)
    est = ais.dbn_lower_bound(v, rbms, log_z_top, samples=2000, generator=gen(9))
    assert bool((est <= exact).all())
    assert float((exact - est).mean()) < 3.0


def test_dbn_of_an_rbm_and_its_mirror_is_that_rbm():
    # Top RBM = the first one turned upside down: the DBN's p(v) is the first RBM's, and q(h_1 | v)
    # is the true posterior (a complementary prior), so the bound is tight.
    W, b, c = rand(6, 5, seed=60, std=1.0), rand(6, seed=61), rand(5, seed=62)
    rbms = [(W, b, c), (W.T.contiguous(), c, b)]
    log_z = ais.rbm_log_z_exact(W, b, c)
    v = all_states(6)[::5]
    rbm_ll = ais.rbm_log_likelihood(v, W, b, c, log_z)
    assert torch.allclose(brute_dbn_log_p(v, rbms), rbm_ll, atol=1e-9)
    est = ais.dbn_lower_bound(v, rbms, ais.rbm_log_z_exact(*rbms[1]), samples=4000, generator=gen(10))
    assert torch.allclose(est, rbm_ll, atol=0.05)


# ---------------------------------------------------------------------------------------------
# Speed (slow): the 784x500 RBM, 100 runs x 14,500 steps
# ---------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_rbm_ais_speed_784x500():
    W = rand(784, 500, seed=0, std=0.01)
    b, c = torch.zeros(784, dtype=D), torch.zeros(500, dtype=D)
    start = time.perf_counter()
    est = ais.rbm_ais(W, b, c, runs=100, steps=14500, generator=gen(11))
    seconds = time.perf_counter() - start
    print(f"rbm_ais 784x500, 100 runs x 14500 steps: {seconds:.1f} s on {torch.get_num_threads()} thread(s): {est}")
    assert seconds < 60.0
    # an independent estimator (the chain over the hiddens, visibles summed out) agrees
    other = ais.dbm_ais([W], [b, c], runs=100, steps=2000, generator=gen(12))
    assert abs(est.log_z - other.log_z) < 3 * math.hypot(est.log_z_std, other.log_z_std) + 0.02, (est, other)
