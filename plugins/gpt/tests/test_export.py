"""The transformers export: LlamaForCausalLM loads it and agrees with our model and tokenizer."""

from __future__ import annotations

import pytest
import torch

from gentool_gpt.chat_template import render
from gentool_gpt.export import export_hf
from gentool_gpt.generate import generate
from gentool_gpt.model import GPT, GPTConfig
from gentool_gpt.tokenizer import Tokenizer

transformers = pytest.importorskip("transformers",
                                   reason="the export check needs transformers (pip install 'gentool-gpt[hf]')")

TEXT = "The crow said: \"Good day, fox!\"\nThe fox answered, and went on by the river. Ünï.\n" * 30


@pytest.mark.parametrize("kind, tied", [("char", True), ("bpe", False)])
def test_export_loads_in_transformers_with_equal_logits_ids_and_template(tmp_path, kind, tied):
    tok = Tokenizer.train_char(TEXT) if kind == "char" else Tokenizer.train_bpe([TEXT], vocab_size=320)
    torch.manual_seed(1)
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, n_layer=2, n_head=2, n_embd=32, block_size=48,
                          mlp_hidden=96, tie_embeddings=tied)).eval()
    with torch.no_grad():  # make the norms' gains non-trivial so a misnamed weight would show
        for name, p in model.named_parameters():
            if name.endswith("layernorm.weight") or name == "model.norm.weight":
                p.uniform_(0.5, 1.5)
    folder = export_hf(model, tok, tmp_path / "hf")
    hf = transformers.AutoModelForCausalLM.from_pretrained(folder).eval()
    hf_tok = transformers.AutoTokenizer.from_pretrained(folder)
    text = "The fox said: \"Good day, crow!\"\nÜ"
    ids = tok.encode(text)
    assert hf_tok(text, add_special_tokens=False)["input_ids"] == ids
    assert hf_tok.decode(ids) == text
    x = torch.tensor([ids])
    with torch.no_grad():
        torch.testing.assert_close(hf(x).logits, model(x), atol=1e-5, rtol=1e-4)
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Good day, fox!"}]
    ours = render(tok, msgs, add_generation_prompt=True)
    theirs = hf_tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=True)
    theirs = theirs["input_ids"] if isinstance(theirs, dict) or hasattr(theirs, "keys") else theirs
    assert list(theirs) == ours
    # greedy decoding agrees token for token (their generate without cache tricks vs our KV cache)
    out = hf.generate(torch.tensor([ours]), max_new_tokens=20, do_sample=False, eos_token_id=None,
                      pad_token_id=tok.pad_id)
    mine = list(generate(model, ours, max_new_tokens=20, temperature=0.0))
    theirs_new = out[0, len(ours):].tolist()
    if theirs_new != mine:  # allowed only where two logits tie to rounding (random weights)
        with torch.no_grad():
            logits = model(out[:, :-1])[0, len(ours) - 1:]
        picked = logits.gather(1, out[0, len(ours):, None])[:, 0]
        assert torch.all(logits.max(dim=1).values - picked < 1e-4)
