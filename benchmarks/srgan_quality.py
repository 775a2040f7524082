"""srgan on real photos: the CIFAR-10 subset's test images shrunk x2 and x4 and restored.

    python benchmarks/srgan_quality.py [--scales 2 4] [--epochs 10] [--seed 0] [--device cpu|cuda]

For each scale, srgan trains through the real command line on the subset's 4,000 training images
(half the epochs pixel loss, half adversarial), then ``gentool evaluate srgan --json`` scores the
1,000 test images: PSNR and SSIM (8-bit, all channels) and the Fréchet distance to the originals
(offline gentool-cnn features, not Inception) of bicubic up-scaling, the pixel-loss stage
(SRResNet) and the adversarial stage. The peer is bicubic interpolation (PyTorch's, anti-aliased
shrink, plain bicubic restore), measured on the same images in the same run. Targets (issue 16):
the pixel stage beats bicubic PSNR by at least 1 dB; the adversarial stage has a lower FD than
the pixel stage.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from common import SHARED, gentool, machine  # noqa: E402




def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scales", type=int, nargs="+", default=[2, 4])
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0, help="training seed (the split and the test images do not change)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--set", dest="sets", action="append", default=[], help="extra srgan option key=value")
    args = ap.parse_args()
    data = SHARED / "cifar10-subset"
    if not data.is_dir():
        raise SystemExit(f"skipped: the CIFAR-10 subset is not at {data}")
    work = Path(tempfile.mkdtemp(prefix="srgan-bench-"))
    env = {**os.environ, "GENTOOL_RUNS": str(work / "runs"), "GENTOOL_CACHE": os.environ.get("GENTOOL_CACHE", str(work / "cache"))}
    print(f"machine: {machine(args.device)}")
    rows = []
    for scale in args.scales:
        t0 = time.perf_counter()
        sets = [a for s in [f"scale={scale}", *args.sets] for a in ("--set", s)]
        gentool(["train", "srgan", "--data", str(data), "--epochs", str(args.epochs), "--name", f"x{scale}",
                 "--seed", str(args.seed), "--device", args.device, "-q", *sets], env)
        minutes = (time.perf_counter() - t0) / 60
        doc = json.loads(gentool(["evaluate", "srgan", "-c", f"x{scale}", "--json", "-n", "1000",
                                  "--device", args.device], env))
        m = doc["metrics"]
        rows.append((scale, minutes, m))
        print(f"x{scale}: trained {args.epochs} epochs (seed {args.seed}) in {minutes:.1f} min; scored on {doc['settings']['images']}",
              flush=True)
    print()
    print("| scale | method | PSNR (dB) | SSIM | FD (gentool-cnn) |")
    print("|---|---|---|---|---|")
    for scale, _, m in rows:
        for name, label in (("bicubic", "bicubic (peer)"), ("pixel", "srgan pixel stage (SRResNet)"), ("gan", "srgan adversarial stage")):
            print(f"| x{scale} | {label} | {m[f'psnr_{name}']:.2f} | {m[f'ssim_{name}']:.3f} | {m[f'fd_{name}']:.2f} |")
    print()
    for scale, _, m in rows:
        gain = m["psnr_pixel"] - m["psnr_bicubic"]
        print(f"x{scale}: pixel stage vs bicubic {gain:+.2f} dB (target >= +1.00: {'met' if gain >= 1 else 'missed'}); "
              f"FD adversarial {m['fd_gan']:.2f} vs pixel {m['fd_pixel']:.2f} "
              f"(target lower: {'met' if m['fd_gan'] < m['fd_pixel'] else 'missed'})")


if __name__ == "__main__":
    main()
