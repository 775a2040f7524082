"""Conversations in the two common JSON forms, read one way for chat fine-tuning and for ``gentool chat``.

* ShareGPT: ``{"conversations": [{"from": "human"|"gpt"|"system", "value": "..."}]}``
* OpenAI: ``{"messages": [{"role": "user"|"assistant"|"system", "content": "..."}]}``
  (``content`` may also be a list of parts ``[{"type": "text", "text": "..."}]``: the text parts
  are joined)

A file holds a JSON list of such objects, one object, ``{"data": [...]}``, or JSON lines. Every
turn becomes ``{"role": "system"|"user"|"assistant", "content": str}`` through one role table
(:data:`ROLES`). Anything else is a one-line :class:`gentool.DataError` naming the file, the
conversation and the turn. No torch here: ``gentool chat`` imports this while starting.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from gentool import DataError

Message = dict[str, str]

#: Every role name either form uses (lower case), mapped to the chat template's three roles.
ROLES = {
    "system": "system",
    "user": "user", "human": "user",
    "assistant": "assistant", "gpt": "assistant", "chatgpt": "assistant", "bard": "assistant",
    "bing": "assistant", "bot": "assistant", "model": "assistant",
}
#: The two forms: the key of the turn list, then each turn's role key and text key.
FORMS = {"conversations": ("from", "value"), "messages": ("role", "content")}


def _text(value: Any) -> str | None:
    """A turn's text: a string, or the text parts of an OpenAI content list; None otherwise."""
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(p, dict) for p in value):
        parts = [p.get("text") for p in value if p.get("type", "text") == "text"]
        if parts and all(isinstance(p, str) for p in parts):
            return "".join(parts)
    return None


def parse_turns(turns: Any, form: str, where: str) -> list[Message]:
    """The turns of one conversation (``form``: ``"conversations"`` or ``"messages"``)."""
    role_key, text_key = FORMS[form]
    if not isinstance(turns, list) or not turns:
        raise DataError(f"{where}: the turns must be a non-empty list")
    out: list[Message] = []
    for j, turn in enumerate(turns):
        if not isinstance(turn, dict) or role_key not in turn or text_key not in turn:
            raise DataError(f"{where}, turn {j}: each turn needs {role_key!r} and {text_key!r}")
        role = ROLES.get(str(turn[role_key]).strip().lower())
        if role is None:
            raise DataError(f"{where}, turn {j}: unknown role {turn[role_key]!r} "
                            f"(known: {', '.join(sorted(ROLES))})")
        text = _text(turn[text_key])
        if text is None:
            raise DataError(f"{where}, turn {j}: the text must be a string")
        out.append({"role": role, "content": text})
    return out


def parse_conversation(item: Any, where: str) -> list[Message]:
    """One conversation object (ShareGPT or OpenAI form) as a list of messages."""
    if not isinstance(item, dict):
        raise DataError(f"{where}: a conversation must be a JSON object, got {type(item).__name__}")
    for form in FORMS:
        if form in item:
            return parse_turns(item[form], form, where)
    raise DataError(f"{where}: expected a 'conversations' (ShareGPT) or 'messages' (OpenAI) list, "
                    f"found keys {sorted(item)[:5]}")


def parse_conversations(doc: Any, source: str = "conversations", *, need_assistant: bool = True) -> list[list[Message]]:
    """Conversations from parsed JSON (a list of objects, one object, or a ``{"data": [...]}``).

    ``need_assistant`` keeps only conversations with an assistant turn (what fine-tuning learns
    from) and refuses a document with none.
    """
    if isinstance(doc, dict) and not (set(FORMS) & set(doc)):
        doc = doc.get("data", doc.get("train", doc))
    items = doc if isinstance(doc, list) else [doc]
    convs = [parse_conversation(item, f"{source}: conversation {i}") for i, item in enumerate(items)]
    if need_assistant:
        convs = [c for c in convs if any(m["role"] == "assistant" for m in c)]
        if not convs:
            raise DataError(f"{source}: no conversation with an assistant turn")
    elif not convs:
        raise DataError(f"{source}: no conversation")
    return convs


def read_json(path: str | Path) -> Any:
    """A ``.json`` or JSON-lines file, parsed; unreadable files are a one-line DataError."""
    path = Path(path).expanduser()
    try:
        raw = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError(f"no such conversations file: {path}") from None
    except OSError as exc:
        raise DataError(f"cannot read conversations file {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise DataError(f"conversations file {path} is not UTF-8") from None
    try:
        return json.loads(raw)
    except json.JSONDecodeError as exc:
        try:  # JSON lines
            return [json.loads(line) for line in raw.splitlines() if line.strip()]
        except json.JSONDecodeError:
            raise DataError(f"conversations file {path} is not JSON: {exc.msg} at line {exc.lineno}") from None


def load_conversations(path: str | Path | None) -> list[list[Message]]:
    """Every conversation with an assistant turn in a file; ``None`` or ``"builtin"`` gives the
    embedded example set."""
    if path in (None, "", "builtin"):
        from gentool_gpt.data import resource_path

        path = resource_path("chat.json")
    return parse_conversations(read_json(path), str(path))


def read_conversation(path: str | Path) -> list[Message]:
    """One conversation to continue (``gentool chat``'s ``/load``): the first of the file, in
    either form, or a bare list of turns; it may end with any role."""
    doc = read_json(path)
    if isinstance(doc, list) and doc and all(isinstance(m, dict) and not (set(FORMS) & set(m)) for m in doc):
        form = "conversations" if "from" in doc[0] else "messages"  # a bare list of turns
        return parse_turns(doc, form, str(path))
    return parse_conversations(doc, str(path), need_assistant=False)[0]
