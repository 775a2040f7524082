"""The three kinds of detector ``gentool detect`` can use, behind one interface: a trained
detector checkpoint, a GAN's discriminator, and a Hugging Face image-classification model."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image

import gentool

from gentool_detect import tiling
from gentool_detect.imageio import to_tensor

HF_FAKE_WORDS = ("fake", "generated", "synthetic", "artificial", "ai", "gan", "diffusion", "deepfake", "sd")


@dataclass
class Score:
    """One image's answer."""

    probability: float
    tiles: int = 1
    max_tile: float | None = None


def _sigmoid(z: float) -> float:
    return 1 / (1 + math.exp(-z)) if z >= 0 else math.exp(z) / (1 + math.exp(z))


class CheckpointScorer:
    """A trained ``detector`` checkpoint: tiles at its input size, mean calibrated logit."""

    def __init__(self, path: Path, device: str = "cpu") -> None:
        from gentool_detect.configs import DetectorConfig
        from gentool_detect.train import make_net

        ckpt = gentool.load_checkpoint(path, model="detector")
        extra = ckpt.extra
        self.channels = int(extra.get("channels") or ckpt.data["shape"][0])
        self.size = int(extra.get("input_size") or ckpt.data["shape"][-1])
        self.net = make_net(gentool.config_from_dict(DetectorConfig, ckpt.config), self.channels)
        ckpt.load_into({"detector": self.net})
        self.net.eval()
        self.name = f"detector:{path}"
        self.aggregation = tiling.AGGREGATION
        self.calibrated = bool(extra.get("calibration"))

    def tile_logits(self, img: Image.Image) -> torch.Tensor:
        """Raw logits of ``img``'s tiles."""
        x = to_tensor(img, self.channels, as_float=False)
        t, _ = tiling.tiles(x, self.size)
        with torch.no_grad():
            return torch.cat([self.net(t[i: i + 64]) for i in range(0, len(t), 64)])

    def score(self, img: Image.Image) -> Score:
        z = self.tile_logits(img)
        zz = self.net.calibrated(z)
        return Score(_sigmoid(tiling.aggregate(zz)), len(z), _sigmoid(float(zz.max())))


class DiscriminatorScorer:
    """A GAN's discriminator: tiles at the GAN's size, P(generated) = sigmoid(-mean logit)."""

    def __init__(self, path: str) -> None:
        from gentool_detect.discriminator import Discriminator

        self.d = Discriminator(path)
        self.channels, self.size = int(self.d.shape[0]), int(self.d.shape[-1])
        self.name = f"discriminator:{path}"
        self.aggregation = "mean of tile logits, negated (uncalibrated)"
        self.calibrated = False

    def score(self, img: Image.Image) -> Score:
        t, _ = tiling.tiles(to_tensor(img, self.channels, as_float=False), self.size)
        z = -self.d(t)
        return Score(_sigmoid(tiling.aggregate(z)), len(z), _sigmoid(float(z.max())))


def fake_index(id2label: dict[Any, str]) -> int:
    """Which output of a Hugging Face classifier means "generated": a label naming it
    (fake, generated, synthetic, artificial, AI, ...), else the second of two labels."""
    labels = {int(k): str(v) for k, v in id2label.items()}
    for i, name in sorted(labels.items()):
        words = "".join(c if c.isalnum() else " " for c in name.lower()).split()
        if any(w in HF_FAKE_WORDS for w in words) and not any(w in ("real", "human", "authentic") for w in words):
            return i
    if len(labels) == 2:
        return 1
    raise gentool.ConfigError(f"--model: cannot tell which label means generated among {sorted(labels.values())}")


class HFScorer:
    """A Hugging Face image-classification model (transformers, imported here only)."""

    def __init__(self, ref: str) -> None:
        try:
            from transformers import AutoImageProcessor, AutoModelForImageClassification
        except ImportError:
            raise gentool.ConfigError("--model needs transformers: pip install 'gentool-detect[hf]'") from None
        try:
            self.processor = AutoImageProcessor.from_pretrained(ref)
            # safetensors only: a pickled pytorch_model.bin is code that a user-given model could run
            self.model = AutoModelForImageClassification.from_pretrained(ref, use_safetensors=True).eval()
        except (OSError, ValueError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise gentool.ConfigError(f"--model {ref}: cannot load an image-classification model ({first})") from None
        self.fake = fake_index(self.model.config.id2label)
        self.name = f"hf:{ref} (label {self.model.config.id2label[self.fake]!r})"
        self.aggregation = "the model's own preprocessing (whole image)"
        self.calibrated = False

    def score(self, img: Image.Image) -> Score:
        inputs = self.processor(images=img.convert("RGB"), return_tensors="pt")
        with torch.no_grad():
            logits = self.model(**inputs).logits[0].float()
        return Score(float(torch.softmax(logits, 0)[self.fake]))
