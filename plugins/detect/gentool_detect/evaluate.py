"""``gentool evaluate detector``: accuracy, AUC, AP, EER and ECE (before and after calibration)
on the held-out test part of the detector's own pool, per-generator AUC, a reliability plot,
robustness to JPEG q75 / Gaussian blur / 0.5x resizing, the leave-one-generator-out table and a
GAN discriminator's scores beside it.

The pool is rebuilt from what the checkpoint records (the ``--data`` images, the ``fake_from``
generators and the seed), so the split is the training run's own: the test part was never seen
in training, calibration or epoch selection. (``--data`` given to evaluate is not used.)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

import gentool

from gentool_detect import metrics
from gentool_detect.augment import gaussian_blur, jpeg, resize_back
from gentool_detect.configs import DetectorConfig
from gentool_detect.data import Pool, build_pool, split
from gentool_detect.train import fit_plain, logits_of, make_net

BLUR_SIGMA = 1.0
JPEG_QUALITY = 75


def _sig(z: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-z))


def rebuild(ckpt: Any) -> tuple[Any, Pool, dict[str, np.ndarray], dict[str, Any]]:
    """The checkpoint's config, pool and split, rebuilt from its recorded source (returned too)."""
    cfg = gentool.config_from_dict(DetectorConfig, ckpt.config)
    src = ckpt.extra.get("source")
    if not src:
        raise gentool.CheckpointError(f"{ckpt.path} does not record where its images came from")
    real = gentool.load_dataset(src["data"], split="train", image_size=src["image_size"], channels=src["channels"])
    pool = build_pool(real, cfg, src["data"], int(src["seed"]))
    return cfg, pool, split(pool, cfg, int(src["seed"])), src


def degraded(images: torch.Tensor, kind: str) -> torch.Tensor:
    """Float copies of uint8 ``images`` after ``kind``: jpeg75, blur or resize05."""
    out = []
    for s in range(0, len(images), 256):
        x = images[s: s + 256].float() / 255.0
        x = jpeg(x, JPEG_QUALITY) if kind == "jpeg75" else gaussian_blur(x, BLUR_SIGMA) if kind == "blur" \
            else resize_back(x, 0.5)
        out.append(x)
    return torch.cat(out)


def reliability_plot(y: np.ndarray, before: np.ndarray, after: np.ndarray, target: Path) -> Path:
    """Observed fake rate against predicted probability, before and after calibration."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4.2, 4.0), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", label="perfect")
    for p, label in ((before, "before"), (after, "after")):
        rows = [r for r in metrics.reliability(y, p) if r["count"]]
        ax.plot([r["confidence"] for r in rows], [r["observed"] for r in rows], marker="o",
                label=f"{label} (ECE {metrics.ece(y, p):.3f})")
    ax.set_xlabel("predicted P(generated)")
    ax.set_ylabel("observed share generated")
    ax.set_title("detector reliability (test part)")
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(target)
    return target


def logo(cfg: Any, pool: Pool, parts: dict[str, np.ndarray], epochs: int, lr: float, batch: int,
         seed: int, device: str = "cpu") -> dict[str, float | None]:
    """AUC on each generator's test fakes (against the test reals) of a detector trained without it."""
    train, test = pool.take(parts["train"]), pool.take(parts["test"])
    out: dict[str, float | None] = {}
    for g, name in enumerate(pool.generators):
        keep = np.nonzero((train.source != g).numpy())[0]
        net = fit_plain(cfg, train.take(keep), epochs, lr, batch, seed, device).cpu()
        sel = np.nonzero(((test.source == -1) | (test.source == g)).numpy())[0]
        sub = test.take(sel)
        out[name] = metrics.auc(sub.labels.numpy(), logits_of(net, sub.images))
    return out


def evaluate(job: Any) -> Any:
    """The ``gentool_evaluate`` hook body for ``detector``."""
    ckpt, opts = job.checkpoint, job.options
    cfg, pool, parts, src = rebuild(ckpt)
    do_logo = bool(opts.logo_epochs) and len(pool.generators) >= 2
    test = pool.take(parts["test"])
    net = make_net(cfg, int(pool.images.shape[1]))
    ckpt.load_into({"detector": net})
    net.eval()
    t, b = float(net.temperature), float(net.bias)
    y = test.labels.numpy()
    z = logits_of(net, test.images)
    before, after = _sig(z), _sig(z / t + b)
    # Ranking metrics on the logits, not on probabilities: sigmoid saturates (float32 logits give
    # exactly 1.0 above about 17), and the ties it makes would change AUC, AP and EER.
    m: dict[str, Any] = {"accuracy": metrics.accuracy(y, after), "auc": metrics.auc(y, z),
                         "ap": metrics.average_precision(y, z), "eer": metrics.eer(y, z)}
    m.update({"ece_before": metrics.ece(y, before), "ece_after": metrics.ece(y, after), "temperature": t, "bias": b,
              "test_real": int((y == 0).sum()), "test_fake": int(y.sum())})
    warnings: list[str] = []
    for g, name in enumerate(pool.generators):
        sel = (test.source == -1) | (test.source == g)
        m[f"auc[{name}]"] = metrics.auc(y[sel.numpy()], z[sel.numpy()])
    if opts.robustness:
        for kind in ("jpeg75", "blur", "resize05"):
            zk = logits_of(net, degraded(test.images, kind))
            m[f"auc_{kind}"] = metrics.auc(y, zk)
            m[f"accuracy_{kind}"] = metrics.accuracy(y, _sig(zk / t + b))
    if do_logo:
        train_opts = ckpt.meta.get("train", {})
        table = logo(cfg, pool, parts, opts.logo_epochs, float(train_opts.get("lr", 1e-3)),
                     int(train_opts.get("batch_size", 64)), int(src["seed"]))
        for name, v in table.items():
            m[f"logo_auc[{name}]"] = v
        vals = [v for v in table.values() if v is not None]
        m["logo_auc_mean"] = float(np.mean(vals)) if vals else None
    if opts.discriminator:
        from gentool_detect.discriminator import Discriminator

        d = Discriminator(opts.discriminator)
        if tuple(d.shape) != tuple(test.images.shape[1:]):
            warnings.append(f"the discriminator takes {list(d.shape)} images, the test images are "
                            f"{list(test.images.shape[1:])}: no discriminator baseline")
        else:
            zd = -d(test.images.float() / 255.0).numpy()
            m["disc_auc"], m["disc_ap"] = metrics.auc(y, zd), metrics.average_precision(y, zd)
            m["disc_accuracy"] = metrics.accuracy(y, _sig(zd))
    settings = {"split": f"held-out test part of the training pool ({len(y)} images, seed {src['seed']})",
                "generators": ", ".join(pool.generators), "input": cfg.input,
                "robustness": f"JPEG q{JPEG_QUALITY}; Gaussian blur sigma {BLUR_SIGMA}; 0.5x bilinear resize and back",
                "calibration": "sigmoid(logit / T + b), T and b fitted by log-loss on the calib part"}
    settings["logo"] = "skipped: it needs fakes of two or more named generators, and --logo-epochs > 0"
    if do_logo:
        settings["logo"] = f"a fresh detector per left-out generator, {opts.logo_epochs} epochs, tested on its fakes"
    folder = Path(ckpt.path).parent
    if (folder / "config.toml").exists():
        try:
            settings["reliability_plot"] = str(reliability_plot(y, before, after, folder / "reliability.png"))
        except OSError as exc:
            warnings.append(f"could not write the reliability plot: {exc}")
    return gentool.EvaluateResult(metrics=m, settings=settings, warnings=warnings)
