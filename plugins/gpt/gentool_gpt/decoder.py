"""Fast decoding of one sequence with a :class:`~gentool_gpt.model.GPT`: the model's computation,
regrouped into few tensor operations, over weights that may be stored in int8 or int4.

At chat sizes a decoding step costs memory reads and operation count, not arithmetic. So per layer:
q, k and v come from one matrix product (rotary positions are then one roll and a multiply-add
with precomputed tables, the sign of "rotate half" folded into the sine table); gate and up from
one more; attention reads the cache in place (grouped-query heads attend as one batch
of ``n_head // n_kv_head`` queries per key/value head, without copying keys). The weights are
:class:`~gentool_gpt.quantize.QuantWeight` objects: float32, bfloat16, int8 or int4 alike.

A :class:`Decoder` owns its key/value cache (batch 1). :meth:`Decoder.prefill` takes a prompt,
:meth:`Decoder.step` one token; both return the next token's logits (float32). It keeps no
reference to the module it was built from, so a chat backend may drop the module's float32
weights once its decoder holds quantized ones.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from gentool_gpt.quantize import QuantWeight, available

__all__ = ["Decoder"]


class Decoder:
    """Batch-1 decoding state and weights for one model (see the module docstring)."""

    def __init__(self, model: torch.nn.Module, max_len: int, quantize: str = "none",
                 dtype: torch.dtype = torch.float32):
        cfg = model.cfg
        self.cfg, self.quantize, self.dtype = cfg, quantize, dtype
        H, KV, D = cfg.n_head, cfg.kv_heads, cfg.head_dim
        self.H, self.KV, self.D, self.C, self.eps = H, KV, D, cfg.n_embd, cfg.norm_eps
        self.Q, self.K = H * D, KV * D
        self.hidden = cfg.mlp_hidden
        self.max_len = int(max_len)
        device = model.lm_head.weight.device
        if device.type != "cpu" and quantize != "none":
            raise ValueError(f"{quantize} weights decode on the CPU only (this model is on {device})")

        def weight(w: torch.Tensor) -> QuantWeight:
            return QuantWeight(w, quantize, dtype)

        self.layers = []
        with torch.no_grad():
            for layer in model.model.layers:
                att, mlp = layer.self_attn, layer.mlp
                qkv = att.qkv_proj.weight
                bias = att.qkv_proj.bias.detach().float() if att.qkv_proj.bias is not None else None
                self.layers.append((
                    layer.input_layernorm.weight.detach().float(), weight(qkv), bias, weight(att.o_proj.weight),
                    layer.post_attention_layernorm.weight.detach().float(), weight(mlp.gate_up_proj.weight),
                    weight(mlp.down_proj.weight)))
            self.embed = model.model.embed_tokens.weight.detach().float()
            self.norm_w = model.model.norm.weight.detach().float()
            # the output layer decides every token: in int4 mode it stays int8 (llama.cpp's files
            # keep it at 6 or 8 bits too), which costs little, being read once a step
            self.head = QuantWeight(model.lm_head.weight, "int8" if quantize == "int4" else quantize, dtype)
            cos, sin = model.rotary(0, self.max_len)  # [max_len, D]
        # rotate_half(x) = [-x2, x1] = roll(x, D/2) * [-1.., +1..]: the sign goes into the sin table
        sign = torch.cat([-torch.ones(D // 2), torch.ones(D // 2)]).to(sin.device)
        self.cos = cos.float().repeat(1, H + KV).contiguous()  # q and k of every head
        self.sin = (sin.float() * sign).repeat(1, H + KV).contiguous()
        self.k = [torch.zeros(KV, self.max_len, D, device=device) for _ in self.layers]
        self.v = [torch.zeros(KV, self.max_len, D, device=device) for _ in self.layers]
        self.length = 0

    @classmethod
    def build(cls, model: torch.nn.Module, max_len: int, quantize: str = "none",
              dtype: torch.dtype = torch.float32) -> "Decoder | None":
        """The decoder for ``model``, or None where the model is not our GPT (decode through forward)."""
        from gentool_gpt.model import GPT

        if type(model) is not GPT or model.training or not hasattr(F, "rms_norm") or not available(quantize):
            return None
        return cls(model, max_len, quantize, dtype)

    @property
    def block_size(self) -> int:
        """The positions the cache holds (what generate() keeps in view), as a model's ``block_size``."""
        return self.max_len

    def weight_bytes(self) -> int:
        """Bytes of the weights a decoding step reads (embedding rows aside)."""
        ws = [w for layer in self.layers for w in (layer[1], layer[3], layer[5], layer[6])] + [self.head]
        return sum(w.nbytes() for w in ws)

    def reset(self) -> None:
        """Forget every position (the cache buffers are reused)."""
        self.length = 0

    def prefill(self, tokens: Sequence[int]) -> torch.Tensor:
        """Forget the cache, run ``tokens`` through it, and return the next token's logits."""
        self.reset()
        return self.extend(tokens)

    def step(self, token: int) -> torch.Tensor:
        """Append one token; return the logits for the one after it."""
        return self.extend((token,))

    def extend(self, tokens: Sequence[int]) -> torch.Tensor:
        """Append ``tokens`` to the cache; return the logits after the last of them ``[vocab]``."""
        T, pos = len(tokens), self.length
        if T == 0:
            raise ValueError("extend needs at least one token")
        if pos + T > self.max_len:
            raise ValueError(f"decoder cache full: {pos} + {T} tokens > {self.max_len}")
        H, KV, D, C, Q, K, eps = self.H, self.KV, self.D, self.C, self.Q, self.K, self.eps
        G, QK = H // KV, self.Q + self.K
        idx = torch.as_tensor(list(tokens), dtype=torch.long, device=self.embed.device)
        x = self.embed[idx]  # [T, C]
        cos, sin = self.cos[pos:pos + T], self.sin[pos:pos + T]
        mask = None
        if T > 1 and pos > 0:  # query i sits at pos + i and sees keys 0 .. pos + i
            qpos = torch.arange(pos, pos + T, device=x.device)[:, None]
            mask = torch.arange(pos + T, device=x.device)[None, :] <= qpos
        for i, (n1, qkv_w, bias, o_w, n2, gu_w, down_w) in enumerate(self.layers):
            qkv = qkv_w(F.rms_norm(x, (C,), n1, eps))
            if bias is not None:
                qkv = qkv + bias
            qk = qkv[:, :QK]
            qk = qk * cos + qk.view(T, H + KV, D).roll(D // 2, dims=-1).view(T, QK) * sin
            ck, cv = self.k[i], self.v[i]
            ck[:, pos:pos + T] = qk[:, Q:].view(T, KV, D).transpose(0, 1)
            cv[:, pos:pos + T] = qkv[:, QK:].view(T, KV, D).transpose(0, 1)
            keys, values = ck[:, :pos + T], cv[:, :pos + T]
            if T == 1:  # the G query heads of a key/value head attend together: no copies of the keys
                y = F.scaled_dot_product_attention(qk[:, :Q].view(1, KV, G, D), keys[None], values[None])
                y = y.view(1, Q)
            else:
                q = qk[:, :Q].view(T, H, D).transpose(0, 1)
                if G > 1:
                    keys, values = keys.repeat_interleave(G, dim=0), values.repeat_interleave(G, dim=0)
                y = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask, is_causal=mask is None)
                y = y.transpose(0, 1).reshape(T, Q)
            x = x + o_w(y)
            gu = gu_w(F.rms_norm(x, (C,), n2, eps))
            x = x + down_w(F.silu(gu[:, :self.hidden]) * gu[:, self.hidden:])
        self.length = pos + T
        return self.head(F.rms_norm(x[-1:], (C,), self.norm_w, eps))[0].float()
