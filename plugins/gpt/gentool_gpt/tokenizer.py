"""Tokenizers for ``gpt``: character-level for small corpora, byte-level BPE for anything else.

Both kinds share the special tokens of the chat template and serialise to one JSON string that
travels in every checkpoint's header, so a checkpoint file is enough to encode and decode.

* ``char``: the distinct characters of the training text plus the special tokens. A character the
  corpus never showed maps to ``<|unk|>`` (counted in :attr:`Tokenizer.unknown_count`) instead of
  failing: a chat file may hold characters a pretraining corpus lacked.
* ``bpe``: byte-level BPE trained by the ``tokenizers`` library; every string encodes.

Special-token strings written in a text (``<|eot|>``) encode to their special ids, as in
transformers' tokenizers.
"""

from __future__ import annotations

import json
import re
from typing import Iterable

SPECIALS = ("<|pad|>", "<|bos|>", "<|eot|>", "<|system|>", "<|user|>", "<|assistant|>", "<|unk|>")
_SPECIAL_RE = re.compile("(" + "|".join(re.escape(s) for s in SPECIALS) + ")")


class Tokenizer:
    """Text <-> token ids; ``kind`` is ``"char"`` or ``"bpe"``."""

    def __init__(self, kind: str, *, chars: list[str] | None = None, bpe_json: str | None = None):
        self.kind = kind
        self.unknown_count = 0
        if kind == "char":
            if chars is None:
                raise ValueError("a char tokenizer needs its characters")
            self.chars = list(chars)
            self.itos = list(SPECIALS) + self.chars
            self.stoi = {s: i for i, s in enumerate(self.itos)}
            self.special = {s: i for i, s in enumerate(SPECIALS)}
            self._bpe = None
        elif kind == "bpe":
            from tokenizers import Tokenizer as HFTokenizer

            if bpe_json is None:
                raise ValueError("a bpe tokenizer needs its tokenizers JSON")
            self._bpe = HFTokenizer.from_str(bpe_json)
            self.special = {}
            for s in SPECIALS:
                i = self._bpe.token_to_id(s)
                if i is None:
                    raise ValueError(f"bpe tokenizer lacks the special token {s}")
                self.special[s] = i
        else:
            raise ValueError(f"unknown tokenizer kind {kind!r}: use char or bpe")
        self.special_ids = set(self.special.values())

    # -- building ---------------------------------------------------------------------------
    @classmethod
    def train_char(cls, text: str) -> "Tokenizer":
        """A character vocabulary: every distinct character of ``text`` (specials removed)."""
        chars = sorted(set(_SPECIAL_RE.sub("", text)))
        return cls("char", chars=chars)

    @classmethod
    def train_bpe(cls, texts: Iterable[str], vocab_size: int) -> "Tokenizer":
        """Byte-level BPE with ``vocab_size`` entries (256 bytes, specials, merges)."""
        from tokenizers import Tokenizer as HFTokenizer
        from tokenizers import decoders, models, pre_tokenizers, trainers

        tok = HFTokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(SPECIALS),
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
        tok.train_from_iterator(texts, trainer=trainer)
        return cls("bpe", bpe_json=tok.to_str())

    # -- use --------------------------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        return len(self.itos) if self.kind == "char" else self._bpe.get_vocab_size(with_added_tokens=True)

    @property
    def eot_id(self) -> int:
        return self.special["<|eot|>"]

    @property
    def bos_id(self) -> int:
        return self.special["<|bos|>"]

    @property
    def pad_id(self) -> int:
        return self.special["<|pad|>"]

    @property
    def unk_id(self) -> int:
        return self.special["<|unk|>"]

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` (special-token strings become their ids)."""
        if self.kind == "bpe":
            return self._bpe.encode(text, add_special_tokens=False).ids
        out: list[int] = []
        stoi, unk = self.stoi, self.special["<|unk|>"]
        for part in _SPECIAL_RE.split(text):
            if not part:
                continue
            if part in self.special:
                out.append(self.special[part])
                continue
            ids = [stoi.get(c, unk) for c in part]
            self.unknown_count += sum(1 for c in part if c not in stoi)
            out.extend(ids)
        return out

    def decode(self, ids: Iterable[int], *, skip_special: bool = False) -> str:
        """Text of ``ids``; special tokens are written out unless ``skip_special``."""
        ids = [int(i) for i in ids]
        if skip_special:
            ids = [i for i in ids if i not in self.special_ids]
        if self.kind == "bpe":
            return self._bpe.decode(ids, skip_special_tokens=False)
        itos = self.itos
        return "".join(itos[i] if 0 <= i < len(itos) else "" for i in ids)

    # -- storage ----------------------------------------------------------------------------
    def to_json(self) -> str:
        """A JSON string that :meth:`from_json` turns back into this tokenizer."""
        if self.kind == "char":
            return json.dumps({"kind": "char", "specials": list(SPECIALS), "chars": self.chars})
        return json.dumps({"kind": "bpe", "tokenizer": self._bpe.to_str()})

    @classmethod
    def from_json(cls, s: str) -> "Tokenizer":
        """Rebuild a tokenizer from :meth:`to_json`'s string (a pretrained model's tokenizer, kind
        ``pretrained``, comes back as a :class:`gentool_gpt.pretrained.ChatTokenizer`)."""
        doc = json.loads(s)
        if doc.get("kind") == "pretrained":
            from gentool_gpt.pretrained import ChatTokenizer

            return ChatTokenizer.from_json(doc)  # type: ignore[return-value]
        if doc.get("kind") == "char":
            if list(doc.get("specials", SPECIALS)) != list(SPECIALS):
                raise ValueError("char tokenizer with other special tokens than this version's")
            return cls("char", chars=doc["chars"])
        if doc.get("kind") == "bpe":
            return cls("bpe", bpe_json=doc["tokenizer"])
        raise ValueError(f"unknown tokenizer kind {doc.get('kind')!r}")

    def hf_tokenizer_json(self) -> str:
        """This tokenizer as a ``tokenizers`` JSON (``tokenizer.json`` for transformers)."""
        if self.kind == "bpe":
            return self._bpe.to_str()
        from tokenizers import AddedToken, Regex, decoders, models, pre_tokenizers
        from tokenizers import Tokenizer as HFTokenizer

        vocab = {s: i for i, s in enumerate(self.itos)}
        tok = HFTokenizer(models.WordLevel(vocab=vocab, unk_token="<|unk|>"))
        tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
        tok.decoder = decoders.Fuse()
        tok.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in SPECIALS])
        return tok.to_str()

    def __repr__(self) -> str:
        return f"Tokenizer(kind={self.kind!r}, vocab_size={self.vocab_size})"

