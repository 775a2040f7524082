"""Where a detector's real and fake images come from, and how they are split.

Layouts of ``--data DIR`` read here (fake images labelled 1, real 0):

* ``DIR/real/`` and ``DIR/fake/``; subfolders of ``fake/`` name the generators
  (``fake/dcgan/``, ``fake/vae/``), which enables the leave-one-generator-out table;
* CNNDetection's ``DIR/0_real/`` and ``DIR/1_fake/``, also nested one level (``DIR/cat/0_real``,
  ``DIR/cat/1_fake``, ``DIR/car/...``): the subfolder names become the groups of the
  per-generator and leave-one-out tables (generators in CNNDetection's test set, object
  categories in its training set);
* anything else (a named set such as ``cifar10``, a plain image folder) is real images only:
  fakes then come from ``--set fake_from=CKPT1,CKPT2``, drawn through ``gentool.load(ckpt).sample``,
  so any gentool image generator (a third party's too) works without importing its plugin.

The pool is split once, seeded and stratified by generator, into train / val (best epoch by AUC)
/ calib (temperature) / test (``gentool evaluate``): the same files and seed give the same split.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

import gentool

REAL_NAMES = ("real", "0_real")
FAKE_NAMES = ("fake", "1_fake")
SAMPLE_BATCH = 500


@dataclass
class Pool:
    """Images (uint8 ``[N, C, H, W]``), labels (1 generated) and the generator of each fake."""

    images: torch.Tensor
    labels: torch.Tensor
    source: torch.Tensor  # -1 for real images, else an index into ``generators``
    generators: list[str]

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def take(self, idx: np.ndarray) -> "Pool":
        t = torch.as_tensor(idx, dtype=torch.int64)
        return Pool(self.images[t], self.labels[t], self.source[t], list(self.generators))


def _child(folder: Path, names: tuple[str, ...]) -> Path | None:
    for name in names:
        if (folder / name).is_dir():
            return folder / name
    return None


def layout(folder: str | Path) -> list[tuple[Path, Path]] | None:
    """``[(real_dir, fake_dir), ...]`` when ``folder`` has a real/fake layout, else None."""
    folder = Path(folder)
    if not folder.is_dir():
        return None
    real, fake = _child(folder, REAL_NAMES), _child(folder, FAKE_NAMES)
    if real or fake:
        if not (real and fake):
            raise gentool.DataError(f"{folder} has {'real' if real else 'fake'}/ but no "
                                    f"{'fake' if real else 'real'}/ folder: a detector needs both")
        return [(real, fake)]
    pairs = []
    for sub in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
        r, f = _child(sub, REAL_NAMES), _child(sub, FAKE_NAMES)
        if r and f:
            pairs.append((r, f))
    return pairs or None


def _load(path: Path, size: int, channels: int) -> Any:
    return gentool.load_dataset(str(path), split="train", image_size=size, channels=channels)


def _fit(images: torch.Tensor, size: int, channels: int, what: str) -> torch.Tensor:
    """Float ``[N, C, H, W]`` -> uint8 at ``channels`` and ``size`` (centre crop; resize if smaller)."""
    if images.shape[1] != channels:
        images = images.mean(1, keepdim=True) if channels == 1 else images.expand(-1, 3, -1, -1)
    h, w = images.shape[-2:]
    if (h, w) != (size, size):
        if min(h, w) >= size:
            top, left = (h - size) // 2, (w - size) // 2
            images = images[..., top: top + size, left: left + size]
        else:
            gentool.warn(f"fakes of {what} are {h}x{w}, smaller than the real images ({size}x{size}): resized, "
                         "which leaves resampling traces a detector may learn instead")
            images = F.interpolate(images, size=(size, size), mode="bicubic", align_corners=False)
    return (images.clamp(0, 1) * 255).round().to(torch.uint8)


def generator_name(ckpt: str) -> str:
    """A short name for a generator checkpoint: its model and run (``dcgan/run1``)."""
    p = Path(ckpt)
    try:
        model = gentool.load_checkpoint(p).model if p.is_file() else None
    except gentool.GentoolError:
        model = None
    run = p.parent.name if p.is_file() else p.name
    return f"{model}/{run}" if model else str(ckpt)


def draw_fakes(ckpt: str, n: int, seed: int, size: int, channels: int) -> torch.Tensor:
    """``n`` uint8 samples of the generator at ``ckpt`` (routed to its own plugin by the core)."""
    model = gentool.load(ckpt, device="cpu")
    if model.spec.modality != "image":
        raise gentool.ConfigError(f"fake_from: {ckpt} is a {model.spec.modality} model, not an image generator")
    out = []
    for i, start in enumerate(range(0, n, SAMPLE_BATCH)):
        k = min(SAMPLE_BATCH, n - start)
        images = model.sample(k, seed=seed + 7919 * i, quiet=True).images.float()
        out.append(_fit(images, size, channels, ckpt))
    return torch.cat(out)


def build_pool(real: Any, cfg: Any, data_ref: str | None, seed: int) -> Pool:
    """The labelled pool from ``real`` (an ImageDataset: the ``--data`` images) and ``cfg``."""
    c, h, w = real.shape
    size = h
    pairs = layout(data_ref) if data_ref else None
    generators: list[str] = []
    imgs, labels, source = [], [], []
    if pairs:
        for real_dir, fake_dir in pairs:
            r = _load(real_dir, size, c)
            f = _load(fake_dir, size, c)
            imgs += [r.images, f.images]
            labels += [torch.zeros(len(r), dtype=torch.int64), torch.ones(len(f), dtype=torch.int64)]
            source.append(torch.full((len(r),), -1, dtype=torch.int64))
            if f.labels is not None and f.class_names and len(pairs) == 1:  # fake/<generator>/
                generators += list(f.class_names)
                source.append(f.labels.clone())
            else:
                name = fake_dir.parent.name if len(pairs) > 1 else "fake"
                if name not in generators:
                    generators.append(name)
                source.append(torch.full((len(f),), generators.index(name), dtype=torch.int64))
    else:
        images = real.images
        if cfg.limit and len(images) > cfg.limit:
            g = torch.Generator().manual_seed(seed)
            images = images[torch.randperm(len(images), generator=g)[: cfg.limit]]
        imgs.append(images)
        labels.append(torch.zeros(len(images), dtype=torch.int64))
        source.append(torch.full((len(images),), -1, dtype=torch.int64))
    ckpts = cfg.generators
    if ckpts:
        n_real = int(sum(int((lab == 0).sum()) for lab in labels))
        per = cfg.fakes_per_generator or max(1, n_real // len(ckpts))
        for j, ckpt in enumerate(ckpts):
            name = generator_name(ckpt)
            if name in generators:
                name = f"{name}#{j}"
            generators.append(name)
            fakes = draw_fakes(ckpt, per, seed + 1000 * (j + 1), size, c)
            imgs.append(fakes)
            labels.append(torch.ones(len(fakes), dtype=torch.int64))
            source.append(torch.full((len(fakes),), len(generators) - 1, dtype=torch.int64))
    if not generators:
        raise gentool.DataError(
            f"no fake images in {data_ref or 'the data'}: give a folder with real/ and fake/ (or CNNDetection's "
            "0_real/ and 1_fake/), or draw fakes from generators with --set fake_from=CKPT1,CKPT2")
    pool = Pool(torch.cat(imgs), torch.cat(labels), torch.cat(source), generators)
    if int(pool.labels.sum()) < 4 or int((pool.labels == 0).sum()) < 4:
        raise gentool.DataError("a detector needs at least 4 real and 4 fake images")
    return pool


def split(pool: Pool, cfg: Any, seed: int) -> dict[str, np.ndarray]:
    """Indices of ``train``, ``val``, ``calib`` and ``test``: seeded, stratified by source."""
    rng = np.random.default_rng(seed)
    parts: dict[str, list[np.ndarray]] = {k: [] for k in ("train", "val", "calib", "test")}
    src = pool.source.numpy()
    for s in np.unique(src):
        idx = rng.permutation(np.nonzero(src == s)[0])
        n = len(idx)
        n_test = max(1, round(n * cfg.test_fraction))
        n_cal = max(1, round(n * cfg.calib_fraction))
        n_val = max(1, round(n * cfg.val_fraction))
        parts["test"].append(idx[:n_test])
        parts["calib"].append(idx[n_test: n_test + n_cal])
        parts["val"].append(idx[n_test + n_cal: n_test + n_cal + n_val])
        parts["train"].append(idx[n_test + n_cal + n_val:])
    return {k: np.sort(np.concatenate(v)) for k, v in parts.items()}


def pool_meta(pool: Pool) -> dict[str, Any]:
    """What a checkpoint records about the pool."""
    counts = {name: int((pool.source == i).sum()) for i, name in enumerate(pool.generators)}
    return {"generators": list(pool.generators), "real": int((pool.labels == 0).sum()), "fake": counts}
