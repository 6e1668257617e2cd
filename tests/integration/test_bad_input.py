"""Hostile and odd input against a real TorchServe, over REST and gRPC, inside live batches.

Every case is fired *concurrently* with several good requests (a barrier releases them together,
so with ``maxBatchDelay`` 30 ms they land in the same TorchServe batch). For each case we assert:
the bad item gets its 4xx and a message naming the problem; every good batch mate gets exactly
the reference answer; batches really formed (some ``batch_size`` > 1); the worker pid did not
change (nothing crashed). Odd-but-valid inputs (huge text, unusual image modes, RTL/emoji text)
must be answered 200.

Per-item status on the wire, as measured on TorchServe 0.12 (docs/reliability.md has the table):
REST carries the handler's status (400 / 413) as the HTTP status. gRPC does NOT: a per-item error
arrives as gRPC ``OK`` whose prediction bytes are the handler's ``{"error", "code"}`` JSON (the
``GrpcClient`` turns that into ``PredictionError`` with ``INVALID_ARGUMENT`` /
``RESOURCE_EXHAUSTED``). Frontend refusals (a message over ``max_request_size``) are real gRPC
errors: grpc-java resets the stream, which the Python client sees as ``CANCELLED``.
"""

from __future__ import annotations

import functools
import io
import json
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
import requests
from PIL import Image

from conftest import MODEL_NAME, b64, jpeg_bytes
from mmsent.clients.grpc_stubs import inference_pb2
from mmsent.config import MAX_MESSAGE_BYTES
from mmsent.harness.torchserve import TorchServe

pytestmark = pytest.mark.server

GOOD_TEXT = "the staff were friendly and the food was great"
GOOD_IMAGE = jpeg_bytes((160, 120), (40, 120, 200))
N_GOOD = 5  # batch mates per bad item: with the bad one, 6 <= batchSize 8
MARK = "s3cr3t-b0dy"  # put into bad bodies: an error message must never quote it back
OVER_LIMIT = MAX_MESSAGE_BYTES + 1024 * 1024  # over config.properties max_request_size
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


@functools.cache
def _png16_40mp() -> bytes:
    """~90 KB file, 40 MP of 16-bit pixels: once ~1 GB of float64 in the worker."""
    return _png("I;16", (6324, 6324))


@functools.cache
def _png16_4k() -> bytes:
    """A 3840x2160 16-bit PNG: the largest decode one batch admits (8.3 MP)."""
    return _png("I;16", (3840, 2160))


def _raw_json(body: bytes) -> dict[str, Any]:
    return {"data": body, "headers": {"Content-Type": "application/json"}}


def _raw(body: bytes, content_type: str) -> dict[str, Any]:
    return {"data": body, "headers": {"Content-Type": content_type}}


def _multipart(*parts: tuple[str, Any]) -> dict[str, Any]:
    """requests ``files=`` list: (name, value) with bytes as a file part, str as a text field."""
    return {"files": [(name, ("f.bin", v) if isinstance(v, bytes) else (None, v))
                      for name, v in parts]}  # fmt: skip


HUGE_INT = b'{"text": "' + MARK.encode() + b'", "n": 1' + b"0" * 5000 + b"}"
DEEP = b'{"text": "' + MARK.encode() + b'", "n": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
SURROGATE = b'{"text": "hi \\ud800 ' + MARK.encode() + b'"}'
PARTY_POPPER = (Path(__file__).resolve().parents[2] / "examples" / "party_popper.png").read_bytes()


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
    n_bad: int = 1  # copies of the bad request in each burst (several poisoned batch mates)
    grpc_status: int | None = None  # when gRPC's status differs from REST's...
    grpc_message: str = ""  # ...and its message
    echoes: bool = False  # the reply quotes the body (MARK); only TorchServe's frontend does



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
    Case("neither-text-nor-image", lambda: {"json": {}},
         lambda: {}, 400, "needs non-empty"),
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
    # -- issue 9, round two ------------------------------------------------------------------
    # 3 copies per burst: several poisoned items in one batch, the batched tokenizer unharmed
    Case("lone-surrogate-text", lambda: _raw_json(SURROGATE), lambda: {"data": SURROGATE},
         400, "lone surrogate U+D800", n_bad=3),
    Case("json-integer-over-4300-digits", lambda: _raw_json(HUGE_INT),
         lambda: {"data": HUGE_INT}, 400, "malformed JSON: a number is too long"),
    Case("json-nested-100k-deep", lambda: _raw_json(DEEP), lambda: {"data": DEEP},
         400, "malformed JSON: nested too deeply"),
    Case("empty-body", lambda: _raw_json(b""), lambda: {"data": b""}, 400,
         "request body is empty"),
    Case("misspelled-field-imgae", lambda: {"json": {"text": MARK, "imgae": b64(GOOD_IMAGE)}},
         lambda: {"text": MARK.encode(), "imgae": GOOD_IMAGE}, 400, 'field "imgae"'),
    Case("unknown-multipart-part",
         lambda: _multipart(("text", MARK), ("image", GOOD_IMAGE), ("caption", "x")),
         lambda: {"text": MARK.encode(), "image": GOOD_IMAGE, "caption": b"x"},
         400, 'unknown form field "caption"'),
    Case("json-body-plus-form-field", lambda: _raw(b'{"text": "hi"}', "text/plain"),
         lambda: {"data": b'{"text": "hi"}', "text": b"hi"}, 200, grpc_status=400,
         grpc_message='form field "text" sent together with a "data" body'),
    # TorchServe keeps only the LAST of repeated parts (ts/service.py builds a dict) and a
    # protobuf map keeps the last entry: the handler cannot see the first one. Pinned.
    Case("second-image-part-last-wins",
         lambda: _multipart(("image", b"not an image " + MARK.encode()), ("image", GOOD_IMAGE)),
         lambda: [{"image": b"not an image"}, {"image": GOOD_IMAGE}], 200, check=_has_image),
    Case("empty-image-part-means-no-image",
         lambda: _multipart(("text", GOOD_TEXT), ("image", b"")),
         lambda: {"text": GOOD_TEXT.encode(), "image": b""}, 200,
         check=lambda a: a["modalities"] == ["text"]),
    Case("empty-base64-image-means-no-image", lambda: {"json": {"text": GOOD_TEXT, "image": ""}},
         lambda: {"data": json.dumps({"text": GOOD_TEXT, "image": ""}).encode()}, 200,
         check=lambda a: a["modalities"] == ["text"]),
    # The Java frontend decodes urlencoded bodies itself; a bad %-escape fails there with a 500
    # that quotes the body, before any Python runs (not fixable in the handler: pinned). gRPC
    # has no form decoding, so the same bytes reach the handler and get a 400.
    Case("urlencoded-bad-escape", lambda: _raw(f"text=100%zz {MARK}".encode(),
                                               "application/x-www-form-urlencoded"),
         lambda: {"data": f"text=100%zz {MARK}".encode()}, 500, "Invalid hex byte",
         grpc_status=400, grpc_message="malformed JSON", echoes=True),
    # curl --data-binary without -H sends application/x-www-form-urlencoded: the frontend's
    # form decoder fails on the PNG (500). With the image's Content-Type it is a bare image.
    Case("bare-image-as-urlencoded", lambda: _raw(PARTY_POPPER,
                                                  "application/x-www-form-urlencoded"),
         lambda: {"data": PARTY_POPPER}, 500, "Bad end of line", grpc_status=200,
         check=_has_image),
    Case("bare-image-with-content-type", lambda: _raw(PARTY_POPPER, "image/png"),
         lambda: {"data": PARTY_POPPER}, 200, check=_has_image),
    # under the 40 MP per-image limit, but over a batch's decode budget: refused unread
    Case("16bit-png-40-megapixels", lambda: {"json": {"image": b64(_png16_40mp())}},
         lambda: {"image": _png16_40mp()}, 413, "max_decode_pixels_per_request"),
    Case("16bit-png-4k-frame", lambda: {"json": {"image": b64(_png16_4k())}},
         lambda: {"image": _png16_4k()}, 200, check=_has_image),
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
        self.raw_predictions = self.channel.unary_unary(
            "/org.pytorch.serve.grpc.inference.InferenceAPIsService/Predictions",
            request_serializer=None,  # bytes as they are: lets a test repeat a map key
            response_deserializer=inference_pb2.PredictionResponse.FromString,
        )

    def __call__(self, fields: dict[str, bytes] | list[dict[str, bytes]]) -> Reply:
        """``fields`` is the ``input`` map; a list of maps is sent as their serialised
        messages concatenated (protobuf merges them: a map key repeated on the wire)."""
        messages = fields if isinstance(fields, list) else [fields]
        wire = b"".join(inference_pb2.PredictionsRequest(model_name=MODEL_NAME, input=f)
                        .SerializeToString() for f in messages)  # fmt: skip
        try:
            raw = self.raw_predictions(wire, timeout=120).prediction
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


def _fire(send: Callable[[Any], Reply], good: Any, bad: Any,
          n_bad: int = 1) -> tuple[list[Reply], list[Reply]]:  # fmt: skip
    """Release N_GOOD good requests and ``n_bad`` bad ones together, the bad ones spread
    through the burst; return (bad replies, good replies)."""
    barrier = threading.Barrier(N_GOOD + n_bad)

    def one(payload: Any) -> Reply:
        barrier.wait(timeout=60)
        return send(payload)

    total = N_GOOD + n_bad
    bad_at = {round((k + 0.5) * total / n_bad - 0.5) for k in range(n_bad)}
    with ThreadPoolExecutor(max_workers=total) as pool:
        futures = [pool.submit(one, bad if i in bad_at else good) for i in range(total)]
        bads = [f for i, f in enumerate(futures) if i in bad_at]
        goods = [f for i, f in enumerate(futures) if i not in bad_at]
        return [f.result() for f in bads], [f.result() for f in goods]


def _close(a: dict[str, float], b: dict[str, float]) -> bool:
    return a.keys() == b.keys() and all(abs(a[k] - b[k]) <= TOL for k in a)


def _check_case(case: Case, send: Callable[[Any], Reply], good: Any, bad: Any,
                pids_of: Callable[[], list[int]], grpc_transport: bool) -> None:  # fmt: skip
    reference = send(good)
    assert reference[0] == 200, reference
    pids = pids_of()
    sizes: list[int] = []
    expected = (case.status, case.message)
    if grpc_transport and case.grpc_status is not None:
        expected = (case.grpc_status, case.grpc_message)
    for _ in range(3):  # a busy shared CPU can split a burst; three tries to see a real batch
        bads, mates = _fire(send, good, bad, case.n_bad)
        for status, body, code in bads:
            if grpc_transport:
                assert code in case.grpc_codes, (code, body)
            _check_bad_reply(case, expected, status, body, code)
        for mate_status, mate, _ in mates:
            assert mate_status == 200, mate
            assert _close(mate["probabilities"], reference[1]["probabilities"]), mate
            sizes.append(mate["batch_size"])
        if max(sizes) > 1:
            break
    assert max(sizes) > 1, f"no batch formed in 3 bursts: {sizes}"
    assert pids_of() == pids, "the worker restarted: a bad input crashed it"


def _check_bad_reply(case: Case, expected: tuple[int, str], status: int,
                     body: dict[str, Any], code: grpc.StatusCode | None) -> None:  # fmt: skip
    """Status; message (ours in ``error``, TorchServe frontend's in ``message``); no echo."""
    want_status, want_message = expected
    if want_status == 200:
        assert status == 200, body
        assert case.check is None or case.check(body), body
        return
    if code not in (None, grpc.StatusCode.OK):
        return  # a gRPC transport-level refusal: its code was checked, there is no body
    assert status == want_status, body
    assert want_message in body.get("error", body.get("message", "")), body
    if "error" in body:
        assert body["code"] == want_status, body
    assert (MARK in json.dumps(body)) == (case.echoes and code is None), body


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


def test_query_parameters_are_fields_only_on_the_legacy_route(server: TorchServe) -> None:
    """TorchServe passes the query string as fields on ``/{model}/predict`` (so an unknown one
    is refused like any unknown field) and drops it on ``/predictions/{model}``."""
    body = {"json": {"text": GOOD_TEXT}, "timeout": 60}
    legacy = requests.post(f"{server.inference_url}/{MODEL_NAME}/predict?lang=en", **body)
    assert legacy.status_code == 400, legacy.text
    assert 'form field "lang" sent together with a "body" body' in legacy.json()["error"]
    current = requests.post(f"{server.inference_url}/predictions/{MODEL_NAME}?lang=en", **body)
    assert current.status_code == 200, current.text
