"""Does a DBM's AIS log Z still move with the annealing length? (a check of AIS mixing)

    python benchmarks/dbm_ais_steps.py RUN_OR_CHECKPOINT [--steps 2000,8000,32000] [--runs 20]
                                       [--data ../shared/data/mnist] [--max-test 2000]
                                       [--reverse [--burn 2000]]

Loads a `dbm` checkpoint (or a Bernoulli `rbm` one, run as the one-hidden-layer DBM it is), scores the mean-field part of the lower bound on test digits (binarised
as the model was trained), and runs `ais.dbm_ais` with each annealing length, printing log Z, its
spread over runs and the bound it gives. An estimate that keeps rising with the steps has not
mixed; one that stays put can still miss modes that no chain reaches.

It also anneals along a second, independent path: a one-unit layer with no links is put below
v, so the chains' state becomes (v, h2) and h1 is summed out (log Z grows by exactly log 2, which
is taken off; the base model is then uniform on v). Two paths that agree make a missed mode less
likely.

With ``--reverse`` it also walks the first path backwards, from the model's own samples (Gibbs
chains started at test digits and run ``--burn`` steps) down to the base: reverse AIS errs high
where forward AIS errs low, so the two bracket log Z when the samples are the model's
(bidirectional Monte Carlo). A reverse figure far above the forward one means the chains have not
mixed, and the bound built on the forward log Z cannot be trusted.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch

from gentool.checkpoint import load_checkpoint
from gentool.data import load_dataset
from gentool_boltzmann import ais
from gentool_boltzmann.common import flat
from gentool_boltzmann.dbm import DBM, load_dbm
from gentool_boltzmann.evaluation import prepared

MNIST = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mnist"


def rbm_as_dbm(ckpt) -> DBM:
    """A Bernoulli RBM checkpoint as a DBM with one hidden layer (the same energy)."""
    from gentool_boltzmann.rbm import load_rbm

    rbm = load_rbm(ckpt, torch.device("cpu"))
    if rbm.gaussian:
        raise SystemExit("Gaussian-visible RBMs have a density: this check is for binary units")
    dbm = DBM([rbm.W.shape[0], rbm.W.shape[1]])
    with torch.no_grad():
        dbm.W1.copy_(rbm.W)
        dbm.b0.copy_(rbm.b)
        dbm.b1.copy_(rbm.c)
    return dbm


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("checkpoint", type=Path, help="a dbm or rbm checkpoint (.safetensors) or run folder")
    p.add_argument("--steps", default="2000,8000,32000")
    p.add_argument("--runs", type=int, default=20)
    p.add_argument("--data", default=str(MNIST))
    p.add_argument("--max-test", type=int, default=2000)
    p.add_argument("--reverse", action="store_true", help="also reverse AIS from the model's samples")
    p.add_argument("--burn", type=int, default=2000, help="Gibbs steps before reverse AIS starts")
    args = p.parse_args()
    path = args.checkpoint / "last.safetensors" if args.checkpoint.is_dir() else args.checkpoint
    ckpt = load_checkpoint(path)
    if ckpt.model == "rbm":
        dbm = rbm_as_dbm(ckpt)
    else:
        dbm, _ = load_dbm(load_checkpoint(path, model="dbm"), torch.device("cpu"))
    Ws = [W.detach().double() for W in dbm.Ws]
    bs = [b.detach().double() for b in dbm.bs]
    test = prepared(load_dataset(args.data, split="test"), ckpt.config, 0, args.max_test)
    train = prepared(load_dataset(args.data, split="train"), ckpt.config, 0, 10_000, split="train")
    v = flat(test.as_float()).double()
    base = ais.base_rate_visible_bias(flat(train.as_float()).double())
    unnormalised = float(ais.dbm_lower_bound(v, Ws, bs, 0.0).mean())
    print(f"{path}: mean-field E_q[-E] + H on {len(test)} test digits = {unnormalised:.3f} (bound = this - log Z)")
    states = None
    if args.reverse:
        t = time.perf_counter()
        g = torch.Generator().manual_seed(1)
        with torch.no_grad():
            start = [v[: args.runs].float()] + [torch.bernoulli(m, generator=g)
                                                 for m in dbm.mean_field(v[: args.runs].float(), 10)[1:]]
            states, _ = dbm.gibbs(start, args.burn, g)
        print(f"reverse AIS starts from {args.runs} chains begun at test digits after {args.burn} Gibbs steps "
              f"({time.perf_counter() - t:.0f} s)", flush=True)
    for steps in (int(s) for s in args.steps.split(",")):
        t = time.perf_counter()
        est = ais.dbm_ais(Ws, bs, runs=args.runs, steps=steps, base_visible_bias=base,
                          generator=torch.Generator().manual_seed(steps))
        row = {"steps": steps, "runs": args.runs, "log_z": round(est.log_z, 3),
               "log_z_std": round(est.log_z_std, 3), "bound": round(unnormalised - est.log_z, 3)}
        pad_W = [torch.zeros(1, Ws[0].shape[0], dtype=torch.float64)] + Ws
        pad_b = [torch.zeros(1, dtype=torch.float64)] + bs
        other = ais.dbm_ais(pad_W, pad_b, runs=args.runs, steps=steps, generator=torch.Generator().manual_seed(steps + 1))
        row.update({"log_z_other_path": round(other.log_z - math.log(2), 3), "other_std": round(other.log_z_std, 3)})
        if states is not None:
            rev = ais.dbm_reverse_ais(Ws, bs, states, steps=steps, base_visible_bias=base,
                                      generator=torch.Generator().manual_seed(steps + 2))
            row.update({"log_z_reverse": round(rev.log_z, 3), "reverse_std": round(rev.log_z_std, 3),
                        "bound_by_reverse": round(unnormalised - rev.log_z, 3)})
        row["seconds"] = round(time.perf_counter() - t, 1)
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
