"""The fast decoder (gentool_gpt.decoder) and weight quantization against the model's own forward,
on the layouts of the pretrained families: grouped-query attention, q/k/v biases, llama3 rope scaling."""

from __future__ import annotations

import pytest
import torch

from gentool_gpt.decoder import Decoder
from gentool_gpt.model import GPT, GPTConfig
from gentool_gpt.quantize import QuantWeight, available

LAYOUTS = {
    "mha": {},
    "gqa": {"n_head": 4, "n_kv_head": 2},
    "mqa+bias": {"n_head": 4, "n_kv_head": 1, "qkv_bias": True},
    "llama3-rope": {"n_head": 4, "n_kv_head": 2, "rope_theta": 500000.0, "tie_embeddings": False,
                    "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                     "high_freq_factor": 4.0, "original_max_position_embeddings": 16}},
}


def model_for(layout: str, seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    cfg = GPTConfig(**{"vocab_size": 64, "n_layer": 2, "n_head": 2, "n_embd": 64, "block_size": 48,
                       "mlp_hidden": 96, **LAYOUTS[layout]})
    model = GPT(cfg)
    with torch.no_grad():  # large weights and biases: outputs vary from token to token
        for p in model.parameters():
            p.normal_(0.0, 0.3 if p.dim() > 1 else 0.5)
    return model.eval()


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_prefill_and_steps_equal_the_forward(layout):
    model = model_for(layout)
    x = torch.randint(64, (1, 30))
    with torch.no_grad():
        full = model(x)[0]
    dec = Decoder(model, max_len=48)
    torch.testing.assert_close(dec.prefill(x[0, :7].tolist()), full[6], atol=1e-4, rtol=1e-4)
    for t in range(7, 20):
        torch.testing.assert_close(dec.step(int(x[0, t])), full[t], atol=1e-4, rtol=1e-4)
    # a chunk after a prefix: the causal mask over the cached positions
    torch.testing.assert_close(dec.extend(x[0, 20:30].tolist()), full[29], atol=1e-4, rtol=1e-4)
    assert dec.length == 30
    with pytest.raises(ValueError, match="cache full"):
        dec.extend(list(range(19)))


def test_grouped_heads_are_full_heads_with_shared_keys():
    """A GQA model computes what a plain multi-head model computes whose key/value heads are copies
    of the shared ones, query head h reading key/value head h // group (transformers' convention);
    pairing the heads the other way round gives another function."""
    gqa = model_for("gqa")  # 4 query heads, 2 key/value heads of 16
    assert gqa.model.layers[0].self_attn.qkv_proj.weight.shape[0] == (4 + 2 + 2) * 16
    assert gqa.new_cache(1, 8).k[0].shape[1] == 2  # the cache keeps the key/value heads only

    def full(order: list[int]) -> GPT:
        mha = GPT(GPTConfig(**{**vars(gqa.cfg), "n_kv_head": 0}))
        state = dict(gqa.state_dict())
        for i in range(gqa.cfg.n_layer):
            key = f"model.layers.{i}.self_attn.qkv_proj.weight"
            q, k, v = state[key].split((64, 32, 32))
            heads = lambda w: torch.cat([w.view(2, 16, -1)[j] for j in order])  # noqa: E731
            state[key] = torch.cat([q, heads(k), heads(v)])
        mha.load_state_dict(state)
        return mha.eval()

    x = torch.randint(64, (1, 12))
    with torch.no_grad():
        want = gqa(x)
        torch.testing.assert_close(full([0, 0, 1, 1])(x), want, atol=1e-5, rtol=1e-5)
        assert not torch.allclose(full([0, 1, 0, 1])(x), want, atol=1e-3)


@pytest.mark.parametrize("mode,tol", [("int8", 0.02), ("int4", 0.25)])
def test_quantized_weights_are_close_and_smaller(mode, tol):
    if not available(mode):
        pytest.skip(f"this PyTorch build has no CPU kernel for {mode}")
    torch.manual_seed(1)
    w = torch.randn(96, 64)
    x = torch.randn(3, 64)
    q = QuantWeight(w, mode)
    exact = x @ w.T
    err = (q(x) - exact).abs().max() / exact.abs().max()
    assert err < tol, f"{mode} relative error {float(err):.3f}"
    assert q.nbytes() < w.numel() * (1.2 if mode == "int8" else 0.7)
    assert q(x).dtype == torch.float32


@pytest.mark.parametrize("mode", ["int8", "int4"])
def test_quantized_decoder_tracks_the_float_model(mode):
    if not available(mode):
        pytest.skip(f"this PyTorch build has no CPU kernel for {mode}")
    model = model_for("gqa")
    x = torch.randint(64, (1, 24)).tolist()[0]
    exact, small = Decoder(model, 48), Decoder(model, 48, quantize=mode)
    a, b = exact.prefill(x), small.prefill(x)
    # a high correlation of the logits, and in int8 the same likeliest token
    corr = torch.corrcoef(torch.stack([a, b]))[0, 1]
    assert corr > (0.99 if mode == "int8" else 0.9), float(corr)
    if mode == "int8":
        assert int(a.argmax()) == int(b.argmax())
    assert small.weight_bytes() < exact.weight_bytes() / (3 if mode == "int8" else 5)


def test_bfloat16_weights_decode_close_to_float32():
    model = model_for("mqa+bias")
    x = torch.randint(64, (1, 16)).tolist()[0]
    a = Decoder(model, 48).prefill(x)
    b = Decoder(model, 48, dtype=torch.bfloat16).prefill(x)
    assert b.dtype == torch.float32
    assert torch.corrcoef(torch.stack([a, b]))[0, 1] > 0.99


def test_auto_picks_the_fastest_allowed_format_and_measures_once_per_machine(tmp_path, monkeypatch):
    from gentool_gpt import quantize

    monkeypatch.setenv("GENTOOL_CACHE", str(tmp_path))
    calls = []

    def fake(width):
        calls.append(width)
        return {"none": 400.0, "bf16": 200.0, "int8": 60.0, "int4": 50.0}

    monkeypatch.setattr(quantize, "measure", fake)
    assert quantize.choose(64, ("none", "int8"))[0] == "int8"  # int4 not allowed: an 8-bit or float file
    best, note = quantize.choose(64, ("none", "int8", "int4"))
    assert best == "int4" and "int4 50 us" in note and "int8 60 us" in note
    assert calls == [64]  # the second decision came from the cache
    assert quantize.choose(128, ("none",))[0] == "none" and calls == [64, 128]


def test_measure_times_every_available_format():
    from gentool_gpt.quantize import measure

    times = measure(64, repeats=2)
    assert set(times) == {m for m in ("none", "bf16", "int8", "int4") if available(m)}
    assert all(t > 0 for t in times.values())


def test_float_weights_split_over_threads_give_the_same_product():
    """With two threads a float weight is kept as transposed row blocks (one batched product, each
    thread reading its block); the product is the plain one, for one row and for a prompt's rows."""
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        torch.manual_seed(3)
        w = torch.randn(256, 64)
        q = QuantWeight(w, "none")
        assert q.w.shape == (2, 64, 128)  # the blocks were made
        for x in (torch.randn(1, 64), torch.randn(5, 64), torch.randn(2, 3, 64)):
            torch.testing.assert_close(q(x), x @ w.T, atol=1e-5, rtol=1e-5)
        b = QuantWeight(w, "bf16")
        assert b.w.dtype == torch.bfloat16 and b(torch.randn(1, 64)).dtype == torch.float32
        model = model_for("gqa")
        x = torch.randint(64, (1, 20))
        with torch.no_grad():
            full = model(x)[0]
        torch.testing.assert_close(Decoder(model, 48).prefill(x[0].tolist()), full[-1], atol=1e-4, rtol=1e-4)
    finally:
        torch.set_num_threads(threads)
