"""The MNIST / MNIST-M digit pair for cyclegan: the data set ``mnist-m-pair``, built in memory.

Domain A is MNIST; domain B is an MNIST-M-style domain made as Ganin & Lempitsky (2015) made
MNIST-M: each digit blended into a colour patch cut at random from natural photos, ``out =
|patch - digit|`` per channel, so the digit inverts the patch's colours where it is. Both domains
are 3-channel 32x32 (MNIST's 28x28 grey digits padded by 2 black pixels each side, grey repeated
in the three channels), so A and B share the shape ``[3, 32, 32]`` and cyclegan's networks (sides
divisible by 4) fit them.

The two domains hold *different* MNIST images (a seeded permutation splits each MNIST split in
halves: A from one, B from the other), so the pair is unpaired as cyclegan expects; the labels are
kept. Classes are ``DOMAIN:DIGIT`` (``mnist:0`` .. ``mnist:9``, ``mnist-m:0`` .. ``mnist-m:9``),
which is how the GAN plugin tells the domains apart *and* keeps each image's digit, so evaluation
can score label preservation (see :mod:`gentool_gan.cyclegan_data`). Train: 30,000 + 30,000
images from MNIST's training split, patches from the photos' training images; test: 5,000 +
5,000 from MNIST's test split, patches from the photos' test images. Deterministic: the same
sources give byte-identical sets.

Sources, read locally (never downloaded here): MNIST's four IDX files from ``$GENTOOL_MNIST_DIR``,
else gentool's cache (where ``--data mnist`` downloads them), else the project's shared data
folder (``../shared/data/mnist``); the photos from ``$GENTOOL_MNISTM_PATCHES`` (any image folder
or CIFAR-10 binary set gentool reads; without a test split its training images serve both), else
an extracted or downloaded CIFAR-10 in the cache, else ``../shared/data/cifar10-subset``.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn.functional as F

from gentool import DataError, ImageDataset

NAME = "mnist-m-pair"
DOMAIN_A, DOMAIN_B = "mnist", "mnist-m"
#: Side of both domains' images: MNIST's 28 padded to 32 (a multiple of 4, CIFAR's side).
SIDE = 32
#: The seed of each split's construction (which MNIST half goes where, the patches cut).
SEEDS = {"train": 1_600_001, "test": 1_600_002}
#: Smallest side of a cut patch, as a fraction of the photo's shorter side (the largest is all of it).
MIN_PATCH = 0.5
MNIST_ENV = "GENTOOL_MNIST_DIR"
PATCHES_ENV = "GENTOOL_MNISTM_PATCHES"
#: The project's shared data folder beside the repository (``../shared/data``), when there is one.
_SHARED = Path(__file__).resolve().parents[3].parent / "shared" / "data"


def class_names() -> list[str]:
    """``mnist:0`` .. ``mnist:9`` then ``mnist-m:0`` .. ``mnist-m:9``: domain and digit in one label."""
    return [f"{d}:{k}" for d in (DOMAIN_A, DOMAIN_B) for k in range(10)]


def pad_digits(digits: torch.Tensor, side: int = SIDE) -> torch.Tensor:
    """uint8 ``[N, 1, h, w]`` digits centred on black ``[N, 1, side, side]`` (no resampling)."""
    n, c, h, w = digits.shape
    if h > side or w > side:
        raise ValueError(f"digits of {w}x{h} do not fit in {side}x{side}")
    top, left = (side - h) // 2, (side - w) // 2
    return F.pad(digits, (left, side - w - left, top, side - h - top))


def cut_patches(photos: torch.Tensor, count: int, generator: torch.Generator, side: int = SIDE) -> torch.Tensor:
    """``count`` random colour patches ``[count, 3, side, side]`` (uint8) from uint8 ``photos``
    ``[M, 3, H, W]``: a random photo, a square of ``MIN_PATCH`` to all of its shorter side at a
    random place, mirrored half the time, resampled (bilinear) to ``side``."""
    m, _, h, w = photos.shape
    pick = torch.randint(0, m, (count,), generator=generator)
    frac = MIN_PATCH + (1 - MIN_PATCH) * torch.rand(count, generator=generator)
    sx, sy = frac * min(h, w) / w, frac * min(h, w) / h  # half-widths in [-1, 1] coordinates
    cx = (1 - sx) * (2 * torch.rand(count, generator=generator) - 1)
    cy = (1 - sy) * (2 * torch.rand(count, generator=generator) - 1)
    flip = torch.where(torch.rand(count, generator=generator) < 0.5, -1.0, 1.0)
    out = torch.empty(count, 3, side, side, dtype=torch.uint8)
    for s in range(0, count, 2048):  # bounded float memory
        sl = slice(s, s + 2048)
        k = len(pick[sl])
        theta = torch.zeros(k, 2, 3)
        theta[:, 0, 0], theta[:, 0, 2] = sx[sl] * flip[sl], cx[sl]
        theta[:, 1, 1], theta[:, 1, 2] = sy[sl], cy[sl]
        grid = F.affine_grid(theta, [k, 3, side, side], align_corners=False)
        x = F.grid_sample(photos[pick[sl]].float(), grid, mode="bilinear", padding_mode="border", align_corners=False)
        out[sl] = x.round_().clamp_(0, 255).to(torch.uint8)
    return out


def blend(digits: torch.Tensor, patches: torch.Tensor) -> torch.Tensor:
    """MNIST-M's blend: ``|patch - digit|`` per channel (uint8 ``[N, 1, S, S]`` digits, ``[N, 3, S, S]``
    patches): the patch where the digit is black, its colours inverted where the digit is white."""
    return (patches.to(torch.int16) - digits.to(torch.int16)).abs_().to(torch.uint8)


def build_pair(digits: torch.Tensor, labels: torch.Tensor, photos: torch.Tensor, seed: int,
               name: str = NAME) -> ImageDataset:
    """The pair from uint8 MNIST ``digits`` ``[N, 1, 28, 28]`` with ``labels`` and colour ``photos``:
    half the digits (a seeded choice) as domain A (grey in 3 channels), the other half blended into
    patches of ``photos`` as domain B. Labels: ``10 * domain + digit`` (see :func:`class_names`)."""
    if digits.dim() != 4 or digits.shape[1] != 1 or len(digits) < 4:
        raise DataError(f"{name} needs at least 4 grey MNIST digits [N, 1, 28, 28], got {tuple(digits.shape)}")
    if photos.dim() != 4 or photos.shape[1] != 3 or len(photos) < 1:
        raise DataError(f"{name} needs colour photos [M, 3, H, W] for the patches, got {tuple(photos.shape)}")
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(digits), generator=g)
    half = len(order) // 2
    ia, ib = order[:half].sort().values, order[half : 2 * half].sort().values
    padded = pad_digits(digits)
    a = padded[ia].expand(-1, 3, -1, -1)
    b = blend(padded[ib], cut_patches(photos, len(ib), g))
    labels = labels.to(torch.int64)
    return ImageDataset(images=torch.cat([a, b]).contiguous(), labels=torch.cat([labels[ia], labels[ib] + 10]),
                        class_names=class_names(), name=name)


# -- finding the sources -----------------------------------------------------------------------------
def _mnist_dirs() -> list[Path]:
    from gentool import cache_dir

    return [cache_dir() / "datasets" / "mnist", _SHARED / "mnist", Path.cwd().parent / "shared" / "data" / "mnist"]


def _load_idx_folder(folder: Path, split: str) -> ImageDataset | None:
    """MNIST's ``split`` from a folder of its IDX files, or None where the folder holds none."""
    from gentool import load_dataset

    if not folder.is_dir():
        return None
    try:
        ds = load_dataset(str(folder), split=split)
    except DataError:
        return None
    return ds if isinstance(ds, ImageDataset) and ds.labels is not None else None


def load_mnist_split(split: str) -> ImageDataset:
    """MNIST's ``split`` from local IDX files (``$GENTOOL_MNIST_DIR``, the cache, ../shared/data)."""
    given = os.environ.get(MNIST_ENV, "").strip()
    if given:
        ds = _load_idx_folder(Path(given).expanduser(), split)
        if ds is None:
            raise DataError(f"{MNIST_ENV}={given} holds no MNIST {split} IDX files (images and labels, raw or .gz)")
        return ds
    for folder in _mnist_dirs():
        ds = _load_idx_folder(folder, split)
        if ds is not None:
            return ds
    looked = ", ".join(str(d) for d in _mnist_dirs())
    raise DataError(f"{NAME} needs MNIST's IDX files and found none in {looked}: set {MNIST_ENV}=FOLDER "
                    "(or run once with --data mnist to download them into the cache)")


def _patch_sources() -> list[Path]:
    from gentool import cache_dir

    cifar = cache_dir() / "datasets" / "cifar10"
    return [cifar / "cifar-10-batches-bin", cifar / "cifar-10-binary.tar.gz", _SHARED / "cifar10-subset",
            Path.cwd().parent / "shared" / "data" / "cifar10-subset"]


def load_photos(split: str) -> torch.Tensor:
    """uint8 ``[M, 3, H, W]`` photos to cut patches from (``$GENTOOL_MNISTM_PATCHES``, a CIFAR-10 in
    the cache, ../shared/data/cifar10-subset); a source without a test split gives its training
    images for both splits."""
    from gentool import MissingSplitError, load_dataset

    given = os.environ.get(PATCHES_ENV, "").strip()
    if given:
        path = Path(given).expanduser()
        if not path.exists():
            raise DataError(f"{PATCHES_ENV}={given}: no such file or folder (give an image folder or CIFAR-10 set)")
    else:
        found = [p for p in _patch_sources() if p.exists()]
        if not found:
            looked = ", ".join(str(p) for p in _patch_sources())
            raise DataError(f"{NAME} needs colour photos to cut patches from and found none in {looked}: set "
                            f"{PATCHES_ENV}=FOLDER (an image folder or CIFAR-10 binary set)")
        path = found[0]
    try:
        ds = load_dataset(str(path), split=split, channels=3)
    except MissingSplitError:
        ds = load_dataset(str(path), split="train", channels=3)
    if not isinstance(ds, ImageDataset):
        raise DataError(f"{path} holds text, not photos to cut {NAME}'s patches from")
    return ds.images


def load_mnist_m_pair(split: str = "train", image_size: int | None = None, channels: int | None = None) -> ImageDataset:
    """The ``mnist-m-pair`` data set (the registered loader): ``train``, ``test`` or ``all`` (the core
    checks the split and applies ``image_size`` and ``channels`` to what this returns)."""
    parts = []
    for s in ("train", "test") if split == "all" else (split,):
        mnist = load_mnist_split(s)
        parts.append(build_pair(mnist.images, mnist.labels, load_photos(s), SEEDS[s]))
    ds = parts[0] if len(parts) == 1 else ImageDataset(
        images=torch.cat([p.images for p in parts]), labels=torch.cat([p.labels for p in parts]),
        class_names=class_names(), name=NAME)
    return ds
