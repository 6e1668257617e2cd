"""The ONNX archive on a real TorchServe: same handler, same answers as the TorchScript archive.

One server serves both archives of the same tiny model (TorchScript as ``fusion_sentiment``,
ONNX as ``fusion_sentiment_onnx``); every request goes to both and the answers are compared.
"""

from __future__ import annotations

import shutil
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import requests
import torch

from conftest import MODEL_NAME, TINY_ARGS, b64, jpeg_bytes
from mmsent.clients.grpc import GrpcClient, PredictionError
from mmsent.config import ModelConfig
from mmsent.harness.torchserve import TorchServe
from mmsent.packaging.build import main as build_main

pytestmark = pytest.mark.server
ONNX_NAME = f"{MODEL_NAME}_onnx"
TOL = 1e-4
CASES = [  # (text, image bytes)
    ("what a lovely day", jpeg_bytes()),
    ("terrible service, never again", None),
    (None, jpeg_bytes((200, 300), (20, 160, 40))),
]
GOOD = [{k: v for k, v in {"text": t, "image": b64(i) if i else None}.items() if v}
        for t, i in CASES]  # fmt: skip
BAD = {"image": b64(b"this is not an image")}


@pytest.fixture(scope="module")
def both(tiny_build, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TorchServe]:
    """A TorchServe serving the tiny TorchScript archive and the same model exported to ONNX."""
    ts_store, ts_export = tiny_build
    root = tmp_path_factory.mktemp("onnx_build")
    store = root / "store"
    store.mkdir()
    shutil.copy2(ts_store / f"{MODEL_NAME}.mar", store)
    torch.manual_seed(0)  # the same seed tiny_build uses: the same random weights
    build_main([*TINY_ARGS, "--format", "onnx", "--out", str(store), "--export-dir",
                str(root / "export"), "--model-name", ONNX_NAME])  # fmt: skip
    assert ModelConfig.load(root / "export").runtime == "onnx"
    models = {MODEL_NAME: f"{MODEL_NAME}.mar", ONNX_NAME: f"{ONNX_NAME}.mar"}
    with TorchServe(store, models) as ts:
        yield ts


def _rest(server: TorchServe, model: str, body: dict[str, Any]) -> tuple[int, dict]:
    resp = requests.post(f"{server.inference_url}/predictions/{model}", json=body, timeout=120)
    return resp.status_code, resp.json()


def _assert_same(onnx_answer: dict, ts_answer: dict) -> None:
    if "error" in ts_answer:
        assert onnx_answer == ts_answer
        return
    assert onnx_answer["label"] == ts_answer["label"]
    assert onnx_answer["modalities"] == ts_answer["modalities"]
    for key in ("probabilities", "contributions"):
        for k, v in ts_answer[key].items():
            assert abs(onnx_answer[key][k] - v) <= TOL, (key, k, onnx_answer[key][k], v)


def test_onnx_archive_answers_like_torchscript_over_rest(both) -> None:
    for body in GOOD:
        s1, onnx_answer = _rest(both, ONNX_NAME, body)
        s2, ts_answer = _rest(both, MODEL_NAME, body)
        assert s1 == s2 == 200
        _assert_same(onnx_answer, ts_answer)


def test_onnx_archive_answers_like_torchscript_over_grpc(both) -> None:
    with GrpcClient(both.grpc_target, both.grpc_management_target, timeout=120) as client:
        for text, image in CASES:
            _assert_same(client.predict(ONNX_NAME, text=text, image=image),
                         client.predict(MODEL_NAME, text=text, image=image))
        errors = []
        for model in (ONNX_NAME, MODEL_NAME):
            with pytest.raises(PredictionError) as caught:
                client.predict(model, image=b"this is not an image")
            errors.append((caught.value.status, caught.value.code, caught.value.message))
        assert errors[0] == errors[1]


def _burst(server: TorchServe, model: str) -> list[tuple[int, dict]]:
    """The good bodies twice and one bad one, released together so they share batches."""
    bodies = [*GOOD, BAD, *GOOD]
    barrier = threading.Barrier(len(bodies))

    def fire(body: dict[str, Any]) -> tuple[int, dict]:
        barrier.wait()
        return _rest(server, model, body)

    with ThreadPoolExecutor(len(bodies)) as pool:
        return list(pool.map(fire, bodies))


def test_a_bad_item_in_a_burst_behaves_identically(both) -> None:
    onnx_answers, ts_answers = _burst(both, ONNX_NAME), _burst(both, MODEL_NAME)
    assert [s for s, _ in onnx_answers] == [s for s, _ in ts_answers]
    assert onnx_answers[len(GOOD)][0] == 400
    for (_, a), (_, b) in zip(onnx_answers, ts_answers, strict=True):
        _assert_same(a, b)
