"""gRPC ``StreamPredictions`` against a real TorchServe: one correct message, nobody harmed.

TorchServe 0.12's frontend reads the ``ts_stream_next`` response header on every stream answer
and throws a NullPointerException when the handler did not set it (``GRPCJob.response``): the
worker was restarted and every batch mate got "Worker died." (issue 9, item 1). The handler now
marks every gRPC answer as the last message of its stream. These tests fire stream calls inside
live batches of REST and unary gRPC requests and check the stream answer, the batch mates, the
worker pid and the frontend log.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
import pytest
import requests

from conftest import MODEL_NAME, jpeg_bytes
from mmsent.clients.grpc import GrpcClient, PredictionError
from mmsent.harness.torchserve import TorchServe

pytestmark = pytest.mark.server

TEXT = "the concert was wonderful"
IMAGE = jpeg_bytes((96, 80), (30, 160, 60))
TOL = 1e-4
ROUNDS = 3  # bursts; batches form on a busy 2-core box in at least one of them


@pytest.fixture(scope="module")
def client(server: TorchServe) -> GrpcClient:
    with GrpcClient(server.grpc_target, server.grpc_management_target, timeout=120) as c:
        yield c


def _same(answer: dict[str, Any], reference: dict[str, Any]) -> bool:
    return answer["label"] == reference["label"] and all(
        abs(answer["probabilities"][k] - v) <= TOL for k, v in reference["probabilities"].items()
    )


def _burst(calls: list[Callable[[], Any]]) -> list[Any]:
    """Run ``calls`` released together by a barrier, so they share a TorchServe batch."""
    barrier = threading.Barrier(len(calls))

    def run(call: Callable[[], Any]) -> Any:
        barrier.wait()
        return call()

    with ThreadPoolExecutor(max_workers=len(calls)) as pool:
        return list(pool.map(run, calls))


def _ts_log(server: TorchServe) -> str:
    path = server.log_dir / "ts_log.log"
    return path.read_text(errors="replace") if path.exists() else ""


def test_stream_predictions_answers_once_and_harms_no_batch_mate(
    server: TorchServe, client: GrpcClient
) -> None:
    reference = client.predict(MODEL_NAME, text=TEXT, image=IMAGE)
    pids = server.worker_pids(MODEL_NAME)
    npe_before = _ts_log(server).count("NullPointerException")
    url = f"{server.inference_url}/predictions/{MODEL_NAME}"
    fields = {"text": TEXT.encode(), "image": IMAGE}

    def rest() -> dict[str, Any]:
        resp = requests.post(url, files={"text": (None, TEXT), "image": ("a.jpg", IMAGE)},
                             timeout=120)  # fmt: skip
        assert resp.status_code == 200, resp.text
        assert "ts_stream_next" not in resp.headers  # REST must stay a plain response
        return resp.json()

    calls: list[Callable[[], Any]] = [
        lambda: client.stream_predict_raw(MODEL_NAME, fields),
        lambda: client.stream_predict_raw(MODEL_NAME, {"text": b"hi"}),  # the call
        rest, rest, rest,
        lambda: client.predict(MODEL_NAME, text=TEXT, image=IMAGE),
        lambda: client.predict(MODEL_NAME, text=TEXT, image=IMAGE),
    ]  # fmt: skip
    sizes: list[int] = []
    for _ in range(ROUNDS):
        stream, stream_hi, *mates = _burst(calls)
        assert len(stream) == 1 and len(stream_hi) == 1, (stream, stream_hi)
        answer = json.loads(stream[0])
        assert _same(answer, reference), (answer, reference)
        assert json.loads(stream_hi[0])["label"]
        for mate in mates:
            assert _same(mate, reference), (mate, reference)
        sizes += [answer["batch_size"], *(m["batch_size"] for m in mates)]
    assert max(sizes) > 1, f"no batch formed in {ROUNDS} bursts: {sizes}"
    assert server.worker_pids(MODEL_NAME) == pids, "the worker was restarted"
    assert _ts_log(server).count("NullPointerException") == npe_before
    assert client.predict(MODEL_NAME, text=TEXT, image=IMAGE)["label"] == reference["label"]


def test_stream_predictions_carries_a_per_item_error_as_one_message(
    server: TorchServe, client: GrpcClient
) -> None:
    pids = server.worker_pids(MODEL_NAME)
    messages = client.stream_predict_raw(MODEL_NAME, {"text": b"   "})
    assert len(messages) == 1
    body = json.loads(messages[0])
    assert body["code"] == 400 and "non-empty" in body["error"]
    with pytest.raises(PredictionError) as info:
        client.stream_predict(MODEL_NAME, image=b"not an image")
    assert info.value.status == 400 and info.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert client.stream_predict(MODEL_NAME, text=TEXT)["modalities"] == ["text"]
    assert server.worker_pids(MODEL_NAME) == pids
