"""cyclegan on the digit pair: MNIST (A) <-> MNIST-M-style digits on CIFAR patches (B), label preservation.

    OMP_NUM_THREADS=1 python benchmarks/cyclegan_digits.py [--epochs 4] [--epoch-images 4000] [--seed 0]
        [--set width=16 ...] [--device cpu|cuda] [--picture docs/cyclegan_digits.png]
        [--work DIR [--name digits] [--resume | --no-train]]

Trains through the real command line on the data set ``mnist-m-pair`` (built in memory from
../shared/data: 30,000 MNIST digits per domain for training, 5,000 per domain held out; B blends
each digit into a random CIFAR-10 patch as Ganin & Lempitsky built MNIST-M), each epoch drawing
``--epoch-images`` of each domain. Then ``gentool evaluate cyclegan --json`` on the held-out
images: label preservation both ways (the share of translations that a gentool-cnn classifier
trained on the target domain's real training images assigns to the source's digit), each
classifier's accuracy on its own domain's held-out images (the ceiling), FD both ways
(gentool-cnn features, not Inception), the cycle L1, and the wall time. Target (issue 16): label
preservation >= 0.90 both ways. ``--picture`` writes held-out A -> B and B -> A translations
(``gentool translate``'s before/after sheets, one above the other).

A run long enough to matter outlasts a session: ``--work DIR`` keeps the run in ``DIR/runs`` (a
fresh temporary folder otherwise), ``--resume`` continues the run ``--name`` there (exactly, with
the same ``--epochs``: stop it with Ctrl-C or SIGTERM, it saves), and ``--no-train`` only scores
it (and draws ``--picture``). The training time printed is that of this invocation alone.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from common import SHARED, gentool, machine  # noqa: E402

#: The networks the figures in docs/gan.md were made with (a CPU budget at 32 px).
DEFAULT_SETS = ["width=16", "d_width=16", "res_blocks=2"]


def picture(env: dict[str, str], work: Path, out: Path, device: str, name: str = "digits", count: int = 8) -> None:
    """Held-out sources of each domain and their translations, A -> B above B -> A, into ``out``."""
    import numpy as np
    import torch
    from PIL import Image

    from gentool_gan.digit_pair import load_mnist_m_pair

    test = load_mnist_m_pair("test")
    g = torch.Generator().manual_seed(0)
    sheets = []
    for direction, sel in (("a2b", test.labels < 10), ("b2a", test.labels >= 10)):
        images = test.images[sel][torch.randperm(int(sel.sum()), generator=g)[:count]]
        src = work / f"src_{direction}"
        src.mkdir(parents=True, exist_ok=True)
        for i, img in enumerate(images):
            Image.fromarray(img.permute(1, 2, 0).numpy()).save(src / f"{i}.png")
        gentool(["translate", str(src), "--direction", direction, "-c", name, "-o", str(work / direction),
                 "--device", device], env)
        with Image.open(work / direction / "sheet.png") as s:
            sheets.append(np.asarray(s.convert("RGB")))
    gap = np.full((4, sheets[0].shape[1], 3), 255, dtype=np.uint8)
    both = Image.fromarray(np.concatenate([sheets[0], gap, sheets[1]]))
    both = both.resize((both.width * 2, both.height * 2), Image.NEAREST)  # 32 px digits: twice as large to see
    out.parent.mkdir(parents=True, exist_ok=True)
    both.save(out)
    print(f"picture: {out} (rows: A sources, A -> B, B sources, B -> A)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--epoch-images", type=int, default=4000, help="images of each domain per epoch")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--seed", type=int, default=0, help="training seed (the held-out images do not change)")
    ap.add_argument("-n", type=int, default=2000, help="held-out images per domain to score")
    ap.add_argument("--set", dest="sets", action="append", default=None,
                    help=f"cyclegan option key=value (default: {' '.join(DEFAULT_SETS)})")
    ap.add_argument("--picture", type=Path, default=None, help="write the translations picture here")
    ap.add_argument("--work", type=Path, default=None, help="keep the run here (default: a fresh temporary folder)")
    ap.add_argument("--name", default="digits", help="the run's name in --work")
    how = ap.add_mutually_exclusive_group()
    how.add_argument("--resume", action="store_true", help="continue the run --name in --work (same --epochs)")
    how.add_argument("--no-train", action="store_true", help="only score the run --name in --work")
    args = ap.parse_args()
    if (args.resume or args.no_train) and args.work is None:
        raise SystemExit("--resume and --no-train need --work DIR, the folder of an earlier run")
    if not (SHARED / "mnist").is_dir() or not (SHARED / "cifar10-subset").is_dir():
        raise SystemExit(f"skipped: MNIST and the CIFAR-10 subset are not in {SHARED}")
    work = args.work if args.work is not None else Path(tempfile.mkdtemp(prefix="cyclegan-digits-"))
    work.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "GENTOOL_RUNS": str(work / "runs"),
           "GENTOOL_CACHE": os.environ.get("GENTOOL_CACHE", str(work / "cache"))}
    sets = DEFAULT_SETS if args.sets is None else args.sets
    print(f"machine: {machine(args.device)}")
    t0 = time.perf_counter()
    if args.resume:
        gentool(["train", "cyclegan", "--resume", args.name, "--epochs", str(args.epochs), "--device", args.device,
                 "-q"], env)
    elif not args.no_train:
        gentool(["train", "cyclegan", "--data", "mnist-m-pair", "--epochs", str(args.epochs), "--batch-size",
                 str(args.batch_size), "--set", f"epoch_images={args.epoch_images}", "--name", args.name,
                 "--seed", str(args.seed), "--device", args.device, "-q", *[a for s in sets for a in ("--set", s)]], env)
    train_min = (time.perf_counter() - t0) / 60
    if not args.no_train:
        what = (f"resumed to {args.epochs} epochs" if args.resume else
                f"trained {args.epochs} epochs x {args.epoch_images} images per domain, batch {args.batch_size}, "
                f"seed {args.seed}, {' '.join(sets)}")
        print(f"{what} in {train_min:.1f} min", flush=True)
    t1 = time.perf_counter()
    doc = json.loads(gentool(["evaluate", "cyclegan", "-c", args.name, "--json", "-n", str(args.n),
                              "--device", args.device], env))
    print(f"run {work / 'runs' / 'cyclegan' / args.name}: scored at step {doc.get('step')}", flush=True)
    eval_min = (time.perf_counter() - t1) / 60
    m, s = doc["metrics"], doc["settings"]
    print(f"evaluated in {eval_min:.1f} min (the classifiers train once, then come from the cache); {s['domains']}")
    print(f"classifiers: {s.get('label_classifiers', '-')}")
    print()
    print("| direction | label preservation | target classifier's accuracy (ceiling) | FD to target | "
          "FD source vs target | cycle L1 |")
    print("|---|---|---|---|---|---|")
    print(f"| A -> B (MNIST to MNIST-M) | {m['label_preservation_a2b']:.3f} | {m['classifier_test_accuracy_b']:.3f} | "
          f"{m['fd_a2b']:.1f} | {m['fd_a_vs_b']:.1f} | {m['cycle_l1_a']:.3f} |")
    print(f"| B -> A (MNIST-M to MNIST) | {m['label_preservation_b2a']:.3f} | {m['classifier_test_accuracy_a']:.3f} | "
          f"{m['fd_b2a']:.1f} | {m['fd_a_vs_b']:.1f} | {m['cycle_l1_b']:.3f} |")
    print()
    worst = min(m["label_preservation_a2b"], m["label_preservation_b2a"])
    print(f"label preservation >= 0.90 both ways (issue 16): {'met' if worst >= 0.9 else 'missed'} "
          f"(worst {worst:.3f}); training {train_min:.1f} min, evaluation {eval_min:.1f} min, {args.device}")
    if args.picture is not None:
        picture(env, work, args.picture, args.device, args.name)


if __name__ == "__main__":
    main()
