"""Device choice and mixed precision, decided once for every plugin."""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, ContextManager

from gentool.errors import GentoolError

if TYPE_CHECKING:
    import torch

DEVICES = ("auto", "cpu", "cuda", "mps")
PRECISIONS = ("fp32", "bf16", "fp16")


def pick_device(name: str = "auto", *, local_rank: int | None = None) -> "torch.device":
    """``auto`` picks cuda > mps > cpu; an explicit device that is not there is an error.

    ``local_rank`` selects the GPU of this process under torchrun.
    """
    import torch

    name = (name or "auto").lower()
    if name not in DEVICES and not name.startswith("cuda:"):
        raise GentoolError(f"unknown device {name!r}: use one of {', '.join(DEVICES)}")
    cuda = torch.cuda.is_available()
    mps = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    if name == "auto":
        name = "cuda" if cuda else "mps" if mps else "cpu"
    if name.startswith("cuda"):
        if not cuda:
            raise GentoolError("--device cuda asked for, but PyTorch sees no CUDA GPU here")
        if name == "cuda" and local_rank is not None:
            name = f"cuda:{local_rank}"
        return torch.device(name)
    if name == "mps" and not mps:
        raise GentoolError("--device mps asked for, but the MPS backend is not available here")
    return torch.device(name)


def check_precision(precision: str, device: "torch.device") -> str:
    """Validate ``precision`` for ``device``: fp16 needs a GPU; bf16 works on CUDA and CPU."""
    precision = (precision or "fp32").lower()
    if precision not in PRECISIONS:
        raise GentoolError(f"unknown precision {precision!r}: use one of {', '.join(PRECISIONS)}")
    if precision == "fp16" and device.type == "cpu":
        raise GentoolError("--precision fp16 needs a GPU; use bf16 or fp32 on the CPU")
    return precision


def autocast(device: "torch.device", precision: str) -> ContextManager:
    """The autocast context for ``precision`` on ``device`` (a no-op for fp32)."""
    import torch

    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)
