"""The chat template: how a conversation becomes tokens, for training (SFT) and for chatting.

    <|bos|><|system|>You are...<|eot|><|user|>Hi<|eot|><|assistant|>Hello!<|eot|><|user|>...

Each turn is a role token, the text, and ``<|eot|>`` (end of turn). A generation prompt ends with
``<|assistant|>``; the model answers and closes with ``<|eot|>``, where decoding stops. The same
template as a Jinja string (:data:`JINJA_TEMPLATE`) goes into ``tokenizer_config.json`` so that
transformers' ``apply_chat_template`` renders exactly the same tokens.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterable, Mapping

if TYPE_CHECKING:
    from gentool_gpt.tokenizer import Tokenizer

ROLES = ("system", "user", "assistant")
IGNORE = -100

JINJA_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>' + message['content'] + '<|eot|>' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>' }}{% endif %}"
)


def _check(messages: Iterable[Mapping[str, str]]) -> list[Mapping[str, str]]:
    out = list(messages)
    for m in out:
        if m.get("role") not in ROLES:
            raise ValueError(f"unknown chat role {m.get('role')!r}: use system, user or assistant")
        if not isinstance(m.get("content"), str):
            raise ValueError("a chat message's content must be a string")
    return out


def render(tokenizer: "Tokenizer", messages: Iterable[Mapping[str, str]],
           add_generation_prompt: bool = True) -> list[int]:
    """Token ids of ``messages`` (dicts with ``role`` and ``content``) in the chat template.

    With ``add_generation_prompt`` the ids end with ``<|assistant|>``: the model's turn.
    """
    return render_with_labels(tokenizer, messages, add_generation_prompt)[0]


def render_with_labels(tokenizer: "Tokenizer", messages: Iterable[Mapping[str, str]],
                       add_generation_prompt: bool = False) -> tuple[list[int], list[int]]:
    """Ids and, aligned with them, training targets: an assistant turn's tokens (its text and its
    ``<|eot|>``) are their own target; everything else is :data:`IGNORE`, so the loss is taken
    on the assistant's words only. (Shift by one for next-token prediction.)"""
    sp = tokenizer.special
    ids, labels = [sp["<|bos|>"]], [IGNORE]
    for m in _check(messages):
        ids.append(sp[f"<|{m['role']}|>"])
        labels.append(IGNORE)
        body = tokenizer.encode(m["content"]) + [sp["<|eot|>"]]
        ids.extend(body)
        labels.extend(body if m["role"] == "assistant" else [IGNORE] * len(body))
    if add_generation_prompt:
        ids.append(sp["<|assistant|>"])
        labels.append(IGNORE)
    return ids, labels
