"""Decoding for ``gpt`` models: a KV-cache sampling loop and a streaming text decoder.

:func:`generate` runs the prompt through the model once (prefill), then feeds one token per step,
so each new token costs one short forward pass instead of a pass over the whole context. It
yields token ids as they are decided, which is what streaming chat and ``gentool sample`` need.

When the context reaches the model's ``block_size`` the cache is rebuilt from the newest
three quarters of the tokens (one prefill) and decoding goes on: rotary positions are absolute,
so the cache cannot simply drop its oldest entries, and re-prefilling a quarter of a block at a
time keeps that cost small while every token still sees at least 3/4 of a block of context.

:class:`IncrementalDecoder` turns that id stream into text pieces: byte-level BPE may split one
character over several tokens, so text is released only once it decodes to whole characters.

:func:`sample_next` (temperature, top-k, nucleus top-p, greedy at temperature 0) is shared with
the transformers backend of ``gentool chat`` so both sample alike.
"""

from __future__ import annotations

import math
from typing import Callable, Iterator, Sequence

import torch
import torch.nn.functional as F

__all__ = ["generate", "sample_next", "IncrementalDecoder", "KEEP_FRACTION"]

#: Share of ``block_size`` kept (newest tokens) when the context is full and the cache is rebuilt.
KEEP_FRACTION = 0.75


def sample_next(
    logits: torch.Tensor,
    *,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
) -> int:
    """Pick the next token id from one row of logits ``[vocab]``.

    ``temperature`` 0 (or below) is greedy; ``top_k`` keeps the k likeliest tokens; ``top_p``
    keeps the smallest set of likeliest tokens whose probability reaches ``p`` (at least one).
    Randomness comes from ``generator`` only when given, so a seeded generator reproduces samples.
    A NaN or infinite ``temperature`` or ``top_p`` is a ValueError (not torch's error mid-sampling).
    """
    _check_finite(temperature, top_p)
    if temperature <= 0.0:
        return int(torch.argmax(logits))
    logits = logits.float()
    if temperature != 1.0:
        logits = logits / temperature
    ids: torch.Tensor | None = None  # index map from the reduced support back to the vocabulary
    if top_k is not None and 0 < top_k < logits.shape[-1]:
        logits, ids = torch.topk(logits, top_k)  # sorted, descending
    if top_p is not None and 0.0 < top_p < 1.0:
        if ids is None:
            logits, ids = torch.sort(logits, descending=True)
        probs = torch.softmax(logits, dim=-1)
        # keep a token if the mass of the tokens before it is still below p (the first always stays)
        before = torch.cumsum(probs, dim=-1) - probs
        n_keep = max(1, int((before < top_p).sum()))
        logits, ids = logits[:n_keep], ids[:n_keep]
    probs = torch.softmax(logits, dim=-1)
    if generator is not None and generator.device != probs.device:
        probs = probs.to(generator.device)
    choice = int(torch.multinomial(probs, 1, generator=generator))
    return int(ids[choice]) if ids is not None else choice


def _check_finite(temperature: float, top_p: float | None) -> None:
    if not math.isfinite(temperature):
        raise ValueError(f"temperature must be a finite number, not {temperature!r}")
    if top_p is not None and not math.isfinite(top_p):
        raise ValueError(f"top_p must be a finite number (or None), not {top_p!r}")


def generate(
    model: torch.nn.Module,
    prompt_ids: Sequence[int],
    *,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
    stop_ids: set[int] | None = None,
) -> Iterator[int]:
    """Yield up to ``max_new_tokens`` token ids continuing ``prompt_ids``, one at a time.

    One prefill of the prompt (its last ``block_size`` tokens), then one cached forward pass per
    token. A token in ``stop_ids`` ends decoding and is not yielded. The model decodes in eval
    mode (a model in training mode gets it back when the iterator ends or is closed); decoding
    runs under ``torch.inference_mode`` only while the generator runs, so the caller's own code
    between tokens is unaffected.
    """
    if len(prompt_ids) == 0:
        raise ValueError("generate needs at least one prompt token (start with the tokenizer's <|bos|>)")
    _check_finite(temperature, top_p)
    if max_new_tokens <= 0:
        return iter(())
    return _decode(model, list(prompt_ids), max_new_tokens, temperature, top_k, top_p, generator,
                   frozenset(stop_ids or ()))


def _decode(model, ids, max_new_tokens, temperature, top_k, top_p, generator, stop_ids) -> Iterator[int]:
    was_training = model.training
    model.eval()
    try:
        yield from _decode_eval(model, ids, max_new_tokens, temperature, top_k, top_p, generator, stop_ids)
    finally:
        if was_training:
            model.train()


@torch.inference_mode()
def _decode_eval(model, ids, max_new_tokens, temperature, top_k, top_p, generator, stop_ids) -> Iterator[int]:
    block = int(model.block_size)
    keep = max(1, min(block - 1, int(block * KEEP_FRACTION)))
    device = next(model.parameters()).device
    cache = model.new_cache(1, block)
    fast = _FastStep.build(model, cache)
    step_in = torch.empty((1, 1), dtype=torch.long, device=device)

    def prefill(tokens: list[int]) -> torch.Tensor:
        cache.reset()
        return model(torch.tensor([tokens], dtype=torch.long, device=device), cache)[0, -1]

    logits = prefill(ids[-block:])
    greedy = temperature <= 0.0
    for produced in range(max_new_tokens):
        if greedy:
            tok = int(torch.argmax(logits))
        else:
            tok = sample_next(logits, temperature=temperature, top_k=top_k, top_p=top_p, generator=generator)
        if tok in stop_ids:
            return
        yield tok
        if produced + 1 == max_new_tokens:
            return
        ids.append(tok)
        if cache.length >= block:  # full: rebuild the cache from the newest `keep` tokens
            logits = prefill(ids[-keep:])
        elif fast is not None:
            logits = fast(tok)
        else:
            step_in.fill_(tok)
            logits = model(step_in, cache)[0, -1]


class _FastStep:
    """One decoding step of our :class:`~gentool_gpt.model.GPT` (batch 1, one token) in few tensor
    operations, for speed: at this size a step costs the number of operations, not arithmetic.

    The same computation as the model's forward with a cache, regrouped: q, k and v (and q and k
    with their halves swapped, for the rotary positions) come from one matrix product per layer,
    gate and up from one more; rotary positions are one multiply-add from precomputed tables. It
    reads the model's weights and writes the same :class:`~gentool_gpt.model.KVCache` the model's
    prefill filled. Used only for that exact class; anything else decodes through ``forward``.
    """

    def __init__(self, model, cache) -> None:
        cfg = model.cfg
        self.model, self.cache = model, cache
        self.n_head, self.head_dim, self.eps = cfg.n_head, cfg.head_dim, cfg.norm_eps
        C, H, D = cfg.n_embd, cfg.n_head, cfg.head_dim
        self.C = C

        def swapped(w: torch.Tensor) -> torch.Tensor:  # rows of rotate_half(w @ x): [-second half, first half]
            w = w.view(H, D, -1)
            return torch.cat([-w[:, D // 2:], w[:, :D // 2]], dim=1).reshape(H * D, -1)

        self.layers = []
        for layer in model.model.layers:
            att, mlp = layer.self_attn, layer.mlp
            wq, wk, wv = _split(att, "qkv_proj", ("q_proj", "k_proj", "v_proj"))
            gate, up = _split(mlp, "gate_up_proj", ("gate_proj", "up_proj"))
            qkv = torch.cat([wq, wk, swapped(wq), swapped(wk), wv], dim=0).contiguous()
            gate_up = torch.cat([gate, up], dim=0).contiguous()
            self.layers.append((layer.input_layernorm.weight, qkv, att.o_proj.weight,
                                layer.post_attention_layernorm.weight, gate_up, mlp.down_proj.weight))
        self.hidden = cfg.mlp_hidden
        self.embed = model.model.embed_tokens.weight
        self.norm_w = model.model.norm.weight
        self.head = model.lm_head.weight
        cos, sin = model.rotary(0, cache.max_len)  # [max_len, D]
        self.cos = cos.to(self.embed.dtype).repeat(1, 2 * H).contiguous()  # q and k of every head
        self.sin = sin.to(self.embed.dtype).repeat(1, 2 * H).contiguous()

    @classmethod
    def build(cls, model, cache) -> "_FastStep | None":
        """The fast step for ``model``, or None to decode through its ``forward``."""
        from gentool_gpt.model import GPT

        if type(model) is not GPT or model.training or not hasattr(F, "rms_norm"):  # rms_norm: torch >= 2.4
            return None
        p = model.lm_head.weight
        if p.device.type == "cpu" and p.dtype != torch.float32:  # the model attends in float32 there
            return None
        try:
            return cls(model, cache)
        except (AttributeError, RuntimeError):  # a layout this step does not know: use forward
            return None

    def __call__(self, tok: int) -> torch.Tensor:
        cache, C, H, D, eps = self.cache, self.C, self.n_head, self.head_dim, self.eps
        pos = cache.length
        x = self.embed[tok].view(1, C)
        cos, sin = self.cos[pos], self.sin[pos]
        for i, (n1, qkv_w, o_w, n2, gu_w, down_w) in enumerate(self.layers):
            qkv = F.linear(F.rms_norm(x, (C,), n1, eps), qkv_w)
            qk = qkv[:, :2 * C] * cos + qkv[:, 2 * C:4 * C] * sin
            ck, cv = cache.k[i], cache.v[i]
            ck[0, :, pos] = qk[0, C:].view(H, D)
            cv[0, :, pos] = qkv[0, 4 * C:].view(H, D)
            y = F.scaled_dot_product_attention(qk[:, :C].view(1, H, 1, D), ck[:1, :, :pos + 1], cv[:1, :, :pos + 1])
            x = x + F.linear(y.view(1, C), o_w)
            gu = F.linear(F.rms_norm(x, (C,), n2, eps), gu_w)
            x = x + F.linear(F.silu(gu[:, :self.hidden]) * gu[:, self.hidden:], down_w)
        cache.length = pos + 1
        return F.linear(F.rms_norm(x, (C,), self.norm_w, eps), self.head)[0]


def _split(module: torch.nn.Module, stacked: str, names: tuple[str, ...]) -> tuple[torch.Tensor, ...]:
    """The weights ``names`` of ``module``: separate linear layers, or one stacked layer's rows."""
    if hasattr(module, stacked):
        return tuple(getattr(module, stacked).weight.chunk(len(names), dim=0))
    return tuple(getattr(module, n).weight for n in names)


class IncrementalDecoder:
    """Turn a stream of token ids into text pieces that are safe to print as they come.

    ``decode`` maps a list of ids to text (our tokenizer's ``decode`` or a transformers
    tokenizer's). Each :meth:`push` decodes a short window of recent ids and returns the text
    they add, or ``""`` while the newest ids end in an incomplete character (shown by decoders
    as U+FFFD). Decoding a window with one settled token in front keeps tokenizers that drop a
    leading space at the start of a text (SentencePiece) from losing it at each step.
    """

    def __init__(self, decode: Callable[[list[int]], str]):
        self._decode = decode
        self.ids: list[int] = []
        self._prefix = 0  # window start: settled context, not printed again
        self._read = 0  # ids up to here have been printed

    def push(self, token_id: int) -> str:
        """Add one id; return the new printable text (possibly empty)."""
        self.ids.append(token_id)
        return self._release(final=False)

    def flush(self) -> str:
        """Whatever is still held back (an incomplete character at the very end), as decoded."""
        return self._release(final=True)

    def _release(self, final: bool) -> str:
        if self._read >= len(self.ids):
            return ""
        before = self._decode(self.ids[self._prefix:self._read])
        now = self._decode(self.ids[self._prefix:])
        if not final and (len(now) <= len(before) or now.endswith("\ufffd")):
            return ""
        if not now.startswith(before):  # a tokenizer that rewrites earlier text: emit the tail anyway
            before = before[: len(now)]
        piece = now[len(before):]
        self._prefix, self._read = self._read, len(self.ids)  # what was just printed is the next context
        return piece
