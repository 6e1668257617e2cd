"""The fast (Rust) WordPiece tokenizer: loaded from the archive, called once per batch."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mmsent.config import ModelConfig


def load_tokenizer(folder: str | Path) -> Any:
    """``BertTokenizerFast`` from a folder holding ``vocab.txt`` / ``tokenizer.json``.

    Serving passes the unpacked archive; build-time code passes
    ``mmsent.modeling.encoders.tokenizer_dir(cfg.text_encoder)``.
    """
    from transformers import BertTokenizerFast

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    return BertTokenizerFast.from_pretrained(str(folder))


def tokenize(tokenizer: Any, texts: Sequence[str], cfg: ModelConfig) -> Any:
    """THE tokenizer call, for serving and training alike: one call for the whole batch,
    truncated to ``max_text_length`` tokens and padded to the longest text in the batch."""
    return tokenizer(
        list(texts),
        padding="longest",
        truncation=True,
        max_length=cfg.max_text_length,
        return_tensors="pt",
    )
