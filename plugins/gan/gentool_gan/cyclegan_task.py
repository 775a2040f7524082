"""Training ``cyclegan``: two generators (A to B, B to A), two PatchGAN discriminators.

Each step takes an unpaired batch from each domain and trains the generators on the least-squares
adversarial loss, the cycle-consistency loss (A -> B -> A and B -> A -> B, L1, ``cycle_weight``) and
the identity loss (a B image through the A-to-B generator should stay itself), then each
discriminator on real images against generated ones drawn from a history pool of 50 (Shrivastava
et al. 2017), which steadies them. Adam at ``--lr`` (2e-4 in the paper), constant for the first
``decay_from`` of the run, then linearly to zero. The pools are saved with every checkpoint, so
a resume is exact.
"""

from __future__ import annotations

from typing import Any, Iterator, Mapping

import torch
import torch.nn.functional as F
from torch import nn

import gentool
from gentool import StepContext, Task

from gentool_gan import cyclegan
from gentool_gan.cyclegan_data import domain_images, domain_names

#: Seed of the fixed images the per-epoch cycle error and grid use.
VAL_SEED = 2017


class ImagePool:
    """Generated images a discriminator sees: half the time one from the pool (which the new one
    replaces), else the new one; the first ``size`` fill it."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.images: list[torch.Tensor] = []

    def query(self, batch: torch.Tensor) -> torch.Tensor:
        if self.size == 0:
            return batch
        out = []
        for img in batch.detach():
            if len(self.images) < self.size:
                self.images.append(img.clone())
                out.append(img)
            elif float(torch.rand(())) < 0.5:
                i = int(torch.randint(0, self.size, ()))
                out.append(self.images[i].clone())
                self.images[i] = img.clone()
            else:
                out.append(img)
        return torch.stack(out)

    def state(self) -> torch.Tensor | None:
        return torch.stack(self.images).cpu() if self.images else None

    def load(self, t: torch.Tensor | None, device: torch.device) -> None:
        self.images = [x.to(device) for x in t] if t is not None else []


class CycleGANTask(Task):
    """cyclegan: the two translations trained together."""

    def __init__(self, cfg: Any, data: Any, lr: float) -> None:
        self.cfg, self.data, self.lr = cfg, data, lr
        self.a_name, self.b_name = domain_names(data, cfg.domains)
        self.images_a, self.images_b = domain_images(data, self.a_name), domain_images(data, self.b_name)
        self.nets = cyclegan.build(tuple(data.shape), cfg)
        self.pool_a, self.pool_b = ImagePool(cfg.pool_size), ImagePool(cfg.pool_size)
        self.monitor = None
        g = torch.Generator().manual_seed(VAL_SEED)
        self.val_a = self.images_a[torch.randperm(len(self.images_a), generator=g)[:64]]
        self.val_b = self.images_b[torch.randperm(len(self.images_b), generator=g)[:64]]

    # -- harness contract ------------------------------------------------------------------
    def modules(self) -> dict[str, nn.Module]:
        return dict(self.nets)

    def configure_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        betas = (self.cfg.beta1, 0.999)
        n = self.nets
        return {"g": torch.optim.Adam([*n["g_ab"].parameters(), *n["g_ba"].parameters()], lr=self.lr, betas=betas),
                "d": torch.optim.Adam([*n["d_a"].parameters(), *n["d_b"].parameters()], lr=self.lr, betas=betas)}

    def configure_schedulers(self, optimizers: Mapping[str, torch.optim.Optimizer]) -> dict[str, Any]:
        total = max(1, int(getattr(self, "total_steps", 0) or 1))
        start = int(total * self.cfg.decay_from)

        def factor(step: int) -> float:
            return 1.0 if step < start else max(0.0, 1.0 - (step - start) / max(1, total - start))

        return {k: torch.optim.lr_scheduler.LambdaLR(o, factor) for k, o in optimizers.items()}

    def steps_per_epoch(self, batch_size: int, world_size: int) -> int:
        n = self.cfg.epoch_images or max(len(self.images_a), len(self.images_b))
        return max(1, n // (batch_size * world_size))

    def batches(self, epoch: int, batch_size: int, rank: int, world_size: int, seed: int) -> Iterator[Any]:
        g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
        steps = self.steps_per_epoch(batch_size, world_size)
        need = steps * batch_size * world_size

        def order(n: int) -> torch.Tensor:  # the smaller domain repeats, in fresh orders
            return torch.cat([torch.randperm(n, generator=g) for _ in range(-(-need // n))])[:need][rank::world_size]

        oa, ob = order(len(self.images_a)), order(len(self.images_b))

        def mirrored() -> torch.Tensor | None:  # from the epoch's stream, after the orders: a resumed epoch repeats it
            return torch.rand(need, generator=g)[rank::world_size] < 0.5 if self.cfg.flip else None

        fa, fb = mirrored(), mirrored()
        for i in range(steps):
            sl = slice(i * batch_size, (i + 1) * batch_size)
            yield (self._batch(self.images_a[oa[sl]], None if fa is None else fa[sl]),
                   self._batch(self.images_b[ob[sl]], None if fb is None else fb[sl]))

    def _batch(self, images: torch.Tensor, mirror: torch.Tensor | None) -> torch.Tensor:
        """uint8 images to [-1, 1] on the device, those marked in ``mirror`` flipped left-right."""
        if mirror is not None:
            images = torch.where(mirror[:, None, None, None], images.flip(-1), images)
        return images.to(self.device).float().div_(127.5).sub_(1.0)

    def training_step(self, batch: Any, ctx: StepContext) -> Mapping[str, Any]:
        cfg, n = self.cfg, self.nets
        a, b = batch
        fake_b, fake_a = n["g_ab"](a), n["g_ba"](b)
        for d in (n["d_a"], n["d_b"]):
            d.requires_grad_(False)
        adv = _ls(n["d_b"](fake_b), 1.0) + _ls(n["d_a"](fake_a), 1.0)
        cycle = F.l1_loss(n["g_ba"](fake_b), a) + F.l1_loss(n["g_ab"](fake_a), b)
        loss = adv + cfg.cycle_weight * cycle
        out: dict[str, Any] = {"g_adv": adv.detach(), "cycle": cycle.detach()}
        if cfg.identity_weight > 0:
            ident = F.l1_loss(n["g_ab"](b), b) + F.l1_loss(n["g_ba"](a), a)
            loss = loss + cfg.cycle_weight * cfg.identity_weight * ident
            out["identity"] = ident.detach()
        ctx.step(loss, "g")
        for d in (n["d_a"], n["d_b"]):
            d.requires_grad_(True)
        pb, pa = self.pool_b.query(fake_b), self.pool_a.query(fake_a)
        d_loss = 0.5 * (_ls(n["d_b"](b), 1.0) + _ls(n["d_b"](pb), 0.0) + _ls(n["d_a"](a), 1.0) + _ls(n["d_a"](pa), 0.0))
        ctx.step(d_loss, "d")
        out["d_loss"] = d_loss.detach()
        return out

    @torch.no_grad()
    def translate(self, images: torch.Tensor, direction: str) -> torch.Tensor:
        """uint8 or [0, 1] images to the other domain, in [0, 1] on the CPU."""
        g = self.nets["g_ab" if direction == "a2b" else "g_ba"]
        return translate(g, images, self.device)

    def validate(self) -> dict[str, float]:
        a = self.val_a.float() / 255
        b = self.val_b.float() / 255
        back_a = self.translate(self.translate(a, "a2b"), "b2a")
        back_b = self.translate(self.translate(b, "b2a"), "a2b")
        return {"cycle_l1": float(((back_a - a).abs().mean() + (back_b - b).abs().mean()) / 2)}

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """Rows of 8: A images, their B translations, B images, their A translations."""
        a, b = self.val_a[:8].float() / 255, self.val_b[:8].float() / 255
        return torch.cat([a, self.translate(a, "a2b"), b, self.translate(b, "b2a")])

    def extra_state(self) -> dict[str, Any]:
        return {"pool_a": self.pool_a.state(), "pool_b": self.pool_b.state()}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.pool_a.load(state.get("pool_a"), self.device)
        self.pool_b.load(state.get("pool_b"), self.device)

    def checkpoint_meta(self) -> dict[str, Any]:
        return {"domain_a": self.a_name, "domain_b": self.b_name}


def _ls(pred: torch.Tensor, target: float) -> torch.Tensor:
    """Least-squares GAN loss (Mao et al. 2017) of a discriminator's score map against ``target``."""
    return ((pred.float() - target) ** 2).mean()


@torch.no_grad()
def translate(g: nn.Module, images: torch.Tensor, device: torch.device, batch: int = 64) -> torch.Tensor:
    """``g`` over uint8 or [0, 1] images, in batches: [0, 1] results on the CPU (eval mode kept as found)."""
    x = images.float() / 255 if images.dtype == torch.uint8 else images.float()
    was = g.training
    g.eval()
    out = [((g(b.to(device) * 2 - 1).float() + 1) / 2).clamp(0, 1).cpu() for b in x.split(batch)]
    g.train(was)
    return torch.cat(out) if out else x


def train(job: Any) -> Any:
    """The ``gentool_train`` hook body for ``cyclegan``."""
    return gentool.fit(CycleGANTask(job.config, job.data, job.options.lr), job)
