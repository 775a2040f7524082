"""Which backend ``--model`` picks, and the transformers backend on a tiny random Llama saved locally.

Nothing is downloaded: the transformers model and its tokenizer (with a chat template) are built
in the test and saved to ``tmp_path``; a hub id is served from a Hugging Face cache folder made in
the test, with ``HF_HUB_OFFLINE=1``. Skipped when transformers is not installed.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import pytest
import torch

from gentool.errors import GentoolError

from gentool_gpt.backends import GPTBackend, HFBackend, Settings, open_backend, resolve_model

TEMPLATE = ("{{ bos_token }}{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}{{ eos_token }}{% endfor %}"
            "{% if add_generation_prompt %}[assistant] {% endif %}")


def make_llama(folder: Path, seed: int = 0) -> Path:
    """A randomly initialised 2-layer LlamaForCausalLM and a byte-level BPE tokenizer with a chat
    template, saved the way a published model is (safetensors, config.json, tokenizer files)."""
    transformers = pytest.importorskip("transformers")
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=320, special_tokens=["<s>", "</s>", "<pad>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(["hello world, how are you today? [user] [assistant] [system] fine, thanks!"] * 20,
                            trainer)
    hf_tok = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>",
                                                  pad_token="<pad>")
    hf_tok.chat_template = TEMPLATE
    hf_tok.save_pretrained(folder)
    cfg = transformers.LlamaConfig(vocab_size=len(hf_tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                   num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=128,
                                   bos_token_id=hf_tok.bos_token_id, eos_token_id=hf_tok.eos_token_id,
                                   pad_token_id=hf_tok.pad_token_id, tie_word_embeddings=True)
    torch.manual_seed(seed)
    model = transformers.LlamaForCausalLM(cfg)
    with torch.no_grad():  # larger weights than the default init, so greedy output varies
        for p in model.parameters():
            if p.dim() > 1:
                p.normal_(0.0, 0.3)
    model.save_pretrained(folder)
    assert (folder / "model.safetensors").exists()
    return folder


def reference_answer(folder: Path, messages: list[dict], max_new_tokens: int) -> str:
    """transformers' own greedy ``generate`` on the chat-templated prompt."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    ids = torch.tensor([tok(text, add_special_tokens=False)["input_ids"]])
    with torch.no_grad():
        out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
                             do_sample=False, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    return tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True)


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory) -> Path:
    return make_llama(tmp_path_factory.mktemp("llama") / "tiny-llama")


MESSAGES = [{"role": "system", "content": "be kind"}, {"role": "user", "content": "hello, how are you?"}]


def test_transformers_backend_matches_transformers_generate(llama_dir):
    backend = HFBackend(str(llama_dir), "cpu")  # open_backend gives a Llama folder to our decoder
    pieces = list(backend.chat_stream(MESSAGES, Settings(temperature=0.0, max_tokens=20)))
    assert len(pieces) > 1  # streamed
    want = reference_answer(llama_dir, MESSAGES, 20)
    assert "".join(pieces) == want and want.strip()
    desc = backend.describe()
    assert "LlamaForCausalLM" in desc["backend"] and desc["template"].startswith("the tokenizer")
    assert backend.count_tokens(MESSAGES) > 5 and backend.context_length == 128


def test_gentool_serve_answers_with_a_local_transformers_model_as_transformers_does(llama_dir, tmp_path):
    """``gentool serve --chat-model FOLDER``: the OpenAI API, driven by the real ``openai`` client,
    answers greedily with exactly what transformers' own ``generate`` gives, whole and streamed."""
    openai = pytest.importorskip("openai", reason="the serve tests need the dev extra (openai)")
    pytest.importorskip("fastapi", reason="gentool serve needs its extra: pip install -e '.[serve]'")
    from gentool.serve import ServeConfig, start_background

    want = reference_answer(llama_dir, MESSAGES, 20)
    config = ServeConfig(runs=tmp_path / "runs", chat_model=str(llama_dir), device="cpu")
    with start_background(config) as server:
        c = openai.OpenAI(base_url=server.url + "/v1", api_key="none", max_retries=0, timeout=60)
        assert str(llama_dir) in [m.id for m in c.models.list().data]
        whole = c.chat.completions.create(model="default", messages=MESSAGES, max_tokens=20, temperature=0)
        streamed = c.chat.completions.create(model=str(llama_dir), messages=MESSAGES, max_tokens=20, temperature=0,
                                             stream=True)
        pieces = [ch.choices[0].delta.content or "" for ch in streamed if ch.choices]
    assert whole.choices[0].message.content == want == "".join(pieces) and want.strip()
    assert whole.usage.completion_tokens > 0 and whole.usage.prompt_tokens > 5


@pytest.mark.parametrize("kind", ["transformers", "gentool"])
def test_both_backends_cut_an_overlong_conversation_and_say_how_much(llama_dir, kind):
    backend = HFBackend(str(llama_dir), "cpu") if kind == "transformers" else open_backend(str(llama_dir), "cpu")
    assert type(backend).__name__ == ("HFBackend" if kind == "transformers" else "PretrainedBackend")
    msgs = [{"role": "user", "content": "hello world, how are you today? " * 30}]
    total = backend.count_tokens(msgs)
    assert total > backend.context_length == 128
    answer = "".join(backend.chat_stream(msgs, Settings(temperature=0.0, max_tokens=20)))
    assert backend.cut_tokens == total - 127  # the newest 127 tokens, room for one answer token
    assert backend.last_tokens <= 1 and isinstance(answer, str)  # one token of room, then the context is full
    assert backend.stop_reason in ("context full", "end of turn")
    list(backend.chat_stream(MESSAGES, Settings(temperature=0.0, max_tokens=2)))  # a fitting one: nothing cut
    assert backend.cut_tokens == 0


def test_hub_id_through_the_cli_from_the_local_cache_offline(llama_dir, tmp_path):
    """`gentool chat --model owner/name`: resolved from a Hugging Face cache folder, nothing fetched."""
    import shutil

    cache = tmp_path / "hf-cache"
    repo = cache / "models--someone--tiny-llama"
    commit = "0123456789abcdef0123456789abcdef01234567"
    shutil.copytree(llama_dir, repo / "snapshots" / commit)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(cache), "HF_HOME": str(tmp_path / "hf-home"),
           "GENTOOL_PLUGINS": "gpt", "OMP_NUM_THREADS": "1",
           "GENTOOL_RUNS": str(tmp_path / "runs"), "GENTOOL_CACHE": str(tmp_path / "cache")}
    proc = subprocess.run([sys.executable, "-m", "gentool", "chat", "--model", "someone/tiny-llama", "--system",
                           "be kind", "-m", "hello, how are you?", "--temperature", "0", "--max-tokens", "20"],
                          env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == reference_answer(llama_dir, MESSAGES, 20) + "\n"
    # stderr: only our note that --max-tokens cut the answer; no progress bars or warnings
    assert proc.stderr.strip() == "[answer cut at max tokens (20 tokens; /set max_tokens N for longer)]"


def test_a_hub_id_not_in_the_cache_is_one_clear_error_offline(monkeypatch):
    pytest.importorskip("transformers")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # -> local_files_only: no download is even attempted
    with pytest.raises(GentoolError, match="cannot load 'someone/missing-model-x1' as a hub id"):
        open_backend("someone/missing-model-x1", "cpu")


def test_missing_transformers_is_a_one_line_error(llama_dir, monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)  # import transformers -> ImportError
    with pytest.raises(GentoolError, match=r"pip install 'gentool-gpt\[hf\]'"):
        HFBackend(str(llama_dir), "cpu")
    # a Llama folder needs no transformers at all: our decoder opens it
    assert type(open_backend(str(llama_dir), "cpu")).__name__ == "PretrainedBackend"


def test_our_backend_and_transformers_agree_on_an_exported_gpt(tmp_path):
    """The same gpt weights through our decoding and through transformers (its export): same answer."""
    pytest.importorskip("transformers")
    from gentool.checkpoint import save_checkpoint

    from gentool_gpt.configs import GPTTrainConfig
    from gentool_gpt.export import export_hf
    from gentool_gpt.loading import checkpoint_meta, model_config
    from gentool_gpt.model import GPT
    from gentool_gpt.tokenizer import Tokenizer

    tok = Tokenizer.train_bpe(["hello there, how are you? fine thanks, and you? " * 20], vocab_size=300)
    cfg = GPTTrainConfig(n_layer=2, n_head=2, n_embd=32, block_size=64, tokenizer="bpe", vocab_size=300)
    gcfg = model_config(cfg, tok.vocab_size)
    torch.manual_seed(1)
    model = GPT(gcfg)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1:
                p.normal_(0.0, 0.3)
    ckpt = tmp_path / "gpt.safetensors"
    save_checkpoint(ckpt, {"gpt": model}, {"model": "gpt", "plugin": "gpt", "config": asdict(cfg),
                                          "extra": checkpoint_meta(gcfg, tok, kind="sft")})
    export_hf(model, tok, tmp_path / "hf")
    ours = open_backend(str(ckpt), "cpu")
    theirs = HFBackend(str(tmp_path / "hf"), "cpu")
    assert isinstance(ours, GPTBackend) and isinstance(theirs, HFBackend)
    msgs = [{"role": "user", "content": "hello there"}]
    assert ours.count_tokens(msgs) == theirs.count_tokens(msgs)
    ours.stop_ids = {tok.eot_id}  # transformers stops at eos (<|eot|>) only; we also stop at role tokens
    settings = Settings(temperature=0.0, max_tokens=30)
    a = "".join(ours.chat_stream(msgs, settings))
    b = "".join(theirs.chat_stream(msgs, settings))
    assert a == b and len(a) > 10, (a, b)


def test_model_reference_rules(llama_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("GENTOOL_RUNS", str(tmp_path / "runs"))
    with pytest.raises(GentoolError, match="gentool train gpt"):
        resolve_model(None)
    assert resolve_model(str(llama_dir)) == ("hf", str(llama_dir))
    assert resolve_model(str(llama_dir / "config.json")) == ("hf", str(llama_dir))
    assert resolve_model("owner/some-model") == ("hf", "owner/some-model")
    with pytest.raises(GentoolError, match="not a gentool checkpoint"):
        resolve_model(str(llama_dir / "model.safetensors"))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(GentoolError, match="neither a gentool checkpoint nor a transformers model"):
        resolve_model(str(empty))
    with pytest.raises(GentoolError, match="not a file, a folder, a run"):
        resolve_model("no-such-run")
