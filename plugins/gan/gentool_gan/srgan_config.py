"""The options of ``srgan`` (super-resolution GAN): training (``--set key=value``), and the flags of
``gentool sample srgan`` and ``gentool evaluate srgan``. No torch here (imported at registration).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class SRGANConfig:
    """SRGAN (Ledig et al. 2017): a residual generator with sub-pixel up-sampling, trained first on a
    pixel loss (SRResNet), then adversarially with a feature (perceptual) loss."""

    scale: int = field(default=2, metadata={"help": "Up-scaling factor: 2, 4 or 8 (low-resolution inputs are the data shrunk by it)."})
    width: int = field(default=32, metadata={"help": "Channels of the generator's residual blocks."})
    blocks: int = field(default=6, metadata={"help": "Residual blocks in the generator (16 in the paper)."})
    d_width: int = field(default=32, metadata={"help": "Channels of the discriminator's first layer (doubling as it strides)."})
    pixel_epochs: int | None = field(default=None, metadata={
        "help": "Epochs of the pixel-loss stage (SRResNet) before the adversarial stage (default: half of --epochs)."})
    adv_weight: float | None = field(default=None, metadata={
        "help": "Weight of the adversarial loss in the second stage (default: SRGAN's 1e-3 at x4 and x8; 1e-4 at x2, "
                "where the pixel loss is about 4 times smaller, so the same weight would pull about 4 times harder)."})
    feature_weight: float = field(default=0.1, metadata={
        "help": "Weight of the feature (perceptual) loss: distance in the data's gentool-cnn conv features (no download)."})
    pixel_weight: float = field(default=1.0, metadata={"help": "Weight of the pixel (MSE) loss in the second stage."})
    patch: int = field(default=64, metadata={"help": "Side of the high-resolution training crops (whole images when smaller)."})
    degrade: bool = field(default=False, metadata={
        "help": "Train on realistic degradations (blur, noise, JPEG before and after shrinking), as Real-ESRGAN does."})
    dihedral: bool = field(default=True, metadata={
        "help": "Show each training batch under a random one of the square's 8 symmetries (flips, quarter turns), as SR training does: more views of small data."})
    val_images: int = field(default=200, metadata={
        "help": "Fixed training images scored (PSNR, beside bicubic) after each epoch (0: none); held-out scores come from gentool evaluate."})

    def __post_init__(self) -> None:
        if self.scale not in (2, 4, 8):
            raise ValueError("scale must be 2, 4 or 8")
        if self.width < 1 or self.blocks < 0 or self.d_width < 1:
            raise ValueError("width and d_width must be at least 1, blocks at least 0")
        if self.pixel_epochs is not None and self.pixel_epochs < 0:
            raise ValueError("pixel_epochs must be >= 0")
        for name in ("adv_weight", "feature_weight", "pixel_weight"):
            if getattr(self, name) is not None and not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be >= 0")
        if self.patch < 2 * self.scale:
            raise ValueError(f"patch must be at least {2 * self.scale} (twice the scale)")
        if self.val_images < 0:
            raise ValueError("val_images must be >= 0")

    def adversarial_weight(self) -> float:
        """``adv_weight``, or its default for this scale. On the CIFAR-10 subset at x2, 1e-3 knocked the
        generator off the pixel optimum (its MSE rose 8-fold in the first adversarial epoch) and raised
        the FD from 8.4 to 16.8; 1e-4 lowered it to 4.9 (docs/gan.md)."""
        if self.adv_weight is not None:
            return self.adv_weight
        return 1e-4 if self.scale == 2 else 1e-3


@dataclass
class SRGANSampleOptions:
    """``gentool sample srgan`` flags: the samples are held-out images of the training data, shrunk
    and restored (``compare.png`` shows low resolution, bicubic, srgan and the original)."""

    stage: str = field(default="gan", metadata={"help": "Which generator: gan (adversarial stage) or pixel (SRResNet stage)."})

    def __post_init__(self) -> None:
        if self.stage not in ("gan", "pixel"):
            raise ValueError("--stage must be gan or pixel")


@dataclass
class SRGANEvaluateOptions:
    """``gentool evaluate srgan`` flags."""

    fd: bool = field(default=True, metadata={"help": "Also the Fréchet distance of each restored set to the originals."})
