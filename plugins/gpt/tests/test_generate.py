"""KV-cache decoding (gentool_gpt.generate): same tokens as a plain loop, sampling rules, streaming text.

In-process on tiny random networks: a few seconds in all.
"""

from __future__ import annotations

import collections

import pytest
import torch

from gentool_gpt.generate import KEEP_FRACTION, IncrementalDecoder, generate, sample_next
from gentool_gpt.model import GPT, GPTConfig


def tiny_gpt(block_size: int = 32, vocab: int = 50, seed: int = 0) -> GPT:
    """A small random GPT with large weights, so its greedy output varies from token to token."""
    torch.manual_seed(seed)
    model = GPT(GPTConfig(vocab_size=vocab, n_layer=2, n_head=2, n_embd=32, block_size=block_size, mlp_hidden=64))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() > 1:
                p.normal_(0.0, 0.5)
    return model.eval()


def reference_greedy(model: GPT, prompt: list[int], n: int) -> list[int]:
    """No cache: run the whole window each step. The window is the last block_size tokens at the
    start, grows by one token a step, and when it would exceed block_size restarts from the newest
    KEEP_FRACTION of a block: the policy generate() documents."""
    block = model.block_size
    keep = max(1, min(block - 1, int(block * KEEP_FRACTION)))
    ids = list(prompt)
    start = max(0, len(ids) - block)
    out = []
    with torch.no_grad():
        for _ in range(n):
            logits = model(torch.tensor([ids[start:]]))[0, -1]
            tok = int(torch.argmax(logits))
            out.append(tok)
            ids.append(tok)
            if len(ids) - start > block:
                start = len(ids) - keep
    return out


def test_greedy_equals_a_plain_loop_within_the_block():
    model = tiny_gpt(block_size=32)
    prompt = [3, 1, 4, 1, 5]
    got = list(generate(model, prompt, max_new_tokens=25, temperature=0.0))
    want = reference_greedy(model, prompt, 25)
    assert got == want
    assert len(set(got)) > 3, "the test network should not be degenerate"
    from gentool_gpt.decoder import Decoder

    assert Decoder.build(model, 32) is not None  # the fast decoder was the one tested


def test_greedy_equals_a_plain_loop_past_the_block():
    """Prompt longer than the context, then several cache rebuilds at the block boundary."""
    model = tiny_gpt(block_size=16)
    prompt = [i % 50 for i in range(7, 30)]  # 23 tokens > 16
    got = list(generate(model, prompt, max_new_tokens=60, temperature=0.0))
    assert got == reference_greedy(model, prompt, 60)
    assert len(got) == 60


def test_the_generic_path_through_forward_gives_the_same_tokens():
    """A model that is not exactly our GPT class decodes through its own forward with the cache."""

    class Wrapped(GPT):
        pass

    model = tiny_gpt(block_size=16)
    other = Wrapped(model.cfg)
    other.load_state_dict(model.state_dict())
    other.eval()
    prompt = [5, 9, 2]
    want = list(generate(model, prompt, max_new_tokens=40, temperature=0.0))
    assert list(generate(other, prompt, max_new_tokens=40, temperature=0.0)) == want
    assert want == reference_greedy(model, prompt, 40)


def test_max_new_tokens_and_empty_prompt():
    model = tiny_gpt()
    assert len(list(generate(model, [1], max_new_tokens=7, temperature=0.0))) == 7
    assert list(generate(model, [1], max_new_tokens=0)) == []
    with pytest.raises(ValueError):
        generate(model, [], max_new_tokens=3)


def test_stop_id_ends_decoding_and_is_not_yielded():
    model = tiny_gpt()
    full = list(generate(model, [2, 7], max_new_tokens=30, temperature=0.0))
    stop = full[5]
    first = full.index(stop)
    got = list(generate(model, [2, 7], max_new_tokens=30, temperature=0.0, stop_ids={stop}))
    assert got == full[:first]
    assert stop not in got


def test_seed_reproduces_samples_and_other_seeds_differ():
    model = tiny_gpt()

    def draw(seed: int) -> list[int]:
        g = torch.Generator().manual_seed(seed)
        return list(generate(model, [1, 2, 3], max_new_tokens=40, temperature=1.5, generator=g))

    a, b, c = draw(11), draw(11), draw(12)
    assert a == b
    assert a != c


def test_decoding_does_not_leak_inference_mode_or_eval_mode_to_the_caller():
    model = tiny_gpt().train()
    for _ in generate(model, [1], max_new_tokens=3, temperature=0.0):
        assert not torch.is_inference_mode_enabled()
        assert torch.is_grad_enabled()
    assert model.training  # a model being trained (per-epoch samples) goes back to training mode


def _draws(logits: torch.Tensor, n: int = 3000, **kw) -> collections.Counter:
    g = torch.Generator().manual_seed(0)
    return collections.Counter(sample_next(logits, generator=g, **kw) for _ in range(n))


def test_top_k_restricts_the_support_to_the_k_likeliest():
    torch.manual_seed(1)
    logits = torch.randn(100) * 0.3  # nearly flat: without top-k many tokens would appear
    allowed = set(torch.topk(logits, 5).indices.tolist())
    counts = _draws(logits, top_k=5)
    assert set(counts) == allowed  # every draw allowed, and every allowed token drawn
    assert len(_draws(logits, n=500)) > 20  # the same logits unrestricted spread widely


def test_top_p_keeps_the_smallest_set_reaching_p():
    probs = torch.tensor([0.05, 0.5, 0.1, 0.3, 0.05])
    logits = probs.log()
    assert set(_draws(logits, top_p=0.75)) == {1, 3}  # 0.5 < 0.75 <= 0.5 + 0.3
    assert set(_draws(logits, top_p=0.85)) == {1, 3, 2}
    assert set(_draws(logits, top_p=0.4)) == {1}
    counts = _draws(logits, top_p=0.75, n=4000)
    share = counts[1] / (counts[1] + counts[3])  # renormalised: 0.5 / 0.8
    assert abs(share - 0.625) < 0.04


def test_top_k_and_top_p_together_and_temperature():
    probs = torch.tensor([0.4, 0.3, 0.2, 0.1])
    assert set(_draws(probs.log(), top_k=3, top_p=0.6)) == {0, 1}
    assert set(_draws(probs.log(), temperature=0.0)) == {0}  # greedy
    cold = _draws(probs.log(), temperature=0.2)
    hot = _draws(probs.log(), temperature=1.0)
    assert cold[0] > hot[0] + 500  # lower temperature sharpens


def test_incremental_decoder_holds_back_split_characters():
    text = "héllo wörld, 世界 🙂!"
    data = list(text.encode("utf-8"))  # one token per byte: multi-byte characters span tokens

    def decode(ids: list[int]) -> str:
        return bytes(ids).decode("utf-8", errors="replace")

    dec = IncrementalDecoder(decode)
    pieces = [dec.push(b) for b in data]
    pieces.append(dec.flush())
    assert "".join(pieces) == text
    assert not any("\ufffd" in p for p in pieces)
    assert sum(1 for p in pieces if p) > 10  # it really streams


def test_incremental_decoder_with_a_byte_level_bpe_tokenizer():
    from gentool_gpt.tokenizer import Tokenizer

    corpus = ["Grüße aus Köln, 東京 und Zürich! " * 3, "naïve café, déjà vu. " * 3]
    tok = Tokenizer.train_bpe(corpus, vocab_size=300)
    text = "Zürich, Köln und 東京: déjà vu café"
    ids = tok.encode(text)
    dec = IncrementalDecoder(tok.decode)
    pieces = [dec.push(i) for i in ids] + [dec.flush()]
    assert "".join(pieces) == tok.decode(ids) == text
    assert not any("\ufffd" in p for p in pieces)
