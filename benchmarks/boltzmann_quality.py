"""Test log-likelihood of rbm (784-500), dbn (784-500-2000) and dbm (784-500-1000) on binarised MNIST, by AIS.

    python benchmarks/boltzmann_quality.py [--rbm-epochs 20] [--dbn-epochs 10] [--dbm-epochs 10] [--ais-runs 100]
                                           [--ais-steps 14500] [--only rbm|dbn|dbm] [--device cpu|cuda]
                                           [--binarize sample|threshold] [--keep DIR] [--lr LR] [--set KEY=VALUE ...]
                                           [--train-seconds S] [--rbm-defaults] [--seed S]

``--rbm-defaults`` trains the rbm with its defaults alone, as a user who passes no option does
(`gentool train rbm --data ../shared/data/mnist --epochs N --seed S`; the defaults are the recipe
measured for MNIST: 500 hidden units, PCD-1, batch 50, lr 0.05 decaying linearly to 0); without it
the rbm plan pins the options of the earlier rows in docs/benchmarks.md (batch 100, ...).

Trains each model through the real command line on ../shared/data/mnist (60,000 training
digits), then runs `gentool evaluate --json` on the 10,000 test digits, and prints the figure
beside the published marks: -86.34 nats for an RBM with 500 hidden units trained with
CD-25 (Salakhutdinov & Murray 2008), -86.22 nats for a 500-2000 DBN (the same paper, a variational
lower bound with AIS for the top RBM) and -84.62 nats for a 500-1000 DBM (Salakhutdinov & Hinton
2009, a variational lower bound). It states the training budget (epochs, wall time, device), which
is the point: how close a CPU budget gets. Where AIS's log Z falls below the certain floor that
the data put under it, the evaluation withdraws the figure and the benchmark says so.

The published marks use MNIST binarised by one random draw per pixel (grey level = probability
of 1), which is the default here (``--binarize sample``). Thresholding at 0.5 removes that noise:
the test digits' grey pixels carry 45.5 nats of Bernoulli entropy per image, so figures on
thresholded digits come out tens of nats higher and cannot be set beside the published ones.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import cpu_name  # the CPU's model name, as every benchmark prints it

from gentool.devices import pick_device

MNIST = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mnist"
PUBLISHED = {"rbm": (-86.34, "RBM 500 hidden, CD-25, Salakhutdinov & Murray 2008"),
             "dbn": (-86.22, "DBN 500-2000, lower bound, Salakhutdinov & Murray 2008"),
             "dbm": (-84.62, "DBM 500-1000, lower bound, Salakhutdinov & Hinton 2009")}


def gentool(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "gentool", *args], env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"gentool {' '.join(args)} failed:\n{proc.stderr}")
    return proc


def train_until(args: list[str], env: dict[str, str], seconds: float | None) -> bool:
    """Run ``gentool train``; past ``seconds``, interrupt it as Ctrl-C would (it saves, then stops).

    Returns whether it was stopped early.
    """
    proc = subprocess.Popen([sys.executable, "-m", "gentool", *args], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    try:
        _, err = proc.communicate(timeout=seconds)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate()
        if "saved" not in err:
            raise SystemExit(f"gentool {' '.join(args)} was interrupted and saved nothing:\n{err}")
        return True
    if proc.returncode != 0:
        raise SystemExit(f"gentool {' '.join(args)} failed:\n{err}")
    return False




def epochs_done(model_runs: Path) -> int:
    """Epochs recorded in the newest run's metrics.jsonl under ``model_runs``."""
    logs = sorted(model_runs.glob("*/metrics.jsonl"), key=lambda f: f.stat().st_mtime)
    if not logs:
        return 0
    return sum(json.loads(line).get("type") == "epoch" for line in logs[-1].read_text().splitlines() if line)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rbm-epochs", type=int, default=20)
    p.add_argument("--dbn-epochs", type=int, default=10, help="split between the two layers")
    p.add_argument("--dbm-epochs", type=int, default=10)
    p.add_argument("--ais-runs", type=int, default=100)
    p.add_argument("--ais-steps", type=int, default=14500)
    p.add_argument("--only", choices=["rbm", "dbn", "dbm"])
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", default="fp32")
    p.add_argument("--binarize", choices=["sample", "threshold"], default="sample",
                   help="sample: one seeded Bernoulli draw per pixel, as the published marks; threshold: > 0.5")
    p.add_argument("--keep", type=Path, help="keep the runs in this folder (default: a temporary one)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="a model option on top of the plan (repeatable; e.g. --set k=25 --set method=cd)")
    p.add_argument("--lr", type=float, help="learning rate instead of the plan's")
    p.add_argument("--rbm-defaults", action="store_true",
                   help="train the rbm with its defaults alone (only --epochs and --seed; --set, --lr still apply)")
    p.add_argument("--seed", type=int, default=0, help="training seed (the evaluation's binarisation uses 0)")
    p.add_argument("--train-seconds", type=float,
                   help="stop training after this long (Ctrl-C: the run saves and stops) and evaluate what was saved")
    args = p.parse_args()
    if not MNIST.is_dir():
        print(f"skipped: MNIST not found at {MNIST}")
        return
    plans = {
        "rbm": ["--epochs", str(args.rbm_epochs), "--batch-size", "100", "--lr", "0.05",
                "--set", "hidden=500", "--set", "k=1", "--set", "momentum=0.5", "--set", f"binarize={args.binarize}"],
        "dbn": ["--epochs", str(args.dbn_epochs), "--batch-size", "100", "--lr", "0.05",
                "--set", "layers=500,2000", "--set", f"binarize={args.binarize}"],
        "dbm": ["--epochs", str(args.dbm_epochs), "--batch-size", "100", "--lr", "0.005",
                "--set", "layers=500,1000", "--set", f"binarize={args.binarize}"],
    }
    if args.rbm_defaults:
        plans["rbm"] = ["--epochs", str(args.rbm_epochs)] + (["--lr", "0"] if args.lr is not None else [])
    for model in plans:
        plans[model] += ["--seed", str(args.seed)]
        if args.lr is not None:
            i = plans[model].index("--lr")
            plans[model][i + 1] = str(args.lr)
        for kv in args.overrides:
            plans[model] += ["--set", kv]
    print(f"machine: {cpu_name()}, {os.cpu_count()} cores, torch threads from OMP_NUM_THREADS="
          f"{os.environ.get('OMP_NUM_THREADS', 'unset')}, load average {os.getloadavg()[0]:.1f} at the start",
          flush=True)
    with tempfile.TemporaryDirectory() as scratch:
        tmp = str(args.keep) if args.keep else scratch
        env = {**os.environ, "GENTOOL_RUNS": str(Path(tmp) / "runs"), "GENTOOL_CACHE": str(Path(tmp) / "cache"),
               "GENTOOL_PLUGINS": "boltzmann"}
        for model, extra in plans.items():
            if args.only and model != args.only:
                continue
            t = time.perf_counter()
            cmd = ["train", model, "--data", str(MNIST), "--device", args.device, "--precision", args.precision,
                   "-q", *extra]
            stopped = train_until(cmd, env, args.train_seconds)
            train_s = time.perf_counter() - t
            epochs = epochs_done(Path(tmp) / "runs" / model)
            t = time.perf_counter()
            out = gentool(["evaluate", model, "--json", "--device", args.device, "--ais-runs", str(args.ais_runs),
                           "--ais-steps", str(args.ais_steps)], env)
            eval_s = time.perf_counter() - t
            doc = json.loads(out.stdout)
            m = doc["metrics"]
            key = "test_log_likelihood_nats" if model == "rbm" else "test_log_likelihood_lower_bound"
            mark, source = PUBLISHED[model]
            device = pick_device(args.device).type  # what auto chose: the figures depend on it
            if m.get(key) is not None:
                z = "log_z_top" if model == "dbn" else "log_z"  # a DBN's AIS is for its top RBM
                print(f"{model}: {m[key]:.2f} nats on the MNIST test set ({z} {m[z]:.2f}, std {m[z + '_std']:.3f}, "
                      f"certain floor under log Z from the data {m['log_z_floor']:.2f}); published {mark} ({source})")
            else:  # AIS fell below the data's floor: the figure is withdrawn, only a ceiling is known
                print(f"{model}: no valid figure: {' '.join(doc.get('warnings') or [])}\n  published {mark} ({source})")
            load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
            if stopped:
                print(f"  stopped by --train-seconds {args.train_seconds:.0f} after {epochs} epochs "
                      f"(the learning-rate schedule had not run its course)")
            print(f"  budget: {' '.join(extra)}; {epochs} epochs done; training {train_s:.0f} s, "
                  f"evaluation {eval_s:.0f} s on {device} "
                  f"(precision {args.precision}, load average {load:.1f} at the end)")
            print("  " + json.dumps({k: v for k, v in m.items() if isinstance(v, (int, float))}), flush=True)


if __name__ == "__main__":
    main()
