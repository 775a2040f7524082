"""Harness overhead: gentool's DCGAN training throughput against a bare PyTorch loop, same networks.

    flock /tmp/gentool-bench.lock python benchmarks/gan_overhead.py [--data ../shared/data/mnist]
        [--images 12800] [--batch-size 64] [--repeats 3] [--threads 1] [--bf16] [--device cpu|cuda]

Both arms train the plugin's DCGAN (identical generator and discriminator, same batch size, same
data, non-saturating loss, Adam) for one epoch of ``--images`` images, in this one process,
alternating order each repeat; the median images/s of each arm is printed with the ratio.

- gentool arm: ``gentool.fit(GANTask(...), job)``, timed from the call to its return: device setup, seeded
  data order, the step with its NaN guards, the EMA generator update, metrics.jsonl, the epoch's
  sample grid (64 images), the loss plot and the last checkpoint (G, D, EMA G and both optimizers).
  Only the per-epoch Fréchet-distance validation is off (``val_samples=0``): it is a metric, not
  training, and the bare loop has none.
- bare arm: :func:`gan_reference.bare_loop`, the steps alone (no EMA, no saving).

``--bf16`` adds two arms: gentool with ``--precision bf16`` autocast, and the bare loop under the same
autocast; each is set against its own fp32 arm, so the bf16 gain is also measured without the harness.
Each arm first runs once untimed on 4 batches (imports, first calls). Threads default to 1: on a shared 2-core machine two threads per process oversubscribe the cores.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gan_reference import bare_loop, build_dcgan  # noqa: E402

MNIST = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mnist"


def gentool_arm(data, images: int, batch_size: int, precision: str, seed: int, device: str) -> float:
    """Seconds for one epoch of gentool's harness on ``data``."""
    from gentool import TrainJob, TrainOptions, build_config, fit, seed_everything
    from gentool.runs import new_run
    from gentool_gan.plugin import SPECS
    from gentool_gan.task import CONFIGS, GANTask

    spec = next(s for s in SPECS if s.name == "dcgan")
    cfg = build_config(CONFIGS["dcgan"], {"val_samples": 0})
    opts = TrainOptions(data=data.name, epochs=1, batch_size=batch_size, lr=2e-4, device=device,
                        precision=precision, seed=seed)
    seed_everything(seed)
    task = GANTask("dcgan", cfg, data, opts.lr)
    job = TrainJob(spec=spec, config=cfg, options=opts, data=data, run=new_run("dcgan"), quiet=True)
    t0 = time.perf_counter()
    result = fit(task, job)
    _sync(device)
    secs = time.perf_counter() - t0
    assert result.step == images // batch_size
    return secs


def bare_arm(data, images: int, batch_size: int, precision: str, seed: int, device: str) -> float:
    """Seconds for the bare loop's steps alone."""
    torch.manual_seed(seed)
    g, d = build_dcgan(data.shape)
    return bare_loop(g, d, data.images, steps=images // batch_size, batch_size=batch_size, seed=seed,
                     device=device, precision=precision)


def run_arm(arm: str, data, images: int, batch_size: int, seed: int, device: str) -> float:
    """Seconds for one run of ``arm`` ("gentool fp32", "bare bf16", ...)."""
    who, precision = arm.split()
    fn = gentool_arm if who == "gentool" else bare_arm
    return fn(data, images, batch_size, precision, seed=seed, device=device)


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=str(MNIST) if MNIST.is_dir() else "digits")
    p.add_argument("--images", type=int, default=12800, help="training images per run (one epoch)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--bf16", action="store_true", help="also time both arms with bf16 autocast")
    p.add_argument("--device", default="cpu", help="cpu or cuda: where both arms train")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    from gentool.data import load_dataset

    data = load_dataset(args.data, split="train")
    data = data.subset(slice(0, min(len(data), args.images)))
    images = (len(data) // args.batch_size) * args.batch_size
    arms = ["gentool fp32", "bare fp32"] + (["gentool bf16", "bare bf16"] if args.bf16 else [])
    times: dict[str, list[float]] = {a: [] for a in arms}
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["GENTOOL_RUNS"] = str(Path(tmp) / "runs")
        warm = data.subset(slice(0, 4 * args.batch_size))  # untimed: imports, first-call costs
        for arm in arms:
            run_arm(arm, warm, 4 * args.batch_size, args.batch_size, seed=0, device=args.device)
        for r in range(args.repeats):
            order = arms[r % len(arms):] + arms[: r % len(arms)]  # rotate who goes first
            for arm in order:
                secs = run_arm(arm, data, images, args.batch_size, seed=r, device=args.device)
                times[arm].append(secs)
                print(f"repeat {r + 1} {arm}: {images / secs:.1f} images/s ({secs:.2f} s)", flush=True)
    rate = {a: images / statistics.median(t) for a, t in times.items()}
    load = os.getloadavg()
    gpu = torch.cuda.get_device_name() if args.device.startswith("cuda") else "no GPU used"
    print(f"\nmachine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch "
          f"{torch.__version__}, {args.threads} thread(s), device {args.device} ({gpu}); "
          f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    print(f"data: {data.name} {tuple(data.shape)}, {images} images per run, batch {args.batch_size}, "
          f"median of {args.repeats}")
    for a in arms:
        print(f"{a:>13}: {rate[a]:8.1f} images/s")
    paired = [b / g for g, b in zip(times["gentool fp32"], times["bare fp32"])]
    print(f"gentool / bare loop (fp32): {rate['gentool fp32'] / rate['bare fp32']:.3f}x of the medians; "
          f"per repeat {', '.join(f'{r:.3f}' for r in paired)} (median {statistics.median(paired):.3f}x)")
    for who in ("gentool", "bare") if args.bf16 else ():
        pb = [f / b for f, b in zip(times[f"{who} fp32"], times[f"{who} bf16"])]
        print(f"{who} bf16 / fp32 ({args.device}): {rate[f'{who} bf16'] / rate[f'{who} fp32']:.3f}x of the medians; "
              f"per repeat {', '.join(f'{r:.3f}' for r in pb)} (median {statistics.median(pb):.3f}x)")


if __name__ == "__main__":
    main()
