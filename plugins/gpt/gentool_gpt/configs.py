"""The options of ``gpt``: training (:class:`GPTTrainConfig`), ``gentool sample gpt``
(:class:`GPTSampleOptions`) and ``gentool evaluate gpt`` (:class:`GPTEvaluateOptions`).

Typed dataclasses, no torch import (``gentool list`` and ``gentool sample gpt -h`` read them).
The training defaults are nanoGPT's CPU configuration (4 layers, 4 heads, width 128, context 64)
with the recipe that ``benchmarks/gpt_nanogpt.py`` measured to be fastest to a given validation
loss on a 2-core CPU; ``gentool train gpt`` with no options is that run. Chat fine-tuning takes a
longer context by default (``sft_block_size``): a chat template with a few turns needs it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal


def _opt(default, help: str):
    return field(default=default, metadata={"help": help})


@dataclass
class GPTTrainConfig:
    """Architecture, tokenizer and training schedule of a ``gpt`` run."""

    n_layer: int = _opt(4, "Transformer blocks.")
    n_head: int = _opt(4, "Attention heads per block.")
    n_embd: int = _opt(128, "Model width (must be a multiple of n_head; head size even, for rotary positions).")
    block_size: int = _opt(64, "Context length in tokens (of pretraining; see sft_block_size for chat).")
    mlp_hidden: int = _opt(0, "SwiGLU hidden width (0: about 8/3 of n_embd, rounded up to a multiple of 32).")
    dropout: float = _opt(0.0, "Dropout on attention and residual branches (0 for small models trained briefly).")
    tie_embeddings: bool = _opt(True, "Share the input embedding and the output layer.")
    rope_theta: float = _opt(10000.0, "Base of the rotary position frequencies.")
    tokenizer: Literal["char", "bpe"] = _opt("char", "char: the corpus's characters; bpe: byte-level BPE (tokenizers).")
    vocab_size: int = _opt(2048, "Vocabulary size for the bpe tokenizer (ignored for char).")
    iters_per_epoch: int = _opt(200, "Training steps per epoch (an epoch ends with a validation pass and a checkpoint).")
    warmup_iters: int = _opt(50, "Linear learning-rate warmup steps.")
    min_lr_ratio: float = _opt(0.1, "Cosine decay ends at lr * min_lr_ratio on the last step.")
    weight_decay: float = _opt(0.1, "AdamW weight decay on matrices (none on norms and embeddings).")
    beta2: float = _opt(0.99, "AdamW beta2.")
    grad_clip: float = _opt(1.0, "Clip the global gradient norm to this (0: no clipping).")
    eval_tokens: int = _opt(16384, "Held-out tokens scored by the validation pass of each epoch (0: all).")
    compile: bool = _opt(False, "torch.compile the model (pays off on a GPU; slow to start on a CPU).")
    sft: str | None = _opt(None, "Chat fine-tuning: a JSON file of conversations (ShareGPT or OpenAI "
                                 "messages form), or builtin for the embedded examples.")
    sft_val_fraction: float = _opt(0.1, "Share of the conversations held out for validation in SFT.")
    sft_block_size: int = _opt(256, "Context length in tokens of chat fine-tuning (--sft) when longer than "
                                    "block_size: a few chat turns need more than 64 tokens, and rotary "
                                    "positions let a pretrained model take a longer context. 0: block_size.")

    def __post_init__(self) -> None:
        if min(self.n_layer, self.n_head, self.n_embd, self.block_size) < 1:
            raise ValueError("n_layer, n_head, n_embd and block_size must be at least 1")
        if self.n_embd % self.n_head or (self.n_embd // self.n_head) % 2:
            raise ValueError("n_embd must be a multiple of n_head with an even head size (rotary positions)")
        if self.mlp_hidden < 0:
            raise ValueError("mlp_hidden must be >= 0")
        if not 0 <= self.dropout < 1:
            raise ValueError("dropout must be in [0, 1)")
        if self.vocab_size < 300:
            raise ValueError("vocab_size must be at least 300 (256 bytes + special tokens + merges)")
        if self.iters_per_epoch < 1 or self.warmup_iters < 0:
            raise ValueError("iters_per_epoch must be >= 1 and warmup_iters >= 0")
        if not 0 <= self.min_lr_ratio <= 1:
            raise ValueError("min_lr_ratio must be in [0, 1]")
        if self.weight_decay < 0 or self.grad_clip < 0 or self.eval_tokens < 0:
            raise ValueError("weight_decay, grad_clip and eval_tokens must be >= 0")
        if not 0 < self.beta2 < 1:
            raise ValueError("beta2 must be in (0, 1)")
        if not 0 < self.sft_val_fraction < 1:
            raise ValueError("sft_val_fraction must be in (0, 1)")
        if self.sft_block_size < 0:
            raise ValueError("sft_block_size must be >= 0 (0: block_size)")

    @property
    def context(self) -> int:
        """The context length this run trains with: ``block_size``, or for chat fine-tuning
        (``sft`` set) ``sft_block_size`` when that is longer."""
        if self.sft and self.sft_block_size > self.block_size:
            return self.sft_block_size
        return self.block_size

    @property
    def hidden(self) -> int:
        """The SwiGLU hidden width actually used."""
        if self.mlp_hidden:
            return self.mlp_hidden
        return -(-int(8 * self.n_embd / 3) // 32) * 32


@dataclass
class GPTSampleOptions:
    """``gentool sample gpt`` flags (``--prompt``, ``--max-tokens``, ...)."""

    prompt: str = _opt("", "Text the samples continue (empty: from the start of a text).")
    max_tokens: int = _opt(500, "Tokens to generate per sample.")
    temperature: float = _opt(0.8, "Softmax temperature (0: greedy).")
    top_k: int | None = _opt(None, "Sample among the k likeliest tokens only (none: off).")
    top_p: float | None = _opt(None, "Nucleus sampling: the smallest set of tokens with this much probability "
                                     "(none: off).")
    quantize: str = _opt("none", "Weights while decoding: none (as stored), bf16, int8 or int4 (the integer "
                                 "formats on the CPU; faster for large models, see docs/chat.md).")

    def __post_init__(self) -> None:
        if self.max_tokens < 1:
            raise ValueError(f"--max-tokens must be at least 1, got {self.max_tokens}")
        if self.quantize not in ("none", "bf16", "int8", "int4"):
            raise ValueError(f"--quantize must be none, bf16, int8 or int4, got {self.quantize!r}")
        if not 0 <= self.temperature < float("inf"):  # refuses nan too
            raise ValueError(f"--temperature must be a finite number >= 0 (0 is greedy), got {self.temperature}")
        if self.top_k is not None and self.top_k < 1:
            raise ValueError(f"--top-k must be at least 1 (or none), got {self.top_k}")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise ValueError(f"--top-p must be in (0, 1] (or none), got {self.top_p}")


@dataclass
class GPTEvaluateOptions:
    """``gentool evaluate gpt`` flags; they matter for chat models (runs fine-tuned with --sft)."""

    max_tokens: int = _opt(200, "Chat models: longest answer generated per held-out conversation.")
    temperature: float = _opt(0.0, "Chat models: sampling temperature of the answers (0: greedy).")
    conversations: int = _opt(50, "Chat models: held-out conversations to answer.")

    def __post_init__(self) -> None:
        if self.max_tokens < 1:
            raise ValueError(f"--max-tokens must be at least 1, got {self.max_tokens}")
        if not 0 <= self.temperature < float("inf"):  # refuses nan too
            raise ValueError(f"--temperature must be a finite number >= 0 (0 is greedy), got {self.temperature}")
        if self.conversations < 1:
            raise ValueError(f"--conversations must be at least 1, got {self.conversations}")
