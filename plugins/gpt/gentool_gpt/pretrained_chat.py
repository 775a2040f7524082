"""The chat backend for pretrained Llama-family models (:mod:`gentool_gpt.pretrained`): our network,
the model's own tokenizer and chat template, and the fast :class:`~gentool_gpt.decoder.Decoder`
with weights in float32, bfloat16, int8 or int4.

``quantize="auto"`` picks, on a CPU, the fastest weight format this machine has kernels for, by a
measurement kept in gentool's cache (:func:`gentool_gpt.quantize.choose`): int4 only for a file whose
weights were 4-bit or less already (a Q4 GGUF loses nothing more), so an 8-bit or float model is
not made coarser than it was; bfloat16 only where the CPU has bfloat16 instructions. On a GPU,
auto is bfloat16 and the integer formats are refused (their kernels here are the CPU's).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Sequence

from gentool import QUANTIZE, GentoolError  # QUANTIZE: the weight formats open_chat takes, listed once

from gentool_gpt.backends import SMALL_MODEL, GPTBackend, Message, _device_text, _threads_for

if TYPE_CHECKING:
    import torch



def _low_bit(quantization: str) -> bool:
    """Whether a GGUF's weights were stored in 5 bits or fewer (Q2..Q5, IQ types)."""
    return bool(re.search(r"\b(I?Q[2-5])", quantization or ""))


def check_quantize(quantize: str, device: "torch.device | str") -> None:
    """Refuse (one line) a ``--quantize`` value this machine cannot decode in."""
    import torch

    from gentool_gpt.quantize import available

    if quantize not in QUANTIZE:
        raise GentoolError(f"--quantize must be one of {', '.join(QUANTIZE)}, not {quantize!r}")
    kind = torch.device(device).type
    if kind != "cpu" and quantize in ("int8", "int4"):
        raise GentoolError(f"--quantize {quantize} decodes on the CPU only; on {kind} use none or bf16")
    if kind == "cpu" and quantize != "auto" and not available(quantize):
        raise GentoolError(f"this PyTorch build has no CPU kernel for {quantize} weights: use none or int8")


def pick_format(quantize: str, device: "torch.device", width: int, source_quant: str,
                parameters: int = 0) -> tuple[str, str]:
    """The weight format (a :data:`gentool_gpt.quantize.MODES` entry) and why it was chosen."""
    import torch

    from gentool import cpu_bf16_support

    from gentool_gpt.quantize import choose

    check_quantize(quantize, device)
    if torch.device(device).type != "cpu":
        return ("bf16", "auto: bfloat16 on a GPU") if quantize == "auto" else (quantize, "as asked")
    if quantize != "auto":
        return quantize, "as asked"
    if parameters < SMALL_MODEL:
        return "none", f"auto: float32 for a model under {SMALL_MODEL // 10**6}M parameters (it fits in the caches)"
    allowed = ["none", "int8"] + (["int4"] if _low_bit(source_quant) else [])
    if cpu_bf16_support()[0]:
        allowed.append("bf16")
    return choose(width, tuple(allowed))


class PretrainedBackend(GPTBackend):
    """A Hugging Face folder, hub id or GGUF file of a Llama-family model, decoded by gentool."""

    def __init__(self, ref: str, device: "torch.device | str" = "cpu", *, quantize: str = "auto",
                 context: int | None = None):
        from gentool_gpt.backends import Backend
        from gentool_gpt.decoder import Decoder
        from gentool_gpt.pretrained import open_pretrained

        Backend.__init__(self)
        check_quantize(quantize, device)  # a bad value is refused before the model loads
        opened = open_pretrained(ref, context=context)
        net = opened.model
        self.opened, self.device, self.ref = opened, str(device), ref
        self.parameters = sum(p.numel() for p in net.parameters())
        self.format, self.format_note = pick_format(quantize, device, net.cfg.n_embd, opened.quantization,
                                                    self.parameters)
        net.to(device)
        _threads_for(net, device)
        self.decoder = Decoder(net, net.cfg.block_size, quantize=self.format if self.format in ("int8", "int4") else "none",
                               dtype=_dtype(self.format))
        del net  # the decoder holds what decoding reads; the float module can go
        opened.model = None  # type: ignore[assignment]
        self.model = self.decoder  # what GPTBackend.chat_stream hands to generate()
        self.tokenizer = opened.tokenizer
        self.context_length = self.decoder.max_len
        self.stop_ids = set(opened.tokenizer.stop_ids)

    def _render(self, messages: Sequence[Message]) -> list[int]:
        for m in messages:
            if not isinstance(m.get("content"), str) or not isinstance(m.get("role"), str):
                raise GentoolError("bad conversation: every message needs a role and a text content")
        return self.tokenizer.render_ids(messages, add_generation_prompt=True)

    def describe(self) -> dict[str, str]:
        o = self.opened
        cfg = self.decoder.cfg
        return {
            "model": str(self.ref),
            "backend": "gentool (KV-cache decoding)",
            "architecture": f"{o.arch}, {cfg.n_layer} layers, {cfg.n_head} heads ({cfg.kv_heads} key/value), width {cfg.n_embd}",
            "file": f"{'GGUF' if o.format == 'gguf' else 'Hugging Face safetensors'}"
                    + (f", {o.quantization}" if o.format == "gguf" else ""),
            "weights": f"{self.format} ({self.format_note}), {self.decoder.weight_bytes() / 2**20:.1f} MiB",
            "device": _device_text(self.device),
            "parameters": f"{self.parameters:,}",
            "context": f"{self.context_length} tokens",
            "tokenizer": f"{self.tokenizer.vocab_size} tokens",
            "template": "the model's chat template" if self.tokenizer.template
                        else "none in the model: a plain 'Role: text' transcript",
        }


def _dtype(fmt: str) -> "torch.dtype":
    import torch

    return torch.bfloat16 if fmt == "bf16" else torch.float32
