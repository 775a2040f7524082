"""``gentool sample cyclegan``, ``gentool evaluate cyclegan`` and ``gentool translate``.

Samples: held-out source images (``testA``/``testB`` where the data has them) and their
translations; ``compare.png`` puts each source above its translation. Evaluate, on held-out images
of both domains: the Fréchet distance of the translations to the real images of the target domain
(gentool-cnn features of the evaluation data), the same for the untranslated sources (the
distance the model has to close), the cycle reconstruction error (mean absolute error in
[0, 1]) both ways, and where both domains carry the same labels (``mnist-m-pair``) label
preservation both ways (:mod:`gentool_gan.cyclegan_labels`).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import torch

from gentool import config_from_dict

from gentool_gan import cyclegan
from gentool_gan.cyclegan_config import CycleGANConfig
from gentool_gan.cyclegan_data import domain_images, domain_labels, held_out_names, label_names
from gentool_gan.cyclegan_task import translate


def load_generators(ckpt: Any, device: torch.device) -> tuple[dict[str, torch.nn.Module], CycleGANConfig, tuple[str, str]]:
    """``{"a2b": g_ab, "b2a": g_ba}`` of a cyclegan checkpoint on ``device``, its config and domain names."""
    cfg = config_from_dict(CycleGANConfig, ckpt.config)
    shape = tuple(ckpt.data["shape"])

    def networks() -> dict[str, torch.nn.Module]:
        nets = cyclegan.build(shape, cfg)
        return {k: v for k, v in nets.items() if k.startswith("g_") or any(t.startswith(k + ".") for t in ckpt.tensor_shapes)}

    nets = ckpt.build(networks)
    extra = ckpt.extra or {}
    names = (str(extra.get("domain_a", "A")), str(extra.get("domain_b", "B")))
    return {"a2b": nets["g_ab"].to(device).eval(), "b2a": nets["g_ba"].to(device).eval()}, cfg, names


def _held_out(ckpt: Any, direction: str) -> torch.Tensor:
    """The source domain's held-out images (testA/testB, or the test split), else its training images."""
    from gentool_gan.sampling import held_out_data

    extra = ckpt.extra or {}
    a, b = str(extra.get("domain_a")), str(extra.get("domain_b"))

    def source(ref: Any) -> torch.Tensor:
        ha, hb = held_out_names(ref, a, b)
        return domain_images(ref, ha if direction == "a2b" else hb)

    return source(held_out_data(ckpt, usable=source))


def sample(job: Any) -> Any:
    """The ``gentool_sample`` hook body for ``cyclegan``."""
    from gentool import SampleResult, save_grid

    from gentool_gan.sampling import request_indices

    nets, _, _ = load_generators(job.checkpoint, job.device)
    direction = job.options.direction
    src = _held_out(job.checkpoint, direction)
    x = src[request_indices(len(src), job)].float() / 255
    out = translate(nets[direction], x, job.device)
    files = []
    if getattr(job, "first", 0) == 0:
        k = min(8, len(x))
        files.append(save_grid(torch.cat([x[:k], out[:k]]), Path(job.out) / "compare.png", nrow=k))
    return SampleResult(images=out, files=files)


def evaluate(job: Any) -> Any:
    """The ``gentool_evaluate`` hook body for ``cyclegan``."""
    from gentool import EvaluateResult
    from gentool.metrics import frechet_distance, get_extractor

    nets, _, (a, b) = load_generators(job.checkpoint, job.device)
    ha, hb = held_out_names(job.data, a, b)
    real_a, real_b = domain_images(job.data, ha), domain_images(job.data, hb)
    g = torch.Generator().manual_seed(job.seed)
    ia, ib = torch.randperm(len(real_a), generator=g)[: job.n], torch.randperm(len(real_b), generator=g)[: job.n]
    real_a, real_b = real_a[ia].float() / 255, real_b[ib].float() / 255
    fake_b, fake_a = translate(nets["a2b"], real_a, job.device), translate(nets["b2a"], real_b, job.device)
    back_a, back_b = translate(nets["b2a"], fake_b, job.device), translate(nets["a2b"], fake_a, job.device)
    ext = get_extractor(job.features, job.data, device=job.device)
    fa, fb = ext.features(real_a), ext.features(real_b)
    metrics = {
        "fd_a2b": float(frechet_distance(fb, ext.features(fake_b))),
        "fd_b2a": float(frechet_distance(fa, ext.features(fake_a))),
        "fd_a_vs_b": float(frechet_distance(fa, fb)),
        "cycle_l1_a": float((back_a - real_a).abs().mean()),
        "cycle_l1_b": float((back_b - real_b).abs().mean()),
    }
    settings = {"domains": f"A = {ha} ({len(real_a)} images), B = {hb} ({len(real_b)} images) of {job.data.name}",
                "split": f"{ha} and {hb}" + (" (held out)" if (ha, hb) != (a, b) or job.data_split == "test" else ""),
                "features": getattr(ext, "name", str(ext)),
                "fd_a_vs_b": "the distance between the real domains: what translation has to close"}
    labels = label_names(job.data, ha, hb)
    if labels is None:
        settings["label_preservation"] = ("skipped: the domains carry no per-image labels (classes DOMAIN:LABEL "
                                          "with the same labels in both, as mnist-m-pair has, give them)")
    else:
        from gentool_gan.cyclegan_labels import label_metrics

        truth = (domain_labels(job.data, ha, labels)[ia], domain_labels(job.data, hb, labels)[ib])
        more, why = label_metrics(nets, job.split("train"), (a, b), labels, (real_a, real_b), truth, job.device)
        metrics.update(more)
        settings.update(why)
    warnings = ["scored on training images: the data has no held-out images of these domains"] \
        if (ha, hb) == (a, b) and job.data_split == "train" else []
    return EvaluateResult(metrics=metrics, settings=settings, warnings=warnings)


def _check_direction(direction: str) -> None:
    from gentool import ConfigError

    if direction not in ("a2b", "b2a"):
        raise ConfigError(f"--direction must be a2b or b2a, got {direction!r}")


class Translator:
    """A cyclegan checkpoint's generator for one direction, ready to translate images one by one
    (what ``gentool translate`` and the ``translate`` tool of ``gentool serve`` run per file)."""

    def __init__(self, checkpoint: str | None, *, direction: str = "a2b", native: bool = False,
                 device: str = "auto"):
        import gentool
        from gentool import load_checkpoint, pick_device

        _check_direction(direction)
        self.path = gentool.resolve_checkpoint("cyclegan", checkpoint)
        ckpt = load_checkpoint(self.path, model="cyclegan")
        self.device = pick_device(device)
        nets, _, names = load_generators(ckpt, self.device)
        self.g, self.direction, self.native = nets[direction], direction, native
        self.channels, self.side = int(ckpt.data["shape"][0]), int(ckpt.data["shape"][-1])
        names = tuple(n[len("train"):] if names == ("trainA", "trainB") else n for n in names)  # A and B
        self.source, self.target = names if direction == "a2b" else names[::-1]

    def __call__(self, source: Path | bytes) -> tuple[torch.Tensor, torch.Tensor, Any, dict[str, Any]]:
        """The image as read (at the scale used), its translation, its alpha (or None) and what to
        report of it; :class:`~gentool_gan.upscale.BadImage` for a file that cannot be read or is too large."""
        from gentool_gan.upscale import MAX_OUTPUT_PIXELS, BadImage, read_image

        x, alpha = read_image(source, self.channels, 1)
        h, w = x.shape[-2:]
        if not self.native:  # the scale the model was trained at: the shorter side to its side
            k = self.side / min(h, w)
            nh, nw = max(4, round(h * k)), max(4, round(w * k))
            if nh * nw > MAX_OUTPUT_PIXELS:
                raise BadImage(f"{w}x{h} at the training scale would be {nw}x{nh}: at most "
                               f"{MAX_OUTPUT_PIXELS:,} pixels (crop it, or use --native)")
            x = torch.nn.functional.interpolate(x, size=(nh, nw), mode="bilinear", antialias=True, align_corners=False)
        # sides must divide by 4 and be at least 8 (two stride-2 stages, then 3x3 reflection padding
        # and instance norm need 2 x 2): pad by replication, crop after
        ph, pw = (max(8, x.shape[-2] + (-x.shape[-2] % 4)) - x.shape[-2],
                  max(8, x.shape[-1] + (-x.shape[-1] % 4)) - x.shape[-1])
        xp = torch.nn.functional.pad(x, (0, pw, 0, ph), mode="replicate") if ph or pw else x
        y = translate(self.g, xp, self.device)[..., : x.shape[-2], : x.shape[-1]]
        return x, y, alpha, {"direction": self.direction, "size": [y.shape[-1], y.shape[-2]],
                             "checkpoint": str(self.path)}


def run_translate(items: list[str], *, checkpoint: str | None, out: Path, direction: str, native: bool,
                  device: str, as_json: bool = False) -> int:
    """``gentool translate``: each image to the other domain, plus ``sheet.png``; the exit code."""
    from gentool import save_grid

    from gentool_gan.upscale import answer_each, image_files, unique_target, write_image

    _check_direction(direction)  # before the files are looked at: bad usage first
    files = image_files(items, out)
    tr = Translator(checkpoint, direction=direction, native=native, device=device)
    pairs: list[tuple[torch.Tensor, torch.Tensor]] = []
    used: set[str] = set()

    def one(f: Path) -> tuple[dict, str]:
        x, y, alpha, info = tr(f)
        dest = unique_target(out, used, f.stem, f"_{tr.target}.png")
        write_image(y, alpha, dest)
        if len(pairs) < 8:
            pairs.append((_square(x, tr.side), _square(y, tr.side)))
        return ({"file": str(f), "output": str(dest), **info}, f"{f} -> {dest} ({tr.source} to {tr.target})")

    code = answer_each(files, one, as_json)
    if pairs:
        sheet = save_grid(torch.stack([p[0] for p in pairs] + [p[1] for p in pairs]), out / "sheet.png", nrow=len(pairs))
        if not as_json:
            print(f"before/after sheet: {sheet}", file=sys.stderr)
    return code


def _square(x: torch.Tensor, side: int) -> torch.Tensor:
    """The centre square of ``x`` ``[1, C, H, W]`` at ``side`` pixels (for the before/after sheet)."""
    h, w = x.shape[-2:]
    m = min(h, w)
    sq = x[..., (h - m) // 2: (h - m) // 2 + m, (w - m) // 2: (w - m) // 2 + m]
    return torch.nn.functional.interpolate(sq, size=(side, side), mode="bilinear", antialias=True,
                                           align_corners=False)[0].clamp(0, 1)

