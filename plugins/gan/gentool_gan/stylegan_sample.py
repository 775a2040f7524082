"""``gentool sample stylegan`` and ``gentool evaluate stylegan``: the EMA generator of a checkpoint.

Sampling draws one z per image from the core's generator (``torch.randn(z_dim)`` per image, so
a request split into several calls gives the same images as one call), or with ``--seeds`` from
``torch.Generator().manual_seed(seed)`` per image: image i comes from seed i, whatever ``-n`` and
whatever else is drawn. The per-layer noise is the network's fixed noise, so a seed always gives
the same image (on a given device). ``--trunc psi`` pulls w towards the running mean of w (the
class's mean for a conditional model): psi 0 gives the average image. ``--mix`` writes a
style-mixing table, ``--interpolate`` a walk in w space; both are pictures of the whole request,
written by the call that holds its first sample.

Evaluation reports the usual image metrics at psi 1 and, for each ``--psis`` value, the Fréchet
distance and precision/recall/density/coverage (``fd_psi0.7``, ...), and for a conditional model
class faithfulness (``class_faithfulness_psi0.7``): the truncation trade-off (fidelity up,
diversity down as psi falls), also drawn as ``truncation.png`` in the run folder.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from torch import nn

from gentool import ConfigError, EvaluateResult, GentoolError, SampleResult

from gentool_gan.configs import MAX_WHOLE_REQUEST, parse_seeds
from gentool_gan.evaluate import class_faithfulness, label_judge, label_scores
from gentool_gan.sampling import load_generator, parse_label, write_gif

#: Most source images per side of the --mix table when they come from --seeds.
MAX_MIX_SIDE = 32


def latents(n: int, z_dim: int, generator: torch.Generator) -> torch.Tensor:
    """``n`` latents drawn one image at a time from ``generator`` (CPU): chunk-independent."""
    if n == 0:
        return torch.zeros(0, z_dim)
    return torch.stack([torch.randn(z_dim, generator=generator) for _ in range(n)])


def seed_latents(seeds: list[int], z_dim: int) -> torch.Tensor:
    """One latent per seed: the first draw of ``torch.Generator().manual_seed(seed)``."""
    return latents(0, z_dim, torch.Generator()) if not seeds else torch.stack(
        [torch.randn(z_dim, generator=torch.Generator().manual_seed(s)) for s in seeds])


@torch.no_grad()
def render(g: nn.Module, ws: torch.Tensor, device: torch.device, batch: int = 256) -> torch.Tensor:
    """Images in [0, 1] on the CPU from per-layer latents ``ws`` ``[N, num_ws, w_dim]`` (fixed noise)."""
    out = [((g.synthesis(ws[s : s + batch].to(device), noise="const").float() + 1) / 2).clamp_(0, 1).cpu()
           for s in range(0, len(ws), batch)]
    return torch.cat(out) if out else torch.zeros(0)


@torch.no_grad()
def to_ws(g: nn.Module, z: torch.Tensor, y: torch.Tensor | None, psi: float, device: torch.device,
          batch: int = 1024) -> torch.Tensor:
    """Truncated per-layer latents ``[N, num_ws, w_dim]`` on the CPU for latents ``z`` and labels ``y``."""
    out = []
    for s in range(0, len(z), batch):
        yb = y[s : s + batch].to(device) if y is not None else None
        out.append(g.ws(z[s : s + batch].to(device), yb, psi).cpu())
    return torch.cat(out) if out else torch.zeros(0, g.num_ws, g.mapping.w_avg.shape[1])


def images_for(g: nn.Module, z: torch.Tensor, y: torch.Tensor | None, psi: float, device: torch.device) -> torch.Tensor:
    return render(g, to_ws(g, z, y, psi, device), device)


def check_whole_request(flag: str, total: int) -> None:
    if total > MAX_WHOLE_REQUEST:
        raise ConfigError(f"{flag} draws one picture of the whole request: -n {total} is too many (at most {MAX_WHOLE_REQUEST})")


def sample(job: Any) -> SampleResult:
    """The ``gentool_sample`` hook body for stylegan."""
    opts = job.options  # StyleGANSampleOptions
    g, cfg, num_classes, names = load_generator("stylegan", job.checkpoint, job.device)
    first = int(getattr(job, "first", 0) or 0)
    total = int(getattr(job, "total", None) or (first + job.n))
    whole = first == 0 and total == job.n
    psi = float(opts.trunc)
    label: int | str | None = None
    if opts.label is not None:
        if not num_classes:
            raise ConfigError("this stylegan is unconditional (trained without labels, or with cond=false): "
                              "--label needs a conditional checkpoint")
        label = parse_label(opts.label, num_classes, names)
    seeds = parse_seeds(opts.seeds) if opts.seeds is not None else None

    if opts.mix:
        return mixing_table(g, cfg, job, num_classes, label, seeds, psi, first, total)
    if opts.interpolate:
        return interpolation(g, cfg, job, num_classes, label, seeds, psi, first, total)

    if seeds is not None:
        chosen = seeds if whole else seeds[first : first + job.n]
        z = seed_latents(chosen, cfg.z_dim)
    else:
        z = latents(job.n, cfg.z_dim, job.generator)
    m = len(z)
    if not num_classes:
        return SampleResult(images=images_for(g, z, None, psi, job.device))
    nrow = None
    if label == "all":
        labels = torch.arange(num_classes).repeat_interleave(m)  # a row of the same latents per class
        z = z.repeat(num_classes, 1)
        nrow = m
    elif label is not None:
        labels = torch.full((m,), int(label), dtype=torch.long)
    else:
        labels = (first + torch.arange(m)) % num_classes  # balanced over the whole request
        nrow = num_classes if m >= num_classes and first == 0 else None
    return SampleResult(images=images_for(g, z, labels, psi, job.device), labels=labels, nrow=nrow)


def source_labels(count: int, num_classes: int | None, label: int | str | None) -> torch.Tensor | None:
    if not num_classes:
        return None
    if isinstance(label, int):
        return torch.full((count,), label, dtype=torch.long)
    return torch.arange(count) % num_classes


def mixing_table(g: nn.Module, cfg: Any, job: Any, num_classes: int | None, label: int | str | None,
                 seeds: list[int] | None, psi: float, first: int, total: int) -> SampleResult:
    """Rows take the coarse styles (the first half of the layers: pose, shape) from one latent,
    columns the fine ones (the rest: stroke, colour) from another. ``style_mixing.png`` has the
    row sources down the left, the column sources along the top; the samples are the cells."""
    check_whole_request("--mix", total)
    if label == "all":
        raise ConfigError("--mix takes one --label (or none), not 'all'")
    if seeds is not None:
        if len(seeds) > MAX_MIX_SIDE:
            raise ConfigError(f"--mix with --seeds: at most {MAX_MIX_SIDE} seeds (each is a row and a column)")
        z_rows = z_cols = seed_latents(seeds, cfg.z_dim)
    else:
        side = max(2, math.isqrt(total))
        gen = torch.Generator().manual_seed(job.seed)  # the whole table, whichever call draws it
        z_rows, z_cols = latents(side, cfg.z_dim, gen), latents(side, cfg.z_dim, gen)
    rows = to_ws(g, z_rows, source_labels(len(z_rows), num_classes, label), psi, job.device)
    cols = to_ws(g, z_cols, source_labels(len(z_cols), num_classes, label), psi, job.device)
    r, c = len(rows), len(cols)
    cut = g.mix_cut
    cells = torch.cat([rows[:, None, :cut].expand(r, c, -1, -1), cols[None, :, cut:].expand(r, c, -1, -1)], dim=2)
    images = render(g, cells.reshape(r * c, g.num_ws, -1), job.device)
    files: list[Path] = []
    if first == 0:
        from gentool import save_grid

        row_imgs, col_imgs = render(g, rows, job.device), render(g, cols, job.device)
        blank = torch.zeros_like(images[:1])
        table = [blank, col_imgs]
        for i in range(r):
            table += [row_imgs[i : i + 1], images[i * c : (i + 1) * c]]
        path = Path(job.out) / "style_mixing.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        files.append(save_grid(torch.cat(table), path, nrow=c + 1))
    return SampleResult(images=images[first : first + job.n] if first else images, nrow=c, files=files)


def interpolation(g: nn.Module, cfg: Any, job: Any, num_classes: int | None, label: int | str | None,
                  seeds: list[int] | None, psi: float, first: int, total: int) -> SampleResult:
    """A walk through ``--keyframes`` random points (or the ``--seeds``' latents, in order), linear
    in w space (where StyleGAN's latent space is closest to flat); one row per class with
    ``--label all``."""
    check_whole_request("--interpolate", total)
    if seeds is not None:
        if job.options.keyframes is not None:
            raise ConfigError("--interpolate walks through the --seeds given, or through --keyframes random points: not both")
        if len(seeds) < 2:
            raise ConfigError("--interpolate with --seeds needs at least two seeds to walk between")
        keys_z = seed_latents(seeds, cfg.z_dim)
    else:
        gen = torch.Generator().manual_seed(job.seed)  # the whole walk, whichever call draws it
        keys_z = latents(job.options.keyframes or 4, cfg.z_dim, gen)
    keyframes = len(keys_z)
    classes: list[int | None] = (list(range(num_classes)) if label == "all" else
                                 [int(label) if isinstance(label, int) else 0] if num_classes else [None])
    t = torch.linspace(0, keyframes - 1, total)
    seg = t.floor().clamp(max=keyframes - 2).long()
    frac = (t - seg)[:, None, None]
    rows = []
    for cls in classes:
        y = torch.full((keyframes,), cls, dtype=torch.long) if cls is not None else None
        keys = to_ws(g, keys_z, y, psi, job.device)
        rows.append(render(g, keys[seg] * (1 - frac) + keys[seg + 1] * frac, job.device))
    files: list[Path] = []
    if first == 0:
        frames = [torch.stack([row[i] for row in rows]) for i in range(total)]
        files.append(write_gif(frames, Path(job.out) / "interpolation.gif", nrow=len(rows)))
    part = [row[first : first + job.n] for row in rows]
    images = torch.cat(part)
    labels = torch.tensor(classes).repeat_interleave(len(part[0])) if num_classes else None
    return SampleResult(images=images, labels=labels, nrow=len(part[0]), files=files)


def evaluate(job: Any) -> EvaluateResult:
    """The ``gentool_evaluate`` hook body for stylegan."""
    from gentool.metrics import (compute_image_metrics, frechet_distance, get_extractor,
                                 precision_recall_density_coverage)

    g, cfg, num_classes, _ = load_generator("stylegan", job.checkpoint, job.device)
    test = job.data
    if tuple(test.shape) != tuple(job.checkpoint.data["shape"]):
        raise GentoolError(f"the evaluation images are {tuple(test.shape)}, the model makes {tuple(job.checkpoint.data['shape'])}")
    train = job.split("train")
    labels = torch.arange(job.n) % num_classes if num_classes else None
    z = latents(job.n, cfg.z_dim, torch.Generator().manual_seed(job.seed))
    fake = images_for(g, z, labels, 1.0, job.device)
    ext = get_extractor(job.features, train, device=job.device)
    metrics: dict[str, Any] = compute_image_metrics(test.images, fake, ext)
    settings = {"sampler": "g_ema (EMA generator), fixed noise, psi 1", "features": metrics.pop("features")}
    extra = job.checkpoint.extra or {}
    if "augment" in extra:
        settings["augment"] = f"{extra['augment']} (final ADA p {extra.get('ada_p', 0):.3f})" if extra["augment"] == "ada" else extra["augment"]

    judge = label_judge(ext, train, job.device) if num_classes else None
    if judge is not None:
        metrics.update(label_scores(judge, fake, labels, test))
        settings["classifier"] = judge.name

    psis = sorted({float(p) for p in job.options.psis})
    if psis:
        real = ext.features(test.images)
        rows = []
        for psi in psis:
            key = f"psi{psi:g}"
            if psi == 1.0:  # the samples scored above: their figures, not a second pass
                prdc = {name: metrics[name] for name in ("fd", "precision", "recall", "density", "coverage")}
                faithful = metrics.get("class_faithfulness")
            else:
                images = images_for(g, z, labels, psi, job.device)
                ff = ext.features(images)
                prdc = {"fd": frechet_distance(real, ff), **precision_recall_density_coverage(real, ff)}
                faithful = class_faithfulness(judge, images, labels)[0] if judge is not None else None
            for name in ("fd", "precision", "recall", "density", "coverage"):
                metrics[f"{name}_{key}"] = prdc[name]
            if faithful is not None:  # conditional: truncation towards each class's mean w
                metrics[f"class_faithfulness_{key}"] = faithful
            rows.append((psi, prdc["fd"], prdc["precision"], prdc["recall"], faithful))
        plot = truncation_plot(rows, Path(job.checkpoint.path).parent / "truncation.png", settings["features"])
        if plot is not None:
            settings["truncation_plot"] = str(plot)
    return EvaluateResult(metrics=metrics, settings=settings)


def truncation_plot(rows: list[tuple[float, float, float, float, float | None]], path: Path,
                    features: str) -> Path | None:
    """FD and precision/recall (and class faithfulness, for a conditional model) against psi, as a
    PNG; ``None`` where the run folder is not writable."""
    import io

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from gentool import write_atomic

    psi = [r[0] for r in rows]
    fig = Figure(figsize=(7, 3.5), dpi=100)
    FigureCanvasAgg(fig)
    fig.subplots_adjust(left=0.09, right=0.98, bottom=0.15, top=0.88, wspace=0.3)
    ax = fig.add_subplot(1, 2, 1)
    ax.plot(psi, [r[1] for r in rows], "o-")
    ax.set_xlabel("truncation psi")
    ax.set_ylabel("Fréchet distance")
    ax.set_title(f"FD ({features})", fontsize=8)
    ax.grid(alpha=0.3)
    ax = fig.add_subplot(1, 2, 2)
    ax.plot(psi, [r[2] for r in rows], "o-", label="precision")
    ax.plot(psi, [r[3] for r in rows], "s-", label="recall")
    faithful = all(r[4] is not None for r in rows)
    if faithful:
        ax.plot(psi, [r[4] for r in rows], "^-", label="class faithfulness")
    ax.set_xlabel("truncation psi")
    ax.set_ylim(0, 1.02)
    ax.legend(loc="best", fontsize=8)
    ax.grid(alpha=0.3)
    ax.set_title("precision / recall" + (" / class faithfulness" if faithful else ""), fontsize=8)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    try:
        write_atomic(path, buf.getvalue())
    except OSError:
        return None
    return path
