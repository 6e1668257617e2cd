"""Export the whole fusion model as ONE TorchScript file plus what serving needs beside it.

Tracing (not scripting) is used because Hugging Face's BertModel is traceable but not
scriptable. The trace is taken on a batch with padding and with both modalities present and
absent, so no shape- or mask-dependent shortcut gets frozen into the graph; ``check_parity``
then compares against eager on *other* shapes.
"""

from __future__ import annotations

import logging
import shutil
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import Tensor, nn

from mmsent.config import ModelConfig
from mmsent.encoders import tokenizer_dir
from mmsent.pipeline import MODEL_FILENAME

logger = logging.getLogger(__name__)

TOKENIZER_FILES = (
    "vocab.txt",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
)
Inputs = tuple[Tensor, Tensor, Tensor, Tensor, Tensor]


def example_inputs(cfg: ModelConfig, batch: int = 3, seq: int = 12, seed: int = 0) -> Inputs:
    """A random batch: padded texts, text-only, image-only and full rows (for batch >= 3)."""
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(1000, 20000, (batch, seq), generator=gen)
    ids[:, 0], ids[:, -1] = 101, 102  # [CLS] ... [SEP]
    mask = torch.ones(batch, seq, dtype=torch.long)
    for row in range(1, batch):  # ragged lengths, as a padded real batch has
        mask[row, max(2, seq - 3 * row) :] = 0
    pixels = torch.randn(batch, 3, cfg.image_size, cfg.image_size, generator=gen)
    has_text = torch.ones(batch)
    has_image = torch.ones(batch)
    if batch >= 3:
        has_text[1] = 0.0
        has_image[2] = 0.0
    return ids, mask, pixels, has_text, has_image


@contextmanager
def quiet_tracing() -> Iterator[None]:
    """Silence the deprecation notice of torch.jit and transformers' tracer chatter only.

    ``torch.jit`` is deprecated upstream but remains the only single-file, class-free format
    TorchServe loads; real tracing problems are caught by the parity check, not by warnings.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"`torch\.jit\..*` is deprecated")
        # shape assertions inside transformers / nn.MultiheadAttention that trace as constants
        for module in (r"transformers", r"torch\.nn\.functional"):
            warnings.filterwarnings("ignore", category=torch.jit.TracerWarning, module=module)
        warnings.filterwarnings("ignore", message=r"`is_gradient_checkpointing` is deprecated")
        yield


def quantize_int8(model: nn.Module) -> nn.Module:
    """Dynamic int8 quantization of every Linear layer (weights int8, activations fp32)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
        return torch.ao.quantization.quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8)


def trace(model: nn.Module, cfg: ModelConfig) -> torch.jit.ScriptModule:
    model = model.eval()
    with quiet_tracing(), torch.no_grad():
        return torch.jit.trace(model, example_inputs(cfg), strict=False, check_trace=False)


def check_parity(eager: nn.Module, scripted: nn.Module, inputs: Inputs) -> float:
    """Max abs difference of logits and contributions between two models on ``inputs``."""
    with torch.no_grad():
        a_logits, a_contrib = eager(*inputs)
        b_logits, b_contrib = scripted(*inputs)
    return max((a_logits - b_logits).abs().max().item(), (a_contrib - b_contrib).abs().max().item())


def export_model_dir(
    model: nn.Module, cfg: ModelConfig, out_dir: str | Path, int8: bool = False
) -> Path:
    """Write ``model.pt`` (TorchScript), ``model_config.json`` and the tokenizer files."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model = model.eval()
    if int8:
        model = quantize_int8(model)
    scripted = trace(model, cfg)
    diff = check_parity(model, scripted, example_inputs(cfg, batch=5, seq=9, seed=1))
    if diff > 1e-3:
        raise RuntimeError(f"TorchScript export diverges from eager (max abs diff {diff:.2e})")
    with quiet_tracing():
        torch.jit.save(scripted, str(out_dir / MODEL_FILENAME))
    cfg.save(out_dir)
    src = tokenizer_dir(cfg.text_encoder)
    for name in TOKENIZER_FILES:
        if (src / name).exists():
            shutil.copy2(src / name, out_dir / name)
    logger.info("exported %s (parity %.2e)", out_dir / MODEL_FILENAME, diff)
    return out_dir
