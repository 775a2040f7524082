"""Run by torchrun in test_training.py: trains in each process and saves each rank's weights.

``toy``: the toy plugin's generator (noise, an Adam optimizer, a scheduler), each rank seeded
differently, to show that rank 0's weights are broadcast and stay equal everywhere.
``linear``: a noise-free regression whose two-process run must equal one process with twice the
batch, which shows that gradients are averaged (not summed, not left alone).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "toy_plugin"))

import gentool_toy  # noqa: E402
import torch  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

from gentool.api import ModelSpec, TrainJob, TrainOptions  # noqa: E402
from gentool.data import load_dataset  # noqa: E402
from gentool.runs import Run  # noqa: E402
from gentool.training import Task, seed_everything  # noqa: E402


class LinearTask(Task):
    """Predict a digit's label from its pixels by least squares (a loss that averages over the batch)."""

    monitor = "loss"

    def __init__(self, data):
        self.data = data
        self.net = torch.nn.Linear(64, 1)

    def modules(self):
        return {"net": self.net}

    def configure_optimizers(self):
        return {"sgd": torch.optim.SGD(self.net.parameters(), lr=0.05, momentum=0.9)}

    def training_step(self, batch, ctx):
        x, y = batch
        loss = (self.net(x.flatten(1)).squeeze(1) - y.float() / 9).pow(2).mean()
        ctx.step(loss, "sgd")
        return {"loss": loss}


def train(mode: str, out: Path, batch_size: int, name: str) -> tuple[Task, int]:
    rank = int(os.environ.get("RANK", "0"))
    seed_everything(100 + rank)  # different initial weights per process: the harness must broadcast rank 0's
    data = load_dataset("digits")
    cfg = gentool_toy.ToyConfig(width=4)
    task = gentool_toy._task(cfg, data, 1e-2) if mode == "toy" else LinearTask(data)
    run = Run("toy", name, out / "runs" / "toy" / name)
    if rank == 0:
        run.dir.mkdir(parents=True, exist_ok=True)
    spec = ModelSpec(name="toy", family="test", summary="", config=gentool_toy.ToyConfig, plugin="toy")
    opts = TrainOptions(data="digits", epochs=2, batch_size=batch_size, lr=1e-2, device="cpu", seed=0, log_every=5)
    job = TrainJob(spec=spec, config=cfg, options=opts, data=data, run=run, quiet=True)
    init = {k: v.clone().contiguous() for k, v in task.modules()["net"].state_dict().items()}
    from gentool import fit

    result = fit(task, job)
    return task, result.step, init


def main(mode: str, out: Path) -> None:
    rank = int(os.environ["RANK"])
    task, steps, init = train(mode, out, 32, mode)
    weights = {k: v.contiguous() for k, v in task.modules()["net"].state_dict().items()}
    save_file(weights, str(out / f"{mode}-rank{rank}.safetensors"))
    save_file(init, str(out / f"{mode}-init{rank}.safetensors"))
    (out / f"{mode}-steps{rank}.txt").write_text(str(steps))


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]))
