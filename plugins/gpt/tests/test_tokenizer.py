"""Tokenizers: round trips for both kinds, JSON round trips, special tokens, unknown characters."""

from __future__ import annotations

import pytest

from gentool_gpt.chat_template import IGNORE, render, render_with_labels
from gentool_gpt.tokenizer import SPECIALS, Tokenizer

TEXT = "The fox met the crow by the river.\n\"Good day,\" said the fox. Ünïcödé too: naïve café — ok?\n" * 20


def test_char_round_trip_and_json():
    tok = Tokenizer.train_char(TEXT)
    ids = tok.encode(TEXT)
    assert len(ids) == len(TEXT) and tok.decode(ids) == TEXT
    assert set(SPECIALS) <= set(tok.special) and tok.vocab_size == len(set(TEXT)) + len(SPECIALS)
    back = Tokenizer.from_json(tok.to_json())
    assert back.encode(TEXT) == ids and back.vocab_size == tok.vocab_size


def test_char_unknown_characters_map_to_unk_and_are_counted():
    tok = Tokenizer.train_char("abc ")
    ids = tok.encode("abz c€")
    assert ids[2] == tok.unk_id and ids[5] == tok.unk_id and tok.unknown_count == 2
    assert tok.decode(ids, skip_special=True) == "ab c"


def test_bpe_round_trip_json_and_unseen_bytes():
    tok = Tokenizer.train_bpe([TEXT], vocab_size=320)
    ids = tok.encode(TEXT)
    assert tok.decode(ids) == TEXT and len(ids) < len(TEXT.encode()) and tok.vocab_size <= 320
    back = Tokenizer.from_json(tok.to_json())
    assert back.encode(TEXT) == ids
    unseen = "日本語 emoji 🦊"  # bytes never seen in training still encode
    assert tok.decode(tok.encode(unseen)) == unseen


@pytest.mark.parametrize("kind", ["char", "bpe"])
def test_special_strings_encode_to_special_ids(kind):
    tok = Tokenizer.train_char(TEXT) if kind == "char" else Tokenizer.train_bpe([TEXT], vocab_size=300)
    ids = tok.encode("<|user|>fox<|eot|>")
    assert ids[0] == tok.special["<|user|>"] and ids[-1] == tok.eot_id
    assert tok.decode(ids) == "<|user|>fox<|eot|>"


def test_chat_template_and_labels_mark_only_assistant_turns():
    tok = Tokenizer.train_char(TEXT)
    msgs = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi fox"},
            {"role": "assistant", "content": "Good day"}, {"role": "user", "content": "bye"},
            {"role": "assistant", "content": "ok"}]
    ids, labels = render_with_labels(tok, msgs)
    assert ids[0] == tok.bos_id and len(ids) == len(labels)
    kept = [i for i, lab in zip(ids, labels) if lab != IGNORE]
    assert kept == tok.encode("Good day") + [tok.eot_id] + tok.encode("ok") + [tok.eot_id]
    assert tok.decode(ids) == ("<|bos|><|system|>be brief<|eot|><|user|>hi fox<|eot|><|assistant|>Good day<|eot|>"
                               "<|user|>bye<|eot|><|assistant|>ok<|eot|>")
    prompt = render(tok, msgs[:2], add_generation_prompt=True)
    assert prompt[-1] == tok.special["<|assistant|>"]
    with pytest.raises(ValueError, match="role"):
        render(tok, [{"role": "robot", "content": "x"}])
