"""GAN quality on real data: cgan class faithfulness and CAS on MNIST; dcgan's Fréchet distance
against a bare PyTorch DCGAN loop trained on the same data for the same number of steps.

    python benchmarks/gan_quality.py --only cgan-mnist  [--epochs 5]
    python benchmarks/gan_quality.py --only dcgan-mnist [--epochs 1] [--precision bf16]
    python benchmarks/gan_quality.py --only dcgan-cifar [--epochs 10] [--precision bf16] [--seeds 3]

gentool trains through the real command line (``gentool train``; the run keeps the best epoch by
the validation Fréchet distance, and samples from the EMA generator) and is scored with
``gentool evaluate --json``. The bare loop (:mod:`gan_reference`: textbook steps, no EMA, its
final weights) trains the plugin's identical DCGAN networks for exactly as many steps at the same
batch size and learning rate, and is scored with the same extractor on the same number of samples
against the same held-out split. "FD" is the Fréchet distance in the offline ``gentool-cnn``
feature space (named in the output), not Inception FID. The feature extractor is cached in
``$GENTOOL_CACHE`` (trained once per data set: minutes for MNIST on a CPU).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import SHARED, machine  # noqa: E402
from common import gentool as run_gentool  # noqa: E402
from gan_reference import bare_loop, build_dcgan  # noqa: E402

DATA = {"mnist": SHARED / "mnist", "cifar": SHARED / "cifar10-subset"}


DEVICE = "cpu"  # set from --device: where every arm trains and generates


def gentool(args: list[str], env: dict[str, str]) -> str:
    """The command line, on the chosen device."""
    return run_gentool([*args, "--device", DEVICE], env)




def cgan(data: Path, epochs: int, batch: int, n: int, env: dict[str, str]) -> None:
    t0 = time.perf_counter()
    gentool(["train", "cgan", "--data", str(data), "--epochs", str(epochs), "--batch-size", str(batch), "-q"], env)
    train_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    doc = json.loads(gentool(["evaluate", "cgan", "--json", "-n", str(n)], env))
    m = doc["metrics"]
    print(f"cgan on {data.name}: {epochs} epochs, batch {batch}, {doc['step']} steps at the kept checkpoint, "
          f"train wall {train_s:.0f} s, evaluate wall {time.perf_counter() - t0:.0f} s")
    print(f"  class faithfulness {m['class_faithfulness']:.4f} (worst class {m['class_faithfulness_worst_class']:.4f}) "
          f"by {m['classifier']} (its real test accuracy {m['classifier_test_accuracy']:.4f}), {m['n_fake']} samples")
    print(f"  CAS {m['cas']:.4f} vs real-data baseline {m['cas_real_baseline']:.4f} ({m['cas_images']} images, "
          f"{m['cas_epochs']} epochs each)")
    print(f"  FD {m['fd']:.3f}, KID {m['kid_mean']:.4f}, precision {m['precision']:.3f}, recall {m['recall']:.3f}, "
          f"density {m['density']:.3f}, coverage {m['coverage']:.3f} ({m['features']})")


def dcgan(data: Path, epochs: int, batch: int, n: int, env: dict[str, str], runs: Path, precision: str,
          seeds: int) -> None:
    import statistics

    from gentool.checkpoint import load_checkpoint
    from gentool.data import load_dataset
    from gentool.metrics import compute_image_metrics, get_extractor
    from gentool_gan.task import generate

    train, test = load_dataset(str(data), split="train"), load_dataset(str(data), split="test")
    ext = get_extractor(None, train)
    table: dict[str, list[dict]] = {}
    for seed in range(seeds):
        name = f"q{seed}"
        t0 = time.perf_counter()
        gentool(["train", "dcgan", "--data", str(data), "--epochs", str(epochs), "--batch-size", str(batch),
                 "--precision", precision, "--seed", str(seed), "--name", name, "-q"], env)
        g_secs = time.perf_counter() - t0
        best = json.loads(gentool(["evaluate", "dcgan", "--json", "-n", str(n), "-c", str(runs / f"dcgan/{name}/best.safetensors")], env))
        last = json.loads(gentool(["evaluate", "dcgan", "--json", "-n", str(n), "-c", str(runs / f"dcgan/{name}/last.safetensors")], env))
        steps = last["step"]
        best_epoch = load_checkpoint(runs / f"dcgan/{name}/best.safetensors").epoch

        torch.manual_seed(seed)
        g, d = build_dcgan(train.shape)
        b_secs = bare_loop(g, d, train.images, steps=steps, batch_size=batch, seed=seed, precision=precision,
                           device=DEVICE)
        g.cpu()
        bare = compute_image_metrics(test.images, generate(g, n, torch.Generator().manual_seed(0), torch.device("cpu"), 64), ext)
        # gentool's raw generator at the last step (no EMA), scored exactly like the bare loop's
        raw, _ = build_dcgan(train.shape)
        load_checkpoint(runs / f"dcgan/{name}/last.safetensors").load_into({"g": raw})
        raw_m = compute_image_metrics(test.images, generate(raw, n, torch.Generator().manual_seed(0),
                                                            torch.device("cpu"), 64), ext)

        print(f"dcgan on {data.name} ({tuple(train.shape)}), seed {seed}: {steps} steps of batch {batch} each arm, "
              f"{precision}, {n} samples vs {len(test)} held-out images, features {bare['features']}")
        rows = ((f"gentool best (epoch {best_epoch}, step {best['step']}, EMA)", "gentool best (EMA)", best["metrics"], ""),
                (f"gentool last (step {last['step']}, EMA)", "gentool last (EMA)", last["metrics"],
                 f"; train wall {g_secs:.0f} s incl. validation"),
                (f"gentool last (step {last['step']}, raw G, no EMA)", "gentool last (raw G)", raw_m, ""),
                ("bare loop (last step, no EMA)", "bare loop", bare, f"; train wall {b_secs:.0f} s"))
        for label, key, m, extra in rows:
            table.setdefault(key, []).append(m)
            print(f"  {label:<44} FD {m['fd']:8.3f}  KID {m['kid_mean']:.4f}  precision {m['precision']:.3f}  "
                  f"recall {m['recall']:.3f}{extra}", flush=True)
    if seeds > 1:
        print(f"over {seeds} seeds (mean, and the spread as the standard deviation):")
        for key, ms in table.items():
            parts = []
            for metric in ("fd", "precision", "recall"):
                vals = [m[metric] for m in ms]
                parts.append(f"{metric} {statistics.mean(vals):.3f} +- {statistics.stdev(vals):.3f}")
            print(f"  {key:<22} " + ", ".join(parts))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", choices=["cgan-mnist", "dcgan-mnist", "dcgan-cifar"], required=True)
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("-n", type=int, default=2000, help="generated samples scored")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--precision", choices=["fp32", "bf16"], default="fp32", help="dcgan: autocast of both arms")
    p.add_argument("--device", default="cpu", help="cpu or cuda: where both arms train")
    p.add_argument("--seeds", type=int, default=1, help="dcgan: repeat both arms with seeds 0..N-1 (GAN runs vary a lot)")
    args = p.parse_args()
    global DEVICE
    DEVICE = args.device
    torch.set_num_threads(args.threads)
    which = args.only.split("-")[1]
    data = DATA[which]
    if not data.is_dir():
        print(f"skipped: {data} not found")
        return
    with tempfile.TemporaryDirectory() as tmp:
        runs = Path(tmp) / "runs"
        env = {**os.environ, "GENTOOL_RUNS": str(runs), "GENTOOL_PLUGINS": "gan",
               "OMP_NUM_THREADS": str(args.threads)}
        print(f"machine: {machine(DEVICE)}")
        if args.only == "cgan-mnist":
            cgan(data, args.epochs or 5, args.batch_size, args.n, env)
        else:
            dcgan(data, args.epochs or (1 if which == "mnist" else 10), args.batch_size, args.n, env, runs, args.precision,
                  args.seeds)
        print(f"after: {machine(DEVICE)}")


if __name__ == "__main__":
    main()
