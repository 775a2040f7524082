"""Fine-tuning a pretrained run to chat: the new run knows where it came from, evaluates on the
base's data as well as on its conversations, and takes a longer context than the pretraining's."""

from __future__ import annotations

import json
import random

import torch
from gpt_helpers import TINY, gentool

from gentool.checkpoint import load_checkpoint
from gentool_gpt.model import GPT, GPTConfig

WORDS = ("the king and queen spoke of the sea, the wind, the stars; a ship sailed north! who goes there? "
         "Horatio, Romeo and Juliet met at night. I think, therefore I am: 12 men and 3 women came.").split()


def write_corpus(path, n_chars: int = 30_000, seed: int = 0) -> None:
    """A text of our own (not the default ``tales``), so a test can tell which data was used."""
    rng = random.Random(seed)
    lines, size = [], 0
    while size < n_chars:
        line = " ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 12))).capitalize() + "\n"
        lines.append(line)
        size += len(line)
    path.write_text("".join(lines), encoding="utf-8")


def evaluate(env, *args):
    res = gentool("evaluate", "gpt", "--json", *args, env=env)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


def test_finetuned_run_records_its_base_and_evaluates_on_the_base_data_and_its_conversations(env, tmp_path):
    write_corpus(tmp_path / "corpus.txt")
    res = gentool("train", "gpt", "--data", "corpus.txt", "--epochs", "1", "--set", "iters_per_epoch=10", *TINY,
                  "-q", env=env)
    assert res.returncode == 0, res.stderr
    # no --data: the fine-tuning run inherits the base's; no --sft-block-size: chat's default context
    res = gentool("train", "gpt", "--resume", "run1", "--sft", "builtin", "--epochs", "1", "-q", env=env)
    assert res.returncode == 0, res.stderr
    base = load_checkpoint(tmp_path / "runs/gpt/run1/last.safetensors")
    sft = load_checkpoint(tmp_path / "runs/gpt/run2/last.safetensors")
    origin = sft.meta["finetuned_from"]
    # a data path is recorded absolute (found from any folder)
    assert origin["data"] == str(tmp_path / "corpus.txt") and origin["run"].endswith("run1") and origin["step"] == base.step
    assert sft.data["name"] == str(tmp_path / "corpus.txt")  # not the default data (tales)
    assert sft.extra["kind"] == "sft" and sft.extra["sft_file"] == "builtin"
    assert sft.extra["tokenizer"] == base.extra["tokenizer"]
    # the context grew at fine-tuning time: 32 tokens pretrained, 256 for chat (sft_block_size)
    assert base.extra["gpt_config"]["block_size"] == 32 and sft.extra["gpt_config"]["block_size"] == 256

    pre = evaluate(env, "--checkpoint", "run1")
    chat = evaluate(env, "--checkpoint", "run2", "--conversations", "3", "--max-tokens", "20")
    s, m = chat["settings"], chat["metrics"]
    corpus = str(tmp_path / "corpus.txt")
    assert chat["data"] == corpus and s["text_data"].startswith(corpus)
    assert s["base_data"] == corpus and s["base_run"].endswith("run1") and s["base_step"] == str(base.step)
    assert s["sft_file"] == "builtin" and s["kind"].startswith("chat") and s["context"] == "256 tokens"
    assert s["text_windows"] == "32 tokens"  # the pretraining context: comparable with the base's figures
    # both groups of numbers: the base's held-out text (the same windows as the base run's) and the chat
    assert m["tokens"] == pre["metrics"]["tokens"] and m["val_loss"] > 0
    assert m["sft_val_loss"] > 0 and m["sft_tokens"] > 0
    assert m["chat_answers"] == 3 and 0 <= m["chat_eot_rate"] <= 1
    assert not any("never trained" in w or "vocabulary" in w or "pretrained on" in w for w in chat["warnings"])
    assert pre["settings"]["kind"] == "pretrained" and "base_run" not in pre["settings"]
    assert "sft_val_loss" not in pre["metrics"]

    from gentool_gpt.backends import open_backend

    assert open_backend(str(tmp_path / "runs/gpt/run2"), "cpu").context_length == 256  # gentool chat's view


def test_evaluating_on_other_data_than_the_base_says_so(env, tmp_path):
    """A chat model trained without a base, scored on text: a warning says it never trained on it."""
    res = gentool("train", "gpt", "--sft", "builtin", "--epochs", "1", "--set", "iters_per_epoch=3",
                  "--set", "sft_block_size=64", *TINY, "-q", env=env)
    assert res.returncode == 0, res.stderr
    out = evaluate(env, "--conversations", "2", "--max-tokens", "5")
    assert "base_run" not in out["settings"] and out["settings"]["sft_file"] == "builtin"
    assert any("no pretrained base run" in w for w in out["warnings"])


def test_a_model_takes_a_longer_context_than_it_was_trained_with():
    """Rotary positions: the weights of a 16-token model load into a 48-token one, which agrees with
    it on the first 16 positions and decodes past them with its KV cache as its full forward does."""
    torch.manual_seed(0)
    short = GPT(GPTConfig(vocab_size=40, n_layer=2, n_head=2, n_embd=32, block_size=16, mlp_hidden=64)).eval()
    long = GPT(GPTConfig(vocab_size=40, n_layer=2, n_head=2, n_embd=32, block_size=48, mlp_hidden=64)).eval()
    long.load_state_dict(short.state_dict())  # strict: no weight depends on the context length
    x = torch.randint(40, (2, 48))
    with torch.no_grad():
        full = long(x)
        torch.testing.assert_close(full[:, :16], short(x[:, :16]), atol=1e-5, rtol=1e-4)
        cache = long.new_cache(2, 48)
        parts = [long(x[:, :10], cache)] + [long(x[:, t:t + 1], cache) for t in range(10, 48)]
    assert torch.isfinite(full).all()
    torch.testing.assert_close(torch.cat(parts, 1), full, atol=1e-5, rtol=1e-4)
