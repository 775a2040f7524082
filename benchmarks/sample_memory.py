"""Peak memory of ``gentool sample -n N``: written in chunks (what the command does) against drawing
all N in memory first (``Model.sample(N).save(out)``, the peer: what the command did before), the
same checkpoint, seed and N, each in a fresh process whose peak resident set size is read back.

    python benchmarks/sample_memory.py [--n 20000 200000] [--model gan]

A gan is trained for one epoch on the embedded digits (8x8) in a temporary folder first. Chunked,
the peak should stay flat as N grows (one chunk of 16 MB of float images, at least 1,024); drawn in
memory, it grows with N.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import gentool, machine  # noqa: E402

PEAK = ("import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True, capture_output=True); "
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
IN_MEMORY = "import sys, gentool; gentool.load(sys.argv[1]).sample(int(sys.argv[2]), seed=0).save(sys.argv[3])"


def peak_mb(cmd: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Peak RSS in MB of ``cmd`` run in its own process, and its wall time in seconds."""
    t = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", PEAK, *cmd], env=env, capture_output=True, text=True, check=True)
    return int(out.stdout.strip()) / 1024, time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, nargs="+", default=[20_000, 200_000])
    ap.add_argument("--model", default="gan")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="sample-memory-"))
    env = {**os.environ, "GENTOOL_RUNS": str(work / "runs"), "GENTOOL_CACHE": str(work / "cache")}
    gentool(["train", args.model, "--epochs", "1", "--name", "m", "--device", "cpu", "-q",
             *(["--set", "val_samples=0"] if args.model in ("gan", "dcgan", "cgan") else [])], env)
    ckpt = str(next((work / "runs" / args.model / "m").glob("*.safetensors")))
    print(f"machine: {machine('cpu')}")
    print(f"\n| n | chunked (`gentool sample`) peak | in memory (`Model.sample(n).save`) peak | chunked time | in-memory time |")
    print("|---|---|---|---|---|")
    for n in args.n:
        chunked, tc = peak_mb([sys.executable, "-m", "gentool", "sample", args.model, "-c", ckpt, "-n", str(n),
                               "--device", "cpu", "-o", str(work / f"c{n}")], env)
        memory, tm = peak_mb([sys.executable, "-c", IN_MEMORY, ckpt, str(n), str(work / f"m{n}")], env)
        print(f"| {n:,} | {chunked:,.0f} MB | {memory:,.0f} MB | {tc:.0f} s | {tm:.0f} s |", flush=True)
    print(f"\n{args.model} on 8x8 digits, CPU; files under {work} (delete it when done)")


if __name__ == "__main__":
    main()
