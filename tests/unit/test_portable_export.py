"""The CPU-side guards for GPU serving: what CI (no GPU) can prove about the exported graph.

The archive is traced on a CPU machine. If the graph pins ``device=cpu`` or float32, the first
forward on ``cuda:N`` (or in fp16) fails, in the worker's warm-up, on every GPU host. These
tests inspect the saved graph the way the GPU would meet it, run it in half precision on the
CPU, and check that the handler hands the model to the GPU TorchServe assigned.
"""

from __future__ import annotations

import importlib.util
import io
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
from ts.context import Context

from conftest import MODEL_NAME, b64, jpeg_bytes, tiny_config
from mmsent.config import FUSIONS, MODEL_FILENAME, ModelConfig
from mmsent.modeling.export import (
    ExportError,
    example_inputs,
    export_model_dir,
    trace,
    triage_tracer_warnings,
)
from mmsent.modeling.model import build_model
from mmsent.modeling.portable_graph import make_portable, pinned_constants
from mmsent.serving.exchange import Exchange
from mmsent.serving.imaging import decode_image
from mmsent.serving.pipeline import SentimentPipeline, resolve_dtype

HANDLER_PATH = Path(__file__).resolve().parents[2] / "handlers" / "fusion_handler.py"


def _graphs(path: Path) -> dict[str, torch._C.Graph]:
    """The saved model's graph as TorchServe meets it: inlined, and frozen as served."""
    loaded = torch.jit.load(str(path / MODEL_FILENAME)).eval()
    return {"inlined": loaded.inlined_graph, "frozen": torch.jit.freeze(loaded).graph}


@pytest.fixture(scope="module")
def tiny_exports(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = {}
    for fusion in FUSIONS:
        torch.manual_seed(0)
        cfg = tiny_config(fusion=fusion)
        out[fusion] = export_model_dir(
            build_model(cfg), cfg, tmp_path_factory.mktemp(f"export_{fusion}")
        )
    return out


@pytest.mark.parametrize("fusion", FUSIONS)
def test_exported_graph_pins_no_device_and_no_float_dtype(
    tiny_exports: dict[str, Path], fusion: str
) -> None:
    """No Device constant and no float32 ``dtype=`` constant reaches any op.

    On the pre-fix export this listed 13 (8 device, 5 dtype) for the attention model, e.g.
    ``aten::to(device=cpu) at transformers/masking_utils.py:846`` and
    ``aten::zeros(device=cpu) at mmsent/modeling/model.py:95``.
    """
    for kind, graph in _graphs(tiny_exports[fusion]).items():
        assert pinned_constants(graph) == [], f"{kind} graph of {fusion}"


def test_default_model_graph_is_portable(tmp_path: Path) -> None:
    """The real MiniLM + MobileNetV2 model, as the default archive ships it."""
    torch.manual_seed(0)
    cfg = ModelConfig()
    export_model_dir(build_model(cfg), cfg, tmp_path)
    for kind, graph in _graphs(tmp_path).items():
        assert pinned_constants(graph) == [], kind


class _Pinned(torch.nn.Module):
    """What tracing turns into constants: an explicit device and an explicit float dtype."""

    def forward(self, input_ids: torch.Tensor, pixel_values: torch.Tensor) -> torch.Tensor:
        bias = torch.zeros(input_ids.shape[0], 1, device=input_ids.device)
        return pixel_values.sum(-1, keepdim=True) + bias + input_ids.to(torch.float32)


def test_checker_sees_pinned_constants_and_the_pass_rewires_them_to_the_inputs() -> None:
    ids, pixels = torch.ones(2, 1, dtype=torch.long), torch.rand(2, 3)
    traced = torch.jit.trace(_Pinned(), (ids, pixels))
    before = pinned_constants(traced.inlined_graph)
    assert {(p.op, p.argument, p.value) for p in before} == {
        ("aten::zeros", "device", "cpu"), ("aten::zeros", "dtype", "default (float32)"),
        ("aten::to", "dtype", "float32"),
    }  # fmt: skip
    assert make_portable(traced) == 3
    buffer = io.BytesIO()
    torch.jit.save(traced, buffer)
    buffer.seek(0)
    portable = torch.jit.load(buffer)
    assert pinned_constants(portable.inlined_graph) == []
    torch.testing.assert_close(portable(ids, pixels), _Pinned()(ids, pixels))
    half = portable(ids, pixels.to(torch.bfloat16))  # the dtype now follows pixel_values
    assert half.dtype == torch.bfloat16


class _MaskFill(torch.nn.Module):
    """transformers' idiom: masked scores filled with finfo(float32).min, traced as a constant."""

    def forward(self, input_ids: torch.Tensor, pixel_values: torch.Tensor) -> torch.Tensor:
        scores = pixel_values.unsqueeze(1) * pixel_values.unsqueeze(2)
        scores = scores.masked_fill(input_ids.unsqueeze(1) == 0, torch.finfo(torch.float32).min)
        return scores.softmax(-1)


class _OddConstant(torch.nn.Module):
    """A float constant float16 cannot hold that is *not* the mask idiom: reported, not rewired."""

    def forward(self, input_ids: torch.Tensor, pixel_values: torch.Tensor) -> torch.Tensor:
        return pixel_values.clamp(max=1e6) + input_ids


def test_mask_fill_outside_float16_is_rewired_to_float16_minimum() -> None:
    """The fp16 forward on CUDA refused finfo(float32).min ("cannot be converted to type
    c10::Half without overflow"); the checker sees such a constant and the pass replaces it."""
    ids = torch.tensor([[1, 1, 0], [1, 0, 0]])
    pixels = torch.rand(2, 3)
    traced = torch.jit.trace(_MaskFill(), (ids, pixels))
    before = pinned_constants(traced.inlined_graph)
    assert any(p.value.endswith("(outside float16)") for p in before), before
    assert make_portable(traced) >= 1
    buffer = io.BytesIO()  # a traced module keeps its cached plan: run the saved file
    torch.jit.save(traced, buffer)
    buffer.seek(0)
    portable = torch.jit.load(buffer)
    assert pinned_constants(portable.inlined_graph) == []
    fills = [n.f("value") for n in portable.inlined_graph.nodes()
             if n.kind() == "prim::Constant" and n.output().type().kind() == "FloatType"]
    assert -float(torch.finfo(torch.float16).max) in fills
    torch.testing.assert_close(portable(ids, pixels), _MaskFill()(ids, pixels))
    with pytest.raises(RuntimeError, match="without overflow"):
        _MaskFill()(ids, pixels.half())  # what the traced constant did on the GPU
    half = portable(ids, pixels.half())
    assert half.dtype == torch.float16 and torch.isfinite(half).all()
    assert half[1, :, 1:].abs().max() == 0  # masked keys still weigh exactly nothing

    odd = torch.jit.trace(_OddConstant(), (ids, pixels))
    make_portable(odd)
    assert [p.value for p in pinned_constants(odd.inlined_graph)] == ["1000000 (outside float16)"]


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_half_precision_runs_the_exported_graph_on_cpu(
    tiny_exports: dict[str, Path], precision: str
) -> None:
    """The archive's graph runs in half precision: no float32 constant survives to break it.

    (Before the fix this raised in the TorchScript interpreter at the first attention mask.)
    """
    fp32 = SentimentPipeline.from_dir(tiny_exports["attention"], precision="fp32")
    half = SentimentPipeline.from_dir(tiny_exports["attention"], precision=precision)
    assert half.dtype == resolve_dtype(precision, "cpu") != torch.float32
    images = [b64(jpeg_bytes(color=(9 * i, 80, 30))) for i in range(5)]
    requests = [{"body": f'{{"text": "great day {i}", "image": "{im}"}}'}
                for i, im in enumerate(images)]  # fmt: skip
    requests += [{"text": "text only"}, {"image": jpeg_bytes()}]
    ref, got = Exchange(fp32).predict(requests), Exchange(half).predict(requests)
    for a, b in zip(ref, got, strict=True):
        assert set(b) == set(a)
        diff = max(abs(a["probabilities"][k] - b["probabilities"][k]) for k in a["probabilities"])
        assert diff < 0.02, (precision, diff)
        assert abs(sum(b["probabilities"].values()) - 1) < 1e-4  # softmax stays fp32


def test_pixels_travel_as_uint8_and_are_normalised_like_training(
    tiny_exports: dict[str, Path],
) -> None:
    """Serving normalises on the model's device; the numbers equal training's CPU path."""
    pipe = SentimentPipeline.from_dir(tiny_exports["attention"])
    image = jpeg_bytes(size=(300, 200), color=(10, 200, 90))
    batch = pipe.preprocess([{"image": image}, {"text": "no image here"}])
    assert batch.tensors["pixels"].dtype == torch.uint8
    _, _, pixels, has_text, has_image = pipe.model_inputs(batch)
    assert pixels.dtype == torch.float32 and pixels.device == pipe.device
    torch.testing.assert_close(pixels[0], decode_image(image, pipe.cfg))
    assert not pixels[1].any()  # no image: an inert all-zero row
    assert has_text.tolist() == [0.0, 1.0] and has_image.tolist() == [1.0, 0.0]


def test_precision_travels_in_the_archive_config(tiny_exports: dict[str, Path]) -> None:
    assert ModelConfig.load(tiny_exports["attention"]).precision == "auto"
    assert tiny_config(precision="fp16").replace().precision == "fp16"
    with pytest.raises(ValueError, match="precision"):
        tiny_config(precision="int4")
    assert resolve_dtype("auto", "cpu") == torch.float32
    assert resolve_dtype("auto", "cuda:1") == torch.float16
    assert resolve_dtype("bf16", "cuda:0") == torch.bfloat16


# -- tracer warnings: device/dtype ones fail the export, others are shown, none is hidden ------
def _warning(message: str, filename: str, category: type[Warning]) -> warnings.WarningMessage:
    return warnings.WarningMessage(message, category, filename, 1)


def test_device_or_dtype_tracer_warning_fails_the_export() -> None:
    caught = [_warning("torch.tensor results are registered as constants; device cpu is fixed",
                       "/x/transformers/masking_utils.py", torch.jit.TracerWarning)]
    with pytest.raises(ExportError, match="device/dtype"):
        triage_tracer_warnings(caught)


def test_unknown_tracer_warning_is_shown_not_hidden() -> None:
    caught = [_warning("Iterating over a tensor might cause the trace to be incorrect",
                       "/x/somewhere/new.py", torch.jit.TracerWarning)]
    with pytest.warns(torch.jit.TracerWarning, match="Iterating over a tensor"):
        assert triage_tracer_warnings(caught) == []


def test_tracing_the_model_raises_only_the_known_tracer_warnings() -> None:
    """Pins the list of accepted tracer warnings: a new kind (e.g. after a transformers
    upgrade) fails here and gets read, instead of disappearing under a class filter."""
    torch.manual_seed(0)
    cfg = tiny_config()
    with warnings.catch_warnings(record=True) as shown:
        warnings.simplefilter("always")
        trace(build_model(cfg), cfg)
    assert not [w for w in shown if issubclass(w.category, torch.jit.TracerWarning)]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", torch.jit.TracerWarning)
        with torch.no_grad():
            torch.jit.trace(build_model(cfg).eval(), example_inputs(cfg), strict=False,
                            check_trace=False)
    tracer = [w for w in caught if issubclass(w.category, torch.jit.TracerWarning)]
    assert sorted(triage_tracer_warnings(tracer)) == [
        "Converting a tensor to a Python boolean might cause the trace to be incorrect "
        "(functional.py)",
        "Converting a tensor to a Python boolean might cause the trace to be incorrect "
        "(masking_utils.py)",
        "Converting a tensor to a Python float might cause the trace to be incorrect "
        "(functional.py)",
    ]


# -- the handler uses the GPU TorchServe assigned -----------------------------------------------
def _handler_module() -> Any:
    spec = importlib.util.spec_from_file_location("fusion_handler_gpu", HANDLER_PATH)
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(module)
    return module


def test_serving_device_follows_the_assigned_gpu() -> None:
    device = _handler_module().serving_device
    assert device(None, True) == "cpu"
    assert device(2, False) == "cpu"  # a gpu_id but no usable CUDA: CPU, not a crash
    assert device(0, True) == "cuda:0"
    assert device("3", True) == "cuda:3"


def test_handler_loads_on_the_gpu_torchserve_assigned(
    tiny_exports: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker given gpu_id=3 loads on cuda:3 and makes it current (never a default cuda:0).

    CUDA is absent here, so the CUDA calls are recorded instead of run; the real thing runs in
    tests/test_gpu.py wherever a GPU exists.
    """
    module = _handler_module()
    seen: dict[str, str] = {}
    monkeypatch.setattr(module.torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(module.torch.cuda, "set_device", lambda d: seen.setdefault("current", d))
    real_from_dir = module.SentimentPipeline.from_dir

    def from_dir(model_dir: str, device: str = "cpu", **options: Any) -> Any:
        seen["loaded_on"] = device
        return real_from_dir(model_dir, "cpu", **options)

    monkeypatch.setattr(module.SentimentPipeline, "from_dir", from_dir)
    handler = module.FusionSentimentHandler()
    handler.initialize(Context(MODEL_NAME, str(tiny_exports["attention"]), {}, 8, 3, "0.12.0"))
    assert seen == {"loaded_on": "cuda:3", "current": "cuda:3"}
