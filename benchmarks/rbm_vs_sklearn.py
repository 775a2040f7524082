"""RBM training speed and AIS test log-likelihood: gentool's rbm against scikit-learn's BernoulliRBM.

    python benchmarks/rbm_vs_sklearn.py [--epochs 1] [--repeats 3] [--ais-runs 100] [--ais-steps 14500]

Both train on binarised MNIST from ../shared/data/mnist (60,000 images, pixels > 0.5), 784
visible and 500 hidden units, batch 100, PCD-1, learning rate 0.05, no momentum, no weight decay,
for the same number of epochs; gentool in float32 and with bf16 matrix products. Reported:
samples per second of the training steps, median of the repeats (and gentool's whole run, with
its per-epoch validation, samples and pictures), and the average log-likelihood of the 10,000 test digits in nats, with log Z from the
same AIS run settings for every model. CPU figures, from the machine that runs it.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
MNIST = ROOT.parent / "shared" / "data" / "mnist"


def load(split: str):
    from gentool.data import load_dataset
    from gentool_boltzmann.common import binarized, flat

    ds = binarized(load_dataset(str(MNIST), split=split), "threshold", 0)
    return ds, flat(ds.as_float())


def train_sklearn(x: torch.Tensor, epochs: int, lr: float):
    from sklearn.neural_network import BernoulliRBM

    rbm = BernoulliRBM(n_components=500, learning_rate=lr, batch_size=100, n_iter=epochs, random_state=0)
    xs = x.numpy().astype("float64")
    t = time.perf_counter()
    rbm.fit(xs)
    seconds = time.perf_counter() - t
    W = torch.from_numpy(rbm.components_.T.copy())
    return (W, torch.from_numpy(rbm.intercept_visible_.copy()), torch.from_numpy(rbm.intercept_hidden_.copy())), \
        len(xs) * epochs / seconds


def train_gentool(data, epochs: int, lr: float, precision: str):
    from gentool import ModelSpec, TrainJob, TrainOptions, fit, seed_everything
    from gentool.runs import Run
    from gentool_boltzmann.configs import RBMConfig
    from gentool_boltzmann.rbm import RBMTask

    cfg = RBMConfig(hidden=500, method="pcd", k=1, k_schedule=(), momentum=0.0, weight_decay=0.0,
                    lr_schedule="constant", binarize="none")  # the data is binarised already, as scikit-learn's is
    seed_everything(0)
    with tempfile.TemporaryDirectory() as tmp:
        run = Run("rbm", "bench", Path(tmp) / "bench")
        opts = TrainOptions(epochs=epochs, batch_size=100, lr=lr, device="cpu", precision=precision, seed=0)
        task = RBMTask(cfg, data, lr, 0)  # lr_schedule constant: the step total does not matter
        task.val = task.val.subset(slice(0, 500))
        job = TrainJob(ModelSpec("rbm", "boltzmann", "", RBMConfig, plugin="boltzmann"), cfg, opts, data, run, quiet=True)
        t = time.perf_counter()
        fit(task, job)
        whole = len(task.data) * epochs / (time.perf_counter() - t)
        steps = [json.loads(x) for x in (run.dir / "metrics.jsonl").read_text().splitlines()]
        loop = [r["samples_per_s"] for r in steps if r["type"] == "step" and r["epoch"] == 1][-1]
    rbm = task.rbm
    return (rbm.W.detach().double(), rbm.b.detach().double(), rbm.c.detach().double()), loop, whole


def sklearn_job(epochs: int, lr: float):
    _, x = load("train")
    return train_sklearn(x, epochs, lr)


def gentool_job(epochs: int, lr: float, precision: str):
    train, _ = load("train")
    return train_gentool(train, epochs, lr, precision)


def test_ll(params, base, v_test, v_train, runs: int, steps: int) -> tuple[float, float, str]:
    """AIS test log-likelihood, log Z's std, and whether AIS's log Z clears the certain floor that
    the data put under it (if not, the figure is withdrawn and only its ceiling is shown)."""
    from gentool_boltzmann import ais

    W, b, c = (p.double() for p in params)
    est = ais.rbm_ais(W, b, c, runs=runs, steps=steps, base_bias=base, generator=torch.Generator().manual_seed(0))
    v_all = torch.cat([v_test, v_train])
    floor = ais.log_z_floor(v_all, ais.rbm_log_p_unnormalised(v_all, W, b, c))
    ll = float(ais.rbm_log_likelihood(v_test, W, b, c, est.log_z).mean())
    if est.log_z >= floor:
        return ll, est.log_z_std, f"ok ({est.log_z - floor:.1f} above)"
    return float("nan"), est.log_z_std, f"AIS below floor: LL at most {ll + est.log_z - floor:.2f}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--ais-runs", type=int, default=100)
    p.add_argument("--ais-steps", type=int, default=14500)
    p.add_argument("--repeats", type=int, default=3, help="training runs per model; the median speed is shown")
    args = p.parse_args()
    if not MNIST.is_dir():
        print(f"skipped: MNIST not found at {MNIST} (the benchmark reads ../shared/data/mnist)")
        return
    from gentool_boltzmann import ais

    print(f"machine: CPU {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; binarised MNIST, 784-500, batch 100, PCD-1, lr {args.lr}, "
          f"{args.epochs} epoch(s); AIS {args.ais_runs} runs x {args.ais_steps} steps")
    train, x = load("train")
    _, v_test = load("test")
    v_test = v_test.double()
    base = ais.base_rate_visible_bias(x.double())
    rows = []
    # each training runs in a fresh process: numpy's BLAS threads keep spinning after their work
    # and would slow whatever runs next in the same process
    ctx = multiprocessing.get_context("spawn")

    def isolated(fn, *a):
        with ctx.Pool(1) as pool:
            return pool.apply(fn, a)

    runs = [isolated(sklearn_job, args.epochs, args.lr) for _ in range(args.repeats)]
    print("scikit-learn runs (samples/s): " + ", ".join(f"{r[1]:,.0f}" for r in runs), flush=True)
    rows.append(("scikit-learn BernoulliRBM (float64)", statistics.median(r[1] for r in runs), None, runs[-1][0]))
    for precision in ("fp32", "bf16"):
        runs = [isolated(gentool_job, args.epochs, args.lr, precision) for _ in range(args.repeats)]
        print(f"gentool {precision} runs (samples/s): " + ", ".join(f"{r[1]:,.0f}" for r in runs), flush=True)
        rows.append((f"gentool rbm ({precision})", statistics.median(r[1] for r in runs),
                     statistics.median(r[2] for r in runs), runs[-1][0]))
    print(f"{'model':38s} {'samples/s':>10s} {'x sklearn':>9s} {'whole run/s':>11s} {'test LL (nats)':>15s} {'logZ std':>8s}  "
          "log Z vs the data's floor")
    ref = rows[0][1]
    for name, sps, whole, params in rows:
        ll, std, check = test_ll(params, base, v_test, x.double()[:10_000], args.ais_runs, args.ais_steps)
        whole_s = f"{whole:11,.0f}" if whole else f"{'':11s}"
        print(f"{name:38s} {sps:10,.0f} {sps / ref:9.2f} {whole_s} {ll:15.2f} {std:8.3f}  {check}", flush=True)


if __name__ == "__main__":
    main()
