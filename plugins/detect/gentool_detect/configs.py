"""Typed options of the ``detector`` model (no torch: imported by the entry-point module)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal


@dataclass
class DetectorConfig:
    """Options of ``gentool train detector`` (``--set key=value`` or a TOML ``[model]`` table)."""

    input: Literal["npr", "pixels"] = field(default="npr", metadata={
        "help": "What the network sees: the NPR residual (image minus its down-then-up-sampled copy) or raw pixels."})
    spectrum: bool = field(default=False, metadata={
        "help": "Add a branch over the log-magnitude Fourier spectrum."})
    width: int = field(default=32, metadata={"help": "Channels of the first convolution (doubled twice)."})
    fake_from: str = field(default="", metadata={
        "help": "Comma-separated generator checkpoints to draw fakes from (any gentool image model)."})
    fakes_per_generator: int = field(default=0, metadata={
        "help": "Fakes drawn per generator checkpoint (0: as many real images as there are, split evenly)."})
    limit: int = field(default=0, metadata={
        "help": "Use at most this many real images (a seeded random subset; 0: all)."})
    augment: float = field(default=0.3, metadata={
        "help": "Probability of each training augmentation (Gaussian blur, JPEG, resize) per image."})
    val_fraction: float = field(default=0.1, metadata={"help": "Part held out to pick the best epoch by AUC."})
    calib_fraction: float = field(default=0.1, metadata={"help": "Part held out to fit the temperature."})
    test_fraction: float = field(default=0.15, metadata={"help": "Part held out for gentool evaluate."})

    def __post_init__(self) -> None:
        if self.width < 4:
            raise ValueError("width must be at least 4")
        if self.limit < 0:
            raise ValueError("limit must be >= 0")
        if self.fakes_per_generator < 0:
            raise ValueError("fakes_per_generator must be >= 0")
        if not 0 <= self.augment <= 1:
            raise ValueError("augment must lie in [0, 1]")
        parts = (self.val_fraction, self.calib_fraction, self.test_fraction)
        if min(parts) <= 0 or sum(parts) >= 0.8:
            raise ValueError("val_fraction, calib_fraction and test_fraction must be > 0 and sum to less than 0.8")

    @property
    def generators(self) -> list[str]:
        """The ``fake_from`` checkpoints as a list."""
        return [p.strip() for p in self.fake_from.split(",") if p.strip()]


@dataclass
class DetectorEvaluateOptions:
    """``gentool evaluate detector`` flags of this model."""

    logo_epochs: int = field(default=3, metadata={
        "help": "Epochs of each leave-one-generator-out detector (0 skips the table)."})
    discriminator: str = field(default="", metadata={
        "help": "A GAN checkpoint whose discriminator is scored beside the detector."})
    robustness: bool = field(default=True, metadata={"help": "Score JPEG q75, blur and 0.5x-resized copies too."})

    def __post_init__(self) -> None:
        if self.logo_epochs < 0:
            raise ValueError("--logo-epochs must be >= 0")


@dataclass
class DetectToolOptions:
    """Options of the ``detect`` tool (``gentool serve``'s ``POST /v1/tools/detect``)."""

    checkpoint: str | None = field(default=None, metadata={
        "help": "Detector checkpoint or run (default: the newest detector run)."})
    threshold: float = field(default=0.5, metadata={"help": "Probability from which the verdict is 'generated'."})
    heatmap: bool = field(default=False, metadata={"help": "Also a Grad-CAM heatmap overlay per image (PNG)."})

    def __post_init__(self) -> None:
        if not 0 <= self.threshold <= 1:
            raise ValueError("threshold must lie in [0, 1]")
