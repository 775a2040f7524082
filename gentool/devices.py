"""Device choice and mixed precision, decided once for every plugin."""

from __future__ import annotations

import contextlib
import functools
import os
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


def check_precision(precision: str, device: "torch.device", *, warn_slow: bool = False) -> str:
    """Validate ``precision`` for ``device``: fp16 needs a GPU; bf16 works on CUDA and CPU.

    With ``warn_slow``, bf16 on a CPU without bfloat16 instructions (AVX512-BF16 or AMX; an
    AVX2-only CPU emulates bfloat16 in software) gives a warning that names the CPU's capability:
    there bfloat16 is emulated and far slower than fp32.
    """
    precision = (precision or "fp32").lower()
    if precision not in PRECISIONS:
        raise GentoolError(f"unknown precision {precision!r}: use one of {', '.join(PRECISIONS)}")
    if precision == "fp16" and device.type == "cpu":
        raise GentoolError("--precision fp16 needs a GPU; use bf16 or fp32 on the CPU")
    if warn_slow and precision == "bf16" and device.type == "cpu":
        native, capability = cpu_bf16_support()
        if not native:
            from gentool.report import warn

            warn(f"this CPU has no bfloat16 instructions (torch uses its {capability} kernels): --precision bf16 "
                 "is emulated here and can be many times slower than fp32")
    return precision


@functools.lru_cache(maxsize=1)
def cpu_bf16_support() -> tuple[bool, str]:
    """Whether this CPU computes bfloat16 natively, and torch's name for its vector capability.

    Native: x86 with AVX512-BF16 or AMX-BF16, or Arm with the BF16 extension (from
    ``/proc/cpuinfo`` where there is one; elsewhere from torch's capability alone).
    """
    import torch

    capability = str(torch.backends.cpu.get_cpu_capability())
    flags: set[str] = set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.lower().startswith(("flags", "features")):
                    flags.update(line.split(":", 1)[-1].split())
    except OSError:
        return capability.upper().startswith(("AVX512", "SVE")), capability
    return bool(flags & {"avx512_bf16", "amx_bf16", "bf16"}), capability


def set_threads(threads: int | None) -> int:
    """Set torch's CPU threads for this process and return the number in use.

    ``threads`` wins; else ``GENTOOL_THREADS``; else ``OMP_NUM_THREADS`` (which torch already
    read); else torch's default of one thread per core (:func:`busy_machine_note` may then advise
    ``--threads 1``). The count never depends on the machine's load (results must not); an
    explicit count is recorded with the run and reused on resume.
    """
    import torch

    if threads is None and os.environ.get("GENTOOL_THREADS", "").strip():
        raw = os.environ["GENTOOL_THREADS"].strip()
        if not raw.isdigit() or int(raw) < 1:
            raise GentoolError(f"GENTOOL_THREADS must be a positive integer, got {raw!r}")
        threads = int(raw)
    if threads is not None:
        if isinstance(threads, bool) or int(threads) < 1:
            raise GentoolError(f"--threads must be at least 1, got {threads}")
        if torch.get_num_threads() != int(threads):
            torch.set_num_threads(int(threads))
        return int(threads)
    return torch.get_num_threads()


def busy_machine_note(threads: int | None) -> str | None:
    """A hint for a person at a terminal when the default thread count meets a machine whose load
    already fills its cores (there a small model can train several times faster on one thread).
    None when the count was chosen, when nobody is watching (logs, pipes) or when the machine is
    not busy: the note is advice, and must not change what scripts read."""
    import sys

    import torch

    if threads is not None or "OMP_NUM_THREADS" in os.environ or "GENTOOL_THREADS" in os.environ:
        return None
    if not hasattr(os, "getloadavg") or not sys.stderr.isatty() or torch.get_num_threads() < 2:
        return None
    load, cores = os.getloadavg()[0], os.cpu_count() or 1
    if load < cores:
        return None
    return f"note: this machine is busy (load {load:.1f} on {cores} cores); small models often train faster with --threads 1"


def autocast(device: "torch.device", precision: str) -> ContextManager:
    """The autocast context for ``precision`` on ``device`` (a no-op for fp32)."""
    import torch

    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)
