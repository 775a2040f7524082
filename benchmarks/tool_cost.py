"""What one ``gentool serve`` tool request costs: seconds per input megapixel of the ``upscale`` and
``detect`` tools, through the tools themselves (what ``POST /v1/tools/NAME`` runs in its worker
thread), so that ``--max-pixels`` can be set from figures (README, serve section).

The networks' sizes are the defaults (srgan width 32, 6 blocks, at x2 and x4; the detector's width
32); their weights do not change the time, so srgan is untrained and the detector trained for one
epoch on synthetic squares (a few seconds). Each figure is the median of REPEATS calls on a
SIDE x SIDE image, scaled to one megapixel (the work is per tile: linear in pixels).

    python benchmarks/tool_cost.py [--side 512] [--repeats 3]
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import tempfile
import time
from pathlib import Path

from common import machine


def _png(side: int) -> bytes:
    import numpy as np
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (side, side, 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def _srgan(path: Path, scale: int) -> Path:
    from gentool_gan import srgan
    from gentool_gan.srgan_config import SRGANConfig

    from gentool.checkpoint import save_checkpoint
    from gentool.config import config_to_dict

    cfg = SRGANConfig(scale=scale)
    g, d = srgan.build((3, 32, 32), cfg)
    meta = {"model": "srgan", "plugin": "gan", "config": config_to_dict(cfg), "step": 1, "epoch": 1,
            "data": {"name": "cifar10", "shape": [3, 32, 32], "kind": "image"}}
    return save_checkpoint(path, {"g": g, "d": d, "g_pixel": g}, meta)


def _detector(base: Path) -> Path:
    import numpy as np
    from PIL import Image

    import gentool

    rng = np.random.default_rng(0)
    for kind in ("real", "fake"):
        (base / "rf" / kind).mkdir(parents=True)
    for i in range(40):
        real = np.asarray(Image.fromarray(rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)).resize((32, 32)))
        fake = np.asarray(Image.fromarray(real).resize((16, 16)).resize((32, 32), Image.Resampling.NEAREST))
        Image.fromarray(real).save(base / "rf" / "real" / f"{i}.png")
        Image.fromarray(fake).save(base / "rf" / "fake" / f"{i}.png")
    return gentool.train("detector", data=str(base / "rf"), epochs=1, batch_size=16, quiet=True).checkpoint


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--side", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    import gentool

    tools = gentool.list_tools()
    image = _png(args.side)
    per_mp = 1e6 / (args.side * args.side)
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        os.environ["GENTOOL_RUNS"] = str(base / "runs")
        os.environ["GENTOOL_CACHE"] = str(base / "cache")
        cases = [(f"upscale x{s} (srgan width 32, 6 blocks)", "upscale", {"checkpoint": str(_srgan(base / f"sr{s}.safetensors", s))})
                 for s in (2, 4)]
        detector = str(_detector(base))
        cases += [("detect (detector width 32)", "detect", {"checkpoint": detector}),
                  ("detect with heatmap", "detect", {"checkpoint": detector, "heatmap": True})]
        print(machine())
        for label, name, options in cases:
            tools[name]([("warm.png", _png(64))], options)  # load once, as the server keeps it loaded
            times = []
            for _ in range(args.repeats):
                t = time.perf_counter()
                answer = tools[name]([("x.png", image)], options)[0]
                times.append(time.perf_counter() - t)
                assert answer.error is None, answer.error
            print(f"{label:45s} {statistics.median(times) * per_mp:7.1f} s per input megapixel "
                  f"({args.side}x{args.side}: {', '.join(f'{t:.2f}' for t in times)} s)")


if __name__ == "__main__":
    main()
