"""StyleGAN2 networks (Karras et al. 2020), in plain PyTorch: no custom CUDA ops, CPU and GPU.

- Mapping network: z (and, for a conditional model, an embedding of the label) -> w through
  ``map_layers`` fully connected layers; ``w_avg`` keeps a running mean of w (one row per class
  when conditional), the centre that truncation pulls towards (``psi`` 0: the average image).
- Synthesis network: a learned constant at side ``s0`` (4..7), doubled ``k`` times (8 = 4 x 2,
  28 = 7 x 4, 32 = 4 x 8, 64 = 4 x 16). Every convolution is *modulated* by a per-sample style
  (an affine map of w scales the weight's input channels) and *demodulated* (each output channel's
  weight is rescaled to unit norm, so unit-variance inputs give unit-variance outputs, which
  replaces AdaIN's instance norm and its droplet artefacts). Per-pixel noise with a learned
  strength follows each convolution; each resolution adds its RGB output to the upsampled
  previous one (skip generator). Every layer takes its own w (``num_ws`` of them), which is
  what style mixing and the mixing table exploit.
- Discriminator: residual blocks down to ``s0``, minibatch standard deviation, a convolution and
  two linear layers; for a conditional model the label enters by projection (score + <embed(y), h>).
- Equalised learning rate everywhere: weights are stored N(0, 1) and scaled by 1/sqrt(fan_in) at
  run time, so Adam's steps are alike for every layer; the mapping network learns 100x slower.

Simplifications against the reference code, for readability and CPU speed: bilinear upsampling
and average pooling stand in for the FIR-filtered resampling, and the modulated convolution is
computed as the reference's non-fused path (scale the input, one batched convolution, scale the
output), which on a CPU is several times faster than a grouped convolution per sample.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from gentool import ConfigError

from gentool_gan.configs import StyleGANConfig

SQRT2 = math.sqrt(2.0)


def plan(side: int) -> tuple[int, int]:
    """``(s0, k)`` with ``side == s0 * 2**k``, 4 <= s0 <= 7 and k >= 1; a ConfigError otherwise."""
    s0, k = side, 0
    while s0 > 7 and s0 % 2 == 0:
        s0, k = s0 // 2, k + 1
    if not 4 <= s0 <= 7 or k < 1:
        raise ConfigError(f"stylegan cannot build networks for {side}x{side} images: the side must be 4..7 times "
                          "a power of two, at least 8 (8, 28, 32, 64, 128, ...); pass --image-size 32, say")
    return s0, k


def lrelu(x: torch.Tensor) -> torch.Tensor:
    """LeakyReLU(0.2) times sqrt(2): keeps the signal's scale through the layers."""
    return F.leaky_relu(x, 0.2) * SQRT2


class EqLinear(nn.Module):
    """A linear layer with equalised learning rate (and an optional learning-rate multiplier)."""

    def __init__(self, cin: int, cout: int, bias_init: float = 0.0, lr_mul: float = 1.0, act: bool = False) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(cout, cin) / lr_mul)
        self.bias = nn.Parameter(torch.full((cout,), float(bias_init) / lr_mul))
        self.scale, self.lr_mul, self.act = lr_mul / math.sqrt(cin), lr_mul, act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.linear(x, self.weight * self.scale, self.bias * self.lr_mul)
        return lrelu(x) if self.act else x


class EqConv(nn.Module):
    """A plain convolution with equalised learning rate (the discriminator's layers)."""

    def __init__(self, cin: int, cout: int, k: int, bias: bool = True, act: bool = True, down: bool = False) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(cout, cin, k, k))
        self.bias = nn.Parameter(torch.zeros(cout)) if bias else None
        self.scale, self.act, self.down, self.pad = 1.0 / math.sqrt(cin * k * k), act, down, k // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.conv2d(x, self.weight * self.scale, self.bias, padding=self.pad)
        if self.down:
            x = F.avg_pool2d(x, 2)
        return lrelu(x) if self.act else x


def normalize_2nd_moment(x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    return x * (x.square().mean(dim=1, keepdim=True) + eps).rsqrt()


class MappingNetwork(nn.Module):
    """(z ``[B, z_dim]``, y ``[B]`` or None) -> w ``[B, w_dim]``, with the running mean ``w_avg``."""

    def __init__(self, cfg: StyleGANConfig, num_classes: int | None) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.embed = EqLinear(num_classes, cfg.z_dim) if num_classes else None
        dims = [cfg.z_dim * (2 if num_classes else 1)] + [cfg.w_dim] * cfg.map_layers
        self.layers = nn.Sequential(*[EqLinear(a, b, lr_mul=0.01, act=True) for a, b in zip(dims[:-1], dims[1:])])
        self.register_buffer("w_avg", torch.zeros(num_classes or 1, cfg.w_dim))
        self.w_avg_decay = cfg.w_avg_decay

    def centre(self, y: torch.Tensor | None, n: int) -> torch.Tensor:
        """The truncation centre of each sample: its class's mean w (the overall mean unconditionally)."""
        return self.w_avg[y] if y is not None and self.num_classes else self.w_avg[:1].expand(n, -1)

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None, psi: float = 1.0,
                update_avg: bool = False) -> torch.Tensor:
        x = normalize_2nd_moment(z)
        if self.embed is not None:
            if y is None:
                raise ValueError("this conditional generator needs labels")
            onehot = F.one_hot(y, self.num_classes).to(x.dtype)
            x = torch.cat([x, normalize_2nd_moment(self.embed(onehot))], dim=1)
        w = self.layers(x)
        if update_avg:
            self._update_avg(w.detach().float(), y if self.embed is not None else None)
        if psi != 1.0:
            c = self.centre(y if self.embed is not None else None, len(w)).to(w.dtype)
            w = c + psi * (w - c)
        return w

    @torch.no_grad()
    def _update_avg(self, w: torch.Tensor, y: torch.Tensor | None) -> None:
        keep = self.w_avg_decay
        if y is None:
            self.w_avg[0].lerp_(w.mean(0), 1.0 - keep)
            return
        sums = torch.zeros_like(self.w_avg).index_add_(0, y, w)
        counts = torch.bincount(y, minlength=self.w_avg.shape[0]).to(w.dtype)
        present = counts > 0
        means = sums[present] / counts[present, None]
        self.w_avg[present] = self.w_avg[present].lerp(means, 1.0 - keep)


class ModulatedConv(nn.Module):
    """A k x k convolution whose weight is scaled per sample by the style ``affine(w)`` (per input
    channel) and, with ``demodulate``, renormalised to unit norm per output channel."""

    def __init__(self, cin: int, cout: int, k: int, w_dim: int, demodulate: bool = True, up: bool = False) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(cout, cin, k, k))
        self.affine = EqLinear(w_dim, cin, bias_init=1.0)  # styles start at 1: the plain convolution
        self.scale, self.demodulate, self.up, self.pad = 1.0 / math.sqrt(cin * k * k), demodulate, up, k // 2

    def weights(self, styles: torch.Tensor) -> torch.Tensor:
        """The per-sample weights ``[B, cout, cin, k, k]`` for styles ``[B, cin]``."""
        w = self.weight[None] * self.scale * styles[:, None, :, None, None]
        if self.demodulate:
            w = w * (w.square().sum(dim=(2, 3, 4), keepdim=True) + 1e-8).rsqrt()
        return w

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """The same as convolving with :meth:`weights` per sample, computed as the reference
        code's non-fused path: scale the input channels by the style, convolve with the shared
        weight, scale the output channels by the demodulation factors. One batched convolution
        instead of a grouped one with a group per sample (several times faster on a CPU)."""
        styles = self.affine(w).to(x.dtype)  # [B, cin]
        if self.up:
            x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
        weight = (self.weight * self.scale).to(x.dtype)
        out = F.conv2d(x * styles[:, :, None, None], weight, padding=self.pad)
        if self.demodulate:
            d = (styles.square() @ weight.square().sum(dim=(2, 3)).t() + 1e-8).rsqrt()  # [B, cout]
            out = out * d[:, :, None, None]
        return out


class StyleLayer(nn.Module):
    """Modulated convolution, then per-pixel noise with a learned strength, bias, activation."""

    def __init__(self, cin: int, cout: int, w_dim: int, side: int, up: bool = False) -> None:
        super().__init__()
        self.conv = ModulatedConv(cin, cout, 3, w_dim, up=up)
        self.noise_strength = nn.Parameter(torch.zeros(()))
        self.bias = nn.Parameter(torch.zeros(cout))
        self.register_buffer("noise_const", torch.randn(1, 1, side, side))  # fixed noise for sampling

    def forward(self, x: torch.Tensor, w: torch.Tensor, noise: str = "random") -> torch.Tensor:
        x = self.conv(x, w)
        if noise == "random":
            x = x + torch.randn(x.shape[0], 1, *x.shape[2:], device=x.device, dtype=x.dtype) * self.noise_strength
        elif noise == "const":
            x = x + self.noise_const.to(x.dtype) * self.noise_strength
        return lrelu(x + self.bias.to(x.dtype)[None, :, None, None])


class ToRGB(nn.Module):
    """A modulated 1x1 convolution to the image's channels, without demodulation."""

    def __init__(self, cin: int, channels: int, w_dim: int) -> None:
        super().__init__()
        self.conv = ModulatedConv(cin, channels, 1, w_dim, demodulate=False)
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return self.conv(x, w) + self.bias.to(x.dtype)[None, :, None, None]


def widths(width: int, max_width: int, k: int) -> list[int]:
    """Channels at each level 0..k (side s0 * 2**level): ``width`` at the top, doubling downwards."""
    return [min(max_width, width * 2 ** (k - level)) for level in range(k + 1)]


class SynthesisNetwork(nn.Module):
    """ws ``[B, num_ws, w_dim]`` -> images ``[B, C, s, s]`` (about [-1, 1], not clamped)."""

    def __init__(self, shape: tuple[int, int, int], cfg: StyleGANConfig) -> None:
        super().__init__()
        c, h, w = shape
        if h != w:
            raise ConfigError(f"stylegan needs square images, got {h}x{w}; pass --image-size")
        s0, k = plan(h)
        ch = widths(cfg.width, cfg.max_width, k)
        self.const = nn.Parameter(torch.randn(ch[0], s0, s0))
        self.first = StyleLayer(ch[0], ch[0], cfg.w_dim, s0)
        self.rgb = nn.ModuleList([ToRGB(ch[0], c, cfg.w_dim)])
        self.ups = nn.ModuleList()
        for level in range(1, k + 1):
            side = s0 * 2**level
            self.ups.append(nn.ModuleList([StyleLayer(ch[level - 1], ch[level], cfg.w_dim, side, up=True),
                                           StyleLayer(ch[level], ch[level], cfg.w_dim, side)]))
            self.rgb.append(ToRGB(ch[level], c, cfg.w_dim))
        #: one w per layer: [first, rgb0 = up1.a, up1.b, rgb1 = up2.a, ...]; see forward()
        self.num_ws = 2 * k + 2

    def forward(self, ws: torch.Tensor, noise: str = "random") -> torch.Tensor:
        x = self.const[None].expand(ws.shape[0], -1, -1, -1).to(ws.dtype)
        x = self.first(x, ws[:, 0], noise)
        img = self.rgb[0](x, ws[:, 1])
        for level, (a, b) in enumerate(self.ups, start=1):
            x = a(x, ws[:, 2 * level - 1], noise)
            x = b(x, ws[:, 2 * level], noise)
            img = F.interpolate(img, scale_factor=2, mode="bilinear", align_corners=False) + self.rgb[level](x, ws[:, 2 * level + 1])
        return img


class StyleGenerator(nn.Module):
    """(z ``[B, z_dim]``, y) -> images ``[B, C, s, s]``; the call form every GAN here shares.

    ``psi`` truncates w towards ``w_avg``; ``noise`` is ``"random"`` (training), ``"const"``
    (fixed per-layer noise: the same z always gives the same image, the sampling default) or
    ``"none"``. Sampling and evaluation call it in eval mode, where const noise is the default.
    """

    def __init__(self, shape: tuple[int, int, int], num_classes: int | None, cfg: StyleGANConfig) -> None:
        super().__init__()
        self.z_dim, self.num_classes = cfg.z_dim, num_classes
        self.mapping = MappingNetwork(cfg, num_classes)
        self.synthesis = SynthesisNetwork(shape, cfg)
        self.num_ws = self.synthesis.num_ws
        self.mix_cut = self.num_ws // 2  # coarse styles: the first half of the layers

    def ws(self, z: torch.Tensor, y: torch.Tensor | None = None, psi: float = 1.0, update_avg: bool = False) -> torch.Tensor:
        """One w per sample, broadcast to every layer: ``[B, num_ws, w_dim]``."""
        return self.mapping(z, y, psi, update_avg)[:, None].expand(-1, self.num_ws, -1)

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None, psi: float = 1.0,
                noise: str | None = None) -> torch.Tensor:
        noise = noise or ("random" if self.training else "const")
        return self.synthesis(self.ws(z, y, psi), noise)


class DBlock(nn.Module):
    """Residual discriminator block: two 3x3 convolutions (the second halves the side), skip by
    average pooling and a 1x1 convolution, summed and scaled by 1/sqrt(2)."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv0 = EqConv(cin, cin, 3)
        self.conv1 = EqConv(cin, cout, 3, down=True)
        self.skip = EqConv(cin, cout, 1, bias=False, act=False, down=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.skip(x) + self.conv1(self.conv0(x))) / SQRT2


def minibatch_stddev(x: torch.Tensor, group: int = 4) -> torch.Tensor:
    """``x`` with one more channel: the mean standard deviation of the features over groups of
    ``group`` samples (Karras et al. 2018), which lets the discriminator see a collapsed batch."""
    b, c, h, w = x.shape
    g = math.gcd(min(group, b), b)
    y = x.float().reshape(g, -1, c, h, w)
    y = (y - y.mean(0)).square().mean(0).add(1e-8).sqrt().mean(dim=(1, 2, 3))  # [B / g]
    y = y.reshape(-1, 1, 1, 1).repeat(g, 1, h, w).to(x.dtype)
    return torch.cat([x, y], dim=1)


class StyleDiscriminator(nn.Module):
    """(images ``[B, C, s, s]`` in [-1, 1], y) -> scores ``[B]`` (logits)."""

    def __init__(self, shape: tuple[int, int, int], num_classes: int | None, cfg: StyleGANConfig) -> None:
        super().__init__()
        c, h, _ = shape
        s0, k = plan(h)
        ch = widths(*cfg.discriminator_widths(), k)
        self.from_rgb = EqConv(c, ch[k], 1)
        self.blocks = nn.Sequential(*[DBlock(ch[level], ch[level - 1]) for level in range(k, 0, -1)])
        self.conv = EqConv(ch[0] + 1, ch[0], 3)
        self.fc = EqLinear(ch[0] * s0 * s0, ch[0], act=True)
        self.out = EqLinear(ch[0], 1)
        self.embed = EqLinear(num_classes, ch[0]) if num_classes else None
        self.num_classes = num_classes

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        h = self.fc(self.conv(minibatch_stddev(self.blocks(self.from_rgb(x)))).flatten(1))
        score = self.out(h).squeeze(1)
        if self.embed is not None:
            if y is None:
                raise ValueError("this conditional discriminator needs labels")
            e = self.embed(F.one_hot(y, self.num_classes).to(h.dtype))
            score = score + (e * h).sum(1) / math.sqrt(h.shape[1])
        return score


def build(shape: tuple[int, int, int], num_classes: int | None, cfg: StyleGANConfig) -> tuple[nn.Module, nn.Module]:
    """The StyleGAN2 generator and discriminator for images of ``shape`` (C, H, W);
    class-conditional when ``num_classes`` is given."""
    return StyleGenerator(tuple(shape), num_classes, cfg), StyleDiscriminator(tuple(shape), num_classes, cfg)
