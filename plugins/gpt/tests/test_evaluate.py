"""Evaluation: loss, perplexity and bits per character, through the CLI and for BPE."""

from __future__ import annotations

import json
import math

import torch
from gpt_helpers import TINY, gentool

from gentool_gpt.evaluate import text_metrics
from gentool_gpt.model import GPT, GPTConfig
from gentool_gpt.tokenizer import Tokenizer


def test_evaluate_cli_reports_loss_perplexity_and_bits_per_char(env, tmp_path):
    assert gentool("train", "gpt", "--epochs", "1", "--set", "iters_per_epoch=5", *TINY, "-q", env=env).returncode == 0
    res = gentool("evaluate", "gpt", "--json", env=env)
    assert res.returncode == 0, res.stderr
    m = json.loads(res.stdout)["metrics"]
    assert {"val_loss", "perplexity", "bits_per_char", "tokens", "chars"} <= set(m)
    assert "chat_eot_rate" not in m  # not a chat model
    assert math.isclose(m["perplexity"], math.exp(m["val_loss"]), rel_tol=1e-9)
    assert m["tokens"] == m["chars"] and math.isclose(m["bits_per_char"], m["val_loss"] / math.log(2), rel_tol=1e-9)
    bad = gentool("evaluate", "gpt", "--json", "--max-tokens", "many", env=env)
    msg = (bad.stderr + bad.stdout).strip()  # the core's one-line flag error, naming flag and value
    assert bad.returncode != 0 and "--max-tokens" in msg and "'many'" in msg and "Traceback" not in msg
    assert gentool("evaluate", "gpt", "--conversations", "0", env=env).returncode != 0
    (tmp_path / "short.txt").write_text("far too short to fill one context window\n")
    short = gentool("evaluate", "gpt", "--data", "short.txt", env=env)
    msg = (short.stderr + short.stdout).strip()
    assert short.returncode != 0 and len(msg.splitlines()) == 1 and "fewer than a window" in msg
    assert "Traceback" not in msg and "this is a bug" not in msg


def test_bits_per_char_counts_characters_not_tokens_for_bpe():
    text = "the fox and the crow met by the river and spoke of grapes. " * 40
    tok = Tokenizer.train_bpe([text], vocab_size=320)
    torch.manual_seed(0)
    cfg = GPTConfig(vocab_size=tok.vocab_size, n_layer=1, n_head=2, n_embd=16, block_size=16, mlp_hidden=32)
    model = GPT(cfg).eval()
    m = text_metrics(model, tok, text, torch.device("cpu"))
    assert m["chars"] > 2 * m["tokens"]  # merges: several characters per token
    total_nats = m["val_loss"] * m["tokens"]
    assert math.isclose(m["bits_per_char"], total_nats / m["chars"] / math.log(2), rel_tol=1e-9)
    assert m["bits_per_char"] < m["val_loss"] / math.log(2)


def test_bits_per_char_counts_an_unknown_character_as_one():
    tok = Tokenizer.train_char("abc ")
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, n_layer=1, n_head=2, n_embd=16, block_size=8, mlp_hidden=32)).eval()
    text = "ab zz cab€ " * 10  # z and € are outside the vocabulary
    m = text_metrics(model, tok, text, torch.device("cpu"))
    assert m["chars"] == m["tokens"]  # one token per character, <|unk|> included
