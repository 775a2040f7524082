"""Chat fine-tuning: both JSON forms, masks on assistant turns only, errors, and an SFT'd model
that answers in the template and stops at <|eot|>."""

from __future__ import annotations

import json

import pytest
from gpt_helpers import TINY, gentool

from gentool.checkpoint import load_checkpoint
from gentool.errors import DataError
from gentool_gpt.chat_template import IGNORE
from gentool_gpt.sft import load_conversations, pack, parse_conversations
from gentool_gpt.tokenizer import Tokenizer


def test_both_json_forms_parse_to_the_same_messages(tmp_path):
    share = [{"id": "a", "conversations": [{"from": "system", "value": "S"}, {"from": "human", "value": "Q"},
                                           {"from": "gpt", "value": "A"}]}]
    openai = [{"messages": [{"role": "system", "content": "S"}, {"role": "user", "content": "Q"},
                            {"role": "assistant", "content": "A"}]}]
    expected = [[{"role": "system", "content": "S"}, {"role": "user", "content": "Q"},
                 {"role": "assistant", "content": "A"}]]
    assert parse_conversations(share) == parse_conversations(openai) == expected
    (tmp_path / "c.jsonl").write_text("\n".join(json.dumps(o) for o in openai * 3))
    assert load_conversations(tmp_path / "c.jsonl") == expected * 3
    assert len(load_conversations("builtin")) > 100  # the embedded example set


@pytest.mark.parametrize("form", ["sharegpt", "openai", "jsonl", "bare"])
def test_chat_and_sft_read_a_file_to_the_same_turns(tmp_path, form):
    """One parser, one role table: `gentool chat`'s /load and SFT's loader give the same turns for
    every role name either used to know (sft lacked bot/model, chat lacked bard/bing)."""
    from gentool_gpt import chat, sft
    from gentool_gpt.conversations import ROLES, read_conversation

    roles = [("system", "system"), ("human", "user"), ("gpt", "assistant"), ("user", "user"),
             ("bot", "assistant"), ("USER", "user"), ("model", "assistant"), ("human", "user"),
             ("bard", "assistant"), ("user", "user"), ("bing", "assistant")]
    if form == "sharegpt":
        doc = [{"id": "x", "conversations": [{"from": r, "value": f"turn {i}"} for i, (r, _) in enumerate(roles)]}]
    else:
        doc = [{"messages": [{"role": r, "content": f"turn {i}"} for i, (r, _) in enumerate(roles)]}]
    path = tmp_path / "c.json"
    if form == "jsonl":
        path.write_text("\n".join(json.dumps(d) for d in doc * 2))
    elif form == "bare":
        path.write_text(json.dumps(doc[0]["messages"]))
    else:
        path.write_text(json.dumps(doc))
    want = [{"role": norm, "content": f"turn {i}"} for i, (_, norm) in enumerate(roles)]
    assert read_conversation(path) == want  # what /load continues
    if form != "bare":
        assert load_conversations(path)[0] == want  # what SFT trains on
    assert sft.load_conversations is load_conversations and not hasattr(sft, "SHAREGPT_ROLES")
    assert not hasattr(chat, "read_conversation")  # chat imports the one parser when it needs it
    assert {ROLES[r.lower()] for r, _ in roles} == {"system", "user", "assistant"}


def test_openai_content_parts_are_joined(tmp_path):
    doc = {"messages": [{"role": "user", "content": [{"type": "text", "text": "a "}, {"type": "text", "text": "b"}]},
                        {"role": "assistant", "content": "c"}]}
    assert parse_conversations(doc) == [[{"role": "user", "content": "a b"}, {"role": "assistant", "content": "c"}]]


@pytest.mark.parametrize("doc, words", [
    ([{"text": "hello"}], "'conversations' (ShareGPT) or 'messages'"),
    ([{"conversations": [{"from": "robot", "value": "x"}]}], "unknown role"),
    ([{"messages": [{"role": "user"}]}], "needs 'role' and 'content'"),
    ([{"messages": [{"role": "user", "content": "only a question"}]}], "no conversation with an assistant turn"),
])
def test_bad_conversations_are_one_line_data_errors(doc, words):
    with pytest.raises(DataError, match=words.replace("(", r"\(").replace(")", r"\)")):
        parse_conversations(doc, "f.json")


def test_sharegpt_file_masks_only_assistant_tokens(sharegpt):
    convs = load_conversations(sharegpt)
    assert len(convs) == 500
    tok = Tokenizer.train_char("".join(m["content"] for c in convs for m in c))
    ids, labels = pack(tok, convs[:20])
    assert len(ids) == len(labels)
    role, inside = None, []
    for i, lab in zip(ids, labels):  # walk the template: every kept token lies in an assistant turn
        if i in (tok.special["<|user|>"], tok.special["<|assistant|>"], tok.special["<|system|>"]):
            role = i
            assert lab == IGNORE
        elif lab != IGNORE:
            assert role == tok.special["<|assistant|>"] and lab == i
            inside.append(i)
        else:
            assert role != tok.special["<|assistant|>"] or i == tok.bos_id
    answers = [m["content"] for c in convs[:20] for m in c if m["role"] == "assistant"]
    assert tok.decode(inside) == "<|eot|>".join(answers) + "<|eot|>"


def test_bad_sft_file_is_a_one_line_error_from_the_cli(env, tmp_path):
    (tmp_path / "bad.json").write_text('[{"prompt": "x"}]')
    res = gentool("train", "gpt", "--sft", "bad.json", *TINY, "-q", env=env)
    assert res.returncode != 0
    msg = (res.stderr + res.stdout).strip()
    assert len(msg.splitlines()) == 1 and "bad.json" in msg and "Traceback" not in msg


def test_finetune_a_pretrained_run_with_sft(env, tmp_path, sharegpt):
    res = gentool("train", "gpt", "--epochs", "1", "--set", "iters_per_epoch=10", *TINY, "-q", env=env)
    assert res.returncode == 0, res.stderr
    res = gentool("train", "gpt", "--resume", "run1", "--sft", str(sharegpt), "--epochs", "1", "-q", env=env)
    assert res.returncode == 0, res.stderr
    runs = sorted(p.name for p in (tmp_path / "runs/gpt").iterdir())
    assert runs == ["run1", "run2"]  # a new run; the pretrained one is left alone
    pre = load_checkpoint(tmp_path / "runs/gpt/run1/last.safetensors")
    sft = load_checkpoint(tmp_path / "runs/gpt/run2/last.safetensors")
    assert sft.extra["kind"] == "sft" and sft.extra["tokenizer"] == pre.extra["tokenizer"]
    assert sft.config["sft"] == str(sharegpt) and sft.config["n_embd"] == 32
    res = gentool("evaluate", "gpt", "--json", "--conversations", "3", "--max-tokens", "20", env=env)
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)["metrics"]
    assert {"sft_val_loss", "chat_eot_rate", "chat_template_rate", "chat_answers"} <= set(out)
    assert out["chat_answers"] == 3 and 0 <= out["chat_eot_rate"] <= 1


@pytest.mark.slow
def test_sft_model_answers_in_turn_format_and_stops(env, tmp_path, sharegpt):
    """SFT from scratch on the ShareGPT file: the model learns to answer and to close its turn."""
    res = gentool("train", "gpt", "--sft", str(sharegpt), "--epochs", "4", "--set", "iters_per_epoch=150",
                  "--set", "sft_block_size=128", "--batch-size", "16", "--precision", "bf16", "-q", env=env)
    assert res.returncode == 0, res.stderr
    res = gentool("evaluate", "gpt", "--json", "--conversations", "20", env=env)
    out = json.loads(res.stdout)["metrics"]
    assert out["chat_eot_rate"] >= 0.9 and out["chat_template_rate"] >= 0.9, out


def test_sft_training_and_validation_batches_target_only_assistant_tokens(tmp_path):
    """The windows the optimiser sees: y is x shifted by one, kept only where the next token is the
    assistant's (its words or its <|eot|>); user, system and role tokens are never targets."""
    from types import SimpleNamespace

    import torch

    from gentool_gpt.configs import GPTTrainConfig
    from gentool_gpt.task import sft_task

    convs = [{"messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": f"q{i} what?"},
                           {"role": "assistant", "content": f"answer {i}!"}, {"role": "user", "content": "more"},
                           {"role": "assistant", "content": "done."}]} for i in range(40)]
    path = tmp_path / "c.json"
    path.write_text(json.dumps(convs))
    cfg = GPTTrainConfig(n_layer=1, n_head=2, n_embd=16, block_size=24, iters_per_epoch=5, sft=str(path),
                         sft_block_size=0)
    job = SimpleNamespace(config=cfg, init_from=None, quiet=True,
                          options=SimpleNamespace(lr=1e-3, epochs=1, precision="fp32", data="tales"))
    task = sft_task(cfg, job)
    tok = task.tokenizer
    answer_ids = set(tok.encode("".join(f"answer {i}!" for i in range(40)) + "done.")) | {tok.eot_id}
    torch.manual_seed(0)
    batches = list(task.batches(0, 8, 0, 1, 0)) + [(task.val_x, task.val_y)]
    kept = 0
    for x, y in batches:
        keep = y != IGNORE
        assert keep.any() and (~keep).any()
        for row_x, row_y in zip(x, y):
            for t in range(len(row_x) - 1):  # a target is the next input token
                if row_y[t] != IGNORE:
                    assert int(row_y[t]) == int(row_x[t + 1])
        assert set(y[keep].tolist()) <= answer_ids
        kept += int(keep.sum())
    # the role tokens and the user's words never appear as targets
    never = {tok.special[s] for s in ("<|user|>", "<|assistant|>", "<|system|>", "<|bos|>")} | set(tok.encode("q?"))  # only in questions
    for _, y in batches:
        assert not (set(y[y != IGNORE].tolist()) & never)
    assert kept > 50
