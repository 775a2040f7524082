"""StyleGAN against DCGAN on little data, under the same wall-clock budget.

    python benchmarks/stylegan_quality.py [--minutes 20] [--seeds 3] [--first-seed 0] [--n 2000] [--device cpu]
                                          [--arms stylegan-ada,stylegan-none,dcgan] [--jobs 1] [--lr LR] [--set K=V]
                                          [--score last|best|both]
    python benchmarks/stylegan_quality.py --mnist [--minutes 20] [--seeds 1] [--n 2000] [--set KEY=VALUE ...]
                                          [--lr LR] [--no-peer]

On the CIFAR-10 subset in ``../shared/data/cifar10-subset`` (4,000 training images, 32x32 colour;
skipped with a message where it is absent) each arm trains through the real command line
(``gentool train``) for ``--minutes`` of wall-clock time, then is stopped with SIGTERM (gentool
saves the step it reached and exits 143), and its last checkpoint is scored with ``gentool
evaluate --json -n N`` against the 1,000 test images:

- ``stylegan-ada``: ``gentool train stylegan`` with its defaults (ADA, chosen for a data set this small);
- ``stylegan-none``: the same with ``--set augment=none``, so the gain of ADA is measured;
- ``dcgan``: ``gentool train dcgan`` with its defaults;
- ``stylegan-small`` (only when asked for with ``--arms``): ADA, ``width=16``, ``max_width=64``;
- ``stylegan-small-none`` (only when asked for): the same half widths with ``--set augment=none``.

``--mnist`` instead trains class-conditional stylegan on MNIST (``../shared/data/mnist``, 28 px,
60,000 images: ``augment=auto`` picks none) for ``--minutes`` (a quarter of the default widths,
``width=8 max_width=32``, and ``--lr 0.0025`` unless ``--set``/``--lr`` say otherwise), stops it
with SIGTERM and scores its last checkpoint against the 10,000 test digits: class faithfulness (the
share of samples the data set's ``gentool-cnn`` classifier assigns to the label asked for; the
target is 0.98), its worst class, the judge's test accuracy, FD, precision and recall. The peer,
measured in the same run with the same budget, judge and seed: ``gentool train cgan`` with its
defaults (``--no-peer`` skips it).

``--jobs 2`` trains two arms at once (each a one-thread process: on a 2-core machine with
``OMP_NUM_THREADS=1`` every arm then shares the machine alike, so the equal budget stays fair);
``--first-seed K`` starts the seeds at K, so one comparison can be split over several runs.

An arm that fails (its training stops before the budget, or its evaluation fails) is reported
and left out of the table; the others finish and are scored, and the script then exits with 1.

``--score best`` scores each arm's ``best.safetensors`` instead (the epoch whose validation FD,
on training images, was lowest: what ``gentool sample`` and ``evaluate`` use by default; the last
checkpoint where no epoch finished), ``--score both`` prints both tables; the default, ``last``, is
the step the clock stopped.

Per-epoch validation is on for every arm (the defaults), so it costs each arm alike. "FD" is the
Fréchet distance in the offline ``gentool-cnn`` feature space of the data set (named in the output),
not Inception FID; precision and recall are Kynkäänniemi et al.'s in that space. The table gives
each seed's FD, the mean and standard deviation over seeds, and mean precision and recall.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from common import SHARED, gentool, machine  # noqa: E402

CIFAR = SHARED / "cifar10-subset"
ARMS = {
    "stylegan-ada": ["stylegan", "--set", "augment=ada"],
    "stylegan-none": ["stylegan", "--set", "augment=none"],
    "dcgan": ["dcgan"],
    # not in the default set: half the default widths, about a quarter of the arithmetic per step
    "stylegan-small": ["stylegan", "--set", "augment=ada", "--set", "width=16", "--set", "max_width=64"],
    # the same half widths with augmentation off: ADA's gain at the width that trains on a CPU
    "stylegan-small-none": ["stylegan", "--set", "augment=none", "--set", "width=16", "--set", "max_width=64"],
}
DEFAULT_ARMS = ["stylegan-ada", "stylegan-none", "dcgan"]

MNIST = SHARED / "mnist"
#: A quarter of the default widths and half the default learning rate: ~145 images/s on one CPU
#: thread, 4 epochs in 25 minutes (half widths at lr 0.005 saw 0.9 epoch in 20 and collapsed).
MNIST_FLAGS = ["--set", "width=8", "--set", "max_width=32"]
MNIST_LR = 0.0025


def train_for(arm: str, seed: int, minutes: float, device: str, env: dict[str, str], runs: Path,
              data: Path = CIFAR, flags: list[str] | None = None, extra: list[str] | None = None) -> Path:
    """Train ``arm`` for ``minutes`` of wall clock, stop it with SIGTERM; its last checkpoint.
    ``flags`` replace the arm's own (``arm`` is then the model); ``extra`` are added to them."""
    model, *arm_flags = ARMS[arm] if flags is None else [arm, *flags]
    arm_flags = [*arm_flags, *(extra or [])]
    name = f"{arm}-s{seed}"
    cmd = [sys.executable, "-m", "gentool", "train", model, "--data", str(data), "--epochs", "100000",
           "--seed", str(seed), "--device", device, "--name", name, "-q", *arm_flags]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        proc.wait(timeout=minutes * 60)
        _, err = proc.communicate()
        raise SystemExit(f"{arm} stopped before its budget (exit {proc.returncode}):\n{err[-3000:]}")
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=600)
    last = runs / model / name / "last.safetensors"
    if proc.returncode == -signal.SIGTERM:
        raise SystemExit(f"{arm}: the budget ({minutes:g} min) ran out before training started; give it more")
    if proc.returncode != 143 or not last.exists():
        raise SystemExit(f"{arm}: expected a SIGTERM save (exit 143), got {proc.returncode}:\n{err[-3000:]}")
    return last


def warm_extractor(env: dict[str, str], data: Path = CIFAR) -> str:
    """Train (or load) the data set's gentool-cnn feature extractor before any clock starts: the
    per-epoch validation of whichever arm ran first would otherwise pay for it within its budget."""
    os.environ["GENTOOL_CACHE"] = env["GENTOOL_CACHE"]
    import gentool
    from gentool.metrics import get_extractor

    return get_extractor(None, gentool.load_dataset(str(data), split="train")).name


def bench_env(prefix: str) -> tuple[dict[str, str], Path]:
    """The environment of the arms' commands (a fresh runs folder, the gan plugin only, the shared
    extractor cache, one torch thread unless told otherwise) and that runs folder."""
    runs = Path(tempfile.mkdtemp(prefix=prefix)) / "runs"
    env = {**os.environ, "GENTOOL_RUNS": str(runs), "GENTOOL_PLUGINS": "gan"}
    env.setdefault("GENTOOL_CACHE", str(Path.home() / ".cache" / "gentool"))
    env.setdefault("OMP_NUM_THREADS", "1")
    return env, runs


def mnist(args: argparse.Namespace, env: dict[str, str], runs: Path) -> None:
    """Class-conditional stylegan on MNIST for ``--minutes``, and cgan for as long: class
    faithfulness against 0.98."""
    flags = MNIST_FLAGS if args.set is None else [f for kv in args.set for f in ("--set", kv)]
    flags = [*flags, "--lr", str(args.lr if args.lr is not None else MNIST_LR)]
    arms = {"stylegan": flags, **({} if args.no_peer else {"cgan": []})}
    print(f"machine: {machine(args.device)}")
    print(f"feature extractor and judge: {warm_extractor(env, MNIST)} (cached in {env['GENTOOL_CACHE']})", flush=True)
    print(f"budget: {args.minutes:g} min of training per arm and seed; stylegan flags {' '.join(flags)}; "
          f"{args.n} samples against the MNIST test split; runs in {runs}", flush=True)
    rows = []
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        for model, arm_flags in arms.items():
            t0 = time.perf_counter()
            last = train_for(model, seed, args.minutes, args.device, env, runs, data=MNIST, flags=arm_flags)
            train_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            extra = ["--psis", ""] if model == "stylegan" else ["--cas", "false"]  # CAS: minutes, not compared
            doc = json.loads(gentool(["evaluate", model, "-c", str(last), "--json", "-n", str(args.n), *extra,
                                      "--seed", str(seed), "--device", args.device], env))
            m, s = doc["metrics"], doc["settings"]
            rows.append((model, seed, doc.get("step"), train_s, time.perf_counter() - t0, m, s))
            print(f"  {model} seed {seed}: step {doc.get('step')}, faithfulness {m['class_faithfulness']:.4f}, "
                  f"FD {m['fd']:.2f} ({train_s:.0f} s training)", flush=True)
    judge = rows[0][6].get("classifier", "?")
    print(f"\nclass-conditional models on MNIST 28 px, {args.minutes:g} min of training each; judge {judge} "
          f"(test accuracy {rows[0][5].get('classifier_test_accuracy', float('nan')):.4f}); FD in its feature space\n")
    print("| model | seed | steps | train wall s | class faithfulness | worst class | FD | precision | recall | evaluate s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for model, seed, step, train_s, eval_s, m, _ in rows:
        print(f"| {model} | {seed} | {step} | {train_s:.0f} | {m['class_faithfulness']:.4f} | "
              f"{m['class_faithfulness_worst_class']:.4f} | {m['fd']:.2f} | {m['precision']:.3f} | "
              f"{m['recall']:.3f} | {eval_s:.0f} |")
    for model in arms:
        got = [r[5]["class_faithfulness"] for r in rows if r[0] == model]
        print(f"{model}: mean class faithfulness {statistics.mean(got):.4f} (target >= 0.98: "
              f"{'met' if statistics.mean(got) >= 0.98 else 'missed'})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=20.0, help="wall-clock training budget of each arm and seed")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--first-seed", type=int, default=0,
                    help="seeds first-seed .. first-seed+seeds-1 (to split one comparison over several runs)")
    ap.add_argument("--n", type=int, default=2000, help="generated images scored per arm")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--arms", default=",".join(DEFAULT_ARMS), help=f"comma-separated, of {', '.join(ARMS)}")
    ap.add_argument("--jobs", type=int, default=1,
                    help="arms trained at once (CIFAR only; 2 on a 2-core machine with OMP_NUM_THREADS=1)")
    ap.add_argument("--mnist", action="store_true",
                    help="instead: class-conditional stylegan on MNIST 28 px, class faithfulness (target 0.98)")
    ap.add_argument("--set", action="append", metavar="KEY=VALUE",
                    help="with --mnist: stylegan options instead of width=8 max_width=32; on CIFAR: options added "
                         "to the stylegan arms' own (repeatable)")
    ap.add_argument("--lr", type=float, default=None,
                    help=f"stylegan's learning rate (CIFAR: the stylegan arms, default the model's; --mnist: default {MNIST_LR})")
    ap.add_argument("--no-peer", action="store_true", help="with --mnist: skip the cgan arm")
    ap.add_argument("--score", choices=("last", "best", "both"), default="last",
                    help="CIFAR: score the step the clock stopped (last), the epoch validation liked best "
                         "(best.safetensors, as gentool sample/evaluate do), or both")
    args = ap.parse_args()
    if args.mnist:
        if not MNIST.is_dir():
            print(f"skipped: MNIST is not at {MNIST} (see ../shared/data/README)")
            return
        return mnist(args, *bench_env("stylegan-mnist-"))
    if not CIFAR.is_dir():
        print(f"skipped: the CIFAR-10 subset is not at {CIFAR} (see ../shared/data/README)")
        return
    arms = [a.strip() for a in args.arms.split(",") if a.strip()]
    unknown = set(arms) - set(ARMS)
    if unknown:
        raise SystemExit(f"unknown arm(s) {sorted(unknown)}; choose from {list(ARMS)}")
    env, runs = bench_env("stylegan-bench-")
    print(f"machine: {machine(args.device)}")
    print(f"feature extractor: {warm_extractor(env)} (trained once, cached in {env['GENTOOL_CACHE']})", flush=True)
    last_seed = args.first_seed + args.seeds - 1
    stylegan_extra = [*(["--lr", str(args.lr)] if args.lr is not None else []),
                      *[f for kv in args.set or [] for f in ("--set", kv)]]
    if stylegan_extra:
        print(f"stylegan arms: {' '.join(stylegan_extra)}", flush=True)
    print(f"budget: {args.minutes:g} min of training per arm and seed; seeds {args.first_seed}..{last_seed}; "
          f"{args.n} samples each against the {CIFAR.name} test split; runs in {runs}")
    if args.jobs > 1:
        print(f"{args.jobs} arms at a time, each on {env['OMP_NUM_THREADS']} torch thread(s): every arm shares "
              "the machine alike, so the equal budget stays fair", flush=True)

    kinds = ["last", "best"] if args.score == "both" else [args.score]

    def score(arm: str, seed: int, ckpt: Path, kind: str, t0: float) -> dict:
        doc = json.loads(gentool(["evaluate", ARMS[arm][0], "-c", str(ckpt), "--json", "-n", str(args.n),
                                  "--seed", str(seed), "--device", args.device], env))
        m = doc["metrics"]
        m["step"] = doc.get("step")
        m["features"] = doc["settings"].get("features")
        m["augment"] = doc["settings"].get("augment", "-")
        print(f"  {arm} seed {seed} ({kind}): step {m['step']}, FD {m['fd']:.2f}, precision {m['precision']:.3f}, "
              f"recall {m['recall']:.3f}, augment {m['augment']} ({time.perf_counter() - t0:.0f} s)", flush=True)
        return m

    def one(arm: str, seed: int) -> dict[str, dict] | str:
        """The arm's metrics per checkpoint kind, or why it failed (the other arms go on)."""
        try:
            return train_and_score(arm, seed)
        except SystemExit as exc:
            print(f"  {arm} seed {seed} FAILED: {exc}", flush=True)
            return str(exc).strip().splitlines()[-1] if str(exc).strip() else "failed"

    def train_and_score(arm: str, seed: int) -> dict[str, dict]:
        t0 = time.perf_counter()
        extra = stylegan_extra if ARMS[arm][0] == "stylegan" else []
        last = train_for(arm, seed, args.minutes, args.device, env, runs, extra=extra)
        best = last.with_name("best.safetensors")
        ckpts = {"last": last, "best": best if best.exists() else last}  # no epoch validated: best is last
        scored: dict[Path, dict] = {}  # a checkpoint that is both is scored once
        for kind in kinds:
            if ckpts[kind] not in scored:
                scored[ckpts[kind]] = score(arm, seed, ckpts[kind], kind, t0)
        return {kind: scored[ckpts[kind]] for kind in kinds}

    todo = [(arm, seed) for seed in range(args.first_seed, args.first_seed + args.seeds) for arm in arms]
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:  # threads: each arm is a subprocess
        done = list(pool.map(lambda job: one(*job), todo))
    failed = [(arm, seed, ms) for (arm, seed), ms in zip(todo, done) if isinstance(ms, str)]
    for kind in kinds:
        results: dict[str, list[dict]] = {a: [] for a in arms}
        for (arm, _), ms in zip(todo, done):
            if not isinstance(ms, str):
                results[arm].append(ms[kind])
        features = next((r[0]["features"] for r in results.values() if r), "?")
        print(f"\n{kind} checkpoints: FD in {features} space (not Inception FID); {args.minutes:g} min per arm and seed\n")
        print("| arm | steps | FD per seed | FD mean ± std | precision | recall |")
        print("|---|---|---|---|---|---|")
        for arm, rs in results.items():
            if not rs:
                print(f"| {arm} | - | failed on every seed | - | - | - |")
                continue
            fds = [r["fd"] for r in rs]
            spread = statistics.stdev(fds) if len(fds) > 1 else 0.0
            print(f"| {arm} | {' / '.join(str(r['step']) for r in rs)} | {' / '.join(f'{x:.2f}' for x in fds)} | "
                  f"{statistics.mean(fds):.2f} ± {spread:.2f} | {statistics.mean(r['precision'] for r in rs):.3f} | "
                  f"{statistics.mean(r['recall'] for r in rs):.3f} |")
    if failed:
        print("\nfailed (not in the table): " + "; ".join(f"{arm} seed {seed}: {why}" for arm, seed, why in failed))
        raise SystemExit(1)


if __name__ == "__main__":
    main()
