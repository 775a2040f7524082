"""Weight-only quantization for decoding on a CPU: int8 per output row, int4 in groups.

Decoding one token reads every weight once, so on a CPU its speed is the memory read: 4 bytes a
weight in float32, 1 in int8, half a byte in int4. The activations stay in floating point; only the
weights are stored small, and PyTorch's own fused kernels multiply with them:

* ``int8``: symmetric, one scale per output row (``w ~= q * s``, ``q`` in -127..127), through
  ``aten._weight_int8pack_mm``;
* ``int4``: asymmetric groups of :data:`INT4_GROUP` inputs (``w ~= (q - 8) * s + z``, ``q`` in
  0..15), through ``aten._weight_int4pack_mm_for_cpu``. GGUF's Q4_1 blocks (32 weights, a scale and
  a minimum) have this very form, so a Q4_1 file loses nothing more when it is decoded in int4.

Both kernels are fast with bfloat16 activations and slow with float32 ones (measured here), so a
quantized weight takes its input in bfloat16 and gives float32 back. Which kernels a build of
PyTorch has differs: :func:`available` says, and :class:`QuantWeight` refuses a mode it lacks.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

MODES = ("none", "bf16", "int8", "int4")
#: Inputs per int4 group (a multiple of 32 keeps the CPU kernel's tiling; GGUF's blocks are 32).
INT4_GROUP = 32


def available(mode: str) -> bool:
    """Whether this PyTorch build has the CPU kernel for ``mode``."""
    if mode in ("none", "bf16"):
        return True
    if mode == "int8":
        return hasattr(torch.ops.aten, "_weight_int8pack_mm")
    if mode == "int4":
        return hasattr(torch.ops.aten, "_weight_int4pack_mm_for_cpu") and hasattr(
            torch.ops.aten, "_convert_weight_to_int4pack_for_cpu")
    raise ValueError(f"unknown quantization {mode!r}: use one of {', '.join(MODES)}")


class QuantWeight:
    """A ``[out, in]`` weight stored quantized; calling it on ``x`` ``[..., in]`` gives ``x @ w.T``.

    ``mode`` "none" keeps the weight in floating point (in ``dtype``), and "bf16" is "none" in
    bfloat16, so the decoder treats every weight alike.
    """

    def __init__(self, weight: torch.Tensor, mode: str, dtype: torch.dtype = torch.float32):
        if not available(mode):
            raise ValueError(f"this PyTorch build has no CPU kernel for {mode} weights")
        if mode == "bf16":
            mode, dtype = "none", torch.bfloat16
        if mode == "int4" and (weight.shape[0] % 16 or weight.shape[1] % INT4_GROUP):
            mode = "int8"  # the int4 kernel tiles 16 rows and whole groups: a shape off the grid goes int8
        self.mode, self.out_features, self.in_features = mode, weight.shape[0], weight.shape[1]
        w = weight.detach().float()
        if mode == "none":
            self.w = w.to(dtype).contiguous()
            parts = torch.get_num_threads() if w.device.type == "cpu" else 1
            if 1 < parts <= 8 and self.out_features % parts == 0 and self.out_features >= 64 * parts:
                # PyTorch's one-row float product runs on one thread on a CPU; as a batched product of
                # the weight's row blocks (each stored transposed) every thread reads its own block:
                # 1.3x to 3.2x faster with two threads here (the 49152 x 576 output layer: 9.7 -> 3.0 ms)
                self.w = torch.stack([b.t().contiguous() for b in self.w.chunk(parts)])  # [parts, in, out/parts]
                self._call: Callable[[torch.Tensor], torch.Tensor] = self._blocks
            elif dtype == torch.float32:
                self._call = lambda x: F.linear(x, self.w)
            else:  # bfloat16 or float16 weights: the product in their dtype, float32 out
                self._call = lambda x: F.linear(x.to(self.w.dtype), self.w).float()
        elif mode == "int8":
            scale = (w.abs().amax(dim=1) / 127.0).clamp(min=1e-12)
            self.w = torch.round(w / scale[:, None]).clamp(-127, 127).to(torch.int8).contiguous()
            self.scale = scale.to(torch.bfloat16)
            self._call = self._int8
        else:
            self._pack_int4(w)
            self._call = self._int4

    def _pack_int4(self, w: torch.Tensor) -> None:
        n, k = w.shape
        g = INT4_GROUP
        groups = w.view(n, k // g, g)
        low, high = groups.amin(dim=-1), groups.amax(dim=-1)
        scale = ((high - low) / 15.0).clamp(min=1e-12)
        q = torch.round((groups - low[..., None]) / scale[..., None]).clamp(0, 15).to(torch.int32)
        # the kernel computes (q - 8) * scale + zero: the group's minimum sits at q = 0
        zero = low + 8.0 * scale
        self.group = g
        self.w = torch.ops.aten._convert_weight_to_int4pack_for_cpu(q.view(n, k).contiguous(), 1)
        self.scale_zero = torch.stack([scale, zero], dim=-1).transpose(0, 1).contiguous().to(torch.bfloat16)

    def _blocks(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        rows = x.reshape(-1, shape[-1]).to(self.w.dtype)
        y = torch.bmm(rows.expand(self.w.shape[0], *rows.shape), self.w)  # [parts, rows, out/parts]
        return y.transpose(0, 1).reshape(*shape[:-1], self.out_features).float()

    def _int8(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        y = torch.ops.aten._weight_int8pack_mm(x.reshape(-1, shape[-1]).to(torch.bfloat16), self.w, self.scale)
        return y.view(*shape[:-1], self.out_features).float()

    def _int4(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        y = torch.ops.aten._weight_int4pack_mm_for_cpu(x.reshape(-1, shape[-1]).to(torch.bfloat16), self.w,
                                                       self.group, self.scale_zero)
        return y.view(*shape[:-1], self.out_features).float()

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self._call(x)

    def nbytes(self) -> int:
        """Bytes the stored weight takes (scales included)."""
        parts = [self.w] + [getattr(self, a) for a in ("scale", "scale_zero") if hasattr(self, a)]
        return sum(t.numel() * t.element_size() for t in parts)


def _cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo", encoding="utf-8", errors="replace"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()


def measure(width: int, modes: tuple[str, ...] = MODES, repeats: int = 5) -> dict[str, float]:
    """Microseconds per product of a ``[4 * width, width]`` weight with one token, per mode, on this
    CPU with the current thread count: what decoding costs a token, weight by weight.

    Decoding reads weights from memory, not from the caches, so the products run over a stack of
    such weights of 32 MB in float32 (a model's worth of layers), one after the other; the fastest
    of ``repeats`` passes is reported (the least disturbed by other work on a shared machine)."""
    import time

    gen = torch.Generator().manual_seed(0)
    count = max(2, min(64, (32 << 20) // (16 * width * width)))
    base = torch.randn(4 * width, width, generator=gen)
    weights = [base.roll(i, dims=0) for i in range(count)]  # distinct memory, the same values' spread
    x = torch.randn(1, width, generator=gen)
    out: dict[str, float] = {}
    for mode in modes:
        if not available(mode):
            continue
        stack = [QuantWeight(w, mode) for w in weights]
        for q in stack:
            q(x)
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            for q in stack:
                q(x)
            times.append((time.perf_counter() - t) / count)
        out[mode] = min(times) * 1e6
        del stack
    return out


def choose(width: int, allowed: tuple[str, ...]) -> tuple[str, str]:
    """The fastest of ``allowed`` modes on this CPU for a model ``width`` wide, and a note saying
    what was measured. Decisions are kept in gentool's cache per CPU, torch version, thread count
    and width, so the measurement (a fraction of a second) runs once per machine."""
    import json

    from gentool import cache_dir

    key = f"{_cpu_name()}|torch {torch.__version__}|{torch.get_num_threads()} threads|width {width}|v2"
    path = cache_dir() / "gpt_quantize.json"
    try:
        table = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(table, dict):
            table = {}
    except (OSError, ValueError):
        table = {}
    times = table.get(key)
    if not isinstance(times, dict) or not all(isinstance(v, (int, float)) for v in times.values()):
        times = measure(width)
        table[key] = times
        try:
            from gentool import write_atomic

            path.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(path, (json.dumps(table, indent=1) + "\n").encode())
        except OSError:
            pass  # a read-only cache: measure again next time
    candidates = [m for m in allowed if m in times]
    best = min(candidates, key=lambda m: times[m]) if candidates else "none"
    said = ", ".join(f"{m} {times[m]:.0f} us" for m in candidates)
    return best, f"auto: fastest here of {said} (one token through a {4 * width}x{width} weight, from memory)"
