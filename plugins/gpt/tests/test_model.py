"""The network: shapes, the causal mask, and the KV cache against a plain forward pass."""

from __future__ import annotations

import pytest
import torch

from gentool_gpt.model import GPT, GPTConfig
from gentool_gpt.task import masked_loss


def tiny(**kw) -> GPT:
    torch.manual_seed(0)
    cfg = GPTConfig(**{"vocab_size": 50, "n_layer": 2, "n_head": 2, "n_embd": 32, "block_size": 24,
                       "mlp_hidden": 64, **kw})
    return GPT(cfg).eval()


def test_shapes_and_tied_embedding():
    m = tiny()
    logits = m(torch.randint(50, (3, 10)))
    assert logits.shape == (3, 10, 50)
    assert m.lm_head.weight is m.model.embed_tokens.weight
    assert tiny(tie_embeddings=False).lm_head.weight is not tiny(tie_embeddings=False).model.embed_tokens.weight
    assert m.block_size == 24


def test_future_tokens_do_not_change_earlier_logits():
    m = tiny()
    x = torch.randint(50, (1, 16))
    y = x.clone()
    y[0, 10:] = (y[0, 10:] + 7) % 50
    a, b = m(x), m(y)
    torch.testing.assert_close(a[:, :10], b[:, :10])
    assert not torch.allclose(a[:, 10:], b[:, 10:])


@pytest.mark.parametrize("prefill", [1, 5, 12])
def test_kv_cache_matches_full_forward(prefill):
    m = tiny()
    x = torch.randint(50, (2, 20))
    full = m(x)
    cache = m.new_cache(2, 24)
    parts = [m(x[:, :prefill], cache)]
    for t in range(prefill, 20):  # one token at a time
        parts.append(m(x[:, t:t + 1], cache))
    assert cache.length == 20
    torch.testing.assert_close(torch.cat(parts, 1), full, atol=1e-5, rtol=1e-4)


def test_kv_cache_chunks_reset_and_overflow():
    m = tiny()
    x = torch.randint(50, (1, 18))
    full = m(x)
    cache = m.new_cache(1, 24)
    m(x[:, :6], cache)
    torch.testing.assert_close(m(x[:, 6:18], cache), full[:, 6:18], atol=1e-5, rtol=1e-4)  # T > 1 after a prefix
    cache.reset()
    assert cache.length == 0
    torch.testing.assert_close(m(x[:, :3], cache), full[:, :3], atol=1e-5, rtol=1e-4)
    with pytest.raises(ValueError, match="KV cache full"):
        m(torch.zeros(1, 30, dtype=torch.long), cache)


def test_loss_ignores_masked_targets_and_learns():
    m = tiny()
    m.train()
    x = torch.randint(50, (4, 16))
    y = torch.full_like(x, -100)
    y[:, -1] = 3

    def mean_loss():
        total, count = masked_loss(m(x), y)
        assert int(count) == 4  # only the unmasked targets count
        return total / count

    opt = torch.optim.AdamW(m.parameters(), lr=1e-2)
    first = float(mean_loss().detach())
    for _ in range(30):
        loss = mean_loss()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(loss.detach()) < first / 4
