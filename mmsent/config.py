"""The one place for every fact that training, export, the handler and the tests must agree on.

A :class:`ModelConfig` is written into each archive as ``model_config.json`` so the server reads
exactly the labels, image geometry and text length the model was exported with.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

LABELS: tuple[str, ...] = ("negative", "neutral", "positive")
MODALITIES: tuple[str, ...] = ("text", "image")
FUSIONS: tuple[str, ...] = ("attention", "concat", "late")
# Serving precision. "auto" = fp16 on CUDA (tensor cores, half the memory traffic) and fp32 on
# CPU (this 2-core EPYC has no AVX-512 BF16/AMX: bf16 matmuls run several times slower than fp32).
PRECISIONS: tuple[str, ...] = ("auto", "fp32", "fp16", "bf16")
# Which runtime loads the archive's model file (``ModelConfig.runtime`` -> ``MODEL_FILES``).
RUNTIMES: tuple[str, ...] = ("torchscript", "onnx")
IMAGE_INPUTS: tuple[str, ...] = ("cells", "evidence")

# -- file names inside an exported model folder / archive -----------------------------------------
CONFIG_FILENAME = "model_config.json"
MODEL_FILENAME = "model.pt"
ONNX_MODEL_FILENAME = "model.onnx"
MODEL_FILES: dict[str, str] = {"torchscript": MODEL_FILENAME, "onnx": ONNX_MODEL_FILENAME}
TOKENIZER_FILES: tuple[str, ...] = (
    "vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
)  # fmt: skip

# -- serving names and addresses (config.properties says the same; a test keeps them equal) -------
DEFAULT_MODEL_NAME = "fusion_sentiment"
DEFAULT_PORTS: dict[str, int] = {
    "inference": 8080, "management": 8081, "metrics": 8082, "grpc_inference": 7070,
    "grpc_management": 7071,
}  # fmt: skip
# A client's deadline in epoch ms: a header over REST, an input field over gRPC
# (mmsent.serving.deadline)
DEADLINE_HEADER = "x-request-deadline"
# Environment of every serving worker process (TorchServe's and LitServe's; the launchers set it,
# it must be set before the worker's OpenMP runtime starts). PASSIVE: idle OpenMP threads sleep
# instead of spinning. Measured on the 2-core EPYC, TorchServe, default model, one run of both
# (docs/benchmarks.md "Engines"): worker CPU per request 48.8 -> 29.8 ms at 1 in flight and
# 31.2 -> 26.3 ms at 24, p99 84.5 -> 72.5 ms and 526 -> 494 ms; the spinning threads had been
# competing with the Java frontend for the two cores (inference p99/p50 1.9 -> 1.4).
WORKER_ENV: dict[str, str] = {"OMP_WAIT_POLICY": "PASSIVE"}
# 20 MiB: a base64 phone photo fits; TorchServe's max_request_size and the gRPC clients agree
MAX_MESSAGE_BYTES = 20 * 1024 * 1024

# Resize the short side to image_size * 8/7, then centre-crop image_size (256 -> 224): the
# torchvision recipe every supported backbone was trained with.
RESIZE_RATIO = 8 / 7


def read_properties(text: str) -> dict[str, str]:
    """``key=value`` lines of a Java properties text such as TorchServe's config.properties
    (``#`` / ``!`` comment lines skipped, keys and values stripped, values kept raw). The
    project's configs use nothing fancier (no line continuations, no ``:`` separators)."""
    pairs = (
        line.split("=", 1)
        for line in text.splitlines()
        if "=" in line and not line.lstrip().startswith(("#", "!"))
    )
    return {key.strip(): value.strip() for key, value in pairs}


def resize_for(image_size: int) -> int:
    """The resize size that goes with ``image_size`` (224 -> 256, 64 -> 73)."""
    return round(image_size * RESIZE_RATIO)

# ImageNet statistics: every supported backbone was pretrained with them.
IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)


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
    runtime: str = "torchscript"  # one of RUNTIMES: which file the archive holds, who loads it
    # attention fusion's image input: "cells" (every CNN cell is a key) or "evidence" (one key:
    # an image classifier's log-probabilities, trained cross-fitted; see docs/training.md)
    image_input: str = "cells"
    # softmax temperature fitted on the validation split: served probabilities are
    # softmax(logits / temperature). 1.0 = uncalibrated (and what archives without it mean)
    temperature: float = 1.0

    def __post_init__(self) -> None:
        if self.fusion not in FUSIONS:
            raise ValueError(f"fusion must be one of {FUSIONS}, got {self.fusion!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if self.runtime not in RUNTIMES:
            raise ValueError(f"runtime must be one of {RUNTIMES}, got {self.runtime!r}")
        if self.image_input not in IMAGE_INPUTS:
            raise ValueError(f"image_input must be one of {IMAGE_INPUTS}, got {self.image_input!r}")
        if self.image_input == "evidence" and self.fusion != "attention":
            raise ValueError("image_input='evidence' is implemented for attention fusion only")
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature!r}")
        if self.fusion_dim % self.num_heads:
            raise ValueError("fusion_dim must be divisible by num_heads")
        if self.resize_size < self.image_size:
            raise ValueError("resize_size must be >= image_size")

    @property
    def num_labels(self) -> int:
        return len(self.labels)

    @property
    def model_filename(self) -> str:
        """The model file this config's runtime loads (model.pt or model.onnx)."""
        return MODEL_FILES[self.runtime]

    def replace(self, **changes: Any) -> ModelConfig:
        data = asdict(self)
        data.update(changes)
        return ModelConfig.from_dict(data)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        data = dict(data)
        # request limits used to live here; they are serving policy now (mmsent.serving.limits)
        data.pop("limits", None)
        unknown = set(data) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"unknown model config keys: {sorted(unknown)}")
        for key in ("labels", "image_mean", "image_std"):
            if key in data:
                data[key] = tuple(data[key])
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
