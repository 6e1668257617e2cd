"""Hostile and odd input against a real TorchServe, over REST and gRPC, inside live batches.

Every case is fired *concurrently* with several good requests (a barrier releases them together,
so with ``maxBatchDelay`` 30 ms they land in the same TorchServe batch). For each case we assert:
the bad item gets its 4xx and a message naming the problem; every good batch mate gets exactly
the reference answer; batches really formed (some ``batch_size`` > 1); the worker pid did not
change (nothing crashed). Odd-but-valid inputs (huge text, unusual image modes, RTL/emoji text)
must be answered 200.

Per-item status on the wire, as measured on TorchServe 0.12 (docs/RELIABILITY.md has the table):
REST carries the handler's status (400 / 413) as the HTTP status. gRPC does NOT: a per-item error
arrives as gRPC ``OK`` whose prediction bytes are the handler's ``{"error", "code"}`` JSON (the
``GrpcClient`` turns that into ``PredictionError`` with ``INVALID_ARGUMENT`` /
``RESOURCE_EXHAUSTED``). Frontend refusals (a message over ``max_request_size``) are real gRPC
errors: grpc-java resets the stream, which the Python client sees as ``CANCELLED``.
"""

from __future__ import annotations

import io
import json
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
import requests
from PIL import Image

from conftest import MODEL_NAME, b64, jpeg_bytes
from mmsent.grpc_stubs import inference_pb2, inference_pb2_grpc
from mmsent.torchserve_launcher import TorchServe

pytestmark = pytest.mark.server

GOOD_TEXT = "the staff were friendly and the food was great"
GOOD_IMAGE = jpeg_bytes((160, 120), (40, 120, 200))
N_GOOD = 5  # batch mates per bad item: with the bad one, 6 <= batchSize 8
OVER_LIMIT = 21 * 1024 * 1024  # config.properties max_request_size is 20 MiB
TOL = 1e-4  # batch mates are padded to the longest text in the batch: float noise only


# -- payloads ------------------------------------------------------------------------------------
def _png(mode: str, size: tuple[int, int] = (48, 40), **save: Any) -> bytes:
    colour = {"RGBA": (200, 30, 30, 90), "P": 5, "I;16": 50_000, "L": 128}[mode]
    buf = io.BytesIO()
    Image.new(mode, size, colour).save(buf, "PNG", **save)
    return buf.getvalue()


def _jpeg(mode: str) -> bytes:
    colour = {"CMYK": (10, 200, 30, 5), "L": 90}[mode]
    buf = io.BytesIO()
    Image.new(mode, (64, 48), colour).save(buf, "JPEG")
    return buf.getvalue()


def _bomb() -> bytes:
    """A ~12 KB PNG claiming 100 M pixels (2.5x the 40 M limit): must be refused unread."""
    buf = io.BytesIO()
    Image.new("1", (10_000, 10_000), 0).save(buf, "PNG")
    assert len(buf.getvalue()) < 100_000
    return buf.getvalue()


def _raw_json(body: bytes) -> dict[str, Any]:
    return {"data": body, "headers": {"Content-Type": "application/json"}}


@dataclass(frozen=True)
class Case:
    """One input. ``rest``: kwargs for requests.post; ``grpc``: the gRPC ``input`` map (form
    fields, or ``data`` = a raw JSON body, exactly as a REST body reaches the handler)."""

    id: str
    rest: Callable[[], dict[str, Any]]
    grpc: Callable[[], dict[str, bytes]]
    status: int  # HTTP status (and the handler's "code" inside a gRPC OK reply)
    message: str = ""  # must appear in the error message (bad cases)
    grpc_codes: tuple[grpc.StatusCode, ...] = (grpc.StatusCode.OK,)  # transport status(es)
    check: Callable[[dict[str, Any]], bool] | None = None  # extra check on a 200 answer


def _has_image(answer: dict[str, Any]) -> bool:
    return "image" in answer["modalities"]


LONG_TEXT = "spectacular " * 10_000  # 120 k chars > max_text_chars 20 k
UNICODE_TEXT = "😀🎉 love it — هذا رائع جدا — שלום עולם — naïve café 中文 \u202etxet\u202c"

CASES: list[Case] = [
    Case("malformed-json", lambda: _raw_json(b'{"text": "hi",'),
         lambda: {"data": b'{"text": "hi",'}, 400, "malformed JSON"),
    Case("text-is-number", lambda: {"json": {"text": 42}},
         lambda: {"data": b'{"text": 42}'}, 400, '"text" must be a string, got number'),
    Case("image-is-list", lambda: {"json": {"image": [1, 2]}},
         lambda: {"data": b'{"image": [1, 2]}'}, 400, "base64-encoded string, got array"),
    Case("top-level-array", lambda: {"json": [{"text": "hi"}]},
         lambda: {"data": b'[{"text": "hi"}]'}, 400, "must be an object"),
    Case("neither-text-nor-image", lambda: {"json": {"other": 1}},
         lambda: {"other": b"1"}, 400, "needs non-empty"),
    Case("empty-text", lambda: {"json": {"text": ""}},
         lambda: {"text": b""}, 400, "needs non-empty"),
    Case("whitespace-text", lambda: {"json": {"text": " \n\t  "}},
         lambda: {"text": b" \n\t  "}, 400, "needs non-empty"),
    Case("invalid-base64", lambda: {"json": {"image": "not base64!!"}},
         lambda: {"data": b'{"image": "not base64!!"}'}, 400, "not valid base64"),
    Case("not-an-image", lambda: {"json": {"image": b64(b"hello world, no pixels")}},
         lambda: {"image": b"hello world, no pixels"}, 400, "not a recognised image format"),
    Case("truncated-jpeg", lambda: {"json": {"image": b64(jpeg_bytes((400, 300))[:700])}},
         lambda: {"image": jpeg_bytes((400, 300))[:700]}, 400, "could not be decoded"),
    Case("decompression-bomb", lambda: {"json": {"image": b64(_bomb())}},
         lambda: {"image": _bomb()}, 413, "refused before decoding"),
    Case("enormous-body", lambda: {"data": b"0" * OVER_LIMIT},
         lambda: {"image": b"0" * OVER_LIMIT}, 413, "",
         # grpc-java refuses the over-size message mid-stream: RST_STREAM(CANCEL) reaches the
         # client as CANCELLED (measured), some grpc versions say RESOURCE_EXHAUSTED.
         grpc_codes=(grpc.StatusCode.CANCELLED, grpc.StatusCode.RESOURCE_EXHAUSTED)),
    Case("text-beyond-max-length", lambda: {"json": {"text": LONG_TEXT}},
         lambda: {"text": LONG_TEXT.encode()}, 200, check=lambda a: a["text_truncated"] is True),
    Case("unicode-emoji-rtl", lambda: {"json": {"text": UNICODE_TEXT}},
         lambda: {"text": UNICODE_TEXT.encode()}, 200,
         check=lambda a: a["modalities"] == ["text"] and a["text_truncated"] is False),
    Case("rgba-png", lambda: {"json": {"image": b64(_png("RGBA"))}},
         lambda: {"image": _png("RGBA")}, 200, check=_has_image),
    Case("palette-png-transparency", lambda: {"json": {"image": b64(_png("P", transparency=5))}},
         lambda: {"image": _png("P", transparency=5)}, 200, check=_has_image),
    Case("cmyk-jpeg", lambda: {"json": {"image": b64(_jpeg("CMYK"))}},
         lambda: {"image": _jpeg("CMYK")}, 200, check=_has_image),
    Case("16bit-png", lambda: {"json": {"image": b64(_png("I;16"))}},
         lambda: {"image": _png("I;16")}, 200, check=_has_image),
    Case("grayscale-jpeg", lambda: {"json": {"image": b64(_jpeg("L"))}},
         lambda: {"image": _jpeg("L")}, 200, check=_has_image),
]  # fmt: skip


# -- transports: each returns (status, answer-or-error JSON, gRPC code) -------------------------
Reply = tuple[int, dict[str, Any], grpc.StatusCode | None]


def _rest(server: TorchServe, kwargs: dict[str, Any]) -> Reply:
    resp = requests.post(f"{server.inference_url}/predictions/{MODEL_NAME}", timeout=120,
                         **kwargs)  # fmt: skip
    try:
        body = resp.json()
    except ValueError:
        body = {"raw": resp.text}
    return resp.status_code, body, None


class _Grpc:
    """Raw stub (not GrpcClient) so the test sees exactly what TorchServe puts on the wire. Send
    limit 64 MiB so the *server's* limit is what refuses an over-size message."""

    def __init__(self, target: str) -> None:
        opts = [("grpc.max_send_message_length", 64 << 20),
                ("grpc.max_receive_message_length", 64 << 20)]  # fmt: skip
        self.channel = grpc.insecure_channel(target, options=opts)
        self.stub = inference_pb2_grpc.InferenceAPIsServiceStub(self.channel)

    def __call__(self, fields: dict[str, bytes]) -> Reply:
        request = inference_pb2.PredictionsRequest(model_name=MODEL_NAME, input=fields)
        try:
            raw = self.stub.Predictions(request, timeout=120).prediction
        except grpc.RpcError as err:
            return 0, {"error": err.details() or ""}, err.code()
        body = json.loads(raw)
        status = int(body["code"]) if "error" in body else 200
        return status, body, grpc.StatusCode.OK


@pytest.fixture(scope="module")
def grpc_call(server: TorchServe) -> Iterator[_Grpc]:
    call = _Grpc(server.grpc_target)
    yield call
    call.channel.close()


def _fire(send: Callable[[Any], Reply], good: Any, bad: Any) -> tuple[Reply, list[Reply]]:
    """Release N_GOOD good requests and the bad one together; return (bad reply, good replies)."""
    barrier = threading.Barrier(N_GOOD + 1)

    def one(payload: Any) -> Reply:
        barrier.wait(timeout=60)
        return send(payload)

    with ThreadPoolExecutor(max_workers=N_GOOD + 1) as pool:
        goods = [pool.submit(one, good) for _ in range(N_GOOD // 2)]
        bad_future = pool.submit(one, bad)  # in the middle of the burst
        goods += [pool.submit(one, good) for _ in range(N_GOOD - N_GOOD // 2)]
        return bad_future.result(), [f.result() for f in goods]


def _close(a: dict[str, float], b: dict[str, float]) -> bool:
    return a.keys() == b.keys() and all(abs(a[k] - b[k]) <= TOL for k in a)


def _check_case(case: Case, send: Callable[[Any], Reply], good: Any, bad: Any,
                pids_of: Callable[[], list[int]], grpc_transport: bool) -> None:  # fmt: skip
    reference = send(good)
    assert reference[0] == 200, reference
    pids = pids_of()
    sizes: list[int] = []
    for _ in range(3):  # a busy shared CPU can split a burst; three tries to see a real batch
        (status, body, code), mates = _fire(send, good, bad)
        if grpc_transport:
            assert code in case.grpc_codes, (code, body)
        if case.status == 200:
            assert status == 200, body
            assert case.check is None or case.check(body), body
        elif not grpc_transport or code == grpc.StatusCode.OK:
            assert status == case.status, body
            if case.message:
                assert case.message in body["error"], body
                assert body.get("code") == case.status
        for mate_status, mate, _ in mates:
            assert mate_status == 200, mate
            assert _close(mate["probabilities"], reference[1]["probabilities"]), mate
            sizes.append(mate["batch_size"])
        if max(sizes) > 1:
            break
    assert max(sizes) > 1, f"no batch formed in 3 bursts: {sizes}"
    assert pids_of() == pids, "the worker restarted: a bad input crashed it"


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_rest_bad_input_in_a_live_batch(server: TorchServe, case: Case) -> None:
    good = {"json": {"text": GOOD_TEXT, "image": b64(GOOD_IMAGE)}}
    _check_case(case, lambda kw: _rest(server, kw), good, case.rest(),
                lambda: server.worker_pids(MODEL_NAME), grpc_transport=False)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_grpc_bad_input_in_a_live_batch(server: TorchServe, grpc_call: _Grpc, case: Case) -> None:
    good = {"text": GOOD_TEXT.encode(), "image": GOOD_IMAGE}
    _check_case(case, grpc_call, good, case.grpc(),
                lambda: server.worker_pids(MODEL_NAME), grpc_transport=True)
