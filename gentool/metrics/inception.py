"""Inception-v3 as used for FID (the TensorFlow 2015-12-05 graph), in plain torch.

Why its own file: FID numbers are only comparable with the literature when they come from this
exact network, which differs from torchvision's ImageNet Inception-v3 in a few places (average
pools that ignore padding in the A, C and first E blocks, a max pool in the last E block, 1008
classes). We write it out here because torchvision is not a dependency, and we load weights only
from a local ``.safetensors`` file: gentool never unpickles.

Getting the weights: take pytorch-fid's ``pt_inception-2015-12-05-6726825d.pth`` and convert it
once, in an environment you trust::

    import torch, safetensors.torch
    sd = torch.load("pt_inception-2015-12-05-6726825d.pth", map_location="cpu")
    safetensors.torch.save_file({k: v.contiguous() for k, v in sd.items()},
                                "pt_inception-2015-12-05.safetensors")

then point gentool at it with ``inception:/path/to/pt_inception-2015-12-05.safetensors`` or the
environment variable ``GENTOOL_INCEPTION_WEIGHTS``.

Expected tensor names (the torchvision / pytorch-fid names). Every convolution is a
``BasicConv2d`` block ``<block>`` with the five tensors::

    <block>.conv.weight                 [out, in, kh, kw]   (no bias)
    <block>.bn.weight, <block>.bn.bias, <block>.bn.running_mean, <block>.bn.running_var   [out]
    (<block>.bn.num_batches_tracked is optional and ignored)

with ``<block>`` one of::

    Conv2d_1a_3x3  Conv2d_2a_3x3  Conv2d_2b_3x3  Conv2d_3b_1x1  Conv2d_4a_3x3
    Mixed_5b, Mixed_5c, Mixed_5d (A):   .branch1x1  .branch5x5_1  .branch5x5_2
                                        .branch3x3dbl_1  .branch3x3dbl_2  .branch3x3dbl_3  .branch_pool
    Mixed_6a (B):                       .branch3x3  .branch3x3dbl_1  .branch3x3dbl_2  .branch3x3dbl_3
    Mixed_6b .. Mixed_6e (C):           .branch1x1  .branch7x7_1  .branch7x7_2  .branch7x7_3
                                        .branch7x7dbl_1 .. .branch7x7dbl_5  .branch_pool
    Mixed_7a (D):                       .branch3x3_1  .branch3x3_2  .branch7x7x3_1 .. .branch7x7x3_4
    Mixed_7b, Mixed_7c (E):             .branch1x1  .branch3x3_1  .branch3x3_2a  .branch3x3_2b
                                        .branch3x3dbl_1  .branch3x3dbl_2  .branch3x3dbl_3a
                                        .branch3x3dbl_3b  .branch_pool

e.g. ``Mixed_6b.branch7x7_2.conv.weight`` of shape ``[128, 128, 1, 7]``. ``fc.weight [1008, 2048]``
and ``fc.bias [1008]`` may be present and are ignored (we only use the 2048-d pool features);
a ``fc.weight`` with 1000 rows marks torchvision's ImageNet weights, which are refused because
they do not give FID. The forward pass takes images in [-1, 1] at 299x299.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from gentool.errors import GentoolError

#: Environment variable naming the default weights file.
WEIGHTS_ENV = "GENTOOL_INCEPTION_WEIGHTS"

_HOW_TO = (
    "convert pytorch-fid's pt_inception-2015-12-05-6726825d.pth once with "
    "safetensors.torch.save_file (see gentool.metrics.inception) and pass "
    f"'inception:/path/to/file.safetensors' or set {WEIGHTS_ENV}"
)


class BasicConv2d(nn.Module):
    """Convolution without bias, batch norm (eps 1e-3, as in the TF graph), ReLU."""

    def __init__(self, cin: int, cout: int, kernel: int | tuple[int, int], **kw: object) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, bias=False, **kw)  # type: ignore[arg-type]
        self.bn = nn.BatchNorm2d(cout, eps=0.001)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


def _avg_pool_no_pad(x: torch.Tensor) -> torch.Tensor:
    # TF's average pool does not count the zero padding; torchvision's does.
    return F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)


class InceptionA(nn.Module):
    """35x35 block: 1x1, 5x5, double 3x3 and pooled branches."""

    def __init__(self, cin: int, pool_features: int) -> None:
        super().__init__()
        self.branch1x1 = BasicConv2d(cin, 64, 1)
        self.branch5x5_1 = BasicConv2d(cin, 48, 1)
        self.branch5x5_2 = BasicConv2d(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = BasicConv2d(cin, 64, 1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, padding=1)
        self.branch_pool = BasicConv2d(cin, pool_features, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b1 = self.branch1x1(x)
        b5 = self.branch5x5_2(self.branch5x5_1(x))
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        bp = self.branch_pool(_avg_pool_no_pad(x))
        return torch.cat([b1, b5, b3, bp], 1)


class InceptionB(nn.Module):
    """Grid reduction 35x35 -> 17x17."""

    def __init__(self, cin: int) -> None:
        super().__init__()
        self.branch3x3 = BasicConv2d(cin, 384, 3, stride=2)
        self.branch3x3dbl_1 = BasicConv2d(cin, 64, 1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b3 = self.branch3x3(x)
        bd = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        bp = F.max_pool2d(x, 3, stride=2)
        return torch.cat([b3, bd, bp], 1)


class InceptionC(nn.Module):
    """17x17 block with factorised 7x7 convolutions."""

    def __init__(self, cin: int, c7: int) -> None:
        super().__init__()
        self.branch1x1 = BasicConv2d(cin, 192, 1)
        self.branch7x7_1 = BasicConv2d(cin, c7, 1)
        self.branch7x7_2 = BasicConv2d(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7_3 = BasicConv2d(c7, 192, (7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = BasicConv2d(cin, c7, 1)
        self.branch7x7dbl_2 = BasicConv2d(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = BasicConv2d(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = BasicConv2d(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = BasicConv2d(c7, 192, (1, 7), padding=(0, 3))
        self.branch_pool = BasicConv2d(cin, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b1 = self.branch1x1(x)
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        bd = self.branch7x7dbl_1(x)
        for layer in (self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4, self.branch7x7dbl_5):
            bd = layer(bd)
        bp = self.branch_pool(_avg_pool_no_pad(x))
        return torch.cat([b1, b7, bd, bp], 1)


class InceptionD(nn.Module):
    """Grid reduction 17x17 -> 8x8."""

    def __init__(self, cin: int) -> None:
        super().__init__()
        self.branch3x3_1 = BasicConv2d(cin, 192, 1)
        self.branch3x3_2 = BasicConv2d(192, 320, 3, stride=2)
        self.branch7x7x3_1 = BasicConv2d(cin, 192, 1)
        self.branch7x7x3_2 = BasicConv2d(192, 192, (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = BasicConv2d(192, 192, (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = BasicConv2d(192, 192, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b3 = self.branch3x3_2(self.branch3x3_1(x))
        b7 = self.branch7x7x3_1(x)
        for layer in (self.branch7x7x3_2, self.branch7x7x3_3, self.branch7x7x3_4):
            b7 = layer(b7)
        bp = F.max_pool2d(x, 3, stride=2)
        return torch.cat([b3, b7, bp], 1)


class InceptionE(nn.Module):
    """8x8 block with split 1x3 / 3x1 outputs; ``pool`` is "avg" (Mixed_7b) or "max" (Mixed_7c)."""

    def __init__(self, cin: int, pool: str) -> None:
        super().__init__()
        self.pool = pool
        self.branch1x1 = BasicConv2d(cin, 320, 1)
        self.branch3x3_1 = BasicConv2d(cin, 384, 1)
        self.branch3x3_2a = BasicConv2d(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3_2b = BasicConv2d(384, 384, (3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = BasicConv2d(cin, 448, 1)
        self.branch3x3dbl_2 = BasicConv2d(448, 384, 3, padding=1)
        self.branch3x3dbl_3a = BasicConv2d(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = BasicConv2d(384, 384, (3, 1), padding=(1, 0))
        self.branch_pool = BasicConv2d(cin, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b1 = self.branch1x1(x)
        b3 = self.branch3x3_1(x)
        b3 = torch.cat([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], 1)
        bd = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        bd = torch.cat([self.branch3x3dbl_3a(bd), self.branch3x3dbl_3b(bd)], 1)
        if self.pool == "max":
            pooled = F.max_pool2d(x, 3, stride=1, padding=1)
        else:
            pooled = _avg_pool_no_pad(x)
        bp = self.branch_pool(pooled)
        return torch.cat([b1, b3, bd, bp], 1)


class FIDInceptionV3(nn.Module):
    """Inception-v3 (FID variant) up to the 2048-d global average pool; input [-1, 1], 299x299."""

    feature_dim = 2048
    input_size = 299

    def __init__(self) -> None:
        super().__init__()
        self.Conv2d_1a_3x3 = BasicConv2d(3, 32, 3, stride=2)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, 3)
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, 3, padding=1)
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, 1)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, 3)
        self.Mixed_5b = InceptionA(192, pool_features=32)
        self.Mixed_5c = InceptionA(256, pool_features=64)
        self.Mixed_5d = InceptionA(288, pool_features=64)
        self.Mixed_6a = InceptionB(288)
        self.Mixed_6b = InceptionC(768, c7=128)
        self.Mixed_6c = InceptionC(768, c7=160)
        self.Mixed_6d = InceptionC(768, c7=160)
        self.Mixed_6e = InceptionC(768, c7=192)
        self.Mixed_7a = InceptionD(768)
        self.Mixed_7b = InceptionE(1280, pool="avg")
        self.Mixed_7c = InceptionE(2048, pool="max")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = F.max_pool2d(x, 3, stride=2)
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x))
        x = F.max_pool2d(x, 3, stride=2)
        for block in (
            self.Mixed_5b, self.Mixed_5c, self.Mixed_5d, self.Mixed_6a, self.Mixed_6b,
            self.Mixed_6c, self.Mixed_6d, self.Mixed_6e, self.Mixed_7a, self.Mixed_7b, self.Mixed_7c,
        ):
            x = block(x)
        return torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)


def resolve_weights_path(path: str | os.PathLike[str] | None) -> Path:
    """The weights file: ``path`` if given, else ``$GENTOOL_INCEPTION_WEIGHTS``; must exist."""
    chosen = str(path) if path else os.environ.get(WEIGHTS_ENV, "")
    if not chosen:
        raise GentoolError(f"Inception weights are not available offline: {_HOW_TO}")
    p = Path(chosen).expanduser()
    if not p.is_file():
        raise GentoolError(f"Inception weights file not found: {p}; {_HOW_TO}")
    if p.suffix != ".safetensors":
        raise GentoolError(f"Inception weights must be a .safetensors file, got {p.name}; {_HOW_TO}")
    return p


def load_fid_inception(path: str | os.PathLike[str] | None = None) -> FIDInceptionV3:
    """Build the network and load weights from a ``.safetensors`` file (never a pickle).

    Raises :class:`GentoolError` naming the problem if the file is missing, unreadable, lacks
    tensors, has tensors of the wrong shape, or holds torchvision's (non-FID) ImageNet weights.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    p = resolve_weights_path(path)
    try:
        state = load_file(str(p))
    except (SafetensorError, OSError) as exc:
        raise GentoolError(f"cannot read Inception weights {p}: {exc}") from None
    fc = state.get("fc.weight")
    if fc is not None and fc.shape[0] == 1000:
        raise GentoolError(
            f"{p.name} holds torchvision's ImageNet Inception-v3 (1000 classes), not the FID network "
            f"(1008 classes); {_HOW_TO}"
        )
    model = FIDInceptionV3()
    wanted = {k: v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    missing = [k for k in wanted if k not in state]
    if missing:
        shown = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
        raise GentoolError(
            f"{p.name} is not an FID Inception-v3 state dict: missing {len(missing)} of "
            f"{len(wanted)} tensors ({shown}); {_HOW_TO}"
        )
    bad = [k for k, v in wanted.items() if tuple(state[k].shape) != tuple(v.shape)]
    if bad:
        k = bad[0]
        raise GentoolError(
            f"{p.name}: tensor {k} has shape {tuple(state[k].shape)}, expected {tuple(wanted[k].shape)}"
            f" ({len(bad)} tensors differ)"
        )
    model.load_state_dict({k: state[k].float() for k in wanted}, strict=False)
    return model.eval()
