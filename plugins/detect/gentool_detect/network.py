"""The detector network: a small CNN over the NPR residual (or raw pixels), with an optional
branch over the log-magnitude spectrum, and a temperature for calibrated probabilities.

The convolutions end in global average pooling, so the network takes any size; the detect
command still scores photos as tiles of the training size (see :mod:`gentool_detect.tiling`).
"""

from __future__ import annotations

import torch
from torch import nn

from gentool_detect.npr import npr

#: The residual of natural images has a spread of a few hundredths; scaled so that the first
#: layer sees values of order one, as it does with centred pixels (training is otherwise slow).
NPR_SCALE = 16.0


def _block(cin: int, cout: int, stride: int) -> nn.Sequential:
    # No normalisation layer: batch norm computes differently in training and evaluation (a
    # detector scored badly in eval mode after a few hundred steps), and group or instance norm
    # divides out each image's residual energy, one of the cues NPR exposes.
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1), nn.ReLU(inplace=True),
                         nn.Conv2d(cout, cout, 3, 1, 1), nn.ReLU(inplace=True))


class DetectorNet(nn.Module):
    """images ``[B, C, H, W]`` in ``[0, 1]`` -> logits ``[B]`` (positive: generated)."""

    def __init__(self, channels: int, input: str = "npr", spectrum: bool = False, width: int = 32) -> None:
        super().__init__()
        self.input, self.use_spectrum = input, spectrum
        w = width
        self.features = nn.Sequential(_block(channels, w, 1), _block(w, 2 * w, 2), _block(2 * w, 4 * w, 2))
        self.pool = nn.AdaptiveAvgPool2d(1)
        extra = 0
        if spectrum:
            self.spec = nn.Sequential(nn.Conv2d(channels, w, 3, 2, 1), nn.ReLU(inplace=True),
                                      nn.Conv2d(w, w, 3, 2, 1), nn.ReLU(inplace=True), nn.AdaptiveAvgPool2d(1))
            extra = w
        self.head = nn.Linear(4 * w + extra, 1)
        for m in self.modules():  # He init: keeps the signal's scale through the plain ReLU stack
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                nn.init.zeros_(m.bias)
        #: Temperature of the calibrated probability sigmoid(logit / T), fitted after training.
        self.register_buffer("temperature", torch.ones(()))
        #: Bias of the calibrated logit: sigmoid(logit / T + bias) (see gentool_detect.calibrate).
        self.register_buffer("bias", torch.zeros(()))

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """What the convolutions see: the NPR residual (times NPR_SCALE: it is small) or centred pixels."""
        return npr(x) * NPR_SCALE if self.input == "npr" else x * 2.0 - 1.0

    def last_conv(self) -> nn.Module:
        """The last convolution of the main branch (for Grad-CAM)."""
        return self.features[-1][2]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.pool(self.features(self.prepare(x))).flatten(1)
        if self.use_spectrum:
            mag = torch.fft.fftshift(torch.fft.fft2(x - x.mean(dim=(-2, -1), keepdim=True)), dim=(-2, -1)).abs()
            h = torch.cat([h, self.spec(torch.log1p(mag)).flatten(1)], dim=1)
        return self.head(h).squeeze(1)

    def calibrated(self, logits: torch.Tensor) -> torch.Tensor:
        """Raw logits -> calibrated logits (``logit / T + bias``)."""
        return logits / self.temperature + self.bias
