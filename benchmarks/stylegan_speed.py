"""StyleGAN training throughput at 32 and 64 px, fp32 against bf16, with dcgan measured beside it.

    python benchmarks/stylegan_speed.py [--device cuda] [--sizes 32 64] [--models stylegan,dcgan]
                                        [--precisions fp32,bf16] [--seconds 8] [--repeats 2] [--images N]
                                        [--set KEY=VALUE ...] [--threads 1]

Each (model, image size, precision) trains through gentool's harness (``gentool.fit``: the real
step with its loss checks, the EMA generator, metrics.jsonl; only the per-epoch Fréchet validation
is off, it is a metric, not training) for whole epochs of the training split (``--images`` fewer),
as many as fill about ``--seconds``. Each epoch ends with what real training does then (its sample
grid and checkpoint, dcgan's batch-norm recalibration), so the figure is what a user's run gets.
The model's command-line defaults throughout (batch size, learning rate; widths unless ``--set``
says otherwise). Data: the CIFAR-10 subset of ``../shared/data`` resized to each size (the digits
built into gentool where it is absent; the content does not change the arithmetic). A short
untimed epoch first (8 steps: imports, first calls) sizes the timed run; each configuration is
timed ``--repeats`` times, in rotating order, and the median images/s printed with the bf16 / fp32
ratio of each model and size. Stopped early (Ctrl-C, a time limit's SIGTERM), it still prints the
table of the runs that finished.

Why: StyleGAN's modulated convolutions are the arithmetic a GPU's matrix units speed up under bf16,
where the small dcgan of this plugin was bound by kernel launches (docs/gan.md measured bf16 at
0.9x for dcgan on an H200); this says whether that holds for stylegan and at which size.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from common import SHARED, machine  # noqa: E402

CIFAR = SHARED / "cifar10-subset"


def load(size: int):
    """The training images at ``size`` px (CIFAR subset where present, else the built-in digits)."""
    import gentool

    spec = str(CIFAR) if CIFAR.is_dir() else "digits"
    return gentool.load_dataset(spec, split="train", image_size=size, channels=3)


def run_epochs(model: str, data, images: int, epochs: int, precision: str, device: str,
               sets: dict[str, str]) -> tuple[float, int, int]:
    """Seconds for ``epochs`` epochs of ``images`` images of ``model`` through gentool's harness,
    its steps and its batch size."""
    import torch

    from gentool import TrainJob, TrainOptions, build_config, fit, seed_everything
    from gentool.runs import new_run
    from gentool_gan.stylegan_train import StyleGANTask
    from gentool_gan.task import GANTask

    spec = model_spec(model)
    overrides = {"val_samples": 0, **(sets if model == "stylegan" else {})}
    cfg = build_config(spec.config, overrides)
    part = data.subset(slice(0, images))
    opts = TrainOptions(data=data.name, epochs=epochs, batch_size=spec.batch_size, lr=spec.lr, device=device,
                        precision=precision, seed=0)
    seed_everything(0)
    task = (StyleGANTask(cfg, part, opts.lr, opts.batch_size) if model == "stylegan"
            else GANTask(model, cfg, part, opts.lr))
    job = TrainJob(spec=spec, config=cfg, options=opts, data=part, run=new_run(model), quiet=True)
    t0 = time.perf_counter()
    result = fit(task, job)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - t0, result.step, spec.batch_size


def model_spec(model: str):
    """``model``'s spec in the GAN plugin (its command-line defaults: batch size, learning rate)."""
    from gentool_gan.plugin import SPECS

    return next(s for s in SPECS if s.name == model)


def measure(args: argparse.Namespace, sets: dict[str, str], models: list[str], precisions: list[str],
            rates: dict[tuple[str, int, str], list[float]]) -> None:
    """Time every configuration ``--repeats`` times into ``rates`` (images/s), printing each run."""
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["GENTOOL_RUNS"] = str(Path(tmp) / "runs")
        for size in args.sizes:
            data = load(size)
            configs = [(m, size, p) for m in models for p in precisions]
            plan: dict[tuple[str, int, str], tuple[int, int]] = {}  # images per epoch, epochs
            for key in configs:  # untimed, one short epoch: first calls; also sizes the timed run
                model, _, precision = key
                batch = model_spec(model).batch_size
                per_epoch = min(len(data), args.images or len(data)) // batch * batch
                warm = min(per_epoch, 8 * batch)
                secs, _, _ = run_epochs(model, data, warm, 1, precision, args.device, sets)
                plan[key] = (per_epoch, max(1, round(args.seconds / (secs * per_epoch / warm))))
            for r in range(args.repeats):
                order = configs[r % len(configs):] + configs[: r % len(configs)]
                for key in order:
                    per_epoch, epochs = plan[key]
                    secs, steps, batch = run_epochs(key[0], data, per_epoch, epochs, key[2], args.device, sets)
                    assert steps == epochs * (per_epoch // batch), (steps, epochs, per_epoch, batch)
                    rate = epochs * per_epoch / secs
                    rates.setdefault(key, []).append(rate)
                    print(f"{key[0]} {size} px {key[2]}: {rate:.1f} images/s ({epochs} x {per_epoch} images, "
                          f"{steps} steps of {batch}, {secs:.2f} s)", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--sizes", type=int, nargs="+", default=[32, 64])
    ap.add_argument("--models", default="stylegan,dcgan")
    ap.add_argument("--precisions", default="fp32,bf16")
    ap.add_argument("--seconds", type=float, default=8.0, help="about how long each timed run lasts (whole epochs)")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--images", type=int, default=0, help="images per epoch (default: the whole training split)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a stylegan option")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    import torch

    from gentool.training import TrainingInterrupted

    torch.set_num_threads(args.threads)
    sets = dict(kv.split("=", 1) for kv in args.set)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    precisions = [p.strip() for p in args.precisions.split(",") if p.strip()]
    print(f"machine: {machine(args.device)}", flush=True)
    rates: dict[tuple[str, int, str], list[float]] = {}
    try:
        measure(args, sets, models, precisions, rates)
    except (KeyboardInterrupt, TrainingInterrupted) as exc:  # a time limit's SIGTERM: keep what was measured
        print(f"\nstopped early ({exc.__class__.__name__}): the table holds the runs that finished", flush=True)
    print(f"\ndata: {'CIFAR-10 subset' if CIFAR.is_dir() else 'built-in digits'} resized; each model's default "
          f"batch size; stylegan options {sets or 'default'}; median of {args.repeats} (of fewer where a cell "
          f"says so); {args.device}\n")
    print("| model | size | " + " | ".join(f"{p} images/s" for p in precisions)
          + (" | bf16 / fp32 |" if {"fp32", "bf16"} <= set(precisions) else " |"))
    print("|---|---|" + "---|" * len(precisions) + ("---|" if {"fp32", "bf16"} <= set(precisions) else ""))
    for model in models:
        for size in args.sizes:
            got = {p: rates.get((model, size, p), []) for p in precisions}
            med = {p: statistics.median(r) for p, r in got.items() if r}
            cells = ["-" if p not in med else f"{med[p]:,.0f}"
                     + ("" if len(got[p]) == args.repeats else f" ({len(got[p])} of {args.repeats})") for p in precisions]
            row = f"| {model} | {size} | " + " | ".join(cells)
            if {"fp32", "bf16"} <= set(precisions):
                row += f" | {med['bf16'] / med['fp32']:.2f}x" if {"fp32", "bf16"} <= set(med) else " | -"
            print(row + " |")


if __name__ == "__main__":
    main()
