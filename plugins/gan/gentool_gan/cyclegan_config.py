"""The options of ``cyclegan`` (unpaired image-to-image translation): training (``--set``), and the
flags of ``gentool sample cyclegan``. No torch here (imported at registration)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class CycleGANConfig:
    """CycleGAN (Zhu et al. 2017): two ResNet-block generators, two PatchGAN discriminators,
    least-squares adversarial loss, cycle-consistency and identity losses, an image history pool."""

    domains: str | None = field(default=None, metadata={
        "help": "The two classes to translate between, 'A,B' (e.g. horse,deer); default trainA,trainB, or the only two classes."})
    width: int = field(default=32, metadata={"help": "Channels of the generators' first layer (64 in the paper)."})
    res_blocks: int = field(default=4, metadata={"help": "Residual blocks in each generator (6 at 128 px, 9 at 256 px in the paper)."})
    d_width: int = field(default=32, metadata={"help": "Channels of the discriminators' first layer (64 in the paper)."})
    cycle_weight: float = field(default=10.0, metadata={"help": "Weight of the cycle-consistency loss (lambda)."})
    identity_weight: float = field(default=0.5, metadata={
        "help": "Weight of the identity loss, as a fraction of cycle_weight (0: none)."})
    pool_size: int = field(default=50, metadata={"help": "Generated images kept in each history pool for the discriminators (0: none)."})
    decay_from: float = field(default=0.5, metadata={
        "help": "Fraction of the run after which the learning rate decays linearly to zero."})
    beta1: float = field(default=0.5, metadata={"help": "Adam beta1."})
    flip: bool = field(default=False, metadata={
        "help": "Mirror each training image left-right at random (the reference code's default; fights a "
                "discriminator that memorises a few hundred photos). Off for digits and text."})
    epoch_images: int = field(default=0, metadata={
        "help": "Images of each domain one epoch draws (fresh ones each epoch; 0: all of the larger domain): short epochs on big sets."})

    def __post_init__(self) -> None:
        if self.domains is not None:
            parts = [p.strip() for p in self.domains.split(",")]
            if len(parts) != 2 or not all(parts) or parts[0] == parts[1]:
                raise ValueError("domains must name two different classes: 'A,B'")
        if self.width < 1 or self.d_width < 1 or self.res_blocks < 0:
            raise ValueError("width and d_width must be at least 1, res_blocks at least 0")
        if self.cycle_weight < 0 or self.identity_weight < 0:
            raise ValueError("cycle_weight and identity_weight must be >= 0")
        if self.epoch_images < 0:
            raise ValueError("epoch_images must be >= 0")
        if self.pool_size < 0:
            raise ValueError("pool_size must be >= 0")
        if not 0 <= self.decay_from <= 1:
            raise ValueError("decay_from must lie in [0, 1]")
        if not 0 <= self.beta1 < 1:
            raise ValueError("beta1 must lie in [0, 1)")


@dataclass
class CycleGANSampleOptions:
    """``gentool sample cyclegan`` flags: held-out source images and their translations."""

    direction: str = field(default="a2b", metadata={"help": "a2b (domain A to B) or b2a."})

    def __post_init__(self) -> None:
        if self.direction not in ("a2b", "b2a"):
            raise ValueError("--direction must be a2b or b2a")
