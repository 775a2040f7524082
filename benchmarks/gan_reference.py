"""A bare PyTorch DCGAN training loop: the peer that gentool's GAN harness is measured against.

It is the textbook loop (Radford et al. 2015, as in most tutorials): per step, one discriminator
update on a real and a generated batch with the non-saturating BCE loss, then one generator update;
Adam(lr, betas=(0.5, 0.999)); data reshuffled each epoch; no EMA, no validation, no checkpoints,
no progress bar. It trains whatever networks it is given (``build_dcgan`` makes the plugin's
own, so that a comparison is between training procedures, not architectures).

    python benchmarks/gan_reference.py --data ../shared/data/mnist --steps 500

trains and prints images per second and the Fréchet distance (gentool-cnn features) of 2,000
samples against the test split.
"""

from __future__ import annotations

import argparse
import contextlib
import time

import torch
import torch.nn.functional as F


def build_dcgan(shape: tuple[int, int, int], **cfg: object) -> tuple[torch.nn.Module, torch.nn.Module]:
    """The plugin's DCGAN generator and discriminator for ``shape`` with config overrides."""
    from gentool.config import build_config
    from gentool_gan.configs import DCGANConfig
    from gentool_gan.dcgan import build

    return build(shape, None, build_config(DCGANConfig, dict(cfg)))


def bare_loop(g: torch.nn.Module, d: torch.nn.Module, images: torch.Tensor, *, steps: int, batch_size: int,
              lr: float = 2e-4, z_dim: int = 64, seed: int = 0, device: str = "cpu",
              precision: str = "fp32") -> float:
    """Train ``g`` and ``d`` for ``steps`` steps on uint8 ``images`` ``[N, C, H, W]``; return seconds."""
    dev = torch.device(device)
    torch.manual_seed(seed)
    g.to(dev).train()
    d.to(dev).train()
    opt_d = torch.optim.Adam(d.parameters(), lr=lr, betas=(0.5, 0.999))
    opt_g = torch.optim.Adam(g.parameters(), lr=lr, betas=(0.5, 0.999))
    n = len(images)
    per_epoch = max(1, n // batch_size)
    amp = (torch.autocast(dev.type, dtype=torch.bfloat16) if precision == "bf16" else contextlib.nullcontext())
    order = torch.randperm(n)
    t0 = time.perf_counter()
    for step in range(steps):
        i = step % per_epoch
        if i == 0 and step:
            order = torch.randperm(n)
        idx = order[i * batch_size : (i + 1) * batch_size]
        x = images[idx].to(dev).float().div_(255) * 2 - 1
        with amp:
            z = torch.randn(x.shape[0], z_dim, device=dev)
            fake = g(z)
            real_out, fake_out = d(x).float(), d(fake.detach()).float()
            loss_d = (F.binary_cross_entropy_with_logits(real_out, torch.ones_like(real_out))
                      + F.binary_cross_entropy_with_logits(fake_out, torch.zeros_like(fake_out)))
        opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        opt_d.step()
        with amp:
            out = d(fake).float()
            loss_g = F.binary_cross_entropy_with_logits(out, torch.ones_like(out))
        opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        opt_g.step()
        if not torch.isfinite(loss_d.detach()) or not torch.isfinite(loss_g.detach()):
            raise RuntimeError(f"the bare loop diverged at step {step}")
    if dev.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="digits")
    p.add_argument("--steps", type=int, default=500)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    from gentool.data import load_dataset
    from gentool.metrics import compute_image_metrics, get_extractor
    from gentool_gan.task import generate

    train, test = load_dataset(args.data, split="train"), load_dataset(args.data, split="test")
    g, d = build_dcgan(train.shape)
    secs = bare_loop(g, d, train.images, steps=args.steps, batch_size=args.batch_size)
    fake = generate(g, 2000, torch.Generator().manual_seed(0), torch.device("cpu"), 64)
    m = compute_image_metrics(test.images, fake, get_extractor(None, train))
    print(f"bare loop: {args.steps} steps, {args.steps * args.batch_size / secs:.1f} images/s, "
          f"FD {m['fd']:.3f} ({m['features']})")


if __name__ == "__main__":
    main()
