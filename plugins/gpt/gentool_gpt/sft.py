"""Conversations for chat fine-tuning: reading the two common JSON forms and packing them.

Accepted (a JSON list, a single object, or JSON lines):

* ShareGPT: ``{"conversations": [{"from": "human"|"gpt"|"system", "value": "..."}]}``
* OpenAI: ``{"messages": [{"role": "user"|"assistant"|"system", "content": "..."}]}``

Both become lists of ``{"role", "content"}``. Anything else is a one-line :class:`DataError`
naming the file and the conversation.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gentool.errors import DataError

from gentool_gpt.chat_template import render_with_labels

if TYPE_CHECKING:
    from gentool_gpt.tokenizer import Tokenizer

Message = dict[str, str]

SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                  "chatgpt": "assistant", "bard": "assistant", "bing": "assistant", "system": "system"}


def _parse_one(item: Any, where: str) -> list[Message]:
    if not isinstance(item, dict):
        raise DataError(f"{where}: a conversation must be a JSON object, got {type(item).__name__}")
    if "conversations" in item:
        turns, role_key, text_key = item["conversations"], "from", "value"
    elif "messages" in item:
        turns, role_key, text_key = item["messages"], "role", "content"
    else:
        raise DataError(f"{where}: expected a 'conversations' (ShareGPT) or 'messages' (OpenAI) list, "
                        f"found keys {sorted(item)[:5]}")
    if not isinstance(turns, list) or not turns:
        raise DataError(f"{where}: the turns must be a non-empty list")
    out: list[Message] = []
    for j, turn in enumerate(turns):
        if not isinstance(turn, dict) or role_key not in turn or text_key not in turn:
            raise DataError(f"{where}, turn {j}: each turn needs {role_key!r} and {text_key!r}")
        raw_role, text = str(turn[role_key]).lower(), turn[text_key]
        if role_key == "from":
            role = SHAREGPT_ROLES.get(raw_role)
        else:
            role = raw_role if raw_role in ("system", "user", "assistant") else None
        if role is None:
            raise DataError(f"{where}, turn {j}: unknown role {turn[role_key]!r}")
        if not isinstance(text, str):
            raise DataError(f"{where}, turn {j}: the text must be a string")
        out.append({"role": role, "content": text})
    return out


def parse_conversations(doc: Any, source: str = "conversations") -> list[list[Message]]:
    """Conversations from parsed JSON (a list of objects, one object, or a ``{"data": [...]}``)."""
    if isinstance(doc, dict) and not ({"conversations", "messages"} & set(doc)):
        doc = doc.get("data", doc.get("train", doc))
    items = doc if isinstance(doc, list) else [doc]
    convs = [_parse_one(item, f"{source}: conversation {i}") for i, item in enumerate(items)]
    convs = [c for c in convs if any(m["role"] == "assistant" for m in c)]
    if not convs:
        raise DataError(f"{source}: no conversation with an assistant turn")
    return convs


def load_conversations(path: str | Path | None) -> list[list[Message]]:
    """Read a conversations file (``.json`` or ``.jsonl``); ``None`` or ``"builtin"`` gives the
    embedded example set."""
    if path in (None, "", "builtin"):
        from gentool_gpt.data import resource_path

        path = resource_path("chat.json")
    path = Path(path).expanduser()
    try:
        raw = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise DataError(f"cannot read conversations file {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise DataError(f"conversations file {path} is not UTF-8") from None
    try:
        doc = json.loads(raw)
    except json.JSONDecodeError as exc:
        try:  # JSON lines
            doc = [json.loads(line) for line in raw.splitlines() if line.strip()]
        except json.JSONDecodeError:
            raise DataError(f"conversations file {path} is not JSON: {exc.msg} at line {exc.lineno}") from None
    return parse_conversations(doc, str(path))


def split_conversations(convs: list[list[Message]], val_fraction: float) -> tuple[list, list]:
    """Training and held-out conversations: the last ``val_fraction`` of the file is held out."""
    n_val = max(1, int(round(len(convs) * val_fraction)))
    if len(convs) < 2:
        return convs, convs
    return convs[:-n_val], convs[-n_val:]


def pack(tokenizer: "Tokenizer", convs: list[list[Message]]) -> tuple[list[int], list[int]]:
    """All conversations rendered in the chat template, end to end: ids and per-token labels
    (the token itself on assistant turns and their ``<|eot|>``, -100 elsewhere)."""
    ids: list[int] = []
    labels: list[int] = []
    for conv in convs:
        i, lab = render_with_labels(tokenizer, conv, add_generation_prompt=False)
        ids.extend(i)
        labels.extend(lab)
    return ids, labels
