"""Open Inference Protocol (v2) over REST against a real TorchServe, with clients nobody here
wrote (tritonclient.http, the kserve SDK): same answers as /predictions, batching, bad input.

TorchServe 0.12 routes ``POST /v2/models/{name}/infer`` to the handler with the body untouched,
whatever ``TS_OPEN_INFERENCE_PROTOCOL`` says (the session server runs without it). kserve and
tritonclient.grpc cannot share a process (both register ``inference.*`` protobuf symbols), so
kserve is imported inside its test only and tritonclient.grpc never here
(test_open_inference_grpc.py runs it in a subprocess).
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
import requests
import tritonclient.http as triton_http
from test_bad_input import GOOD_IMAGE, GOOD_TEXT, MARK, OVER_LIMIT, _bomb, _fire

from conftest import MODEL_NAME, b64, jpeg_bytes
from mmsent.harness.torchserve import TorchServe

pytestmark = pytest.mark.server

LABELS = ("negative", "neutral", "positive")
TOL = 1e-5  # answers are rounded to 6 decimals on both routes
MATE_TOL = 1e-4  # batch mates are padded to the longest text of their batch: float noise only
IMAGE_2 = jpeg_bytes((200, 300), (20, 160, 40))
ITEMS: list[tuple[str | None, bytes | None]] = [
    (GOOD_TEXT, GOOD_IMAGE), ("terrible service, never again", None), (None, IMAGE_2),
]  # fmt: skip


def _url(server: TorchServe, route: str = "infer") -> str:
    return f"{server.inference_url}/v2/models/{MODEL_NAME}/{route}"


def _predictions(server: TorchServe, text: str | None, image: bytes | None) -> dict[str, Any]:
    body = {k: v for k, v in {"text": text, "image": b64(image) if image else None}.items() if v}
    resp = requests.post(f"{server.inference_url}/predictions/{MODEL_NAME}", json=body, timeout=120)
    assert resp.status_code == 200, resp.text
    return resp.json()


def _v2_body(items: list[tuple[str | None, bytes | None]], **extra: Any) -> dict[str, Any]:
    """A JSON v2 request; a missing modality of one item is sent as an empty element."""
    n = len(items)
    texts = [t or "" for t, _ in items]
    images = [b64(i) if i else "" for _, i in items]
    return {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [n], "data": texts},
                       {"name": "image", "datatype": "BYTES", "shape": [n], "data": images}],
            **extra}  # fmt: skip


def _rows(outputs: dict[str, Any], name: str) -> list[list[float]]:
    out = outputs[name]
    width = out["shape"][1]
    return [out["data"][i : i + width] for i in range(0, len(out["data"]), width)]


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _assert_matches(labels: list[str], probs: Any, contribs: Any, expected: list[dict]) -> None:
    """v2 tensors (rows in LABELS / text,image order) equal the /predictions answers."""
    assert list(labels) == [e["label"] for e in expected]
    for row, want in zip(np.asarray(probs).tolist(), expected, strict=True):
        assert row == pytest.approx([want["probabilities"][k] for k in LABELS], abs=TOL)
    for row, want in zip(np.asarray(contribs).tolist(), expected, strict=True):
        assert row == pytest.approx([want["contributions"][m] for m in ("text", "image")],
                                    abs=1e-4)  # fmt: skip


@pytest.fixture(scope="module")
def expected(server: TorchServe) -> list[dict[str, Any]]:
    return [_predictions(server, t, i) for t, i in ITEMS]


# -- answers ------------------------------------------------------------------------------------
def test_json_v2_request_is_answered_item_by_item(server: TorchServe, expected: list) -> None:
    resp = requests.post(_url(server), json=_v2_body(ITEMS, id="req-1"), timeout=120)
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["model_name"] == MODEL_NAME and body["id"] == "req-1"
    outputs = {o["name"]: o for o in body["outputs"]}
    assert [(o["datatype"], o["shape"]) for o in outputs.values()] == [
        ("BYTES", [3]), ("FP32", [3, 3]), ("FP32", [3, 2])]  # fmt: skip
    _assert_matches(outputs["label"]["data"], _rows(outputs, "probabilities"),
                    _rows(outputs, "contributions"), expected)  # fmt: skip


@pytest.mark.parametrize("binary", [True, False], ids=["binary-extension", "json"])
def test_tritonclient_http_equals_predictions(server: TorchServe, expected: list,
                                              binary: bool) -> None:  # fmt: skip
    """tritonclient.http sends the binary tensor extension by default (and asks for binary
    outputs, which the handler may and does answer as JSON: the client reads both)."""
    client = triton_http.InferenceServerClient(server.inference_url.removeprefix("http://"),
                                               network_timeout=120.0)  # fmt: skip
    texts = np.array([(t or "").encode() for t, _ in ITEMS], dtype=object)
    images = np.array([i or b"" for _, i in ITEMS], dtype=object)
    inputs = [triton_http.InferInput("text", [3], "BYTES"),
              triton_http.InferInput("image", [3], "BYTES")]  # fmt: skip
    inputs[0].set_data_from_numpy(texts, binary_data=binary)
    if binary:
        inputs[1].set_data_from_numpy(images, binary_data=True)
    else:  # JSON BYTES must be UTF-8 text: the image goes base64, as the protocol allows
        b64_images = np.array([b64(i).encode() if i else b"" for _, i in ITEMS], dtype=object)
        inputs[1].set_data_from_numpy(b64_images, binary_data=False)
    result = client.infer(MODEL_NAME, inputs, request_id="t-1")
    assert result.get_response()["id"] == "t-1"
    labels = [_text(v) for v in result.as_numpy("label")]  # JSON BYTES come back as str
    _assert_matches(labels, result.as_numpy("probabilities"), result.as_numpy("contributions"),
                    expected)  # fmt: skip
    client.close()


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary-extension"])
def test_kserve_rest_client_equals_predictions(server: TorchServe, expected: list,
                                               binary: bool) -> None:  # fmt: skip
    from kserve import InferenceRESTClient, InferInput, InferRequest, RESTConfig

    texts = [(t or "").encode() for t, _ in ITEMS]
    images = [base64.b64encode(i).decode() if i else "" for _, i in ITEMS]
    if binary:
        text_in = InferInput("text", [3], "BYTES")
        text_in.set_data_from_numpy(np.array(texts, dtype=object), binary_data=True)
        image_in = InferInput("image", [3], "BYTES")
        image_in.set_data_from_numpy(np.array([i or b"" for _, i in ITEMS], dtype=object),
                                     binary_data=True)  # fmt: skip
    else:
        text_in = InferInput("text", [3], "BYTES", data=[t.decode() for t in texts])
        image_in = InferInput("image", [3], "BYTES", data=images)
    request = InferRequest(model_name=MODEL_NAME, infer_inputs=[text_in, image_in],
                           request_id="k-1")  # fmt: skip

    async def call() -> Any:
        client = InferenceRESTClient(RESTConfig(protocol="v2", timeout=120))
        try:
            return await client.infer(server.inference_url, request, model_name=MODEL_NAME)
        finally:
            await client.close()

    response = asyncio.run(call())
    assert response.id == "k-1" and response.model_name == MODEL_NAME
    out = {o.name: o.as_numpy() for o in response.outputs}
    labels = [_text(v) for v in out["label"].tolist()]
    _assert_matches(labels, out["probabilities"], out["contributions"], expected)


def test_concurrent_v2_calls_form_batches_with_predictions(server: TorchServe,
                                                           expected: list) -> None:  # fmt: skip
    """16 concurrent calls, v2 and /predictions interleaved: TorchServe batches them together
    (v2 answers say ``parameters.batch_size`` > 1) and every answer is still right."""
    body = _v2_body(ITEMS[:1])

    def call(i: int) -> tuple[int, dict[str, Any]]:
        if i % 2:
            return i, _predictions(server, *ITEMS[0])
        resp = requests.post(_url(server), json=body, timeout=120)
        assert resp.status_code == 200, resp.text
        return i, resp.json()

    sizes: list[int] = []
    for _ in range(3):  # a busy shared CPU can split a burst; three tries to see a real batch
        with ThreadPoolExecutor(max_workers=16) as pool:
            results = list(pool.map(call, range(16)))
        for i, answer in results:
            if i % 2:
                continue
            outputs = {o["name"]: o for o in answer["outputs"]}
            assert outputs["label"]["data"] == [expected[0]["label"]]
            assert outputs["probabilities"]["data"] == pytest.approx(
                [expected[0]["probabilities"][k] for k in LABELS], abs=MATE_TOL)
            sizes.append(answer["parameters"]["batch_size"])
        if max(sizes) > 1:
            break
    assert max(sizes) > 1, f"no v2 request was batched: batch sizes {sizes}"


def test_predictions_route_is_unchanged(server: TorchServe) -> None:
    """The strict /predictions rules still hold: an "inputs" key is v2, not a new field there;
    a body with v2 keys but no "inputs" is still an unknown-field 400 naming them."""
    resp = requests.post(f"{server.inference_url}/predictions/{MODEL_NAME}",
                         json={"text": "hi", "id": "x"}, timeout=60)  # fmt: skip
    assert resp.status_code == 400 and 'unknown JSON field "id"' in resp.json()["error"]
    ok = requests.post(f"{server.inference_url}/predictions/{MODEL_NAME}", json={"text": "hi"},
                       timeout=60)  # fmt: skip
    assert ok.status_code == 200 and set(ok.json()) >= {"label", "probabilities", "batch_size"}


def test_frontend_answers_without_oip_mode(server: TorchServe) -> None:
    """Without TS_OPEN_INFERENCE_PROTOCOL=oip the frontend routes only infer/explain: health,
    server and model metadata and model-ready are its 404 (measured on 0.12.0)."""
    for path in ("/v2", "/v2/health/live", "/v2/health/ready", f"/v2/models/{MODEL_NAME}",
                 f"/v2/models/{MODEL_NAME}/ready"):  # fmt: skip
        resp = requests.get(server.inference_url + path, timeout=30)
        assert resp.status_code == 404, (path, resp.text)
    unknown = requests.post(f"{server.inference_url}/v2/models/nope/infer", json={}, timeout=30)
    assert unknown.status_code == 404 and "Model not found: nope" in unknown.text


def test_v2_explain_route_is_refused(server: TorchServe) -> None:
    resp = requests.post(_url(server, "explain"), json=_v2_body(ITEMS[:1]), timeout=60)
    assert resp.status_code == 400
    assert resp.json() == {"error": resp.json()["error"]} and "/explanations" in resp.text


# -- hostile input in live batches -----------------------------------------------------------------
@dataclass(frozen=True)
class Bad:
    """One bad v2 request: requests.post kwargs, expected status and message fragment.
    ``handler``: the handler answers it (v2 ``{"error"}`` body); else the frontend does."""

    id: str
    kwargs: Callable[[], dict[str, Any]]
    status: int
    message: str
    handler: bool = True


def _tensor(name: str, data: list[Any], **extra: Any) -> dict[str, Any]:
    return {"name": name, "datatype": "BYTES", "shape": [len(data)], "data": data, **extra}


def _json(*inputs: dict[str, Any], **extra: Any) -> Callable[[], dict[str, Any]]:
    return lambda: {"json": {"inputs": list(inputs), **extra}}


def _binary_text(claimed: int, blob: bytes) -> dict[str, Any]:
    """A binary-extension request whose one text tensor claims ``claimed`` bytes of ``blob``."""
    tensor = {"name": "text", "datatype": "BYTES", "shape": [1],
              "parameters": {"binary_data_size": claimed}}  # fmt: skip
    head = json.dumps({"inputs": [tensor]}).encode()
    headers = {"Inference-Header-Content-Length": str(len(head)),
               "Content-Type": "application/octet-stream"}  # fmt: skip
    return {"data": head + blob, "headers": headers}


BAD: list[Bad] = [
    Bad("not-json", lambda: {"data": b'{"inputs": [' + MARK.encode(),
                             "headers": {"Content-Type": "application/json"}}, 400,
        "malformed JSON"),
    Bad("inputs-missing", lambda: {"json": {"id": MARK}}, 400, 'unknown JSON field "id"'),
    Bad("inputs-not-a-list", lambda: {"json": {"inputs": {"name": "text"}}}, 400,
        '"inputs" must be a non-empty list'),
    Bad("unknown-input-name", _json(_tensor("caption", [MARK])), 400, 'unknown input "caption"'),
    Bad("wrong-datatype", _json({**_tensor("text", [1.0]), "datatype": "FP32"}), 400,
        'must have datatype "BYTES", got "FP32"'),
    Bad("shape-vs-data", _json({**_tensor("text", ["a"]), "shape": [2]}), 400,
        "has shape [2] (2 items) but 1 data element"),
    Bad("n-mismatch", _json(_tensor("text", ["a", "b"]), _tensor("image", [b64(GOOD_IMAGE)])),
        400, "same number of items, got 2 and 1"),
    Bad("bad-base64", _json(_tensor("text", ["a", "b"]), _tensor("image", ["", "not b64!!"])),
        400, 'item 1: "image" is not valid base64'),
    Bad("non-image-bytes", _json(_tensor("image", [b64(b"no pixels " + MARK.encode())])), 400,
        "not a recognised image format"),
    Bad("empty-item", _json(_tensor("text", ["fine", " "])), 400,
        'item 1: request needs non-empty "text"'),
    Bad("empty-body", lambda: {"data": b"", "headers": {"Content-Type": "application/json"}},
        400, "request body is empty"),
    Bad("decompression-bomb", _json(_tensor("image", [b64(_bomb())])), 413,
        "refused before decoding"),
    Bad("too-many-items", _json(_tensor("text", ["a"] * 33)), 413, "at most 32 per request"),
    Bad("binary-size-lies", lambda: _binary_text(6, (10).to_bytes(4, "little") + b"ab"), 400,
        "element is cut short"),
    Bad("body-over-max-request-size", lambda: {"json": {"inputs": [_tensor("text", [
        "x" * OVER_LIMIT])]}}, 413, "", handler=False),
]  # fmt: skip


def _post(server: TorchServe, kwargs: dict[str, Any]) -> tuple[int, dict[str, Any], None]:
    resp = requests.post(_url(server), timeout=120, **kwargs)
    try:
        body = resp.json()
    except ValueError:
        body = {"raw": resp.text}
    return resp.status_code, body, None


@pytest.mark.parametrize("case", BAD, ids=[c.id for c in BAD])
def test_bad_v2_request_in_a_live_batch(server: TorchServe, expected: list, case: Bad) -> None:
    """The bad request gets its 4xx in the protocol's error form; its v2 batch mates (2 items
    each) get exactly the /predictions answers; batches formed; the worker did not restart."""
    good = {"json": _v2_body(ITEMS[:2])}
    pids = server.worker_pids(MODEL_NAME)
    sizes: list[int] = []
    for _ in range(3):
        bads, mates = _fire(lambda kw: _post(server, kw), good, case.kwargs())
        for status, body, _ in bads:
            assert status == case.status, body
            if case.handler:
                assert set(body) == {"error"} or case.id in ("not-json", "inputs-missing",
                                                              "empty-body"), body  # fmt: skip
                assert case.message in body["error"], body
                assert MARK not in json.dumps(body), body
        for status, body, _ in mates:
            assert status == 200, body
            outputs = {o["name"]: o for o in body["outputs"]}
            assert outputs["label"]["data"] == [e["label"] for e in expected[:2]]
            flat = [e["probabilities"][k] for e in expected[:2] for k in LABELS]
            assert outputs["probabilities"]["data"] == pytest.approx(flat, abs=MATE_TOL)
            sizes.append(body["parameters"]["batch_size"])
        if max(sizes) > 1:
            break
    assert max(sizes) > 1, f"no batch formed in 3 bursts: {sizes}"
    assert server.worker_pids(MODEL_NAME) == pids, "the worker restarted"
