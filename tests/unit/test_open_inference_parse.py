"""Open Inference Protocol (v2) parsing and answers, without a server (serving/open_inference.py),
and the handler's mixed batches of v2 and /predictions requests in process."""

from __future__ import annotations

import base64
import importlib.util
import json
import struct
from pathlib import Path
from typing import Any

import pytest
from ts.context import Context, RequestProcessor

from conftest import MODEL_NAME, b64, jpeg_bytes
from mmsent.errors import RequestError
from mmsent.serving import open_inference as oip
from mmsent.serving.limits import RequestLimits
from mmsent.serving.messages import BatchInfo, Request
from mmsent.serving.payload import parse_item
from mmsent.serving.protocols import OpenInference

LIMITS = RequestLimits()
REST = {"content-type": "application/json"}  # any header: TorchServe's gRPC jobs carry none
IMAGE = jpeg_bytes((64, 48))
LABELS = ("negative", "neutral", "positive")


def tensor(name: str, data: list[Any], shape: list[int] | None = None, **extra: Any) -> dict:
    return {"name": name, "datatype": "BYTES", "shape": shape or [len(data)], "data": data,
            **extra}  # fmt: skip


def v2(*inputs: dict, **extra: Any) -> dict[str, Any]:
    return {"body": {"inputs": list(inputs), **extra}}


def binary(inputs: dict[str, list[bytes]], **extra: Any) -> tuple[dict, dict[str, str]]:
    """A binary-extension request as tritonclient.http sends it: (raw item, headers)."""
    blobs = {n: b"".join(struct.pack("<I", len(v)) + v for v in vs) for n, vs in inputs.items()}
    header = {"inputs": [{"name": n, "datatype": "BYTES", "shape": [len(vs)],
                          "parameters": {"binary_data_size": len(blobs[n])}}
                         for n, vs in inputs.items()], **extra}  # fmt: skip
    head = json.dumps(header).encode()
    return {"body": head + b"".join(blobs.values())}, {oip.BINARY_HEADER: str(len(head))}


# -- detection -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("raw", "headers", "expected"),
    [
        ({"body": {"text": "hi"}}, REST, False),  # /predictions JSON
        ({"body": b'{"inputs": []}'}, {}, True),  # sent without Content-Type (tritonclient)
        ({"body": b'{"text": "inputs"}'}, REST, False),  # the word in a value is not the key
        ({"body": b'{"inputs": [}'}, REST, False),  # malformed: /predictions' parser says why
        ({"text": b"hi", "inputs": b"x"}, {}, False),  # gRPC Predictions form fields
        (v2(tensor("text", ["hi"])), REST, True),
        (v2(tensor("text", ["hi"])), {}, True),  # gRPC ModelInfer
        ({"body": b"{}..."}, {oip.BINARY_HEADER: "2"}, True),
    ],
)
def test_v2_is_told_apart_by_structure(raw: Any, headers: dict, expected: bool) -> None:
    assert oip.is_v2(raw, headers) is expected


# -- parsing -------------------------------------------------------------------------------------
def test_json_request_with_n_items_becomes_n_form_items() -> None:
    raw = v2(tensor("text", ["good", "bad", ""]), tensor("image", [b64(IMAGE), "", b64(IMAGE)]),
             id="r-7")  # fmt: skip
    request = oip.parse_request(raw, REST, LIMITS)
    assert request.request_id == "r-7" and not request.grpc
    assert request.outputs == oip.OUTPUTS
    items = [parse_item(fields) for fields in request.items]
    assert [(i.text, i.image) for i in items] == [("good", IMAGE), ("bad", None), (None, IMAGE)]


def test_json_body_as_bytes_is_parsed_once() -> None:
    raw = {"body": json.dumps({"inputs": [tensor("text", ["a", "b"])]}).encode()}
    parsed = oip.as_v2(raw, REST)
    assert parsed is not None and isinstance(parsed["body"], dict)
    assert [i["text"] for i in oip.parse_request(parsed, REST, LIMITS).items] == ["a", "b"]


def test_nested_n_by_1_shape_is_accepted() -> None:
    raw = v2(tensor("text", [["a"], ["b"]], shape=[2, 1]))
    assert [i["text"] for i in oip.parse_request(raw, REST, LIMITS).items] == ["a", "b"]


def test_binary_extension_bytes_tensors() -> None:
    raw, headers = binary({"text": [b"caf\xc3\xa9", b"ok"], "image": [IMAGE, b64(IMAGE).encode()]},
                          parameters={"binary_data_output": True})  # fmt: skip
    headers.update(REST)
    request = oip.parse_request(raw, headers, LIMITS)
    items = [parse_item(fields) for fields in request.items]
    assert [(i.text, i.image) for i in items] == [("café", IMAGE), ("ok", IMAGE)]


def test_grpc_form_is_base64_decoded_and_answered_with_a_full_envelope() -> None:
    """TorchServe's ModelInfer base64-encodes every bytes_contents element for the handler."""
    raw = v2(tensor("text", [b64("héllo".encode())]), tensor("image", [b64(IMAGE)]),
             id="", model_name=MODEL_NAME)  # fmt: skip
    request = oip.parse_request(raw, {}, LIMITS, grpc=True)
    assert request.grpc and request.request_id is None
    item = parse_item(request.items[0])
    assert (item.text, item.image) == ("héllo", IMAGE)


def test_grpc_element_that_is_not_base64_is_a_400_not_a_crash() -> None:
    with pytest.raises(RequestError, match="not the base64 TorchServe sends"):
        oip.parse_request(v2(tensor("text", ["%%%"])), {}, LIMITS, grpc=True)


BAD_CASES = [
    ("inputs-missing", {"body": {"id": "x"}}, 400, '"inputs" must be a non-empty list'),
    ("inputs-not-a-list", {"body": {"inputs": {"name": "text"}}}, 400, "non-empty list"),
    ("inputs-empty", v2(), 400, "non-empty list"),
    ("input-not-object", v2("text"), 400, "each input must be an object, got string"),
    ("unknown-input", v2(tensor("caption", ["x"])), 400, 'unknown input "caption"'),
    ("input-twice", v2(tensor("text", ["a"]), tensor("text", ["b"])), 400, "given twice"),
    ("wrong-datatype", v2({**tensor("text", [1.5]), "datatype": "FP32"}), 400,
     'must have datatype "BYTES", got "FP32"'),
    ("shape-vs-data", v2(tensor("text", ["a"], shape=[2])), 400,
     "has shape [2] (2 items) but 1 data element"),
    ("shape-rank-3", v2(tensor("text", ["a"], shape=[1, 1, 1])), 400, "shape [N] or [N, 1]"),
    ("shape-zero", v2(tensor("text", [], shape=[0])), 400, "is empty"),
    ("n-mismatch", v2(tensor("text", ["a", "b"]), tensor("image", [b64(IMAGE)])), 400,
     "same number of items, got 2 and 1"),
    ("data-not-list", v2({**tensor("text", ["a"]), "data": "a"}), 400, '"data" as a list'),
    ("element-not-string", v2(tensor("text", [7])), 400, "elements must be strings, got number"),
    ("unknown-request-field", v2(tensor("text", ["a"]), inputz=1), 400,
     'unknown request field "inputz"'),
    ("unknown-tensor-field", v2({**tensor("text", ["a"]), "dat": 1}), 400,
     'unknown field of input "text" "dat"'),
    ("id-not-string", v2(tensor("text", ["a"]), id=5), 400, '"id" must be a string'),
    ("unknown-output", v2(tensor("text", ["a"]), outputs=[{"name": "logits"}]), 400,
     'unknown output "logits"'),
    ("too-many-items", v2(tensor("text", ["a"] * 33)), 413, "at most 32 per request"),
]  # fmt: skip


@pytest.mark.parametrize(("raw", "status", "message"), [c[1:] for c in BAD_CASES],
                         ids=[c[0] for c in BAD_CASES])  # fmt: skip
def test_bad_requests_are_refused_with_a_clear_message(raw: Any, status: int, message: str) -> None:
    with pytest.raises(RequestError) as caught:
        oip.parse_request(raw, REST, LIMITS)
    assert caught.value.status == status
    assert message in caught.value.message


@pytest.mark.parametrize(
    ("header", "body", "message"),
    [
        ("x", b'{"inputs": []}', "must be an integer"),
        ("999", b'{"inputs": []}', "does not fit"),
        ("3", b"{no", "malformed Open Inference JSON header"),
    ],
)
def test_bad_binary_framing_is_refused(header: str, body: bytes, message: str) -> None:
    with pytest.raises(RequestError, match=message):
        oip.parse_request({"body": body}, {oip.BINARY_HEADER: header}, LIMITS)


def test_binary_sizes_that_do_not_add_up_are_refused() -> None:
    raw, headers = binary({"text": [b"hello"]})
    with pytest.raises(RequestError, match="binary_data_size does not fit"):
        oip.parse_request({"body": raw["body"][:-2]}, headers, RequestLimits())
    head = json.dumps({"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1],
                                   "parameters": {"binary_data_size": 6}}]}).encode()  # fmt: skip
    lying = {"body": head + struct.pack("<I", 10) + b"ab"}  # element claims 10 bytes, has 2
    with pytest.raises(RequestError, match="element is cut short"):
        oip.parse_request(lying, {oip.BINARY_HEADER: str(len(head))}, RequestLimits())
    with pytest.raises(RequestError, match="2 bytes of binary data follow"):
        oip.parse_request({"body": raw["body"] + b"xx"}, headers, RequestLimits())


def test_items_limit_comes_from_request_limits() -> None:
    raw = v2(tensor("text", ["a"] * 3))
    assert len(oip.parse_request(raw, REST, RequestLimits(max_items_per_request=3)).items) == 3
    with pytest.raises(RequestError, match="at most 2 per request"):
        oip.parse_request(raw, REST, RequestLimits(max_items_per_request=2))


# -- answers -------------------------------------------------------------------------------------
def _answer(p: tuple[float, float, float], c: tuple[float, float]) -> dict[str, Any]:
    return {"label": LABELS[p.index(max(p))], "probabilities": dict(zip(LABELS, p, strict=True)),
            "contributions": {"text": c[0], "image": c[1]}}  # fmt: skip


CTX = BatchInfo(MODEL_NAME, "1.0", LABELS, batch_size=3, batch_rows=4)


def test_response_is_the_protocol_form_with_row_major_tensors() -> None:
    request = oip.parse_request(v2(tensor("text", ["a", "b"]), id="q"), REST, LIMITS)
    body = oip.response(request, [_answer((0.1, 0.2, 0.7), (1, 0)),
                                  _answer((0.6, 0.3, 0.1), (0.4, 0.6))], CTX)  # fmt: skip
    assert body["model_name"] == MODEL_NAME and body["id"] == "q"
    assert body["parameters"] == {"batch_size": 3, "batch_rows": 4}
    out = {o["name"]: o for o in body["outputs"]}
    assert list(out) == ["label", "probabilities", "contributions"]
    assert out["label"] == {"name": "label", "datatype": "BYTES", "shape": [2],
                            "data": ["positive", "negative"]}  # fmt: skip
    assert out["probabilities"]["shape"] == [2, 3] and out["probabilities"]["datatype"] == "FP32"
    assert out["probabilities"]["data"] == [0.1, 0.2, 0.7, 0.6, 0.3, 0.1]
    assert out["probabilities"]["parameters"] == {"columns": "negative,neutral,positive"}
    assert out["contributions"]["data"] == [1, 0, 0.4, 0.6]


def test_requested_outputs_only_and_no_id_when_none_was_sent() -> None:
    raw = v2(tensor("text", ["a"]), outputs=[{"name": "label"}])
    body = oip.response(oip.parse_request(raw, REST, LIMITS), [_answer((0, 1, 0), (1, 0))], CTX)
    assert "id" not in body and [o["name"] for o in body["outputs"]] == ["label"]


def test_grpc_answers_always_carry_what_torchserves_converter_dereferences() -> None:
    """id, model_name, model_version and outputs: a missing one throws in TorchServe's GRPCJob."""
    error = RequestError("bad thing", 413)
    body = oip.error_response(error, grpc=True, request_id=None, model_name=MODEL_NAME,
                              model_version=None)  # fmt: skip
    assert {"id", "model_name", "model_version", "outputs"} <= body.keys()
    assert body["outputs"] == [
        {"name": "error", "datatype": "BYTES", "shape": [1], "data": ["bad thing"]},
        {"name": "code", "datatype": "INT32", "shape": [1], "data": [413]},
    ]
    rest = oip.error_response(error, grpc=False, request_id="x", model_name=MODEL_NAME,
                              model_version="1.0")  # fmt: skip
    assert rest == {"error": "bad thing"}


def test_one_bad_item_refuses_the_whole_request_naming_its_index() -> None:
    protocol = OpenInference()
    plain = Request({"body": {"text": "plain"}}, REST)
    request = Request(v2(tensor("text", ["a", "b", "c"]), id="z"), REST)
    assert not protocol.claims(plain) and protocol.claims(request)
    rows = protocol.decode(request, LIMITS)
    request.rows = rows
    assert [row.fields for row in rows] == [{"text": "a"}, {"text": "b"}, {"text": "c"}]
    for row in rows:
        row.answer = _answer((0, 0, 1), (1, 0))
    rows[1].answer, rows[1].error = None, RequestError('"text" is not valid UTF-8')
    reply = protocol.encode(request, CTX)
    assert reply.body == {"error": 'item 1: "text" is not valid UTF-8'} and reply.status == 400


def test_refusals_before_parsing_keep_the_protocol_form() -> None:
    """A v2 request refused before its rows exist (deadline, bad envelope) answers {"error"}
    over REST and the well-formed error response over gRPC, with the id it sent."""
    protocol = OpenInference()
    late = Request(v2(tensor("text", ["a"]), id="late"), REST)
    assert protocol.claims(late)
    reply = protocol.refuse(late, RequestError("deadline passed", 408), CTX)
    assert reply.body == {"error": "deadline passed"} and reply.status == 408
    bad = Request(v2(tensor("txt", ["a"]), id="g"), {}, grpc=True)
    assert protocol.claims(bad)
    with pytest.raises(RequestError) as refused:
        protocol.decode(bad, LIMITS)
    body = protocol.refuse(bad, refused.value, CTX).body
    assert body["id"] == "g" and body["outputs"][0]["name"] == "error"


def test_metadata_describes_what_the_parser_takes() -> None:
    meta = oip.model_metadata(MODEL_NAME, "1.0")
    assert [t["name"] for t in meta["inputs"]] == list(oip.INPUTS)
    assert [t["name"] for t in meta["outputs"]] == list(oip.OUTPUTS)


# -- the handler, in process ---------------------------------------------------------------------
HANDLER_PATH = Path(__file__).resolve().parents[2] / "handlers" / "fusion_handler.py"


@pytest.fixture(scope="module")
def handler(tiny_build: tuple[Path, Path]) -> tuple[Any, Context]:
    spec = importlib.util.spec_from_file_location("fusion_handler_v2", HANDLER_PATH)
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(module)
    manifest = {"model": {"modelVersion": "1.0"}}
    context = Context(MODEL_NAME, str(tiny_build[1]), manifest, 8, None, "0.12.0")
    instance = module.FusionSentimentHandler()
    instance.initialize(context)
    return instance, context


def _handle(handler: tuple[Any, Context], data: list, headers: list) -> list[tuple[int, Any]]:
    instance, context = handler
    context.request_processor = [RequestProcessor(h) for h in headers]
    out = [json.loads(a) for a in instance.handle(data, context)]
    return [(context.get_response_status(i)[0], body) for i, body in enumerate(out)]


def test_mixed_batch_of_v2_and_predictions(handler: tuple[Any, Context]) -> None:
    image = b64(IMAGE)
    data = [
        {"body": {"text": "lovely", "image": image}},
        v2(tensor("text", ["lovely", "awful"]), tensor("image", [image, ""]), id="a"),
        v2(tensor("text", ["fine", "\ud800"]), id="b"),  # item 1 is a lone surrogate
        {"body": b"{oops"},
        v2(tensor("text", ["lovely"]), tensor("image", [image])),
    ]  # fmt: skip
    (s0, pred), (s1, good), (s2, bad), (s3, broken), (s4, single) = _handle(
        handler, data, [REST] * 5
    )
    assert (s0, s1, s2, s3, s4) == (200, 200, 400, 400, 200)
    assert list(bad) == ["error"] and bad["error"].startswith("item 1: ")
    assert "lone surrogate" in bad["error"] and "code" in broken
    out = {o["name"]: o for o in good["outputs"]}
    assert good["id"] == "a" and good["model_version"] == "1.0"
    assert out["label"]["data"][0] == pred["label"]
    first = out["probabilities"]["data"][:3]
    assert first == pytest.approx([pred["probabilities"][k] for k in LABELS], abs=1e-5)
    assert out["contributions"]["data"][2:] == [1.0, 0.0]  # item 1 had no image
    assert good["parameters"] == {"batch_size": 5, "batch_rows": 7}  # {oops} is a row too
    assert single["outputs"][1]["data"] == first


def test_grpc_v2_in_a_batch_and_v2_explain_is_refused(handler: tuple[Any, Context]) -> None:
    grpc_body = v2(tensor("text", [base64.b64encode(b"lovely").decode()]), id="g",
                   model_name=MODEL_NAME)  # fmt: skip
    data = [grpc_body, v2(tensor("text", ["x"])), {"body": {"text": "x"}}]
    explain = {**REST, "explain": "True"}
    (s0, ok), (s1, refused), (s2, _) = _handle(handler, data, [{}, explain, REST])
    assert (s0, s1, s2) == (200, 400, 200)
    assert ok["id"] == "g" and "parameters" not in ok
    assert refused == {"error": oip.NO_EXPLAIN}
