"""gentool-gpt: a small decoder-only transformer (Llama layout) to pretrain, chat-tune, sample and chat with."""

__version__ = "0.1.0"
