"""Export the whole fusion model as ONE ONNX file (opset 18), beside the TorchScript export.

Same five inputs, same two outputs, batch and sequence axes dynamic. Exporter: the
``torch.export``-based one (``dynamo=True``, via onnxscript). The legacy TorchScript-based
exporter (``dynamo=False``) *traces*, and on torch 2.14 + transformers 5.x it exports a graph
that is only right for the traced shapes: ``nn.MultiheadAttention`` turns the traced batch and
sequence sizes into Python ints (the same TracerWarnings export.py triages), so the legacy graph
fails in ONNX Runtime at any other batch ("Reshape_4 ... cannot reshape {12,1,256} to
{17,4,64}"). ``torch.export`` keeps those sizes symbolic (the parity tests check batch 1, 4 and
5 and several lengths against eager, 1e-4), and it is the maintained exporter (the legacy one
warns it is deprecated).

Opset 18: the opset torch's ONNX function library (torchlib) is written in, so nothing is
down-converted, and one ONNX Runtime >= 1.14 runs on both its CPU and CUDA execution providers.

Device portability: an ONNX graph has no device type, so the CPU-pinned constants that the
TorchScript trace needed rewiring for (portable_graph.py) cannot be recorded. What *could* tie
the file to one execution provider is a custom-domain op or a device string in an attribute;
:func:`device_pins` reports both and the export refuses a graph with any.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import Tensor, nn

from mmsent.config import ONNX_MODEL_FILENAME, ModelConfig
from mmsent.modeling.export import ExportError, Inputs, example_inputs, write_serving_files

logger = logging.getLogger(__name__)

OPSET = 18
INPUT_NAMES = ("input_ids", "attention_mask", "pixel_values", "has_text", "has_image")
OUTPUT_NAMES = ("logits", "contributions")
# ONNX's own domain and the ops ONNX Runtime registers for both the CPU and the CUDA EP
PORTABLE_DOMAINS = {"", "ai.onnx", "com.microsoft"}
# Exact messages of the exporter that are noise here: every input shares the one "batch" (and
# "seq") dimension on purpose, and the exporter says it keeps one name per shared dimension.
QUIET_MESSAGES = (r"# The axis name: (batch|seq) will not be used",)
MAX_BATCH, MAX_SEQ = 1024, 512


def _dynamic_shapes() -> dict[str, dict[int, torch.export.Dim]]:
    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    seq = torch.export.Dim("seq", min=2, max=MAX_SEQ)  # [CLS] + [SEP] at least
    return {
        "input_ids": {0: batch, 1: seq},
        "attention_mask": {0: batch, 1: seq},
        "pixel_values": {0: batch},
        "has_text": {0: batch},
        "has_image": {0: batch},
    }


def device_pins(model: onnx.ModelProto) -> list[str]:
    """Nodes that would tie the graph to one execution provider (empty list = portable)."""
    found = []
    for node in model.graph.node:
        if node.domain not in PORTABLE_DOMAINS:
            found.append(f"{node.name}: custom op {node.domain}::{node.op_type}")
        for attr in node.attribute:
            values = [attr.s] if attr.type == onnx.AttributeProto.STRING else list(attr.strings)
            for value in values:
                text = value.decode(errors="replace").lower()
                if text == "cpu" or text.startswith("cuda"):
                    found.append(f"{node.name}: attribute {attr.name}={text!r}")
    return found


def export_onnx(model: nn.Module, cfg: ModelConfig, path: str | Path) -> Path:
    """Export ``model`` (fp32, CPU) to ``path``; checked by onnx.checker and :func:`device_pins`."""
    path = Path(path)
    model = model.eval()
    with warnings.catch_warnings():
        for message in QUIET_MESSAGES:
            warnings.filterwarnings("ignore", message=message)
        program = torch.onnx.export(
            model, example_inputs(cfg), input_names=list(INPUT_NAMES),
            output_names=list(OUTPUT_NAMES), dynamic_shapes=_dynamic_shapes(),
            opset_version=OPSET, dynamo=True, verbose=False,
        )  # fmt: skip
    program.save(str(path))
    onnx.checker.check_model(str(path), full_check=True)
    pins = device_pins(onnx.load(str(path)))
    if pins:
        raise ExportError("the ONNX graph is tied to one device:\n  " + "\n  ".join(pins))
    return path


def onnx_session(path: str | Path, providers: tuple[str, ...] = ("CPUExecutionProvider",)):
    import onnxruntime as ort

    return ort.InferenceSession(str(path), providers=list(providers))


def run_onnx(session, inputs: Inputs) -> tuple[np.ndarray, np.ndarray]:
    feed = {name: t.detach().cpu().numpy() for name, t in zip(INPUT_NAMES, inputs, strict=True)}
    logits, contributions = session.run(list(OUTPUT_NAMES), feed)
    return logits, contributions


def check_onnx_parity(eager: nn.Module, session, inputs: Inputs) -> float:
    """Max abs difference of logits and contributions between eager and the ONNX session."""
    with torch.no_grad():
        ref: tuple[Tensor, Tensor] = eager(*inputs)
    got = run_onnx(session, inputs)
    return max(float(np.abs(r.numpy() - g).max()) for r, g in zip(ref, got, strict=True))


# Dynamic int8, measured on the default model (300 served test examples, top-1 agreement with
# ONNX fp32; docs/benchmarks.md "ONNX Runtime"): ORT's defaults (every op, Conv -> ConvInteger,
# per-tensor) ran 4x slower than fp32 with 87.7 %: ConvInteger has no fast CPU kernel and
# MobileNetV2's depthwise convolutions lose the most. MatMul/Gemm only: 97.7 % per-tensor,
# 98.7 % per-channel (the default here), 98.3 % per-channel on the text encoder alone. All
# below the 99 % bar, so no int8 ONNX archive is built (build.py refuses --format onnx --int8).
DYNAMIC_INT8_OPS = ("MatMul", "Gemm")


def nodes_outside(model: onnx.ModelProto, scopes: tuple[str, ...]) -> list[str]:
    """Names of the nodes not under any module prefix in ``scopes`` (the dynamo exporter records
    each node's module path in its ``pkg.torch.onnx.name_scopes`` metadata)."""
    outside = []
    for node in model.graph.node:
        meta = {p.key: p.value for p in node.metadata_props}
        path = meta.get("pkg.torch.onnx.name_scopes", "")
        if not any(f"'{scope}'" in path for scope in scopes):
            outside.append(node.name)
    return outside


def quantize_dynamic_int8(
    src: str | Path, dst: str | Path, scopes: tuple[str, ...] | None = None
) -> Path:
    """ONNX Runtime dynamic int8 of the MatMul/Gemm ops (only those under the module prefixes
    ``scopes``, if given): weights int8 per output channel, activations quantized per batch at
    run time. For measurement (benchmark, onnx_agreement); see DYNAMIC_INT8_OPS."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    exclude = nodes_outside(onnx.load(str(src)), scopes) if scopes else []
    quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8, per_channel=True,
                     op_types_to_quantize=list(DYNAMIC_INT8_OPS), nodes_to_exclude=exclude)
    return Path(dst)


def export_onnx_dir(model: nn.Module, cfg: ModelConfig, out_dir: str | Path) -> Path:
    """Write ``model.onnx``, ``model_config.json`` (runtime "onnx") and the tokenizer files."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    cfg = cfg.replace(runtime="onnx")
    path = out_dir / ONNX_MODEL_FILENAME
    export_onnx(model, cfg, path)
    diff = check_onnx_parity(model, onnx_session(path), example_inputs(cfg, 5, 9, seed=1))
    if diff > 1e-3:
        raise ExportError(f"ONNX export diverges from eager (max abs diff {diff:.2e})")
    write_serving_files(cfg, out_dir)
    logger.info("exported %s (opset %d, parity %.2e)", path, OPSET, diff)
    return out_dir
