"""Training throughput of gentool's harness against a bare PyTorch loop over the same network.

    python benchmarks/harness_overhead.py [--steps 468] [--repeats 3] [--device cpu]

Both train the same small convolutional classifier on MNIST-sized images (the real MNIST from
../shared/data when it is there, random images of the same shape otherwise) with the same batch
size, data order and optimizer. The bare loop does what a hand-written script does (index,
convert, forward, backward, step, read the loss); the harness adds its progress, logging,
NaN guard and per-epoch checkpoint. Prints images/s of each (median of the repeats, run
alternately) and their ratio, and which device gave the figures.
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
from torch import nn

ROOT = Path(__file__).resolve().parents[1]


def make_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 32, 3, 2, 1), nn.LeakyReLU(0.2), nn.Conv2d(32, 64, 3, 2, 1), nn.BatchNorm2d(64),
        nn.LeakyReLU(0.2), nn.Flatten(), nn.Linear(64 * 7 * 7, 10),
    )


def load_images(n: int):
    from gentool.data import ImageDataset, load_dataset

    mnist = ROOT.parent / "shared" / "data" / "mnist"
    if mnist.is_dir():
        ds = load_dataset(str(mnist))
        return ds.subset(slice(0, n)), "MNIST (../shared/data)"
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 1, 28, 28), generator=g, dtype=torch.uint8)
    labels = torch.randint(0, 10, (n,), generator=g)
    return ImageDataset(images, labels, [str(i) for i in range(10)], "random"), "random 28x28 images"


def bare_loop(data, steps: int, batch: int, device: torch.device) -> float:
    net = make_net().to(device)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    images, labels = data.images, data.labels
    order = torch.randperm(len(data), generator=torch.Generator().manual_seed(0))
    t = time.perf_counter()
    for i in range(steps):
        idx = order[i * batch : (i + 1) * batch]
        x = images[idx].to(device).float().div_(255)
        y = labels[idx].to(device)
        loss = nn.functional.cross_entropy(net(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        loss.item()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return steps * batch / (time.perf_counter() - t)


def harness(data, steps: int, batch: int, device: torch.device) -> float:
    from gentool.api import ModelSpec, TrainJob, TrainOptions
    from gentool.runs import Run
    from gentool.training import Task, fit

    class Classify(Task):
        def __init__(self):
            self.data, self.net = data, make_net()

        def modules(self):
            return {"net": self.net}

        def configure_optimizers(self):
            return {"adam": torch.optim.Adam(self.net.parameters(), lr=1e-3)}

        def training_step(self, b, ctx):
            x, y = b
            loss = nn.functional.cross_entropy(self.net(x), y)
            ctx.step(loss, "adam")
            return {"loss": loss}

    with tempfile.TemporaryDirectory() as tmp:
        run = Run("bench", "r", Path(tmp) / "r")
        opts = TrainOptions(epochs=1, batch_size=batch, device=device.type, sample_count=0)
        job = TrainJob(ModelSpec("bench", "bench", ""), None, opts, data, run, quiet=True)
        t = time.perf_counter()
        fit(Classify(), job)
        if device.type == "cuda":
            torch.cuda.synchronize()
        return steps * batch / (time.perf_counter() - t)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=468, help="default: one MNIST epoch at batch 128")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args()
    device = torch.device(args.device)
    data, source = load_images(args.steps * args.batch_size)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({platform.machine()}, {os.cpu_count()} cores, {torch.get_num_threads()} threads)"
    print(f"device: {where}; torch {torch.__version__}; data: {source}; {args.steps} steps of {args.batch_size}")
    bare_loop(data, 20, args.batch_size, device)  # warm-up: imports, allocator, kernels
    harness(data.subset(slice(0, 20 * args.batch_size)), 20, args.batch_size, device)
    bare, ours = [], []
    for _ in range(args.repeats):
        bare.append(bare_loop(data, args.steps, args.batch_size, device))
        ours.append(harness(data, args.steps, args.batch_size, device))
    b, o = statistics.median(bare), statistics.median(ours)
    print(f"bare PyTorch loop   {b:10,.0f} images/s  (runs: {', '.join(f'{x:,.0f}' for x in bare)})")
    print(f"gentool harness     {o:10,.0f} images/s  (runs: {', '.join(f'{x:,.0f}' for x in ours)})")
    print(f"ratio harness/bare  {o / b:10.3f}  (includes the harness's per-epoch checkpoint and log)")


if __name__ == "__main__":
    sys.exit(main())
