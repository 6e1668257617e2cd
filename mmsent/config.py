"""The one place for every fact that training, export, the handler and the tests must agree on.

A :class:`ModelConfig` is written into each archive as ``model_config.json`` so the server reads
exactly the labels, image geometry and text length the model was exported with.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

LABELS: tuple[str, ...] = ("negative", "neutral", "positive")
MODALITIES: tuple[str, ...] = ("text", "image")
FUSIONS: tuple[str, ...] = ("attention", "concat", "late")
# Serving precision. "auto" = fp16 on CUDA (tensor cores, half the memory traffic) and fp32 on
# CPU (this 2-core EPYC has no AVX-512 BF16/AMX: bf16 matmuls run several times slower than fp32).
PRECISIONS: tuple[str, ...] = ("auto", "fp32", "fp16", "bf16")
CONFIG_FILENAME = "model_config.json"

# ImageNet statistics: every supported backbone was pretrained with them.
IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class RequestLimits:
    """Per-item limits enforced before any expensive work (decode, tokenize).

    They sit below TorchServe's ``max_request_size`` so a normal phone photo (a few MB) passes
    while a decompression bomb or a 100 MB upload is refused with a clear message.
    """

    max_image_bytes: int = 16 * 1024 * 1024
    max_image_pixels: int = 40_000_000  # ~ a 7700x5200 photo; bombs claim far more
    max_text_chars: int = 20_000  # longer text is clipped (and reported), never an error
    # /explanations costs one perturbed forward row per word and per region (mmsent/explain.py)
    # and holds the worker meanwhile: these bound one request (measured worst case, 62 words +
    # a 10x10 grid, default model, 2-core CPU: 3.1 s); beyond them the answer is a 413.
    max_explain_words: int = 64  # every text max_text_length=64 admits (<= 62 words) fits
    max_explain_cells: int = 100  # up to a 10x10 grid (22 px cells at 224 px)


@dataclass(frozen=True)
class ModelConfig:
    """Architecture and preprocessing of one exported model."""

    labels: tuple[str, ...] = LABELS
    image_size: int = 224
    resize_size: int = 256
    image_mean: tuple[float, float, float] = IMAGENET_MEAN
    image_std: tuple[float, float, float] = IMAGENET_STD
    max_text_length: int = 64  # tokens incl. [CLS]/[SEP]; tweets and reviews fit easily
    text_encoder: str = "minilm"  # "minilm" (registry package), "tiny" (random), or a local dir
    image_backbone: str = "mobilenet_v2"
    image_weights: str = "imagenet"  # "imagenet" (registry package), "random", or a .pth path
    fusion: str = "attention"
    fusion_dim: int = 256
    num_heads: int = 4
    dropout: float = 0.1
    precision: str = "auto"  # serving dtype, one of PRECISIONS; the export itself is fp32
    limits: RequestLimits = field(default_factory=RequestLimits)

    def __post_init__(self) -> None:
        if self.fusion not in FUSIONS:
            raise ValueError(f"fusion must be one of {FUSIONS}, got {self.fusion!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if self.fusion_dim % self.num_heads:
            raise ValueError("fusion_dim must be divisible by num_heads")
        if self.resize_size < self.image_size:
            raise ValueError("resize_size must be >= image_size")

    @property
    def num_labels(self) -> int:
        return len(self.labels)

    def replace(self, **changes: Any) -> ModelConfig:
        data = asdict(self)
        data.update(changes)
        return ModelConfig.from_dict(data)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown model config keys: {sorted(unknown)}")
        data = dict(data)
        limits = data.pop("limits", None)
        for key in ("labels", "image_mean", "image_std"):
            if key in data:
                data[key] = tuple(data[key])
        if isinstance(limits, dict):
            data["limits"] = RequestLimits(**limits)
        elif isinstance(limits, RequestLimits):
            data["limits"] = limits
        return cls(**data)

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        if path.is_dir():
            path = path / CONFIG_FILENAME
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        return path

    @classmethod
    def load(cls, path: str | Path) -> ModelConfig:
        path = Path(path)
        if path.is_dir():
            path = path / CONFIG_FILENAME
        return cls.from_dict(json.loads(path.read_text()))
