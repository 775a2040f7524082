"""Run by torchrun in test_training.py: trains the toy task in each process, saves each rank's weights."""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "toy_plugin"))

import gentool_toy  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

from gentool.api import ModelSpec, TrainJob, TrainOptions  # noqa: E402
from gentool.data import load_dataset  # noqa: E402
from gentool.runs import Run  # noqa: E402
from gentool.training import seed_everything  # noqa: E402


def main(out: Path) -> None:
    rank = int(os.environ["RANK"])
    seed_everything(100 + rank)  # different initial weights per process: the harness must broadcast rank 0's
    cfg = gentool_toy.ToyConfig(width=4)
    data = load_dataset("digits")
    task = gentool_toy._task(cfg, data, 1e-2)
    init = {k: v.clone() for k, v in task.net.state_dict().items()}
    run = Run("toy", "ddp", out / "runs" / "toy" / "ddp")
    if rank == 0:
        run.dir.mkdir(parents=True)
    spec = ModelSpec(name="toy", family="test", summary="", config=gentool_toy.ToyConfig, plugin="toy")
    opts = TrainOptions(data="digits", epochs=2, batch_size=32, lr=1e-2, device="cpu", seed=0, log_every=5)
    job = TrainJob(spec=spec, config=cfg, options=opts, data=data, run=run, quiet=True)
    result = job.fit(task)
    save_file({k: v.contiguous() for k, v in task.net.state_dict().items()}, str(out / f"rank{rank}.safetensors"))
    save_file({k: v.contiguous() for k, v in init.items()}, str(out / f"init{rank}.safetensors"))
    (out / f"steps{rank}.txt").write_text(str(result.step))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
