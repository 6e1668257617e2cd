"""Open Inference Protocol (v2) over gRPC and the v2 health / metadata routes, against a real
TorchServe 0.12 started with ``TS_OPEN_INFERENCE_PROTOCOL=oip`` (this module's own server: the
session one runs without it, and only this mode serves v2 gRPC and v2 health).

What is pinned here (docs/calling.md, "Open Inference Protocol (v2)"): TorchServe's v2 gRPC
service is ``org.pytorch.serve.grpc.openinference.GRPCInferenceService``, so stock clients,
which call ``inference.GRPCInferenceService``, get UNIMPLEMENTED; stubs generated from the
jar's proto reach the handler and get a real ``ModelInferResponse``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest
import requests

from conftest import MODEL_NAME, b64, jpeg_bytes
from mmsent.clients.grpc import PredictionError
from mmsent.clients.grpc_stubs import open_inference_grpc_pb2 as pb
from mmsent.clients.open_inference import OpenInferenceGrpcClient, V2Answer
from mmsent.harness.torchserve import TorchServe

pytestmark = pytest.mark.server

LABELS = ("negative", "neutral", "positive")
TEXTS = ["the staff were friendly", "terrible service, never again", None]
IMAGES = [jpeg_bytes((160, 120), (40, 120, 200)), None, jpeg_bytes((200, 300), (20, 160, 40))]


@pytest.fixture(scope="module")
def oip_server(tiny_build: tuple[Path, Path]) -> Iterator[TorchServe]:
    store, _ = tiny_build
    env = {"TS_OPEN_INFERENCE_PROTOCOL": "oip"}
    with TorchServe(store, {MODEL_NAME: f"{MODEL_NAME}.mar"}, env=env) as ts:
        yield ts


@pytest.fixture(scope="module")
def client(oip_server: TorchServe) -> Iterator[OpenInferenceGrpcClient]:
    with OpenInferenceGrpcClient(oip_server.grpc_target, timeout=120) as c:
        yield c


def _predictions(server: TorchServe, text: str | None, image: bytes | None) -> dict:
    body = {k: v for k, v in {"text": text, "image": b64(image) if image else None}.items() if v}
    resp = requests.post(f"{server.inference_url}/predictions/{MODEL_NAME}", json=body, timeout=120)
    assert resp.status_code == 200, resp.text
    return resp.json()


def _assert_equals_predictions(answer: V2Answer, expected: list[dict]) -> None:
    assert answer.outputs["label"] == [e["label"] for e in expected]
    for row, want in zip(answer.outputs["probabilities"], expected, strict=True):
        assert row == pytest.approx([want["probabilities"][k] for k in LABELS], abs=1e-5)
    for row, want in zip(answer.outputs["contributions"], expected, strict=True):
        assert row == pytest.approx([want["contributions"][m] for m in ("text", "image")],
                                    abs=1e-4)  # fmt: skip


def test_model_infer_reaches_the_handler_and_equals_predictions(
    oip_server: TorchServe, client: OpenInferenceGrpcClient
) -> None:
    expected = [_predictions(oip_server, t, i) for t, i in zip(TEXTS, IMAGES, strict=True)]
    answer = client.infer(TEXTS, IMAGES, request_id="g-1")
    assert (answer.request_id, answer.model_name, answer.model_version) == (
        "g-1", MODEL_NAME, "1.0")  # fmt: skip
    _assert_equals_predictions(answer, expected)


def test_refusal_is_ok_with_error_outputs_and_harms_no_batch_mate(
    oip_server: TorchServe, client: OpenInferenceGrpcClient
) -> None:
    """gRPC status OK + outputs error/code (TorchServe drops the item status); concurrent
    good v2 calls are answered right; the worker did not restart."""
    expected = [_predictions(oip_server, TEXTS[0], IMAGES[0])]
    pids = oip_server.worker_pids(MODEL_NAME)
    barrier = threading.Barrier(6)

    def good(_: int) -> V2Answer:
        barrier.wait(timeout=60)
        return client.infer(TEXTS[:1], IMAGES[:1])

    def bad(texts: list[str | None], images: list[bytes | None] | None) -> PredictionError:
        barrier.wait(timeout=60)
        with pytest.raises(PredictionError) as caught:
            client.infer(texts, images, request_id="bad-1")
        return caught.value

    with ThreadPoolExecutor(max_workers=6) as pool:
        goods = [pool.submit(good, i) for i in range(4)]
        bad_image = pool.submit(bad, ["fine", None], [None, b"no pixels here"])
        too_many = pool.submit(bad, ["a"] * 33, None)
        for future in goods:
            _assert_equals_predictions(future.result(), expected)
    err = bad_image.result()
    assert err.grpc_code == grpc.StatusCode.OK and err.status == 400
    assert err.code == grpc.StatusCode.INVALID_ARGUMENT
    assert err.message.startswith("item 1: ") and "not a recognised image format" in err.message
    assert too_many.result().status == 413 and "at most 32" in too_many.result().message
    assert oip_server.worker_pids(MODEL_NAME) == pids, "the worker restarted"


def test_health_and_metadata_in_oip_mode(
    oip_server: TorchServe, client: OpenInferenceGrpcClient
) -> None:
    """What the frontend itself answers (the handler is never asked), measured on 0.12.0."""

    def get(path: str) -> requests.Response:
        return requests.get(oip_server.inference_url + path, timeout=30)

    assert get("/v2/health/live").json() == {"live": True}
    assert get("/v2/health/ready").json() == {"ready": True}  # constant: no model check
    server_meta = get("/v2").json()
    assert server_meta["name"] == "Torchserve" and server_meta["version"] == "0.12.0"
    assert get(f"/v2/models/{MODEL_NAME}").status_code == 404  # model metadata: not routed
    assert get(f"/v2/models/{MODEL_NAME}/ready").status_code == 404  # model ready: not routed
    assert client.server_live() and client.server_ready() and client.model_ready()
    with pytest.raises(grpc.RpcError) as missing:
        client.model_ready("nope")
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND
    meta = client.model_metadata()
    assert (meta.name, list(meta.versions), list(meta.inputs)) == (MODEL_NAME, ["1.0"], [])
    with pytest.raises(grpc.RpcError) as unimplemented:
        client.stub.ServerMetadata(pb.ServerMetadataRequest(), timeout=30)
    assert unimplemented.value.code() == grpc.StatusCode.UNIMPLEMENTED


STOCK_CLIENT = """
import json, sys
import numpy as np
import tritonclient.grpc as tg
client = tg.InferenceServerClient(sys.argv[1])
text = tg.InferInput("text", [1], "BYTES")
text.set_data_from_numpy(np.array([b"great"], dtype=object))
try:
    client.infer(sys.argv[2], [text])
except tg.InferenceServerException as err:
    print(json.dumps({"status": err.status(), "message": err.message()}))
"""


def test_stock_triton_grpc_client_gets_unimplemented(oip_server: TorchServe) -> None:
    """tritonclient.grpc calls inference.GRPCInferenceService (pytorch/serve#3394). In a
    subprocess: it cannot share a process with kserve (duplicate ``inference.*`` symbols)."""
    run = subprocess.run([sys.executable, "-c", STOCK_CLIENT, oip_server.grpc_target, MODEL_NAME],
                         capture_output=True, text=True, timeout=120, check=True)  # fmt: skip
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result["status"] == "StatusCode.UNIMPLEMENTED"
    assert "inference.GRPCInferenceService/ModelInfer" in result["message"]


THROUGH_PROXY = """
import json, sys
import numpy as np
import tritonclient.grpc as tg
client = tg.InferenceServerClient(sys.argv[1])
texts, images = json.loads(sys.argv[3]), [bytes.fromhex(h) for h in json.loads(sys.argv[4])]
text = tg.InferInput("text", [len(texts)], "BYTES")
text.set_data_from_numpy(np.array([t.encode() for t in texts], dtype=object))
image = tg.InferInput("image", [len(images)], "BYTES")
image.set_data_from_numpy(np.array(images, dtype=object))
result = client.infer(sys.argv[2], [text, image], request_id="stock-1")
out = {"live": client.is_server_live(), "model_ready": client.is_model_ready(sys.argv[2]),
       "id": result.get_response().id,
       "label": [v.decode() for v in result.as_numpy("label")],
       "probabilities": result.as_numpy("probabilities").tolist()}
blank = tg.InferInput("text", [2], "BYTES")
blank.set_data_from_numpy(np.array([b"fine", b" "], dtype=object))
try:
    client.infer(sys.argv[2], [blank])
except tg.InferenceServerException as err:
    out["error"] = [err.status(), err.message()]
print(json.dumps(out))
"""


def test_stock_triton_grpc_client_works_through_the_renaming_proxy(oip_server: TorchServe) -> None:
    """mmsent.clients.oip_proxy: inference.GRPCInferenceService -> TorchServe's own service."""
    from mmsent.clients.oip_proxy import OipProxy

    texts, images = ["the staff were friendly", ""], [IMAGES[0], IMAGES[2]]
    expected = [_predictions(oip_server, t or None, i) for t, i in zip(texts, images, strict=True)]
    with OipProxy(oip_server.grpc_target) as proxy:
        args = [proxy.target, MODEL_NAME, json.dumps(texts), json.dumps([i.hex() for i in images])]
        run = subprocess.run([sys.executable, "-c", THROUGH_PROXY, *args], capture_output=True,
                             text=True, timeout=120, check=True)  # fmt: skip
    out = json.loads(run.stdout.strip().splitlines()[-1])
    assert out["live"] and out["model_ready"] and out["id"] == "stock-1"
    assert out["label"] == [e["label"] for e in expected]
    for row, want in zip(out["probabilities"], expected, strict=True):
        assert row == pytest.approx([want["probabilities"][k] for k in LABELS], abs=1e-5)
    assert out["error"][0] == "StatusCode.INVALID_ARGUMENT"
    assert out["error"][1].startswith('item 1: request needs non-empty "text"')
