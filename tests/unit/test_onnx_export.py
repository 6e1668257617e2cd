"""ONNX export: one file, checked, device-portable, equal to eager and to the TorchScript export."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from conftest import jpeg_bytes, tiny_config
from mmsent.config import ONNX_MODEL_FILENAME, ModelConfig
from mmsent.modeling.export import example_inputs, export_model_dir
from mmsent.modeling.model import build_model
from mmsent.modeling.onnx_export import (
    OPSET,
    device_pins,
    export_onnx_dir,
    onnx_session,
    run_onnx,
)
from mmsent.serving.exchange import Exchange
from mmsent.serving.pipeline import SentimentPipeline

TOL = 1e-4


def _cases(cfg: ModelConfig) -> dict[str, tuple[torch.Tensor, ...]]:
    """test_export.py's parity cases, plus a heavily padded batch."""
    ids, mask, px, _, _ = example_inputs(cfg, batch=4, seq=6, seed=5)
    ones, zeros = torch.ones(4), torch.zeros(4)
    padded = example_inputs(cfg, batch=3, seq=16, seed=6)
    padded[1][:, 4:] = 0
    padded[0][:, 4:] = 0  # [PAD]
    return {
        "batch1": example_inputs(cfg, batch=1, seq=7, seed=3),
        "batch5": example_inputs(cfg, batch=5, seq=10, seed=4),
        "text_only": (ids, mask, torch.zeros_like(px), ones, zeros),
        "image_only": (ids, mask, px, zeros, ones),
        "padded": padded,
    }


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory: pytest.TempPathFactory) -> tuple[torch.nn.Module, Path, Path]:
    """(eager model, ONNX export dir, TorchScript export dir) of one tiny model."""
    root = tmp_path_factory.mktemp("onnx")
    torch.manual_seed(0)
    cfg = tiny_config()
    model = build_model(cfg)
    export_onnx_dir(model, cfg, root / "onnx")
    export_model_dir(model, cfg, root / "ts")
    return model, root / "onnx", root / "ts"


def test_tiny_onnx_export_matches_eager(tiny_onnx) -> None:
    model, onnx_dir, _ = tiny_onnx
    cfg = ModelConfig.load(onnx_dir)
    session = onnx_session(onnx_dir / ONNX_MODEL_FILENAME)
    for name, inputs in _cases(cfg).items():
        with torch.no_grad():
            ref = model(*inputs)
        got = run_onnx(session, inputs)
        assert got[0].shape == (inputs[0].shape[0], cfg.num_labels), name
        for r, g in zip(ref, got, strict=True):
            diff = float(np.abs(r.numpy() - g).max())
            assert diff <= TOL, f"{name}: differs from eager by {diff:.2e}"


def test_onnx_file_is_checked_portable_and_says_its_runtime(tiny_onnx) -> None:
    _, onnx_dir, _ = tiny_onnx
    proto = onnx.load(str(onnx_dir / ONNX_MODEL_FILENAME))
    onnx.checker.check_model(proto, full_check=True)
    assert device_pins(proto) == []
    assert {o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")} == {OPSET}
    assert [i.name for i in proto.graph.input] == [
        "input_ids", "attention_mask", "pixel_values", "has_text", "has_image"]  # fmt: skip
    assert [o.name for o in proto.graph.output] == ["logits", "contributions"]
    batch_dims = {i.type.tensor_type.shape.dim[0].dim_param for i in proto.graph.input}
    assert len(batch_dims) == 1 and "" not in batch_dims  # one symbolic batch axis
    cfg = ModelConfig.load(onnx_dir)
    assert cfg.runtime == "onnx" and cfg.model_filename == ONNX_MODEL_FILENAME
    assert not (onnx_dir / "model.pt").exists()
    assert (onnx_dir / "vocab.txt").exists() and (onnx_dir / "tokenizer.json").exists()


def test_onnx_pipeline_answers_like_torchscript(tiny_onnx) -> None:
    """Same pipeline, other runtime: identical labels and errors, probabilities within 1e-4."""
    _, onnx_dir, ts_dir = tiny_onnx
    requests = [
        {"text": "what a lovely day", "image": jpeg_bytes()},
        {"text": "terrible service"},
        {"image": jpeg_bytes((90, 120), (20, 160, 40))},
        {"image": b"not an image"},
        {},
    ]
    onnx_pipe = SentimentPipeline.from_dir(onnx_dir)
    assert type(onnx_pipe.model).__name__ == "OnnxModel"
    got = Exchange(onnx_pipe).predict(requests)
    want = Exchange(SentimentPipeline.from_dir(ts_dir)).predict(requests)
    for a, b in zip(got, want, strict=True):
        if "error" in b:
            assert a == b
            continue
        assert a["label"] == b["label"] and a["modalities"] == b["modalities"]
        for key in ("probabilities", "contributions"):
            for k, v in b[key].items():
                assert abs(a[key][k] - v) <= TOL, (key, k)


@pytest.mark.gpu
def test_onnx_runs_on_the_cuda_execution_provider(tiny_onnx) -> None:
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("onnxruntime here is the CPU build (install onnxruntime-gpu on GPU hosts)")
    _, onnx_dir, _ = tiny_onnx
    cpu = SentimentPipeline.from_dir(onnx_dir, "cpu")
    gpu = SentimentPipeline.from_dir(onnx_dir, "cuda:0")
    assert gpu.model.providers[0] == "CUDAExecutionProvider"
    inputs = example_inputs(ModelConfig.load(onnx_dir), batch=5, seq=10, seed=4)
    for a, b in zip(cpu.model(*inputs), gpu.model(*inputs), strict=True):
        torch.testing.assert_close(a, b, atol=1e-3, rtol=0)
