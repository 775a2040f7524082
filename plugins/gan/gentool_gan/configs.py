"""The options of the GAN models: training (``--set key=value`` or a TOML ``[model]`` table), and
the model-specific flags of ``gentool sample`` and ``gentool evaluate``.

No torch here: the plugin's entry point imports this module to register the models.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

LossName = Literal["ns", "hinge", "lsgan", "wgan-gp"]


@dataclass
class GANConfig:
    """Options every GAN shares: losses, the two optimizers, EMA, validation."""

    z_dim: int = field(default=64, metadata={"help": "Size of the latent noise vector z."})
    loss: LossName = field(default="ns", metadata={
        "help": "Adversarial loss: ns (non-saturating), hinge, lsgan (least squares), wgan-gp (Wasserstein + gradient penalty)."})
    spectral_norm: bool = field(default=False, metadata={"help": "Spectral normalisation on the discriminator's layers."})
    g_lr: float | None = field(default=None, metadata={"help": "Generator learning rate (default: --lr)."})
    d_lr: float | None = field(default=None, metadata={"help": "Discriminator learning rate (default: --lr)."})
    beta1: float = field(default=0.5, metadata={"help": "Adam beta1 of both optimizers."})
    beta2: float = field(default=0.999, metadata={"help": "Adam beta2 of both optimizers."})
    n_critic: int = field(default=1, metadata={"help": "Discriminator steps per generator step (5 is usual for wgan-gp)."})
    gp_weight: float = field(default=10.0, metadata={"help": "Gradient-penalty weight (wgan-gp only)."})
    ema_decay: float = field(default=0.999, metadata={
        "help": "Decay of the EMA copy of the generator used for sampling and evaluation (0: the raw generator)."})
    val_samples: int = field(default=1000, metadata={
        "help": "EMA samples scored by Fréchet distance after each epoch to pick best.safetensors (0: no validation)."})

    def __post_init__(self) -> None:
        if self.z_dim < 1:
            raise ValueError("z_dim must be at least 1")
        for name in ("g_lr", "d_lr"):
            v = getattr(self, name)
            if v is not None and not v > 0:
                raise ValueError(f"{name} must be positive")
        if not (0 <= self.beta1 < 1 and 0 <= self.beta2 < 1):
            raise ValueError("beta1 and beta2 must lie in [0, 1)")
        if self.n_critic < 1:
            raise ValueError("n_critic must be at least 1")
        if self.gp_weight < 0:
            raise ValueError("gp_weight must be >= 0")
        if not 0 <= self.ema_decay < 1:
            raise ValueError("ema_decay must lie in [0, 1)")
        if self.val_samples < 0 or 0 < self.val_samples < 10:
            raise ValueError("val_samples must be 0 (off) or at least 10")


@dataclass
class MLPGANConfig(GANConfig):
    """The vanilla GAN: fully connected generator and discriminator (Goodfellow et al. 2014)."""

    g_hidden: tuple[int, ...] = field(default=(256, 512), metadata={"help": "Generator hidden widths."})
    d_hidden: tuple[int, ...] = field(default=(512, 256), metadata={"help": "Discriminator hidden widths."})
    dropout: float = field(default=0.0, metadata={"help": "Dropout in the discriminator."})
    mbstd: bool = field(default=False, metadata={
        "help": "Give the discriminator's last layer the batch's feature spread (minibatch standard deviation, Karras 2018), against mode collapse."})

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.g_hidden or not self.d_hidden or min(self.g_hidden + self.d_hidden) < 1:
            raise ValueError("g_hidden and d_hidden need at least one positive width")
        if not 0 <= self.dropout < 1:
            raise ValueError("dropout must lie in [0, 1)")


@dataclass
class CGANConfig(MLPGANConfig):
    """The conditional GAN: the label goes to both networks (Mirza & Osindero 2014)."""

    embed_dim: int = field(default=10, metadata={"help": "Size of the generator's label embedding."})
    conditioning: Literal["projection", "concat"] = field(default="projection", metadata={
        "help": "How the discriminator sees the label: projection (inner product with its features) or concat (one-hot joined to the input)."})

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.embed_dim < 1:
            raise ValueError("embed_dim must be at least 1")


@dataclass
class DCGANConfig(GANConfig):
    """DCGAN: strided convolutions, transposed convolutions, batch norm (Radford et al. 2015)."""

    g_width: int = field(default=64, metadata={"help": "Channels of the generator's last hidden layer (doubling towards z)."})
    d_width: int = field(default=64, metadata={"help": "Channels of the discriminator's first layer (doubling with depth)."})

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.g_width < 1 or self.d_width < 1:
            raise ValueError("g_width and d_width must be at least 1")


@dataclass
class GANSampleOptions:
    """``gentool sample gan|cgan|dcgan`` flags (``m.sample(n, label=3)`` in Python)."""

    label: str | None = field(default=None, metadata={
        "help": "cgan: the class to draw (id or class name), or 'all' for one row of -n samples per class."})
    interpolate: bool = field(default=False, metadata={
        "help": "Write a latent walk: interpolation.gif and -n frames per row."})
    keyframes: int | None = field(default=None, metadata={
        "help": "With --interpolate: random latent points the walk passes through (default 4)."})

    def __post_init__(self) -> None:
        if self.keyframes is not None and not self.interpolate:
            raise ValueError("--keyframes only applies with --interpolate")
        if self.keyframes is not None and self.keyframes < 2:
            raise ValueError("--keyframes must be at least 2")


@dataclass
class GANEvaluateOptions:
    """``gentool evaluate cgan`` flags (the unconditional models take none that change anything)."""

    cas: bool = field(default=True, metadata={"help": "cgan: also the Classification Accuracy Score."})
    cas_images: int | None = field(default=None, metadata={
        "help": "cgan: generated (and real baseline) training images for CAS (default: the train split's size, at most 10000)."})
    cas_epochs: int | None = field(default=None, metadata={
        "help": "cgan: epochs of the CAS classifiers (default: enough for 40,000 images seen)."})

    def __post_init__(self) -> None:
        if self.cas_images is not None and self.cas_images < 1:
            raise ValueError("--cas-images must be at least 1")
        if self.cas_epochs is not None and self.cas_epochs < 1:
            raise ValueError("--cas-epochs must be at least 1")


def parse_seeds(text: str) -> list[int]:
    """``"0-15"``, ``"1,5,9"`` or ``"0-3,10"`` -> the list of seeds (in order, repeats kept)."""
    seeds: list[int] = []
    for part in str(text).replace(" ", "").split(","):
        lo, sep, hi = part.partition("-")
        if not lo.isdigit() or (sep and not hi.isdigit()):
            raise ValueError(f"--seeds {text!r}: give seeds as 0-15, 1,5,9 or 0-3,10 (non-negative integers)")
        a, b = int(lo), int(hi) if sep else int(lo)
        if b < a:
            raise ValueError(f"--seeds {text!r}: the range {part} runs backwards")
        if b - a + len(seeds) >= 100_000:
            raise ValueError(f"--seeds {text!r}: at most 100,000 seeds")
        seeds.extend(range(a, b + 1))
    return seeds


@dataclass
class StyleGANConfig:
    """StyleGAN2 (Karras et al. 2020) sized for the data, with ADA or DiffAugment for small data sets."""

    z_dim: int = field(default=64, metadata={"help": "Size of the latent z."})
    w_dim: int = field(default=64, metadata={"help": "Size of the intermediate latent w (the style vector)."})
    map_layers: int = field(default=2, metadata={"help": "Layers of the mapping network z -> w (8 in the paper; 2 suits small data)."})
    width: int = field(default=32, metadata={
        "help": "Channels at the output resolution; they double at each halving of the side, up to max_width."})
    max_width: int = field(default=128, metadata={"help": "Most channels of any layer, both networks."})
    d_width: int | None = field(default=None, metadata={
        "help": "The discriminator's channels at the output resolution (default: width); a stronger critic for a small generator."})
    d_max_width: int | None = field(default=None, metadata={
        "help": "Most channels of any discriminator layer (default: max_width)."})
    cond: bool = field(default=True, metadata={
        "help": "Class-conditional when the data has labels (false: ignore the labels)."})
    augment: Literal["auto", "ada", "diffaug", "none"] = field(default="auto", metadata={
        "help": "What the discriminator sees augmented: ada (adaptive probability), diffaug (DiffAugment, always on), none; auto: ada below 30,000 training images, else none."})
    ada_target: float = field(default=0.6, metadata={
        "help": "ADA: target of r_t = E[sign(D(real))]; p rises while the discriminator is surer than this on real images."})
    ada_kimg: float = field(default=20.0, metadata={
        "help": "ADA: thousands of images over which p may move by 1 (500 in the paper's long runs; small budgets need faster)."})
    ada_interval: int = field(default=4, metadata={"help": "ADA: steps between updates of p."})
    r1_gamma: float | None = field(default=None, metadata={
        "help": "R1 penalty weight on real images (default: 0.0002 * pixels / batch size, at least 0.01)."})
    r1_every: int = field(default=16, metadata={"help": "Lazy regularisation: R1 every this many steps (1: every step)."})
    style_mixing: float = field(default=0.9, metadata={"help": "Probability of style-mixing regularisation per training image."})
    pl_weight: float = field(default=0.0, metadata={"help": "Path-length regularisation weight (0: off; 2 in the paper)."})
    pl_every: int = field(default=4, metadata={"help": "Lazy path-length regularisation every this many steps."})
    beta1: float = field(default=0.0, metadata={"help": "Adam beta1 of both optimizers."})
    beta2: float = field(default=0.99, metadata={"help": "Adam beta2 of both optimizers."})
    ema_decay: float = field(default=0.995, metadata={
        "help": "Decay of the EMA generator used for sampling and evaluation (0: the raw generator)."})
    ema_ramp: float = field(default=0.05, metadata={
        "help": "The EMA's half-life grows with training to this share of the images trained on, where that is "
                "longer than ema_decay's (StyleGAN2-ADA's 5% ramp, with ema_decay as the floor; 0: ema_decay alone)."})
    w_avg_decay: float = field(default=0.995, metadata={"help": "Decay of the running mean of w (the truncation centre)."})
    val_samples: int = field(default=1000, metadata={
        "help": "EMA samples scored by Fréchet distance after each epoch to pick best.safetensors (0: no validation)."})

    def __post_init__(self) -> None:
        for name in ("z_dim", "w_dim", "map_layers", "width", "max_width", "d_width", "d_max_width",
                     "ada_interval", "r1_every", "pl_every"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        if self.max_width < self.width:
            raise ValueError("max_width must be at least width")
        d_width, d_max_width = self.discriminator_widths()
        if d_max_width < d_width:
            raise ValueError("d_max_width must be at least d_width (width where d_width is unset)")
        if not 0 < self.ada_target < 1:
            raise ValueError("ada_target must lie in (0, 1)")
        if not self.ada_kimg > 0:
            raise ValueError("ada_kimg must be positive")
        if self.r1_gamma is not None and not self.r1_gamma >= 0:
            raise ValueError("r1_gamma must be >= 0")
        if not 0 <= self.style_mixing <= 1:
            raise ValueError("style_mixing must lie in [0, 1]")
        if not self.pl_weight >= 0:
            raise ValueError("pl_weight must be >= 0")
        if not (0 <= self.beta1 < 1 and 0 <= self.beta2 < 1):
            raise ValueError("beta1 and beta2 must lie in [0, 1)")
        if not 0 <= self.ema_ramp <= 1:
            raise ValueError("ema_ramp must lie in [0, 1]")
        for name in ("ema_decay", "w_avg_decay"):
            if not 0 <= getattr(self, name) < 1:
                raise ValueError(f"{name} must lie in [0, 1)")
        if self.val_samples < 0 or 0 < self.val_samples < 10:
            raise ValueError("val_samples must be 0 (off) or at least 10")

    def discriminator_widths(self) -> tuple[int, int]:
        """``(width, max_width)`` of the discriminator: its own where set, else the generator's."""
        return (self.width if self.d_width is None else self.d_width,
                self.max_width if self.d_max_width is None else self.d_max_width)


#: The largest -n that --mix and --interpolate accept (they write one picture of the whole request).
MAX_WHOLE_REQUEST = 1000


@dataclass
class StyleGANSampleOptions:
    """``gentool sample stylegan`` flags (``m.sample(16, trunc=0.7, seeds="0-15")`` in Python)."""

    trunc: float = field(default=1.0, metadata={
        "help": "Truncation psi: w = w_avg + psi (w - w_avg); 1 none, 0.7 cleaner and less varied, 0 the average image."})
    seeds: str | None = field(default=None, metadata={
        "help": "One image per seed, image i from seed i whatever -n (0-15, 1,5,9 or 0-3,10)."})
    label: str | None = field(default=None, metadata={
        "help": "Conditional models: the class (id or name), or 'all' for one row of -n samples per class."})
    mix: bool = field(default=False, metadata={
        "help": "Write style_mixing.png: rows give the coarse styles, columns the fine ones (a side of sqrt(-n) or the seeds)."})
    interpolate: bool = field(default=False, metadata={
        "help": "Write a walk in w space through --keyframes random points or the --seeds: interpolation.gif, its -n frames as the samples."})
    keyframes: int | None = field(default=None, metadata={
        "help": "With --interpolate: random points the walk passes through (default 4)."})

    def __post_init__(self) -> None:
        if not 0 <= self.trunc <= 1:
            raise ValueError("--trunc must lie in [0, 1] (1: no truncation, 0: the average image)")
        if self.seeds is not None:
            parse_seeds(self.seeds)
        if self.mix and self.interpolate:
            raise ValueError("--mix and --interpolate are separate pictures: pass one of them")
        if self.keyframes is not None and not self.interpolate:
            raise ValueError("--keyframes only applies with --interpolate")
        if self.keyframes is not None and self.keyframes < 2:
            raise ValueError("--keyframes must be at least 2")


@dataclass
class StyleGANEvaluateOptions:
    """``gentool evaluate stylegan`` flags."""

    psis: tuple[float, ...] = field(default=(0.5, 0.7, 1.0), metadata={
        "help": "Truncation values of the trade-off table (fd_psiX, precision_psiX, recall_psiX; empty: none)."})

    def __post_init__(self) -> None:
        if any(not 0 <= p <= 1 for p in self.psis):
            raise ValueError("--psis must lie in [0, 1]")
