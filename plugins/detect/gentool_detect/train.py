"""Training the detector through the shared harness (``gentool.fit``).

Each epoch: binary cross-entropy on augmented training images; then ``validate()`` scores the
val part (AUC picks ``best.safetensors``) and fits the temperature on the calib part, so every
checkpoint carries the temperature that fits its own weights, and records ECE before and after.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import torch
import torch.nn.functional as F

import gentool
from gentool import StepContext, Task

from gentool_detect import metrics
from gentool_detect.augment import augment
from gentool_detect.calibrate import fit_temperature
from gentool_detect.data import Pool, build_pool, pool_meta, split
from gentool_detect.network import DetectorNet

EVAL_BATCH = 256


def make_net(cfg: Any, channels: int) -> DetectorNet:
    """The network ``cfg`` describes, for images of ``channels`` channels."""
    return DetectorNet(channels, cfg.input, cfg.spectrum, cfg.width)


@torch.no_grad()
def logits_of(net: DetectorNet, images: torch.Tensor, device: torch.device | None = None) -> np.ndarray:
    """Raw logits of uint8 (or float in [0, 1]) images, in batches, in eval mode."""
    device = device or next(net.parameters()).device
    was = net.training
    net.eval()
    out = []
    for s in range(0, len(images), EVAL_BATCH):
        x = images[s: s + EVAL_BATCH]
        x = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
        out.append(net(x.to(device)).float().cpu())
    net.train(was)
    return torch.cat(out).numpy() if out else np.zeros(0)


def calibrate(net: DetectorNet, pool: Pool) -> dict[str, float]:
    """Fit ``net.temperature`` and ``net.bias`` on ``pool``; return them and the ECE before and after
    (on ``pool`` itself: in-sample; ``gentool evaluate`` reports it on the test part)."""
    z = logits_of(net, pool.images)
    y = pool.labels.numpy()
    t, b = fit_temperature(z, y)
    net.temperature.fill_(t)
    net.bias.fill_(b)
    return {"temperature": t, "bias": b, "ece_before": metrics.ece(y, 1 / (1 + np.exp(-z))),
            "ece_after": metrics.ece(y, 1 / (1 + np.exp(-(z / t + b))))}


def detector_loss(net: DetectorNet, x: torch.Tensor, y: torch.Tensor, p_aug: float) -> torch.Tensor:
    """BCE of ``net`` on augmented ``x``."""
    if p_aug > 0:
        x = augment(x.cpu(), p_aug).to(x.device)
    return F.binary_cross_entropy_with_logits(net(x), y.float())


class DetectorTask(Task):
    """A detector over a labelled pool (1 = generated), best epoch by validation AUC."""

    #: val_auc, ties (common once AUC reaches 1) broken by the lower validation log-loss; the
    #: tie-breaker is scaled below the smallest AUC step of a validation part under 1000 x 1000.
    monitor = "val_select"
    monitor_mode = "max"

    def __init__(self, cfg: Any, pool: Pool, parts: dict[str, np.ndarray], lr: float, source: dict[str, Any]) -> None:
        self.cfg, self.pool, self.parts, self.lr, self.source = cfg, pool, parts, lr, source
        train = pool.take(parts["train"])
        self.data = gentool.ImageDataset(images=train.images, labels=train.labels, class_names=["real", "fake"],
                                         name="detector-train")
        self.net = make_net(cfg, int(pool.images.shape[1]))
        self.calibration: dict[str, float] = {}

    def modules(self) -> dict[str, torch.nn.Module]:
        return {"detector": self.net}

    def configure_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"adam": torch.optim.AdamW(self.net.parameters(), lr=self.lr, weight_decay=1e-4)}

    def training_step(self, batch: Any, ctx: StepContext) -> Mapping[str, Any]:
        x, y = batch
        loss = detector_loss(self.net, x, y, self.cfg.augment)
        ctx.step(loss, "adam")
        return {"loss": loss}

    def validate(self) -> dict[str, float]:
        val = self.pool.take(self.parts["val"])
        z = logits_of(self.net, val.images, self.device)
        yv = val.labels.numpy()
        score = metrics.auc(yv, z)
        score = float(score if score is not None else 0.5)
        loss = float(np.mean(np.logaddexp(0.0, z) - yv * z))
        self.calibration = calibrate(self.net, self.pool.take(self.parts["calib"]))
        return {"val_auc": score, "val_loss": loss, "val_select": score - 1e-7 * min(loss, 10.0), **self.calibration}

    def extra_state(self) -> dict[str, Any]:
        return {"calibration": dict(self.calibration)}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        # a checkpoint written after a resume, before the next validation, still says how it is calibrated
        self.calibration = {k: float(v) for k, v in (state.get("calibration") or {}).items()}

    def checkpoint_meta(self) -> dict[str, Any]:
        return {"pool": pool_meta(self.pool), "source": self.source, "calibration": dict(self.calibration),
                "input_size": int(self.pool.images.shape[-1]), "channels": int(self.pool.images.shape[1]),
                "split_sizes": {k: int(len(v)) for k, v in self.parts.items()}}


def train(job: Any) -> Any:
    """The ``gentool_train`` hook body for ``detector``."""
    cfg, opts = job.config, job.options
    source = {"data": opts.data, "fake_from": cfg.generators, "seed": int(opts.seed),
              "image_size": int(job.data.shape[-1]), "channels": int(job.data.shape[0])}
    pool = build_pool(job.data, cfg, opts.data, opts.seed)
    parts = split(pool, cfg, opts.seed)
    gentool.say(f"detector pool: {int((pool.labels == 0).sum())} real, {int(pool.labels.sum())} fake from "
                f"{', '.join(pool.generators)}; train {len(parts['train'])}, val {len(parts['val'])}, "
                f"calib {len(parts['calib'])}, test {len(parts['test'])}")
    return gentool.fit(DetectorTask(cfg, pool, parts, opts.lr, source), job)


def fit_plain(cfg: Any, pool: Pool, epochs: int, lr: float, batch_size: int, seed: int,
              device: str = "cpu") -> DetectorNet:
    """A detector trained without the harness (no run folder): for the leave-one-generator-out
    table and the benchmark. The same network, loss and augmentation as ``gentool train``."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    net = make_net(cfg, int(pool.images.shape[1])).to(device)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    net.train()
    n = len(pool)
    for _ in range(epochs):
        order = torch.randperm(n, generator=g)
        for s in range(0, n - batch_size + 1 if n >= batch_size else 1, batch_size):
            idx = order[s: s + batch_size]
            x = (pool.images[idx].float() / 255.0).to(device)
            loss = detector_loss(net, x, pool.labels[idx].to(device), cfg.augment)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    net.eval()
    return net
