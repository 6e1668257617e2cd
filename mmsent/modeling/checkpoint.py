"""Checkpoints: save, read and restore (training's resume and serving builds share these)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from mmsent.config import ModelConfig
from mmsent.modeling.model import FusionSentimentModel, build_model


def save_checkpoint(
    model: FusionSentimentModel,
    cfg: ModelConfig,
    path: str | Path,
    include_encoders: bool = False,
    extra: dict[str, Any] | None = None,
    text_layers_from: int | None = None,
) -> Path:
    """Save the head (always) and the encoders (only when they were fine-tuned).

    A frozen-encoder checkpoint is a few MB and is rebuilt on top of the same registry weights.
    ``text_layers_from=k`` also stores BERT layers k.. (the fine-tuned top layers) and nothing
    else of the text encoder: the rest is rebuilt from the registry package.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload: dict[str, Any] = {"config": cfg.to_dict(), "head": model.head.state_dict()}
    if include_encoders:
        payload["text_encoder"] = model.text_encoder.state_dict()
        payload["image_encoder"] = model.image_encoder.state_dict()
    elif text_layers_from is not None:
        top = model.text_encoder.encoder.layer[text_layers_from:]
        payload["text_layers"] = {"from": text_layers_from, "state": top.state_dict()}
    payload["extra"] = extra or {}
    torch.save(payload, path)
    return path


def load_checkpoint(path: str | Path) -> tuple[FusionSentimentModel, ModelConfig, dict[str, Any]]:
    """Rebuild a model from :func:`save_checkpoint` output; returns (model, config, extra)."""
    payload = read_checkpoint(path)
    cfg = ModelConfig.from_dict(payload["config"])
    model = restore_weights(build_model(cfg), payload)
    return model.eval(), cfg, payload.get("extra", {})


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """The raw checkpoint dict (config, head, optional encoders, extra incl. training state)."""
    return torch.load(Path(path), map_location="cpu", weights_only=False)


def restore_weights(model: FusionSentimentModel, payload: dict[str, Any]) -> FusionSentimentModel:
    """Load the head, and the encoders when the checkpoint carries them (fine-tuned/random)."""
    model.head.load_state_dict(payload["head"])
    if "text_layers" in payload:
        top = payload["text_layers"]
        model.text_encoder.encoder.layer[top["from"] :].load_state_dict(top["state"])
    if "text_encoder" in payload:
        model.text_encoder.load_state_dict(payload["text_encoder"])
        model.image_encoder.load_state_dict(payload["image_encoder"])
    return model
