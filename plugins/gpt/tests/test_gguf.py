"""The GGUF reader: tiny Llama/Qwen2 files written here with gguf.GGUFWriter (F32 and Q8_0, the
llama q/k permutation applied as llama.cpp's converter does), damaged files, and the real
SmolLM2-135M-Instruct Q4_1 file against transformers' own GGUF loading."""

from __future__ import annotations

import math
import os
from pathlib import Path

import pytest
import torch

gguf = pytest.importorskip("gguf")
np = pytest.importorskip("numpy")
pytest.importorskip("transformers")

from gentool import CheckpointError  # noqa: E402
from gentool_gpt.gguf_reader import describe_gguf, read_gguf  # noqa: E402

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
MERGES = ["Ġ t", "h e", "Ġt he", "i n", "Ġ a"]
TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
            "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def _byte_alphabet() -> list[str]:
    """GPT-2's printable spelling of the 256 bytes, in byte order."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), 256))
    chars, extra = {}, 0
    for byte in range(256):
        if byte in keep:
            chars[byte] = chr(byte)
        else:
            chars[byte] = chr(256 + extra)
            extra += 1
    return [chars[byte] for byte in range(256)]


def _vocab() -> tuple[list[str], list[int]]:
    tokens = SPECIALS + _byte_alphabet() + [merge.replace(" ", "") for merge in MERGES]
    types = [3] * len(SPECIALS) + [1] * (len(tokens) - len(SPECIALS))
    return tokens, types


def _permute(weights: np.ndarray, n_head: int, n_head_kv: int | None) -> np.ndarray:
    """llama.cpp's convert_hf_to_gguf LlamaModel.permute, written out again for the test."""
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    return (weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:])
            .swapaxes(1, 2).reshape(weights.shape))


GGUF_NAMES = {"model.embed_tokens": "token_embd", "model.norm": "output_norm", "lm_head": "output"}
BLOCK_NAMES = {"input_layernorm": "attn_norm", "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k",
               "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output",
               "post_attention_layernorm": "ffn_norm", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
               "mlp.down_proj": "ffn_down"}


def _gguf_name(hf_name: str) -> str:
    stem, suffix = hf_name.rsplit(".", 1)
    if stem in GGUF_NAMES:
        return f"{GGUF_NAMES[stem]}.{suffix}"
    _, _, layer, part = stem.split(".", 3)
    return f"blk.{layer}.{BLOCK_NAMES[part]}.{suffix}"


def _tiny(kind: str, tied: bool = True, vocab_size: int | None = None, **extra):
    """A small random transformers model: GQA (4 heads, 2 kv heads), rows a multiple of 32 for Q8_0."""
    import transformers

    common = dict(vocab_size=vocab_size or len(_vocab()[0]), hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                  tie_word_embeddings=tied, bos_token_id=1, eos_token_id=2, **extra)
    torch.manual_seed(0)
    if kind == "qwen2":
        config = transformers.Qwen2Config(rope_theta=1000000.0, rms_norm_eps=1e-6, **common)
        model = transformers.Qwen2ForCausalLM(config)
    else:
        common.setdefault("rope_theta", 10000.0)
        config = transformers.LlamaConfig(rms_norm_eps=1e-5, **common)
        model = transformers.LlamaForCausalLM(config)
    with torch.no_grad():  # random norms and biases, so that a misplaced one shows
        for name, param in model.named_parameters():
            if param.dim() == 1:
                param.copy_(torch.randn_like(param) * 0.1 + (1.0 if "norm" in name else 0.0))
    return model.eval()


def _write(path: Path, model, arch: str, qtype: str = "F32", pre: str = "smollm", drop: tuple[str, ...] = (),
           rope_freqs: np.ndarray | None = None, spm: dict | None = None, written: dict | None = None) -> Path:
    """Write `model` as llama.cpp's converter would: names, q/k permutation (llama), 1-D tensors F32.
    The tokenizer is the byte-level one of _vocab(), or the SentencePiece one `spm` describes."""
    config = model.config
    tokens, types = _vocab() if spm is None else (spm["tokens"], spm["types"])
    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_name("tiny test model")
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_rope_freq_base(config.rope_parameters["rope_theta"])
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_rope_dimension_count(config.hidden_size // config.num_attention_heads)
    writer.add_vocab_size(len(tokens))
    file_type = "ALL_F32" if qtype == "F32" else f"MOSTLY_{qtype}"
    if file_type in gguf.LlamaFileType.__members__:  # Q3_K/Q4_K/Q5_K files say _S/_M/_L: left out here
        writer.add_file_type(gguf.LlamaFileType[file_type])
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    if spm is None:
        writer.add_tokenizer_model("gpt2")
        writer.add_tokenizer_pre(pre)
        writer.add_token_merges(MERGES)
        writer.add_add_bos_token(False)
    else:
        writer.add_tokenizer_model("llama")
        writer.add_tokenizer_pre("default")
        writer.add_token_scores(spm["scores"])
        writer.add_unk_token_id(0)
        writer.add_add_bos_token(True)
        writer.add_add_space_prefix(True)
    writer.add_chat_template(TEMPLATE)
    heads, kv_heads = config.num_attention_heads, config.num_key_value_heads
    for name, tensor in model.state_dict().items():
        if name == "lm_head.weight" and config.tie_word_embeddings:
            continue
        data = tensor.detach().float().numpy()
        if arch == "llama" and ".q_proj." in name:
            data = _permute(data, heads, heads)
        elif arch == "llama" and ".k_proj." in name:
            data = _permute(data, heads, kv_heads)
        gguf_name = _gguf_name(name)
        if gguf_name in drop:
            continue
        if qtype != "F32" and data.ndim == 2:
            kind = gguf.GGMLQuantizationType[qtype]
            quantized = _encode(data, kind)
            writer.add_tensor(gguf_name, quantized, raw_dtype=kind)
            if written is not None:
                written[gguf_name] = (quantized, kind)
        else:
            writer.add_tensor(gguf_name, np.ascontiguousarray(data, dtype=np.float32))
    if rope_freqs is not None:
        writer.add_tensor("rope_freqs.weight", rope_freqs.astype(np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def _encode(data: np.ndarray, kind) -> np.ndarray:
    """The tensor in ggml type `kind`: gguf.quants.quantize where gguf-py can, and for the K-quants
    (which it only decodes) random blocks whose every byte is below 0x3C, so that each float16 scale
    in them is finite and small."""
    try:
        return gguf.quants.quantize(data, kind)
    except NotImplementedError:
        block, nbytes = gguf.GGML_QUANT_SIZES[kind]
        rng = np.random.default_rng(int(kind))
        return rng.integers(0, 0x3C, size=(data.shape[0], data.shape[1] // block * nbytes), dtype=np.uint8)


def _expected_q8(tensor: torch.Tensor, name: str, arch: str, heads: int, kv_heads: int) -> torch.Tensor:
    """What a Q8_0 round trip of the (permuted) tensor gives, permuted back: the reader must give exactly this."""
    data = tensor.detach().float().numpy()
    permute = arch == "llama" and (".q_proj." in name or ".k_proj." in name)
    n = heads if ".q_proj." in name else kv_heads
    if permute:
        data = _permute(data, heads, n)
    if data.ndim == 2:
        q8 = gguf.GGMLQuantizationType.Q8_0
        data = gguf.quants.dequantize(gguf.quants.quantize(data, q8), q8)
    if permute:  # the inverse of the permutation: its transposed reshape
        half = data.shape[0] // n // 2
        data = data.reshape(n, half, 2, *data.shape[1:]).swapaxes(1, 2).reshape(data.shape)
    return torch.from_numpy(np.ascontiguousarray(data))


CASES = [("llama", True, "F32"), ("llama", False, "F32"), ("qwen2", True, "F32"), ("llama", True, "Q8_0"),
         ("qwen2", False, "Q8_0")]


@pytest.mark.parametrize("arch,tied,qtype", CASES, ids=[f"{a}-{'tied' if t else 'untied'}-{q}" for a, t, q in CASES])
def test_tiny_round_trip(tmp_path, arch, tied, qtype):
    import transformers

    model = _tiny(arch, tied=tied)
    path = _write(tmp_path / f"{arch}.gguf", model, arch, qtype, pre="qwen2" if arch == "qwen2" else "smollm")
    ckpt = read_gguf(path)
    config = model.config
    assert ckpt.arch == arch
    expected_config = {
        "model_type": arch, "architectures": [type(model).__name__], "vocab_size": config.vocab_size,
        "hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 2, "num_attention_heads": 4,
        "num_key_value_heads": 2, "head_dim": 16, "rms_norm_eps": config.rms_norm_eps,
        "rope_theta": config.rope_parameters["rope_theta"], "max_position_embeddings": 256,
        "tie_word_embeddings": tied, "attention_bias": arch == "qwen2", "rope_scaling": None,
        "bos_token_id": 1, "eos_token_id": 2}
    assert {key: ckpt.config[key] for key in expected_config} == expected_config
    state = model.state_dict()
    wanted = {name for name in state if not (tied and name == "lm_head.weight")}
    assert set(ckpt.tensors) == wanted
    assert ckpt.quant == ("F32" if qtype == "F32" else "Q8_0 (mostly)")
    for name in wanted:
        got, original = ckpt.tensors[name], state[name]
        assert got.dtype == torch.float32 and got.shape == original.shape, name
        if qtype == "F32":
            assert torch.equal(got, original), name
        else:
            assert torch.equal(got, _expected_q8(original, name, arch, 4, 2)), name
            assert (got - original).abs().max() <= original.abs().max() / 127 + 1e-6, name

    # the config and tensors make the same model: transformers built from them gives the same logits
    cls = getattr(transformers, ckpt.config["architectures"][0])
    config_cls = transformers.AutoConfig.for_model(ckpt.config["model_type"]).__class__
    keys = {k: v for k, v in ckpt.config.items() if k not in ("model_type", "architectures")}
    rebuilt = cls(config_cls(**keys)).eval()
    missing, unexpected = rebuilt.load_state_dict(ckpt.tensors, strict=False)
    assert not unexpected and set(missing) <= {"lm_head.weight"}
    ids = torch.tensor([[1, 40, 50, 60, 70, 80, 90, 200, 3]])
    with torch.no_grad():
        ours, theirs = rebuilt(ids).logits, model(ids).logits
    if qtype == "F32":
        torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)
    else:
        assert (ours - theirs).abs().max() < 0.1


QTYPES = ["F16", "BF16", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K"]


@pytest.mark.parametrize("qtype", QTYPES)
def test_quant_types(tmp_path, qtype):
    """Every type gguf.quants decodes comes back as its decoded values, at the right place and shape
    (qwen2: no permutation; rows of 256 values, the K-quants' block)."""
    import transformers

    torch.manual_seed(0)
    config = transformers.Qwen2Config(vocab_size=len(_vocab()[0]), hidden_size=256, intermediate_size=256,
                                      num_hidden_layers=1, num_attention_heads=4, num_key_value_heads=2,
                                      max_position_embeddings=64, tie_word_embeddings=False)
    model = transformers.Qwen2ForCausalLM(config).eval()
    written: dict = {}
    path = _write(tmp_path / f"{qtype}.gguf", model, "qwen2", qtype, pre="qwen2", written=written)
    ckpt = read_gguf(path)
    assert ckpt.quant == f"{qtype} (mostly)"
    assert len(written) == 2 + 7
    for gguf_name, (raw, kind) in written.items():
        hf_name = next(n for n in model.state_dict() if _gguf_name(n) == gguf_name)
        expected = torch.from_numpy(np.asarray(gguf.quants.dequantize(raw, kind), dtype=np.float32))
        got = ckpt.tensors[hf_name]
        assert got.shape == model.state_dict()[hf_name].shape, hf_name
        assert torch.equal(got, expected.reshape(got.shape)), hf_name
        assert ckpt.tensor_types[hf_name] == qtype
    assert describe_gguf(path)["tensor_types"][qtype] == 9


def test_bfloat16_dtype_and_tokenizer_bits(tmp_path):
    path = _write(tmp_path / "m.gguf", _tiny("llama"), "llama")
    ckpt = read_gguf(path, dtype=torch.bfloat16)
    assert all(t.dtype == torch.bfloat16 for t in ckpt.tensors.values())
    assert ckpt.chat_template == TEMPLATE
    assert ckpt.special["bos_id"] == 1 and ckpt.special["eos_id"] == 2
    assert ckpt.special["control_ids"] == [0, 1, 2] and ckpt.special["eog_ids"] == [0, 2]
    tok = ckpt.tokenizer
    encoded = tok.encode("<|im_start|>user\nin the cat in a hat 2024<|im_end|>")
    assert encoded.ids[0] == 1 and encoded.ids[-1] == 2
    assert "Ġthe" in encoded.tokens and "in" in encoded.tokens
    assert ["2", "0", "2", "4"] == [t for t in encoded.tokens if t.isdigit()]  # smollm: digits one by one
    assert tok.decode(encoded.ids, skip_special_tokens=False) == "<|im_start|>user\nin the cat in a hat 2024<|im_end|>"


def test_describe(tmp_path):
    path = _write(tmp_path / "m.gguf", _tiny("qwen2", tied=False), "qwen2", "Q8_0", pre="qwen2")
    info = describe_gguf(path)
    assert info["architecture"] == "qwen2" and info["supported"]
    assert (info["layers"], info["heads"], info["kv_heads"], info["head_dim"]) == (2, 4, 2, 16)
    assert (info["embedding_width"], info["ffn_width"], info["context_length"]) == (64, 96, 256)
    assert info["vocab_size"] == len(_vocab()[0]) and info["rope_theta"] == 1000000.0 and info["norm_eps"] == 1e-6
    assert info["quant"] == "Q8_0 (mostly)" and info["file_type"] == "MOSTLY_Q8_0"
    assert info["tensor_types"] == {"F32": 2 * 5 + 1, "Q8_0": 2 * 7 + 2}
    assert info["parameters"] == sum(p.numel() for p in _tiny("qwen2", tied=False).parameters())
    assert info["tokenizer"] == "gpt2" and info["tokenizer_pre"] == "qwen2" and info["chat_template"] is True
    assert info["tied_embeddings"] is False and info["format"] == "GGUF v3"


def test_llama3_rope_scaling_from_rope_freqs(tmp_path):
    """llama.cpp writes Llama 3.1's rope scaling as a rope_freqs tensor; the reader gives rope_scaling back."""
    import transformers
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    scaling = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
               "original_max_position_embeddings": 64}
    model = _tiny("llama", rope_theta=500000.0, rope_scaling=scaling)
    # the converter's factors: 1 for short wavelengths, factor for long ones, blended in between
    base, dim = 500000.0, 16
    freqs = 1.0 / (base ** (np.arange(0, dim, 2, dtype=np.float64) / dim))
    factors = []
    for freq in freqs:
        wavelen = 2 * math.pi / freq
        if wavelen < 64 / 4.0:
            factors.append(1.0)
        elif wavelen > 64 / 1.0:
            factors.append(8.0)
        else:
            smooth = (64 / wavelen - 1.0) / (4.0 - 1.0)
            factors.append(1 / ((1 - smooth) / 8.0 + smooth))
    path = _write(tmp_path / "m.gguf", model, "llama", rope_freqs=np.array(factors))
    ckpt = read_gguf(path)
    assert torch.allclose(ckpt.rope_factors, torch.tensor(factors, dtype=torch.float32))
    got = ckpt.config["rope_scaling"]
    assert got["rope_type"] == "llama3" and got["factor"] == 8.0
    keys = {k: v for k, v in ckpt.config.items() if k not in ("model_type", "architectures")}
    ours = transformers.LlamaConfig(**{**keys, "max_position_embeddings": 256})
    ours_freq, _ = ROPE_INIT_FUNCTIONS["llama3"](ours)
    theirs_freq, _ = ROPE_INIT_FUNCTIONS["llama3"](model.config)
    torch.testing.assert_close(ours_freq, theirs_freq, rtol=1e-4, atol=0)


SPM_PIECES = ["\u2581", "t", "h", "e", "c", "a", "o", "g", "d", "s", "n", "i", "r", "w", "T", "\u2581t", "he",
              "\u2581the", "\u2581c", "at", "\u2581cat", "\u2581a", "og", "\u2581d", "\u2581dog", "in", "\u2581in",
              "er", "\u2581s", "\u2581\u2581", "\u2581\u2581\u2581\u2581", "\u2581T", "\u2581The"]


def _spm_vocab() -> dict:
    """A SentencePiece-style vocabulary as llama.cpp writes it: <unk> <s> </s>, 256 byte tokens, pieces
    scored so that longer pieces merge later (their score is lower), like a real model's."""
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{byte:02X}>" for byte in range(256)] + SPM_PIECES
    types = [2, 3, 3] + [6] * 256 + [1] * len(SPM_PIECES)
    scores = [0.0, 0.0, 0.0] + [0.0] * 256 + [-float(i) for i in range(len(SPM_PIECES))]
    return {"tokens": tokens, "types": types, "scores": scores}


def test_sentencepiece_tokenizer_matches_transformers(tmp_path):
    """tokenizer.ggml.model "llama": BPE with byte fallback, merges from the scores; same ids as
    transformers' tokenizer built from the same file."""
    import transformers

    spm = _spm_vocab()
    model = _tiny("llama", vocab_size=len(spm["tokens"]))
    path = _write(tmp_path / "spm.gguf", model, "llama", spm=spm)
    ours = read_gguf(path).tokenizer
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_HUB_OFFLINE", "1")
        theirs = transformers.AutoTokenizer.from_pretrained(tmp_path, gguf_file=path.name)
    for text in ["the cat", "The dog ate the cat", "in the    end", "naïve 日本 ✓", "x\ny", "the cat</s>", ""]:
        assert ours.encode(text).ids == theirs.encode(text), text
        assert ours.decode(ours.encode(text).ids) == text.replace("</s>", ""), text
    assert ours.encode("the cat").tokens == ["<s>", "\u2581the", "\u2581cat"]
    assert ours.encode("é").tokens == ["<s>", "\u2581", "<0xC3>", "<0xA9>"]
    # Where transformers' GGUF tokenizer (Metaspace, prepend_scheme "first") differs, we do as llama.cpp
    # (llama-cpp-python 0.3.36 on this very file gives these ids) and the Llama 2 tokenizer.json do:
    # the space prefix always comes, also before a leading space and after a special token.
    assert ours.encode("  two").tokens == ["<s>", "\u2581\u2581", "\u2581t", "w", "o"]
    assert ours.encode("the</s>the").tokens == ["<s>", "\u2581the", "</s>", "\u2581the"]


# --- errors a user can cause: one clear line naming the file


def test_not_gguf(tmp_path):
    for name, data in [("notes.txt", b"hello, this is text and not a model\n" * 3), ("empty.gguf", b""),
                       ("pickle.gguf", b"\x80\x04\x95" + b"\x00" * 64)]:
        path = tmp_path / name
        path.write_bytes(data)
        with pytest.raises(CheckpointError, match="not a GGUF file") as caught:
            read_gguf(path)
        assert str(path) in str(caught.value) and "\n" not in str(caught.value)
        with pytest.raises(CheckpointError, match="not a GGUF file"):
            describe_gguf(path)
    with pytest.raises(CheckpointError, match="no such GGUF file"):
        read_gguf(tmp_path / "absent.gguf")


@pytest.mark.parametrize("keep", [10, 200, 0.5, -100])
def test_truncated(tmp_path, keep):
    whole = _write(tmp_path / "m.gguf", _tiny("llama"), "llama").read_bytes()
    cut = tmp_path / "cut.gguf"
    size = int(len(whole) * keep) if isinstance(keep, float) else (keep if keep > 0 else len(whole) + keep)
    cut.write_bytes(whole[:size])
    with pytest.raises(CheckpointError, match="truncated") as caught:
        read_gguf(cut)
    assert str(cut) in str(caught.value) and "\n" not in str(caught.value)


def test_unknown_architecture_and_missing_tensor(tmp_path):
    model = _tiny("llama")
    path = _write(tmp_path / "gpt2.gguf", model, "gptneox")
    with pytest.raises(CheckpointError, match="architecture 'gptneox' is not supported") as caught:
        read_gguf(path)
    assert str(path) in str(caught.value)
    assert describe_gguf(path)["supported"] is False
    path = _write(tmp_path / "hole.gguf", model, "llama", drop=("blk.1.ffn_up.weight",))
    with pytest.raises(CheckpointError, match="missing tensor blk.1.ffn_up.weight"):
        read_gguf(path)


def test_unsupported_quant_type(tmp_path):
    """A tensor in a type gguf.quants cannot dequantize (Q8_1, an activations-only type) is refused."""
    model = _tiny("llama")
    path = _write(tmp_path / "m.gguf", model, "llama")
    raw = bytearray(path.read_bytes())
    # retype ffn_up of block 0 in the tensor table: F32 (0) -> Q8_1 (9); Q8_1 blocks are smaller, so the
    # file stays long enough and only the type is at fault
    name = b"blk.0.ffn_up.weight"
    at = raw.index(name) + len(name)
    n_dims = int.from_bytes(raw[at:at + 4], "little")
    type_at = at + 4 + 8 * n_dims
    assert int.from_bytes(raw[type_at:type_at + 4], "little") == 0
    raw[type_at:type_at + 4] = (9).to_bytes(4, "little")
    path.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match="quantization type Q8_1 is not supported"):
        read_gguf(path)
    assert describe_gguf(path)["tensor_types"]["Q8_1"] == 1


# --- the real model: SmolLM2-135M-Instruct Q4_1 against transformers' own GGUF loading

TEXTS = [
    "Hello, world! How are you doing today?",
    "The quick brown fox jumps over the lazy dog. It's 2024; we've got 3.14159 and 1,000,000.",
    "def fib(n):\n    if n < 2:\n        return n\n    return fib(n - 1) + fib(n - 2)\n",
    "    indented\ttabs\t\tand   spaces   \n\n\nnewlines  ",
    "Ünïcödé: café, naïve, Straße, Ελληνικά, русский, 日本語のテキスト, 中文, 한국어, emoji 🤖🎉👍🏽",
    "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n",
    "<|endoftext|>text after<|endoftext|><repo_name>x",
    "",
    " leading space and trailing space ",
]


@pytest.fixture(scope="module")
def smollm2(smollm2_gguf):
    """Our reading of the real file, once for the module."""
    return read_gguf(smollm2_gguf)


@pytest.fixture(scope="module")
def hf_tokenizer(smollm2_gguf):
    """transformers' tokenizer built from the same GGUF file."""
    import transformers

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_HUB_OFFLINE", "1")
        return transformers.AutoTokenizer.from_pretrained(smollm2_gguf.parent, gguf_file=smollm2_gguf.name)


@pytest.fixture(scope="module")
def hf_state(smollm2_transformers):
    """(state dict, config dict) of transformers' model loaded from the same GGUF file (the session's
    one load: about 30 s on a 2-core CPU), or a skip where transformers cannot load it."""
    model = smollm2_transformers
    return {name: tensor.detach() for name, tensor in model.state_dict().items()}, model.config.to_dict()


def test_smollm2_describe(smollm2_gguf):
    info = describe_gguf(smollm2_gguf)
    assert (info["architecture"], info["layers"], info["heads"], info["kv_heads"]) == ("llama", 30, 9, 3)
    assert (info["embedding_width"], info["ffn_width"], info["context_length"]) == (576, 1536, 8192)
    assert info["vocab_size"] == 49152 and info["quant"] == "Q4_1 (mostly)"
    assert info["tensor_types"] == {"Q4_1": 210, "F32": 61, "Q8_0": 1}
    assert info["parameters"] == 134_515_008 and info["tokenizer_pre"] == "smollm" and info["chat_template"]


def test_smollm2_tokenizer_matches_transformers(smollm2, hf_tokenizer):
    ckpt, tokenizer = smollm2, hf_tokenizer
    rendered = tokenizer.apply_chat_template(
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+2 = ?"},
         {"role": "assistant", "content": "4."}, {"role": "user", "content": "Und auf Deutsch? 🙂"}],
        tokenize=False, add_generation_prompt=True)
    for text in TEXTS + [rendered]:
        ours = ckpt.tokenizer.encode(text).ids
        assert ours == tokenizer.encode(text), text
        assert ckpt.tokenizer.decode(ours, skip_special_tokens=False) == text
    assert ckpt.chat_template == tokenizer.chat_template
    assert ckpt.special["bos_id"] == 1 and ckpt.special["eos_id"] == 2 and 2 in ckpt.special["eog_ids"]
    assert ckpt.tokenizer.token_to_id("<|im_end|>") == 2


def test_smollm2_tensors_match_transformers(smollm2, hf_state):
    ckpt, (state, config) = smollm2, hf_state
    assert ckpt.config["tie_word_embeddings"] is True
    assert set(ckpt.tensors) == set(state) - {"lm_head.weight"}
    for name, tensor in ckpt.tensors.items():
        assert torch.equal(tensor, state[name].float()), name
    for key in ("model_type", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                "num_key_value_heads", "vocab_size", "max_position_embeddings", "head_dim", "bos_token_id",
                "eos_token_id", "tie_word_embeddings"):
        assert ckpt.config[key] == config[key], key
    assert ckpt.config["rope_theta"] == config["rope_parameters"]["rope_theta"]
    assert ckpt.config["rms_norm_eps"] == pytest.approx(config["rms_norm_eps"], rel=1e-6)


def test_llama31_rope_factors_give_its_scaling_back():
    """With Llama 3.1's own shape (head_dim 128, theta 500000) the fit finds its published values."""
    from gentool_gpt.gguf_reader import _llama3_factors, _llama3_scaling

    published = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                 "original_max_position_embeddings": 8192}
    wavelen = 2 * math.pi * 500000.0 ** (torch.arange(0, 128, 2, dtype=torch.float64) / 128)
    factors = _llama3_factors(published, wavelen).float()
    got = _llama3_scaling(factors, {"rope_theta": 500000.0})
    assert got.pop("rope_type") == published.pop("rope_type")
    assert got == pytest.approx(published, rel=1e-3)
