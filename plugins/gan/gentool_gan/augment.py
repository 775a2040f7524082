"""Augmenting what the discriminator sees, for GANs trained on little data.

Both methods transform real *and* generated images alike, with differentiable operations, just
before the discriminator (and inside the generator's loss too), so the generator is never taught
to produce augmented images: the discriminator just cannot memorise the few real ones.

- :class:`ADA`, adaptive discriminator augmentation (Karras et al. 2020, "Training Generative
  Adversarial Networks with Limited Data"): each transform of a fixed pipeline (flip, 90-degree
  rotations, translation, scaling, rotation, anisotropic scaling, sub-pixel translation;
  brightness, contrast, hue and saturation) is applied to each image with probability ``p``.
  ``p`` follows the overfitting signal ``r_t = E[sign(D(real))]``: when the discriminator is surer
  of the real images than ``target`` (0.6) it rises, otherwise it falls, by at most 1 per
  ``kimg`` thousand images. Below p of about 0.8 the transforms do not "leak" into the generated
  images, because the discriminator still sees un-augmented images often enough.
- :func:`diff_augment`, DiffAugment (Zhao et al. 2020): colour, translation and cutout, always on.

Pure PyTorch (``affine_grid`` / ``grid_sample``, with a double-differentiable wrapper for the R1
penalty on a GPU), on any device; randomness comes from the global
torch RNG, which the training harness seeds and restores on resume.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def _rand(n: int, device: torch.device) -> torch.Tensor:
    return torch.rand(n, device=device)


def _gate(p: float, n: int, device: torch.device) -> torch.Tensor:
    """1.0 for the samples that get a transform (each with probability ``p``), else 0.0."""
    return (_rand(n, device) < p).float()


def geometric_matrix(n: int, p: float, device: torch.device) -> torch.Tensor:
    """Per-sample 3x3 affine maps (normalised coordinates) of the geometric half of ADA's pipeline.

    Every random number is drawn whatever ``p`` is, so the RNG advances alike at every ``p``.
    """
    eye = torch.eye(3, device=device).expand(n, 3, 3)

    def mat(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor, d: torch.Tensor, tx: torch.Tensor, ty: torch.Tensor) -> torch.Tensor:
        m = torch.zeros(n, 3, 3, device=device)
        m[:, 0, 0], m[:, 0, 1], m[:, 0, 2] = a, b, tx
        m[:, 1, 0], m[:, 1, 1], m[:, 1, 2] = c, d, ty
        m[:, 2, 2] = 1.0
        return m

    zero, one = torch.zeros(n, device=device), torch.ones(n, device=device)
    m = eye.clone()
    # x-flip
    flip = 1.0 - 2.0 * (torch.randint(0, 2, (n,), device=device).float() * _gate(p, n, device))
    m = m @ mat(flip, zero, zero, one, zero, zero)
    # 90-degree rotations
    quarter = torch.randint(0, 4, (n,), device=device).float() * _gate(p, n, device) * (math.pi / 2)
    m = m @ mat(quarter.cos(), -quarter.sin(), quarter.sin(), quarter.cos(), zero, zero)
    # integer translation, up to 1/8 of the side (normalised coordinates span 2)
    t = (_rand(2 * n, device).view(2, n) * 2 - 1) * 0.125 * 2 * _gate(p, n, device)
    m = m @ mat(one, zero, zero, one, t[0], t[1])
    # isotropic scaling, log2-normal with std 0.2
    s = torch.exp2(torch.randn(n, device=device) * 0.2 * _gate(p, n, device))
    m = m @ mat(s, zero, zero, s, zero, zero)
    # arbitrary rotation (probability 1 - sqrt(1 - p), applied twice around the anisotropic scaling)
    p_rot = 1.0 - math.sqrt(max(0.0, 1.0 - p))
    theta = (_rand(n, device) * 2 - 1) * math.pi * _gate(p_rot, n, device)
    m = m @ mat(theta.cos(), -theta.sin(), theta.sin(), theta.cos(), zero, zero)
    a = torch.exp2(torch.randn(n, device=device) * 0.2 * _gate(p, n, device))
    m = m @ mat(a, zero, zero, 1.0 / a, zero, zero)
    theta = (_rand(n, device) * 2 - 1) * math.pi * _gate(p_rot, n, device)
    m = m @ mat(theta.cos(), -theta.sin(), theta.sin(), theta.cos(), zero, zero)
    # sub-pixel translation, normal with std 1/8 of the side
    t = torch.randn(2, n, device=device) * 0.125 * 2 * _gate(p, n, device)
    return m @ mat(one, zero, zero, one, t[0], t[1])


def color_transform(x: torch.Tensor, p: float) -> torch.Tensor:
    """Brightness, contrast, and for colour images hue rotation and saturation, each with probability ``p``."""
    n, c = x.shape[:2]
    dev = x.device
    b = (torch.randn(n, device=dev) * 0.2 * _gate(p, n, dev)).view(n, 1, 1, 1)
    k = torch.exp2(torch.randn(n, device=dev) * 0.5 * _gate(p, n, dev)).view(n, 1, 1, 1)
    hue = (_rand(n, device=dev) * 2 - 1) * math.pi * _gate(p, n, dev)
    sat = torch.exp2(torch.randn(n, device=dev) * 1.0 * _gate(p, n, dev))
    x = x + b.to(x.dtype)
    if c != 3:  # grey: contrast around the image's mean
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        return (x - mean) * k.to(x.dtype) + mean
    # colour: a 3x3 map around the grey axis v: contrast * (rotation about v, saturation off v)
    v = torch.full((3,), 1.0 / math.sqrt(3.0), device=dev)
    vv = torch.outer(v, v)
    skew = torch.tensor([[0.0, -v[2], v[1]], [v[2], 0.0, -v[0]], [-v[1], v[0], 0.0]], device=dev)
    eye = torch.eye(3, device=dev)
    rot = (vv + (eye - vv) * hue.cos().view(n, 1, 1) + skew * hue.sin().view(n, 1, 1))  # Rodrigues
    sat_m = vv + (eye - vv) * sat.view(n, 1, 1)
    m = (k.view(n, 1, 1) * (sat_m @ rot)).to(x.dtype)
    mean = x.mean(dim=(2, 3), keepdim=True).mean(dim=1, keepdim=True)  # contrast and hue around mid-grey of the image
    return torch.einsum("nij,njhw->nihw", m, x - mean) + mean


class _GridSample(torch.autograd.Function):
    """Bilinear ``grid_sample`` (reflection padding, ``align_corners=False``) whose input gradient
    can itself be differentiated on every device.

    The R1 penalty on augmented real images is a gradient of a gradient through this resampling,
    and CUDA has no derivative for ``grid_sampler_2d_backward`` (the CPU happens to route such
    calls to a differentiable fallback). The input gradient is linear in the incoming gradient, so
    its own derivative is the forward resampling again; the grid is treated as a constant in that
    second pass (ADA's grid comes from random draws and needs no gradient), and asking for a
    second derivative through the grid is an error rather than a silent zero. Computes in at
    least float32 (what autocast does for ``grid_sample``)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
        dtype = torch.promote_types(x.dtype, torch.float32)
        x, grid = x.to(dtype), grid.to(dtype)
        ctx.save_for_backward(x, grid)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x, grid = ctx.saved_tensors
        return _GridSampleGrad.apply(grad, x, grid)


class _GridSampleGrad(torch.autograd.Function):
    """The gradients of :class:`_GridSample` (input, grid), differentiable in the incoming gradient."""

    @staticmethod
    def forward(ctx, grad: torch.Tensor, x: torch.Tensor, grid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        ctx.save_for_backward(grid)
        ctx.set_materialize_grads(False)  # an unused output's gradient comes as None, not zeros to test
        # interpolation 0 = bilinear, padding 2 = reflection, align_corners False; both gradients
        return torch.ops.aten.grid_sampler_2d_backward(grad.to(x.dtype), x, grid, 0, 2, False, [True, True])

    @staticmethod
    def backward(ctx, grad_gx: torch.Tensor | None,
                 grad_ggrid: torch.Tensor | None) -> tuple[torch.Tensor | None, None, None]:
        (grid,) = ctx.saved_tensors
        if grad_ggrid is not None and bool(grad_ggrid.ne(0).any()):
            raise NotImplementedError("second derivatives through the sampling grid are not implemented")
        return (_GridSample.apply(grad_gx, grid) if grad_gx is not None else None), None, None


def resample(x: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """``x`` resampled bilinearly at ``grid`` with reflection padding: ``F.grid_sample``'s result,
    twice differentiable in ``x`` on CPU and GPU alike (see :class:`_GridSample`)."""
    return _GridSample.apply(x, grid)


def ada_augment(x: torch.Tensor, p: float) -> torch.Tensor:
    """ADA's pipeline at probability ``p`` on images ``[B, C, H, W]`` in about [-1, 1] (differentiable)."""
    n = x.shape[0]
    m = geometric_matrix(n, p, x.device)
    grid = F.affine_grid(m[:, :2, :].to(x.dtype), list(x.shape), align_corners=False)
    x = resample(x, grid).to(x.dtype)
    return color_transform(x, p)


def diff_augment(x: torch.Tensor) -> torch.Tensor:
    """DiffAugment's "color,translation,cutout" policy (Zhao et al. 2020), always applied."""
    n, c, h, w = x.shape
    dev = x.device
    x = x + (torch.rand(n, 1, 1, 1, device=dev, dtype=x.dtype) - 0.5)
    if c == 3:
        mean = x.mean(dim=1, keepdim=True)
        x = (x - mean) * (torch.rand(n, 1, 1, 1, device=dev, dtype=x.dtype) * 2) + mean
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = (x - mean) * (torch.rand(n, 1, 1, 1, device=dev, dtype=x.dtype) + 0.5) + mean
    # translation by up to 1/8 of the side, zero padded
    sh, sw = max(1, int(h * 0.125 + 0.5)), max(1, int(w * 0.125 + 0.5))
    ty = torch.randint(-sh, sh + 1, (n, 1, 1), device=dev)
    tx = torch.randint(-sw, sw + 1, (n, 1, 1), device=dev)
    gy = (torch.arange(h, device=dev).view(1, h, 1) + ty).clamp(-1, h)
    gx = (torch.arange(w, device=dev).view(1, 1, w) + tx).clamp(-1, w)
    padded = F.pad(x, (1, 1, 1, 1))
    idx = ((gy + 1) * (w + 2) + (gx + 1)).view(n, 1, h * w).expand(n, c, h * w)
    x = padded.flatten(2).gather(2, idx).view(n, c, h, w)
    # cutout: a zeroed square of half the side
    ch, cw = max(1, int(h * 0.5 + 0.5)), max(1, int(w * 0.5 + 0.5))
    oy = torch.randint(0, h + (1 - ch % 2), (n, 1, 1), device=dev) - ch // 2
    ox = torch.randint(0, w + (1 - cw % 2), (n, 1, 1), device=dev) - cw // 2
    yy, xx = torch.arange(h, device=dev).view(1, h, 1), torch.arange(w, device=dev).view(1, 1, w)
    keep = ~((yy >= oy) & (yy < oy + ch) & (xx >= ox) & (xx < ox + cw))
    return x * keep[:, None].to(x.dtype)


class ADA:
    """The augmentation probability ``p`` and its controller.

    Call :meth:`observe` with the discriminator's logits on real images every step; every
    ``interval`` steps :meth:`adjust` moves ``p`` by ``sign(r_t - target) * images / (kimg * 1000)``
    where ``r_t`` is the mean sign of those logits since the last adjustment.
    """

    def __init__(self, target: float = 0.6, kimg: float = 20.0, interval: int = 4, p: float = 0.0) -> None:
        self.target, self.kimg, self.interval, self.p = target, kimg, interval, float(p)
        self.signs, self.count, self.r_t = 0.0, 0, 0.0

    def observe(self, real_logits: torch.Tensor) -> None:
        self.signs += float(real_logits.detach().float().sign().sum())
        self.count += int(real_logits.numel())

    def adjust(self, images: int) -> None:
        """Update ``p`` from the signs seen since the last call (``images`` seen meanwhile)."""
        if not self.count:
            return
        self.r_t = self.signs / self.count
        step = math.copysign(1.0, self.r_t - self.target) * images / (self.kimg * 1000.0)
        self.p = min(1.0, max(0.0, self.p + step))
        self.signs, self.count = 0.0, 0

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return ada_augment(x, self.p) if self.p > 0 else x

    def state(self) -> dict[str, float]:
        return {"ada_p": self.p, "ada_signs": self.signs, "ada_count": self.count, "ada_rt": self.r_t}

    def load(self, state: dict) -> None:
        self.p = float(state.get("ada_p", self.p))
        self.signs = float(state.get("ada_signs", 0.0))
        self.count = int(state.get("ada_count", 0))
        self.r_t = float(state.get("ada_rt", 0.0))
