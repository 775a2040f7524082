"""A GAN's discriminator as a detector baseline, through the core.

``gentool.load(checkpoint).discriminate(images)`` routes to the plugin that wrote the checkpoint
(its ``gentool_discriminate`` hook), so this plugin imports no other and any GAN plugin that
implements the hook works, a third party's included. The discriminator's logit is high for real
images, so P(generated) = sigmoid(-logit): uncalibrated. A checkpoint without a discriminator, or
one that needs a class label (cgan), is refused in one line when it is opened.
"""

from __future__ import annotations

import torch

import gentool


class Discriminator:
    """A callable: images ``[B, C, H, W]`` (uint8, or float in ``[0, 1]``) at the GAN's size -> logits."""

    def __init__(self, path: str) -> None:
        try:
            self.model = gentool.load(path, device="cpu")
            self.shape = tuple(self.model.checkpoint.data.get("shape") or ())
            self.model.discriminate(torch.zeros(1, *self.shape))  # refuses now what cannot score
        except gentool.GentoolError as exc:
            raise gentool.CheckpointError(f"--discriminator: {path}: {exc}") from None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.discriminate(x)

