"""GPU serving: the parity, pipeline, handler and real-server checks, re-run on CUDA.

Every test marked ``gpu`` skips cleanly where CUDA is absent (CI, this repo's CPU box) and runs
wherever a GPU exists: ``pytest -m gpu``. The one unmarked test proves on CPU what a CPU host
can: the GPU model-config packs, loads, and falls back to CPU without CUDA.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import requests
import torch

from conftest import MODEL_NAME, TINY_ARGS, b64, jpeg_bytes, tiny_config
from mmsent.config import MODEL_FILENAME
from mmsent.harness.torchserve import TorchServe
from mmsent.modeling.export import example_inputs, export_model_dir
from mmsent.modeling.model import build_model
from mmsent.serving.exchange import Exchange
from mmsent.serving.pipeline import SentimentPipeline

ROOT = Path(__file__).resolve().parents[2]
GPU_MODEL_CONFIG = ROOT / "handlers" / "model-config.gpu.yaml"
TOL = 1e-4


gpu = pytest.mark.gpu  # skipped without CUDA by conftest.py


def _cuda_works() -> bool:
    from conftest import cuda_works

    return cuda_works()


def _requests() -> list[dict]:
    images = [b64(jpeg_bytes(color=(40 * i, 120, 60))) for i in range(4)]
    out: list[dict] = [{"body": json.dumps({"text": f"what a day {i}", "image": im})}
                       for i, im in enumerate(images)]  # fmt: skip
    return out + [{"text": "text only"}, {"image": jpeg_bytes()}, {"body": b"{bad json"}]


def _max_prob_diff(a: list[dict], b: list[dict]) -> float:
    diffs = [0.0]
    for x, y in zip(a, b, strict=True):
        assert ("error" in x) == ("error" in y)
        p, q = x.get("probabilities", {}), y.get("probabilities", {})
        diffs += [abs(p[k] - q[k]) for k in p]
    return max(diffs)


def _build(store: Path, yaml: Path) -> Path:
    from mmsent.packaging.build import main as build_main

    torch.manual_seed(0)
    return build_main([*TINY_ARGS, "--out", str(store), "--model-name", MODEL_NAME,
                       "--model-config", str(yaml)])  # fmt: skip


def _worker_devices(server: TorchServe) -> list[tuple[str, str]]:
    """(gpu_id, device) from each worker's load log line."""
    found = []
    for log in server.log_dir.glob("model_log*.log"):
        for m in re.finditer(r"gpu_id=(\S+) assigned, loaded on (\S+) ", log.read_text()):
            found.append((m.group(1), m.group(2)))
    return found


@pytest.mark.server
def test_gpu_model_config_serves_on_cpu_where_there_is_no_cuda(tmp_path: Path) -> None:
    """The GPU archive is valid, and on a CPU-only host TorchServe assigns no gpu_id: every
    worker loads on CPU and answers (never a crash looking for cuda:0)."""
    if _cuda_works():
        pytest.skip("this host has CUDA; test_server_uses_each_assigned_gpu covers it")
    _build(tmp_path / "store", GPU_MODEL_CONFIG)
    with TorchServe(tmp_path / "store", {MODEL_NAME: f"{MODEL_NAME}.mar"}) as ts:
        resp = requests.post(f"{ts.inference_url}/predictions/{MODEL_NAME}",
                             json={"text": "fine"}, timeout=60)  # fmt: skip
        assert resp.status_code == 200, resp.text
        devices = _worker_devices(ts)
    assert devices and set(devices) == {("None", "cpu")}


# -- on CUDA ------------------------------------------------------------------------------------
@gpu
def test_cpu_built_export_matches_eager_on_cuda(tmp_path: Path) -> None:
    """Built on CPU, loaded with map_location=cuda: same answers as eager on CPU (fp32)."""
    torch.backends.cudnn.allow_tf32 = False  # parity in true fp32
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.manual_seed(0)
    cfg = tiny_config()
    model = build_model(cfg)
    export_model_dir(model, cfg, tmp_path)
    scripted = torch.jit.load(str(tmp_path / MODEL_FILENAME), map_location="cuda").eval()
    for seed, batch in ((1, 1), (2, 5)):
        inputs = example_inputs(cfg, batch=batch, seq=9, seed=seed)
        with torch.no_grad():
            ref_logits, ref_contrib = model(*inputs)
            logits, contrib = scripted(*(x.cuda() for x in inputs))
        assert logits.device.type == "cuda"
        assert (logits.cpu() - ref_logits).abs().max().item() <= TOL
        assert (contrib.cpu() - ref_contrib).abs().max().item() <= TOL


@gpu
@pytest.mark.parametrize("precision", ["fp32", "fp16", "bf16"])
def test_pipeline_on_cuda_matches_cpu(tiny_build: tuple[Path, Path], precision: str) -> None:
    cpu = SentimentPipeline.from_dir(tiny_build[1], "cpu")
    cuda = SentimentPipeline.from_dir(tiny_build[1], "cuda:0", precision=precision)
    ref, got = Exchange(cpu).predict(_requests()), Exchange(cuda).predict(_requests())
    assert _max_prob_diff(ref, got) < (1e-3 if precision == "fp32" else 2e-2)
    assert "error" in got[-1] and got[-1]["code"] == 400  # per-item errors unchanged


@gpu
def test_handler_uses_the_gpu_it_was_given(tiny_build: tuple[Path, Path]) -> None:
    """The last GPU on the host (cuda:0 on a one-GPU box): never a hard-coded cuda:0."""
    import importlib.util

    # a host without TorchServe's Python package (not the GPU pack's case: it carries it)
    ts_context = pytest.importorskip(
        "ts.context", reason="TorchServe's Python package (ts) is not installed here"
    )

    spec = importlib.util.spec_from_file_location("fh", ROOT / "handlers" / "fusion_handler.py")
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(module)
    gpu_id = torch.cuda.device_count() - 1
    handler = module.FusionSentimentHandler()
    handler.initialize(ts_context.Context(MODEL_NAME, str(tiny_build[1]), {}, 8, gpu_id, "0.12.0"))
    assert handler.pipeline.device == torch.device(f"cuda:{gpu_id}")
    assert handler.pipeline.dtype == torch.float16  # precision "auto" on CUDA
    batch = handler.pipeline.preprocess(_requests())
    assert all(t.device == torch.device(f"cuda:{gpu_id}")
               for t in handler.pipeline.model_inputs(batch))  # fmt: skip


@gpu
@pytest.mark.server
def test_server_uses_each_assigned_gpu(tmp_path: Path, tiny_build: tuple[Path, Path]) -> None:
    """A real TorchServe with deviceType gpu over every GPU of the host: each worker loads on
    the GPU TorchServe assigned it, and answers equal the CPU pipeline's."""
    ids = list(range(torch.cuda.device_count()))
    yaml = tmp_path / "model-config.yaml"
    yaml.write_text(GPU_MODEL_CONFIG.read_text().replace("deviceIds: [0, 1]", f"deviceIds: {ids}")
                    .replace("minWorkers: 4", f"minWorkers: {2 * len(ids)}")
                    .replace("maxWorkers: 4", f"maxWorkers: {2 * len(ids)}"))  # fmt: skip
    _build(tmp_path / "store", yaml)
    reference = Exchange(SentimentPipeline.from_dir(tiny_build[1])).predict(
        [{"body": json.dumps({"text": "a fine day", "image": b64(jpeg_bytes())})}]
    )[0]
    with TorchServe(tmp_path / "store", {MODEL_NAME: f"{MODEL_NAME}.mar"}) as ts:
        for _ in range(4):
            resp = requests.post(f"{ts.inference_url}/predictions/{MODEL_NAME}",
                                 json={"text": "a fine day", "image": b64(jpeg_bytes())},
                                 timeout=60)  # fmt: skip
            assert resp.status_code == 200, resp.text
            assert _max_prob_diff([reference], [resp.json()]) < 2e-2
        devices = _worker_devices(ts)
    assert devices and all(dev == f"cuda:{gid}" for gid, dev in devices), devices
    assert {dev for _, dev in devices} == {f"cuda:{i}" for i in ids}


@gpu
@pytest.mark.server
def test_shipped_gpu_config_serves_on_this_host(tmp_path: Path) -> None:
    """handlers/model-config.gpu.yaml exactly as shipped, on whatever GPUs this host has: every
    worker loads on a GPU that exists and answers (a deviceIds entry past the host's last GPU
    must never leave a worker crash-looping)."""
    _build(tmp_path / "store", GPU_MODEL_CONFIG)
    with TorchServe(tmp_path / "store", {MODEL_NAME: f"{MODEL_NAME}.mar"}) as ts:
        for _ in range(4):
            resp = requests.post(f"{ts.inference_url}/predictions/{MODEL_NAME}",
                                 json={"text": "a fine day"}, timeout=60)  # fmt: skip
            assert resp.status_code == 200, resp.text
        devices = _worker_devices(ts)
    existing = {f"cuda:{i}" for i in range(torch.cuda.device_count())}
    assert devices and {dev for _, dev in devices} <= existing, devices
