"""Rebuild a ``gpt`` model and its tokenizer from a gentool checkpoint file alone."""

from __future__ import annotations

from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from gentool import CheckpointError

if TYPE_CHECKING:
    import torch
    from gentool import Checkpoint

    from gentool_gpt.model import GPT
    from gentool_gpt.tokenizer import Tokenizer

MODULE = "gpt"  # the module name of the network in checkpoints


def model_config(cfg: Any, vocab_size: int) -> "Any":
    """The network shape (:class:`GPTConfig`) for a run's options and a tokenizer's size; its
    context is the run's (:attr:`GPTTrainConfig.context`: longer for chat fine-tuning)."""
    from gentool_gpt.model import GPTConfig

    return GPTConfig(vocab_size=vocab_size, n_layer=cfg.n_layer, n_head=cfg.n_head, n_embd=cfg.n_embd,
                     block_size=cfg.context, mlp_hidden=cfg.hidden, rope_theta=cfg.rope_theta,
                     tie_embeddings=cfg.tie_embeddings, dropout=cfg.dropout)


def checkpoint_meta(gpt_cfg: Any, tokenizer: "Tokenizer", **more: Any) -> dict[str, Any]:
    """What every ``gpt`` checkpoint header carries beyond the run's options."""
    return {"gpt_config": asdict(gpt_cfg), "tokenizer": tokenizer.to_json(), **more}


def load_gpt(checkpoint: "Checkpoint", device: "torch.device | str" = "cpu") -> tuple["GPT", "Tokenizer"]:
    """The network (eval mode, on ``device``) and the tokenizer stored in ``checkpoint``."""
    from gentool_gpt.model import GPT, GPTConfig
    from gentool_gpt.tokenizer import Tokenizer

    extra = checkpoint.extra
    if "gpt_config" not in extra or "tokenizer" not in extra:
        raise CheckpointError(f"{checkpoint.path} lacks the gpt network shape or tokenizer in its header")
    try:
        cfg = GPTConfig(**{**extra["gpt_config"], "dropout": 0.0})
        tokenizer = Tokenizer.from_json(extra["tokenizer"])
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{checkpoint.path} has an unreadable gpt header: {exc}") from None
    model = checkpoint.build(lambda: {MODULE: GPT(cfg)})[MODULE]  # shapes checked on the meta device first
    return model.to(device).eval(), tokenizer
