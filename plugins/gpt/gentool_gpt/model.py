"""A decoder-only transformer in the Llama layout, in one readable file.

token embedding -> n_layer x [RMSNorm -> causal self-attention with rotary positions -> residual;
RMSNorm -> SwiGLU MLP -> residual] -> RMSNorm -> lm_head (optionally tied to the embedding).

The same class holds the pretrained Llama-family models gentool opens (:mod:`gentool_gpt.pretrained`):
grouped-query attention (``n_kv_head`` key/value heads shared by ``n_head // n_kv_head`` query
heads each: Llama 2 70B, Llama 3, Mistral, SmolLM2), q/k/v biases (Qwen2), a head size that is not
``n_embd // n_head``, Llama 3's rope scaling, and the families' norm eps and rope theta.

The module and parameter names follow transformers' ``LlamaForCausalLM`` (``model.layers.0.
self_attn.o_proj.weight`` and so on), except that q/k/v and gate/up are stacked into one matrix
each (fewer, larger matrix products: faster for small models on a CPU); :mod:`gentool_gpt.export`
splits them back. The rotary embedding uses Llama's "rotate half" convention, so logits agree.

A :class:`KVCache` holds past keys and values for decoding: one forward over the prompt fills
it (prefill), then each new token costs one forward of length 1.

No weight depends on ``block_size``: positions are rotary (computed, not learned), so the same
weights load into a model with a longer context. Chat fine-tuning uses that to grow a model
pretrained on 64 tokens to 256 (``sft_block_size``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class GPTConfig:
    """The network's shape (what a checkpoint needs to rebuild it)."""

    vocab_size: int
    n_layer: int
    n_head: int
    n_embd: int
    block_size: int
    mlp_hidden: int
    rope_theta: float = 10000.0
    norm_eps: float = 1e-5
    tie_embeddings: bool = True
    dropout: float = 0.0
    #: Key/value heads (grouped-query attention); 0 means one per query head (plain multi-head).
    n_kv_head: int = 0
    #: Biases on the q, k and v projections (Qwen2); none elsewhere.
    qkv_bias: bool = False
    #: Size of one head; 0 means ``n_embd // n_head``.
    head_size: int = 0
    #: Llama 3's rope scaling (``{"rope_type": "llama3", "factor", "low_freq_factor",
    #: "high_freq_factor", "original_max_position_embeddings"}``) or None.
    rope_scaling: dict | None = None

    @property
    def head_dim(self) -> int:
        return self.head_size or self.n_embd // self.n_head

    @property
    def kv_heads(self) -> int:
        """Key/value heads (``n_kv_head``, or ``n_head`` where it is 0)."""
        return self.n_kv_head or self.n_head


class KVCache:
    """Preallocated keys and values, per layer ``[B, n_kv_head, max_len, head_dim]``.

    ``length`` is how many positions are filled; the model appends to it on every forward.
    """

    def __init__(self, n_layer: int, batch_size: int, n_head: int, max_len: int, head_dim: int,
                 device: torch.device, dtype: torch.dtype):
        shape = (batch_size, n_head, max_len, head_dim)
        self.k = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(n_layer)]
        self.v = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(n_layer)]
        self.max_len = max_len
        self.length = 0

    def reset(self) -> None:
        """Forget every position (the buffers are reused)."""
        self.length = 0


def rope_frequencies(head_dim: int, theta: float, scaling: dict | None = None) -> torch.Tensor:
    """The rotary angle per position of each pair of a head's dimensions ``[head_dim // 2]``.

    ``scaling`` of type ``llama3`` (Llama 3.1 and later) slows the low frequencies by ``factor``,
    keeps the high ones, and blends between ``low_freq_factor`` and ``high_freq_factor``
    wavelengths (the published recipe; transformers computes the same).
    """
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
    if not scaling or scaling.get("rope_type", scaling.get("type")) in (None, "default"):
        return inv_freq
    kind = scaling.get("rope_type", scaling.get("type"))
    if kind != "llama3":
        raise ValueError(f"rope scaling {kind!r} is not supported (llama3 is)")
    factor = float(scaling["factor"])
    low, high = float(scaling.get("low_freq_factor", 1.0)), float(scaling.get("high_freq_factor", 4.0))
    old_len = float(scaling.get("original_max_position_embeddings", 8192))
    wavelen = 2 * math.pi / inv_freq
    low_wavelen, high_wavelen = old_len / low, old_len / high
    scaled = torch.where(wavelen > low_wavelen, inv_freq / factor, inv_freq)
    smooth = (old_len / wavelen - low) / (high - low)
    blended = (1 - smooth) * scaled / factor + smooth * scaled
    middle = (wavelen >= high_wavelen) & (wavelen <= low_wavelen)
    return torch.where(middle, blended, scaled)


class RotaryEmbedding(nn.Module):
    """cos/sin tables for rotary positions ("rotate half" layout, as transformers' Llama)."""

    def __init__(self, head_dim: int, theta: float, max_len: int, scaling: dict | None = None):
        super().__init__()
        inv_freq = rope_frequencies(head_dim, theta, scaling)
        self.register_buffer("inv_freq", inv_freq, persistent=False)
        self.max_len = max_len
        cos, sin = self._table(torch.arange(max_len, dtype=torch.float32))
        self.register_buffer("cos", cos, persistent=False)
        self.register_buffer("sin", sin, persistent=False)

    def _table(self, pos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        angles = pos[:, None] * self.inv_freq.to(pos.device)[None, :]
        emb = torch.cat([angles, angles], dim=-1)
        return emb.cos(), emb.sin()

    def forward(self, start: int, length: int) -> tuple[torch.Tensor, torch.Tensor]:
        """cos and sin ``[length, head_dim]`` for positions ``start .. start+length-1``."""
        if start + length <= self.max_len:
            return self.cos[start:start + length], self.sin[start:start + length]
        pos = torch.arange(start, start + length, dtype=torch.float32, device=self.inv_freq.device)
        return self._table(pos)


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([-x2, x1], dim=-1)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate ``x`` ``[B, H, T, D]`` by the position angles (computed in x's dtype)."""
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)
    return x * cos + _rotate_half(x) * sin


class RMSNorm(nn.Module):
    """Root-mean-square normalisation with a learned gain (no bias, no mean subtraction)."""

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x.to(dtype)


class Attention(nn.Module):
    """Causal self-attention with rotary positions: q, k, v, o projections (q/k/v biases where the
    config says), ``n_kv_head`` key/value heads each shared by ``n_head // n_kv_head`` query heads."""

    def __init__(self, cfg: GPTConfig):
        super().__init__()
        d, self.n_head, self.head_dim = cfg.n_embd, cfg.n_head, cfg.head_dim
        self.n_kv_head = cfg.kv_heads
        q_size, kv_size = self.n_head * self.head_dim, self.n_kv_head * self.head_dim
        self.sizes = (q_size, kv_size, kv_size)
        self.qkv_proj = nn.Linear(d, sum(self.sizes), bias=cfg.qkv_bias)  # q, k and v stacked: one product
        self.o_proj = nn.Linear(q_size, d, bias=False)
        self.dropout = cfg.dropout

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, cache: KVCache | None,
                layer: int) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.qkv_proj(x).split(self.sizes, dim=-1)
        q = q.view(B, T, self.n_head, self.head_dim).transpose(1, 2)
        k = k.view(B, T, self.n_kv_head, self.head_dim).transpose(1, 2)
        v = v.view(B, T, self.n_kv_head, self.head_dim).transpose(1, 2)
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        p = self.dropout if self.training else 0.0
        if x.device.type == "cpu" and q.dtype != torch.float32:
            # PyTorch's CPU attention kernels are several times slower in bf16 than in float32
            # at these sizes: attend in float32 (also more exact), project back in x's dtype.
            q, k, v = q.float(), k.float(), v.float()
        if cache is None:
            k, v = self._expand(k), self._expand(v)
            y = F.scaled_dot_product_attention(q, k, v, is_causal=T > 1, dropout_p=p)
        else:
            start = cache.length
            end = start + T
            cache.k[layer][:B, :, start:end] = k
            cache.v[layer][:B, :, start:end] = v
            keys = self._expand(cache.k[layer][:B, :, :end].to(q.dtype))
            values = self._expand(cache.v[layer][:B, :, :end].to(q.dtype))
            if T == 1:
                mask = None  # one new query sees every cached position
            else:  # query i sits at position start + i and sees keys 0 .. start + i
                qpos = torch.arange(start, end, device=x.device)[:, None]
                mask = torch.arange(end, device=x.device)[None, :] <= qpos
            y = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask, dropout_p=p)
        y = y.transpose(1, 2).reshape(B, T, self.n_head * self.head_dim).to(x.dtype)
        return self.o_proj(y)

    def _expand(self, kv: torch.Tensor) -> torch.Tensor:
        """Key/value heads repeated for the query heads that share them ``[B, n_head, T, D]``."""
        group = self.n_head // self.n_kv_head
        return kv if group == 1 else kv.repeat_interleave(group, dim=1)


class MLP(nn.Module):
    """SwiGLU feed-forward: down(silu(gate(x)) * up(x)), gate and up stacked in one matrix."""

    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.gate_up_proj = nn.Linear(cfg.n_embd, 2 * cfg.mlp_hidden, bias=False)
        self.down_proj = nn.Linear(cfg.mlp_hidden, cfg.n_embd, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.gate_up_proj(x).chunk(2, dim=-1)
        return self.down_proj(F.silu(gate) * up)


class Block(nn.Module):
    """One pre-norm transformer block."""

    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.input_layernorm = RMSNorm(cfg.n_embd, cfg.norm_eps)
        self.self_attn = Attention(cfg)
        self.post_attention_layernorm = RMSNorm(cfg.n_embd, cfg.norm_eps)
        self.mlp = MLP(cfg)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, cache: KVCache | None,
                layer: int) -> torch.Tensor:
        x = x + self.drop(self.self_attn(self.input_layernorm(x), cos, sin, cache, layer))
        return x + self.drop(self.mlp(self.post_attention_layernorm(x)))


class _Body(nn.Module):
    """The part transformers calls ``model``: embedding, blocks, final norm."""

    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.n_embd)
        self.layers = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.norm = RMSNorm(cfg.n_embd, cfg.norm_eps)


class GPT(nn.Module):
    """The language model: ``forward(idx)`` gives next-token logits ``[B, T, vocab]``."""

    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.cfg = cfg
        self.model = _Body(cfg)
        self.lm_head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)
        if cfg.n_head % cfg.kv_heads:
            raise ValueError(f"n_head {cfg.n_head} is not a multiple of n_kv_head {cfg.kv_heads}")
        self.rotary = RotaryEmbedding(cfg.head_dim, cfg.rope_theta, cfg.block_size, cfg.rope_scaling)
        self.drop = nn.Dropout(cfg.dropout)
        self.apply(self._init)
        for name, p in self.named_parameters():  # GPT-2's scaled init of the residual projections
            if name.endswith(("o_proj.weight", "down_proj.weight")):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * cfg.n_layer))
        if cfg.tie_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight

    @staticmethod
    def _init(m: nn.Module) -> None:
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, mean=0.0, std=0.02)

    @property
    def block_size(self) -> int:
        """The context length the model was trained on (what decoding keeps in view)."""
        return self.cfg.block_size

    def num_parameters(self) -> int:
        """Trainable parameters (a tied embedding counted once)."""
        return sum(p.numel() for p in self.parameters())

    def new_cache(self, batch_size: int, max_len: int) -> KVCache:
        """An empty :class:`KVCache` on the model's device and dtype."""
        p = self.lm_head.weight
        return KVCache(self.cfg.n_layer, batch_size, self.cfg.kv_heads, max_len, self.cfg.head_dim, p.device, p.dtype)

    def forward(self, idx: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        """Logits ``[B, T, vocab]`` for token ids ``idx`` ``[B, T]``.

        Without ``cache``: positions 0..T-1, causal attention. With ``cache``: positions start at
        ``cache.length``, keys and values are appended, and ``cache.length`` grows by T.
        """
        return self.lm_head(self.hidden_states(idx, cache))

    def hidden_states(self, idx: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        """The final normalised hidden states ``[B, T, n_embd]`` (before ``lm_head``)."""
        B, T = idx.shape
        start = cache.length if cache is not None else 0
        if cache is not None and start + T > cache.max_len:
            raise ValueError(f"KV cache full: {start} + {T} tokens > max_len {cache.max_len}")
        cos, sin = self.rotary(start, T)
        x = self.drop(self.model.embed_tokens(idx))
        for i, block in enumerate(self.model.layers):
            x = block(x, cos, sin, cache, i)
        if cache is not None:
            cache.length = start + T
        return self.model.norm(x)
