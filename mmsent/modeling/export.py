"""Export the whole fusion model as ONE TorchScript file plus what serving needs beside it.

Tracing (not scripting) is used because Hugging Face's BertModel is traceable but not
scriptable. The trace is taken on a batch with padding and with both modalities present and
absent, so no shape- or mask-dependent shortcut gets frozen into the graph; ``check_parity``
then compares against eager on *other* shapes.
"""

from __future__ import annotations

import logging
import re
import shutil
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import Tensor, nn

from mmsent.config import MODEL_FILENAME, TOKENIZER_FILES, ModelConfig
from mmsent.modeling.encoders import tokenizer_dir
from mmsent.modeling.portable_graph import make_portable, pinned_constants

logger = logging.getLogger(__name__)

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


# Tracer warnings we have read and accept, each with its reason. Anything else is shown to the
# user, and any tracer warning about a device or dtype fails the export (ExportError): those are
# the warnings that would have revealed the CPU-pinned graph (see portable_graph.py).
KNOWN_TRACER_WARNINGS: tuple[tuple[str, str, str], ...] = (
    # (message start, file the tracer blames, why it is harmless)
    ("Converting a tensor to a Python boolean", "transformers/masking_utils.py",
     "a 'does the mask need padding' shape check; the traced graph pads nothing and parity is "
     "checked on other shapes"),
    ("Converting a tensor to a Python boolean", "torch/nn/functional.py",
     "nn.MultiheadAttention's input shape assertions"),
    ("Converting a tensor to a Python float", "torch/nn/functional.py",
     "nn.MultiheadAttention's 1/sqrt(head_dim) scale: head_dim is fixed by the weights"),
)
# Exact messages (not classes) that are noise here: torch.jit's deprecation notice (TorchScript
# is still the one single-file, class-free format TorchServe loads) and a transformers rename.
QUIET_MESSAGES = (
    r"`torch\.jit\..*` is deprecated",
    r"`is_gradient_checkpointing` is deprecated",
)


class ExportError(RuntimeError):
    """The model cannot be exported safely (it would not run, or not run everywhere)."""


@contextmanager
def quiet_tracing() -> Iterator[None]:
    """Silence only the exact deprecation messages in QUIET_MESSAGES, nothing by class."""
    with warnings.catch_warnings():
        for message in QUIET_MESSAGES:
            warnings.filterwarnings("ignore", message=message)
        yield


def _is_known(warning: warnings.WarningMessage) -> bool:
    text, filename = str(warning.message), warning.filename.replace("\\", "/")
    return any(text.startswith(m) and filename.endswith(f) for m, f, _ in KNOWN_TRACER_WARNINGS)


def triage_tracer_warnings(caught: list[warnings.WarningMessage]) -> list[str]:
    """Re-emit the warnings a trace raised, except the known ones; raise on device/dtype ones.

    Returns the distinct known messages seen (tests pin that list, so a new kind shows up).
    """
    known: list[str] = []
    for warning in caught:
        text = str(warning.message)
        is_tracer = issubclass(warning.category, torch.jit.TracerWarning)
        if is_tracer and re.search(r"\b(device|dtype|cuda|cpu)\b", text, re.IGNORECASE):
            raise ExportError(
                f"tracing recorded a device/dtype as a constant ({warning.filename}:"
                f"{warning.lineno}): {text}"
            )
        if is_tracer and _is_known(warning):
            entry = f"{text.split('.')[0]} ({Path(warning.filename).name})"
            if entry not in known:
                known.append(entry)
            continue
        warnings.warn_explicit(
            warning.message, warning.category, warning.filename, warning.lineno
        )
    return known


def quantize_int8(model: nn.Module) -> nn.Module:
    """Dynamic int8 quantization of every Linear layer (weights int8, activations fp32)."""
    with warnings.catch_warnings():  # the two notices it always prints, by message
        warnings.filterwarnings("ignore", message=r"torch\.ao\.quantization is deprecated")
        warnings.filterwarnings("ignore", message=r"torch\.quantize_per_tensor, torch\.quantize")
        return torch.ao.quantization.quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8)


def trace(model: nn.Module, cfg: ModelConfig) -> torch.jit.ScriptModule:
    """Trace on CPU, then make the graph device/precision-portable and prove it is.

    Raises ExportError if a device or float-dtype constant survives (the archive would die on
    the first forward on any GPU) or if the tracer warned about a device or dtype.
    """
    model = model.eval()
    with quiet_tracing(), torch.no_grad(), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", torch.jit.TracerWarning)
        scripted = torch.jit.trace(model, example_inputs(cfg), strict=False, check_trace=False)
    triage_tracer_warnings(caught)
    rewired = make_portable(scripted)
    left = pinned_constants(scripted.inlined_graph)
    if left:
        raise ExportError(
            "the traced graph still pins a device or float dtype:\n  "
            + "\n  ".join(map(str, left))
        )
    logger.info("export: %d device/dtype constants rewired to the inputs", rewired)
    return scripted


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
    with quiet_tracing():
        torch.jit.save(scripted, str(out_dir / MODEL_FILENAME))
        saved = torch.jit.load(str(out_dir / MODEL_FILENAME)).eval()  # what will be served
    diff = check_parity(model, saved, example_inputs(cfg, batch=5, seq=9, seed=1))
    if diff > 1e-3:
        raise ExportError(f"TorchScript export diverges from eager (max abs diff {diff:.2e})")
    write_serving_files(cfg, out_dir)
    logger.info("exported %s (parity %.2e)", out_dir / MODEL_FILENAME, diff)
    return out_dir


def write_serving_files(cfg: ModelConfig, out_dir: Path) -> None:
    """What serving needs beside the model file, whatever the runtime: ``model_config.json``
    and the tokenizer files of ``cfg.text_encoder``."""
    cfg.save(out_dir)
    src = tokenizer_dir(cfg.text_encoder)
    for name in TOKENIZER_FILES:
        if (src / name).exists():
            shutil.copy2(src / name, out_dir / name)
