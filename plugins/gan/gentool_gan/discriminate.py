"""``gentool_discriminate`` for the GAN plugin: a checkpoint's discriminator scores images, so
another plugin (the detector) can use it as a baseline through ``gentool.load(ckpt).discriminate``.

gan, cgan (with labels), dcgan and srgan keep one discriminator ``d`` in every checkpoint; its
logit is high for images it takes as real. The networks run in eval mode (batch norm with its
running statistics); a minibatch-spread feature (``mbstd``) sees the batch it is given.
"""

from __future__ import annotations

from typing import Any

import torch

from gentool import ConfigError, config_from_dict


def discriminate(model: str, job: Any) -> torch.Tensor:
    """The ``gentool_discriminate`` hook body for ``model``."""
    ckpt = job.checkpoint
    if model not in ("gan", "cgan", "dcgan", "srgan"):
        raise ConfigError(f"{model}'s discriminator cannot score images through gentool_discriminate yet")
    if not any(k.startswith("d.") for k in ckpt.tensor_shapes):
        raise ConfigError(f"this {model} checkpoint holds no discriminator (weights-only exports keep the generator)")
    shape = tuple(ckpt.data["shape"])
    if model == "srgan":
        from gentool_gan import srgan
        from gentool_gan.srgan_config import SRGANConfig

        cfg = config_from_dict(SRGANConfig, ckpt.config)
        d = ckpt.build(lambda: {"d": srgan.build(shape, cfg)[1]})["d"].to(job.device).eval()
        return d(job.images.to(job.device)).float().cpu()
    from gentool_gan.task import CONFIGS, make_networks

    cfg = config_from_dict(CONFIGS[model], ckpt.config)
    num_classes = None
    y = None
    if model == "cgan":
        num_classes = (ckpt.extra or {}).get("num_classes") or ckpt.data.get("num_classes")
        if job.labels is None:
            raise ConfigError("cgan's discriminator scores an image together with its class: pass labels")
        if int(job.labels.min()) < 0 or int(job.labels.max()) >= int(num_classes):
            raise ConfigError(f"labels must lie in 0..{int(num_classes) - 1}")
        y = job.labels.long().to(job.device)
    d = ckpt.build(lambda: {"d": make_networks(model, shape, num_classes, cfg)[1]})["d"].to(job.device).eval()
    return d(job.images.to(job.device) * 2.0 - 1.0, y).float().reshape(-1).cpu()
