"""``gentool sample gan|cgan|dcgan``: images from the EMA generator stored in a checkpoint.

``--label 3`` / ``--label seven`` / ``--label all`` choose classes (cgan), ``--interpolate``
writes a latent walk (``interpolation.gif`` in the output folder, its frames as the samples).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from gentool import ConfigError, config_from_dict

from gentool_gan.task import CONFIGS, generate, make_networks

from gentool_gan.configs import MAX_WHOLE_REQUEST


def load_generator(model: str, ckpt: Any, device: torch.device) -> tuple[nn.Module, Any, int | None, list[str] | None]:
    """The EMA generator of ``ckpt`` on ``device`` (eval mode), its config, class count and names."""
    cfg = config_from_dict(CONFIGS[model], ckpt.config)
    data = ckpt.data
    names = data.get("class_names")
    num_classes = (ckpt.extra or {}).get("num_classes") if model in ("cgan", "stylegan") else None
    if model == "cgan" and not num_classes:
        num_classes = data.get("num_classes") or (len(names) if names else None)
    with_d = any(k.startswith("d.") for k in ckpt.tensor_shapes)  # the discriminator is built too: check it

    def networks() -> dict[str, nn.Module]:
        g, d = make_networks(model, tuple(data["shape"]), num_classes, cfg)
        return {"g_ema": g, "d": d} if with_d else {"g_ema": g}

    g = ckpt.build(networks)["g_ema"]  # checked against the file's shapes on the meta device first
    return g.to(device).eval(), cfg, num_classes, names


def parse_label(raw: str, num_classes: int, names: list[str] | None) -> int | str:
    """A class id from an id or a class name, or ``"all"``; a ConfigError naming the choices otherwise."""
    text = str(raw).strip()
    if text.lower() == "all":
        return "all"
    if names and text in names:
        return names.index(text)
    lowered = [n.lower() for n in names] if names else []
    if text.lower() in lowered:
        return lowered.index(text.lower())
    if text.lstrip("-").isdigit():
        y = int(text)
        if 0 <= y < num_classes:
            return y
        raise ConfigError(f"--label {y} is out of range: this model has classes 0..{num_classes - 1}")
    shown = ", ".join(names[:20]) + (", ..." if names and len(names) > 20 else "") if names else f"0..{num_classes - 1}"
    raise ConfigError(f"unknown class {text!r}: use a class id, a name ({shown}) or 'all'")


def slerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation between latent vectors ``a`` and ``b`` at fractions ``t`` ``[T]``:
    stays at the norm Gaussian noise has, unlike a straight line through the origin's shell."""
    an, bn = a / a.norm(), b / b.norm()
    omega = torch.arccos((an * bn).sum().clamp(-1 + 1e-7, 1 - 1e-7))
    so = torch.sin(omega)
    t = t[:, None]
    return (torch.sin((1 - t) * omega) / so) * a + (torch.sin(t * omega) / so) * b


def latent_walk(n: int, keyframes: int, z_dim: int, generator: torch.Generator) -> torch.Tensor:
    """``n`` latent points on a path through ``keyframes`` random points (slerp between them)."""
    keys = torch.randn(keyframes, z_dim, generator=generator)
    t = torch.linspace(0, keyframes - 1, n)
    seg = t.floor().clamp(max=keyframes - 2).long()
    out = torch.empty(n, z_dim)
    for s in seg.unique().tolist():
        sel = seg == s
        out[sel] = slerp(keys[s], keys[s + 1], t[sel] - s)
    return out


def write_gif(frames: list[torch.Tensor], path: Path, nrow: int, ms: int = 120) -> Path:
    """An animated GIF whose frame i is a grid of ``frames[i]`` (``[k, C, H, W]`` in [0, 1])."""
    from PIL import Image

    from gentool import make_grid

    pics = [Image.fromarray(a[..., 0] if a.shape[-1] == 1 else a) for a in (make_grid(f, nrow) for f in frames)]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    pics[0].save(tmp, format="GIF", save_all=True, append_images=pics[1:], duration=ms, loop=0)
    tmp.replace(path)
    return path


def held_out_data(ckpt: Any, usable: Any = None) -> Any:
    """The data set ``ckpt`` was trained on, at its image shape: its test split, else (no test split,
    or ``usable(data)`` raises a DataError for it) its training split. For models whose samples are
    held-out images transformed (srgan restores them, cyclegan translates them)."""
    from gentool import DataError, MissingSplitError, load_dataset

    data = ckpt.data  # a name may be a plugin's data set (mnist-m-pair): load_dataset knows those too
    kwargs = {"image_size": data["shape"][-1], "channels": data["shape"][0]}
    name = data.get("name") or "digits"
    try:
        try:
            ref = load_dataset(name, split="test", **kwargs)
            if usable is not None:
                usable(ref)
            return ref
        except (MissingSplitError, DataError):
            return load_dataset(name, split="train", **kwargs)
    except DataError as exc:
        raise DataError(f"{ckpt.model} samples transform images of {name!r}, which cannot be loaded here: "
                        f"{str(exc).splitlines()[0]}") from None


def request_indices(count: int, job: Any) -> torch.Tensor:
    """Indices into ``count`` items for this call's ``job.n`` samples: one order per request (seeded by
    ``job.seed``, repeated when the request is longer), so chunks continue it instead of re-drawing."""
    order = torch.randperm(count, generator=torch.Generator().manual_seed(job.seed))
    first = getattr(job, "first", 0)
    return torch.cat([order] * (1 + (first + job.n) // count))[first: first + job.n]


def sample(model: str, job: Any) -> Any:
    """The ``gentool_sample`` hook body for ``model``."""
    from gentool import SampleResult

    opts = job.options  # GANSampleOptions, parsed and checked by the core
    g, cfg, num_classes, names = load_generator(model, job.checkpoint, job.device)
    label: int | str | None = None
    if opts.label is not None:
        if model != "cgan":
            raise ConfigError(f"{model} is unconditional: --label needs a cgan checkpoint")
        label = parse_label(opts.label, num_classes, names)
    interpolate = opts.interpolate
    keyframes = opts.keyframes or 4
    n = job.n
    conditional = model == "cgan"

    if interpolate:
        if n > MAX_WHOLE_REQUEST:
            raise ConfigError(f"--interpolate draws one walk of -n frames: at most {MAX_WHOLE_REQUEST}, got {n}")
        z = latent_walk(n, keyframes, cfg.z_dim, job.generator)
        classes = list(range(num_classes)) if label == "all" else [label if label is not None else 0] if conditional else [None]
        rows = []
        for c in classes:
            y = torch.full((n,), c, dtype=torch.long) if c is not None else None
            rows.append(generate(g, n, job.generator, job.device, cfg.z_dim, y, z=z))
        frames = [torch.stack([r[i] for r in rows]) for i in range(n)]
        gif = write_gif(frames, Path(job.out) / "interpolation.gif", nrow=len(rows))
        images = torch.cat(rows)
        labels = torch.tensor(classes).repeat_interleave(n) if conditional else None
        return SampleResult(images=images, labels=labels, nrow=n, files=[gif])

    if not conditional:
        return SampleResult(images=generate(g, n, job.generator, job.device, cfg.z_dim))
    if label == "all":
        labels = torch.arange(num_classes).repeat_interleave(n)  # a row of n per class
        nrow = n
    elif label is not None:
        labels = torch.full((n,), int(label), dtype=torch.long)
        nrow = None
    else:
        labels = torch.arange(n) % num_classes  # balanced: as many of each class (for --as-dataset)
        nrow = num_classes if n >= num_classes else None
    images = generate(g, len(labels), job.generator, job.device, cfg.z_dim, labels)
    return SampleResult(images=images, labels=labels, nrow=nrow)

