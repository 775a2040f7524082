"""Feature extractors: the networks that turn images into the vectors the metrics compare.

Two kinds ship with gentool:

- ``gentool-cnn`` (default): a small CNN classifier trained once per reference data set on its
  labels (or, without labels, on predicting which of 4 rotations was applied), cached under
  ``extractors_dir()/<fingerprint>.safetensors`` (``$GENTOOL_EXTRACTORS``, else the cache's
  ``extractors/``). Works offline and suits small or
  non-photographic data (MNIST, a user's folder) where ImageNet Inception features say little.
  Its name carries the data set and fingerprint, so its "FD" is never mistaken for FID.
- ``inception``: the FID Inception-v3 from :mod:`gentool.metrics.inception`, with weights from a
  local safetensors file; gives figures comparable with published FID.

Both accept images ``[N, C, H, W]`` (C 1 or 3) as uint8 or as float in [0, 1], of any size.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import time
from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from gentool.errors import GentoolError
from gentool.paths import extractors_dir

if TYPE_CHECKING:
    from gentool.data import ImageDataset

log = logging.getLogger(__name__)

DEFAULT_EXTRACTOR = "gentool-cnn"
#: Bumped when the CNN or its training changes, so old cache files are retrained, not misread.
CNN_VERSION = 1
#: Images per training epoch are capped at this many (a random subset each epoch).
MAX_IMAGES_PER_EPOCH = 20_000
#: Every training sees at least this many images in total (small data sets get more epochs).
MIN_TRAIN_IMAGES = 40_000
#: Passes over (up to MAX_IMAGES_PER_EPOCH of) the data for large data sets.
MIN_EPOCHS = 3
#: Longest side of the CNN's input; larger images are area-averaged down to this.
MAX_CNN_SIDE = 32
FEATURE_DIM = 128


def prepare_images(
    images: torch.Tensor,
    channels: int,
    size: tuple[int, int],
    *,
    antialias: bool = False,
) -> torch.Tensor:
    """Float32 images in [0, 1] of shape ``[N, channels, *size]``.

    uint8 input is divided by 255; float input must already be in [0, 1] (a generator's tanh
    output in [-1, 1] is refused rather than silently mis-scored). Grey images are repeated to
    3 channels, colour images averaged to 1. The spatial size is changed with bilinear
    interpolation, or, with ``antialias`` and a smaller target, by area averaging (a box filter:
    no aliasing, and an exact inverse of nearest-neighbour upscaling by whole factors).
    """
    if not isinstance(images, torch.Tensor):
        images = torch.as_tensor(np.asarray(images))
    if images.ndim == 3:
        images = images.unsqueeze(1)
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise GentoolError(f"expected images of shape [N, C, H, W] with C 1 or 3, got {tuple(images.shape)}")
    if images.dtype == torch.uint8:
        x = images.float() / 255.0
    elif images.is_floating_point():
        x = images.float()
        if x.numel() and (x.min() < -1e-3 or x.max() > 1.0 + 1e-3):
            raise GentoolError(
                f"float images must lie in [0, 1], got values in [{x.min().item():.3g}, {x.max().item():.3g}]"
                " (map tanh outputs with (x + 1) / 2)"
            )
        x = x.clamp(0.0, 1.0)
    else:
        raise GentoolError(f"images must be uint8 or float, got {images.dtype}")
    c = x.shape[1]
    if c != channels:
        x = x.repeat(1, channels, 1, 1) if c == 1 else x.mean(dim=1, keepdim=True)
    if tuple(x.shape[-2:]) != tuple(size):
        shrink = x.shape[-2] >= size[0] and x.shape[-1] >= size[1]
        if antialias and shrink:
            x = F.interpolate(x, size=size, mode="area")
        else:
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
    return x


class FeatureExtractor(ABC):
    """Maps images to feature vectors ``[N, dim]``.

    Subclasses set ``name`` (shown next to every figure), ``dim``, ``in_channels``,
    ``input_size`` and ``device`` and implement :meth:`_embed`; :meth:`features` handles
    batching, dtype, channel and size conversion. An extractor written outside gentool may
    instead override :meth:`features` itself.
    """

    name: str
    dim: int
    in_channels: int = 3
    input_size: tuple[int, int] = (299, 299)
    antialias: bool = False
    device: torch.device = torch.device("cpu")

    @abstractmethod
    def _embed(self, x: torch.Tensor) -> torch.Tensor:
        """Features of a prepared batch (float [B, in_channels, *input_size] in [0, 1], on device)."""

    def _batches(self, images: torch.Tensor, batch_size: int):
        n = len(images)
        for start in range(0, n, batch_size):
            batch = prepare_images(
                images[start : start + batch_size], self.in_channels, self.input_size, antialias=self.antialias
            )
            yield batch.to(self.device)

    @torch.no_grad()
    def features(self, images: torch.Tensor, batch_size: int = 256) -> np.ndarray:
        """Float32 features ``[N, dim]`` of uint8 or [0, 1] float images ``[N, C, H, W]``."""
        if len(images) == 0:
            raise GentoolError("no images to compute features of")
        out = [self._embed(b).float().cpu() for b in self._batches(images, batch_size)]
        return torch.cat(out).numpy()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} dim={self.dim}>"


# ----------------------------------------------------------------------------- gentool-cnn


class SmallCNN(nn.Module):
    """Three conv stages, global average pool, a 128-d feature layer and a linear classifier."""

    def __init__(self, in_channels: int, num_classes: int) -> None:
        super().__init__()

        def block(cin: int, cout: int) -> list[nn.Module]:
            return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]

        self.body = nn.Sequential(
            *block(in_channels, 32),
            nn.MaxPool2d(2),
            *block(32, 64),
            nn.MaxPool2d(2),
            *block(64, 128),
            *block(128, 128),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.embed = nn.Sequential(nn.Linear(128, FEATURE_DIM), nn.ReLU(inplace=True))
        self.head = nn.Linear(FEATURE_DIM, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.embed(self.body(x * 2.0 - 1.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def _rotate(x: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Rotate each square image ``x[i]`` by ``k[i]`` quarter turns."""
    out = x.clone()
    for r in (1, 2, 3):
        sel = k == r
        if sel.any():
            out[sel] = torch.rot90(x[sel], r, dims=(2, 3))
    return out


def dataset_fingerprint(images: torch.Tensor, labels: torch.Tensor | None) -> str:
    """First 16 hex digits of sha256 over the images' shape, bytes and the labels."""
    h = hashlib.sha256()
    h.update(json.dumps([list(images.shape), str(images.dtype)]).encode())
    h.update(images.detach().cpu().contiguous().numpy().tobytes())
    if labels is None:
        h.update(b"no-labels")
    else:
        h.update(labels.detach().cpu().to(torch.int64).contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def _cnn_side(images: torch.Tensor) -> int:
    return int(min(max(images.shape[-2], images.shape[-1]), MAX_CNN_SIDE))


def train_cnn(
    images: torch.Tensor,
    labels: torch.Tensor | None,
    num_classes: int,
    *,
    side: int,
    epochs: int | None = None,
    seed: int = 0,
    device: str | torch.device = "cpu",
    batch_size: int = 128,
) -> tuple[SmallCNN, float, int]:
    """Train :class:`SmallCNN` deterministically; ``labels=None`` means the rotation pretext task.

    Each epoch draws ``min(N, MAX_IMAGES_PER_EPOCH)`` images; the epoch count defaults to enough
    for ``MIN_TRAIN_IMAGES`` images in all (at least ``MIN_EPOCHS``). Returns the network (eval
    mode, on ``device``), its accuracy on up to 10k training images, and the epochs run.
    """
    device = torch.device(device)
    n = len(images)
    channels = 1 if images.shape[1] == 1 else 3
    per_epoch = min(n, MAX_IMAGES_PER_EPOCH)
    if epochs is None:  # a data set smaller than a batch: count steps, not epochs of one tiny batch
        epochs = max(MIN_EPOCHS, math.ceil(MIN_TRAIN_IMAGES / max(per_epoch, batch_size)))
    steps_per_epoch = math.ceil(per_epoch / batch_size)
    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = SmallCNN(channels, num_classes).to(device)
    opt = torch.optim.AdamW(net.parameters(), lr=3e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=epochs * steps_per_epoch)

    def batch_of(idx: torch.Tensor, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        x = prepare_images(images[idx], channels, (side, side), antialias=True)
        if labels is None:
            y = torch.randint(0, 4, (len(idx),), generator=g)
            x = _rotate(x, y)
        else:
            y = labels[idx].to(torch.int64)
        return x.to(device), y.to(device)

    net.train()
    for _ in range(epochs):
        order = torch.randperm(n, generator=gen)[:per_epoch]
        for s in range(steps_per_epoch):
            x, y = batch_of(order[s * batch_size : (s + 1) * batch_size], gen)
            loss = F.cross_entropy(net(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    net.eval()

    eval_gen = torch.Generator().manual_seed(seed + 1)
    idx_all = torch.randperm(n, generator=eval_gen)[:10_000]
    correct = 0
    with torch.no_grad():
        for start in range(0, len(idx_all), 512):
            x, y = batch_of(idx_all[start : start + 512], eval_gen)
            correct += int((net(x).argmax(1) == y).sum())
    return net, correct / len(idx_all), epochs


class GentoolCNNExtractor(FeatureExtractor):
    """The default extractor: 128-d penultimate features of a CNN trained on the reference data.

    Also a classifier over the reference labels (``classifier``, ``predict``, ``accuracy``),
    used to check that a conditional model's samples are of the asked class. When trained on
    the rotation pretext task (``task == "rotation"``) it has no classes to predict.
    """

    dim = FEATURE_DIM
    antialias = True

    def __init__(self, net: SmallCNN, meta: dict, device: str | torch.device = "cpu") -> None:
        self.device = torch.device(device)
        self.net = net.to(self.device).eval()
        self.meta = meta
        self.task: str = meta["task"]
        self.num_classes: int = int(meta["num_classes"])
        self.class_names: list[str] | None = meta.get("class_names")
        self.accuracy: float = float(meta["train_accuracy"])
        self.fingerprint: str = meta["fingerprint"]
        self.in_channels = int(meta["in_channels"])
        self.input_size = (int(meta["side"]), int(meta["side"]))
        self.name = f"gentool-cnn[{meta['data_name']}:{self.fingerprint[:8]}]"

    def _embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.features(x)

    @torch.no_grad()
    def classifier(self, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
        """Logits ``[N, num_classes]`` (on the CPU) for uint8 or [0, 1] float images."""
        if len(images) == 0:
            return torch.zeros(0, self.num_classes)
        return torch.cat([self.net(b).float().cpu() for b in self._batches(images, batch_size)])

    def predict(self, images: torch.Tensor, batch_size: int = 256) -> np.ndarray:
        """Predicted class ids (int64) in the reference data's label space."""
        if self.task != "labels":
            raise GentoolError(
                f"the feature extractor for {self.meta['data_name']} was trained without labels, "
                "so it cannot classify images; use a labelled reference data set"
            )
        return self.classifier(images, batch_size).argmax(1).numpy().astype(np.int64)


def _cache_file(fingerprint: str) -> Path:
    return extractors_dir() / f"{fingerprint}.safetensors"


def _load_cached(path: Path, device: str | torch.device) -> GentoolCNNExtractor | None:
    """The cached extractor at ``path``, or None if absent, unreadable or of another version."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    if not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="pt") as f:
            raw = f.metadata() or {}
        meta = json.loads(raw["gentool"])
        if meta.get("format") != "gentool-cnn" or meta.get("version") != CNN_VERSION:
            return None
        net = SmallCNN(int(meta["in_channels"]), int(meta["num_classes"]))
        net.load_state_dict(load_file(str(path)))
    except Exception as exc:  # a damaged cache file is retrained, not fatal
        log.warning("ignoring unreadable feature-extractor cache %s (%s)", path, exc)
        return None
    return GentoolCNNExtractor(net, meta, device)


def _save(path: Path, net: SmallCNN, meta: dict) -> None:
    from safetensors.torch import save

    from gentool.io import write_atomic

    tensors = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    write_atomic(path, save(tensors, metadata={"gentool": json.dumps(meta)}))


def gentool_cnn_extractor(
    reference: ImageDataset,
    *,
    device: str | torch.device = "cpu",
    seed: int = 0,
    epochs: int | None = None,
) -> GentoolCNNExtractor:
    """The default extractor for ``reference``: loaded from the cache, or trained and cached.

    Trains on the labels when there are at least two classes, else on rotation prediction.
    """
    images = reference.images
    if images.ndim != 4 or images.shape[1] not in (1, 3) or len(images) < 2:
        raise GentoolError(
            f"cannot train a feature extractor on data set {reference.name!r}: need at least 2 images "
            f"[N, C, H, W] with C 1 or 3, got {tuple(images.shape)}"
        )
    labels = reference.labels
    class_names = list(reference.class_names) if reference.class_names else None
    if labels is not None:
        labels = labels.to(torch.int64).cpu()
        if len(labels) != len(images):
            raise GentoolError(f"data set {reference.name!r}: {len(labels)} labels for {len(images)} images")
        if len(labels) and int(labels.min()) < 0:
            raise GentoolError(f"data set {reference.name!r}: negative class labels")
        if int(torch.unique(labels).numel()) < 2:
            labels = None  # one class teaches nothing: fall back to the rotation task
    fingerprint = dataset_fingerprint(images, labels)
    path = _cache_file(fingerprint)
    cached = _load_cached(path, device)
    if cached is not None:
        return cached

    if labels is None:
        task, num_classes = "rotation", 4
        class_names = None
    else:
        task = "labels"
        num_classes = max(int(labels.max()) + 1, len(class_names or []))
    side = _cnn_side(images)
    log.info(
        "training the gentool-cnn feature extractor on %s (%d images, task %s); cached at %s",
        reference.name, len(images), task, path,
    )
    t0 = time.perf_counter()
    net, accuracy, ran = train_cnn(images, labels, num_classes, side=side, epochs=epochs, seed=seed, device=device)
    meta = {
        "format": "gentool-cnn",
        "version": CNN_VERSION,
        "fingerprint": fingerprint,
        "data_name": reference.name,
        "shape": list(images.shape),
        "task": task,
        "num_classes": num_classes,
        "class_names": class_names,
        "in_channels": 1 if images.shape[1] == 1 else 3,
        "side": side,
        "train_accuracy": accuracy,
        "epochs": ran,
        "seed": seed,
        "train_seconds": round(time.perf_counter() - t0, 2),
    }
    _save(path, net, meta)
    return GentoolCNNExtractor(net, meta, device)


# ----------------------------------------------------------------------------- inception


class InceptionExtractor(FeatureExtractor):
    """2048-d pool features of the FID Inception-v3 (299x299 bilinear, inputs scaled to [-1, 1])."""

    dim = 2048
    in_channels = 3
    input_size = (299, 299)
    antialias = False  # as pytorch-fid: plain bilinear resize, for comparable figures

    def __init__(self, weights: str | os.PathLike[str] | None = None, device: str | torch.device = "cpu") -> None:
        from gentool.metrics.inception import load_fid_inception, resolve_weights_path

        self.weights = resolve_weights_path(weights)
        self.device = torch.device(device)
        self.net = load_fid_inception(self.weights).to(self.device)
        self.name = f"inception-v3-fid[{self.weights.name}]"

    def _embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x * 2.0 - 1.0)


# ----------------------------------------------------------------------------- registry

EXTRACTORS = ("gentool-cnn", "inception")


def get_extractor(
    name: str | None,
    reference: ImageDataset | None = None,
    *,
    device: str | torch.device = "cpu",
) -> FeatureExtractor:
    """The extractor called ``name``: None or ``"gentool-cnn"`` (needs ``reference``),
    ``"inception"`` (weights from ``$GENTOOL_INCEPTION_WEIGHTS``) or ``"inception:/path.safetensors"``.
    """
    key, _, arg = (name or DEFAULT_EXTRACTOR).partition(":")
    if key == "gentool-cnn" and not arg:
        if reference is None:
            raise GentoolError("the gentool-cnn feature extractor needs a reference data set to train on")
        return gentool_cnn_extractor(reference, device=device)
    if key == "inception":
        return InceptionExtractor(arg or None, device=device)
    raise GentoolError(
        f"unknown feature extractor {name!r}; choose one of: gentool-cnn, inception, inception:/path/to/file.safetensors"
    )
