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
    was_training = getattr(model, "training", False)
    if was_training:
        model.eval()
    try:
        yield from _decode_eval(model, ids, max_new_tokens, temperature, top_k, top_p, generator, stop_ids)
    finally:
        if was_training:
            model.train()


@torch.inference_mode()
def _decode_eval(model, ids, max_new_tokens, temperature, top_k, top_p, generator, stop_ids) -> Iterator[int]:
    from gentool_gpt.decoder import Decoder

    block = int(model.block_size)
    keep = max(1, min(block - 1, int(block * KEEP_FRACTION)))
    # our GPT decodes through a Decoder (few operations a step, maybe quantized weights); a
    # caller may pass one it built (and keeps: its weights are reused across answers)
    decoder = model if isinstance(model, Decoder) else Decoder.build(model, block)
    if decoder is not None:
        prefill, step = decoder.prefill, decoder.step
    else:
        device = next(model.parameters()).device
        cache = model.new_cache(1, block)
        step_in = torch.empty((1, 1), dtype=torch.long, device=device)

        def prefill(tokens: list[int]) -> torch.Tensor:
            cache.reset()
            return model(torch.tensor([tokens], dtype=torch.long, device=device), cache)[0, -1]

        def step(tok: int) -> torch.Tensor:
            step_in.fill_(tok)
            return model(step_in, cache)[0, -1]

    def length() -> int:
        return decoder.length if decoder is not None else cache.length

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
        if length() >= block:  # full: rebuild the cache from the newest `keep` tokens
            logits = prefill(ids[-keep:])
        else:
            logits = step(tok)


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
