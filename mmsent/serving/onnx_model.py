"""ONNX Runtime behind the pipeline's model interface: five tensors in, (logits, contributions) out.

Ships in the .mar with the rest of serving/. ``onnxruntime`` is imported only when an archive
says ``runtime: onnx``, so TorchScript deployments do not need it installed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor

INPUT_NAMES = ("input_ids", "attention_mask", "pixel_values", "has_text", "has_image")
OUTPUT_NAMES = ("logits", "contributions")


def providers_for(device: str | torch.device) -> list[Any]:
    """CUDA EP on the GPU TorchServe assigned (CPU EP kept for the shape ops ORT places there);
    CPU EP alone on CPU."""
    device = torch.device(device)
    if device.type == "cuda":
        return [("CUDAExecutionProvider", {"device_id": device.index or 0}),
                "CPUExecutionProvider"]  # fmt: skip
    return ["CPUExecutionProvider"]


def session_options(threads: int | None = None) -> Any:
    """Session options, each set on purpose.

    * ``intra_op_num_threads`` = torch's intra-op thread count (``torch.get_num_threads()``),
      which TorchServe / OMP_NUM_THREADS already size per worker. ORT's own default is one
      thread per physical core *per session*: with several workers on one box that
      oversubscribes the cores, and it would make the ONNX and TorchScript numbers incomparable.
    * ``inter_op_num_threads`` = 1 and sequential execution: the graph is one chain of big ops;
      parallel branches buy nothing and cost a second thread pool.
    * ``graph_optimization_level`` = ORT_ENABLE_ALL: constant folding, MatMul+Add / GELU /
      LayerNorm / attention fusions and, on CPU, the NCHWc convolution layout. Done at load time,
      not saved into the archive, because the layout rewrites are specific to the machine's
      CPU/EP (the same reason the TorchScript oneDNN rewrites happen at load).
    * ``allow_spinning`` off: idle worker threads sleep instead of spinning between requests, so
      a worker waiting for its next batch does not steal the cores the other workers and
      TorchServe's frontend need (the price: a thread wake-up per batch, microseconds).
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or torch.get_num_threads()
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


class OnnxModel:
    """Callable like the TorchScript module: ``model(*inputs) -> (logits, contributions)``.

    Inputs arrive as CPU tensors (the pipeline keeps its device at CPU for this runtime) and ORT
    copies them to the execution provider's device itself; outputs come back as CPU tensors.
    """

    def __init__(self, path: str | Path, device: str = "cpu", threads: int | None = None):
        import onnxruntime as ort

        self.session = ort.InferenceSession(
            str(path), sess_options=session_options(threads), providers=providers_for(device)
        )
        self.providers = self.session.get_providers()

    def __call__(self, *inputs: Tensor) -> tuple[Tensor, Tensor]:
        feed = {n: t.cpu().numpy() for n, t in zip(INPUT_NAMES, inputs, strict=True)}
        logits, contributions = self.session.run(list(OUTPUT_NAMES), feed)
        return torch.from_numpy(logits), torch.from_numpy(contributions)

    def eval(self) -> OnnxModel:
        return self
