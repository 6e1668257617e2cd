"""mmsent.gateway.forward in process: what the gateway sends TorchServe for each way a request
can arrive (gRPC ``bytes_contents``, gRPC ``raw_input_contents``, REST JSON, REST bytes), and
how TorchServe's refusals become errors. The round trip through real servers and stock clients
is tests/integration/test_kserve_gateway.py; these pin the byte-level contract cheaply."""

from __future__ import annotations

import ast
import json
import struct
from pathlib import Path

import grpc
import pytest
from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
from kserve.protocol.infer_type import InferRequest

from mmsent.gateway.forward import (
    HEADER_LENGTH,
    RawV2Request,
    decode_answer,
    encode_request,
    error_from,
)
from mmsent.packaging.kserve_manifests import GATEWAY_FILES, ROOT

PNG = b"\x89PNG\r\n\x1a\n\x00\xff raw image bytes, not UTF-8"


def _split(body: bytes, headers: dict[str, str]) -> tuple[dict, bytes]:
    length = int(headers.get(HEADER_LENGTH, len(body)))
    return json.loads(body[:length]), body[length:]


def _elements(raw: bytes) -> list[bytes]:
    out, offset = [], 0
    while offset < len(raw):
        (size,) = struct.unpack_from("<I", raw, offset)
        out.append(raw[offset + 4 : offset + 4 + size])
        offset += 4 + size
    return out


def _grpc_request(raw: bool) -> pb.ModelInferRequest:
    texts, images = [b"great", b""], [PNG, PNG + b"2"]
    request = pb.ModelInferRequest(model_name="m", id="g-1")
    request.outputs.add(name="label")
    for name, values in (("text", texts), ("image", images)):
        tensor = request.inputs.add(name=name, datatype="BYTES", shape=[2])
        if raw:
            request.raw_input_contents.append(
                b"".join(struct.pack("<I", len(v)) + v for v in values))
        else:
            tensor.contents.bytes_contents.extend(values)
    return request


@pytest.mark.parametrize("raw", [False, True], ids=["bytes_contents", "raw_input_contents"])
def test_grpc_request_keeps_every_input_item_and_the_image_bytes(raw: bool) -> None:
    """The kfs wrapper forwarded only the first element of the first input."""
    body, headers = encode_request(InferRequest.from_grpc(_grpc_request(raw)))
    header, binary = _split(body, headers)
    assert header["id"] == "g-1" and header["outputs"] == [{"name": "label"}]
    assert [(i["name"], i["shape"], i["datatype"]) for i in header["inputs"]] == [
        ("text", [2], "BYTES"), ("image", [2], "BYTES")]  # fmt: skip
    sizes = [i["parameters"]["binary_data_size"] for i in header["inputs"]]
    assert sum(sizes) == len(binary)
    assert _elements(binary[: sizes[0]]) == [b"great", b""]
    assert _elements(binary[sizes[0]:]) == [PNG, PNG + b"2"]


def test_rest_json_request_stays_json() -> None:
    request = InferRequest(model_name="m", request_id="r-1", infer_inputs=[], parameters={"x": 1})
    from kserve.protocol.infer_type import InferInput

    request.inputs = [InferInput("text", [1], "BYTES", data=["fine"])]
    body, headers = encode_request(request)
    assert HEADER_LENGTH not in headers and headers["Content-Type"] == "application/json"
    assert json.loads(body) == {"id": "r-1", "parameters": {"x": 1}, "inputs": [
        {"name": "text", "shape": [1], "datatype": "BYTES", "data": ["fine"]}]}  # fmt: skip


@pytest.mark.parametrize("binary", [True, False])
def test_rest_bytes_are_forwarded_byte_for_byte(binary: bool) -> None:
    header = json.dumps({"id": "b", "inputs": [{"name": "image", "shape": [1], "datatype": "BYTES",
                                                "parameters": {"binary_data_size": 4 + len(PNG)}}]},
                        ).encode()  # fmt: skip
    body = header + (struct.pack("<I", len(PNG)) + PNG if binary else b"")
    request = RawV2Request(body, len(header), "m")
    sent, headers = encode_request(request)
    assert sent == body and request.id == "b"
    assert (headers.get(HEADER_LENGTH) == str(len(header))) is binary


def test_grpc_answer_goes_out_as_raw_contents_rest_answer_as_json() -> None:
    label = {"name": "label", "datatype": "BYTES", "shape": [1], "data": ["positive"]}
    probs = {"name": "probabilities", "datatype": "FP32", "shape": [1, 3],
             "data": [0.1, 0.2, 0.7], "parameters": {"columns": "n,u,p"}}  # fmt: skip
    answer = {"model_name": "m", "model_version": "1.0", "id": "a",
              "parameters": {"batch_size": 3, "ratio": 0.5}, "outputs": [label, probs]}
    grpc_out = decode_answer(answer, InferRequest.from_grpc(_grpc_request(False))).to_grpc()
    assert len(grpc_out.raw_output_contents) == 2  # tritonclient.grpc reads numbers only there
    assert grpc_out.parameters["batch_size"].int64_param == 3
    assert grpc_out.parameters["ratio"].string_param == "0.5"  # no float InferParameter in kserve
    rest_out, _ = decode_answer(answer, InferRequest("m", [], request_id=None)).to_rest()
    assert rest_out["outputs"][1]["data"] == pytest.approx([0.1, 0.2, 0.7])
    assert rest_out["id"] == "a"


@pytest.mark.parametrize(("status", "body", "code", "message"), [
    (400, b'{"error": "item 1: \\"image\\" is not valid base64"}', grpc.StatusCode.INVALID_ARGUMENT,
     'item 1: "image" is not valid base64'),
    (413, b'{"error": "too many items", "code": 413}', grpc.StatusCode.RESOURCE_EXHAUSTED,
     "too many items"),
    (503, b'{"code": 503, "type": "ServiceUnavailableException", "message": "Model busy"}',
     grpc.StatusCode.UNAVAILABLE, "Model busy"),
    (500, b"", grpc.StatusCode.INTERNAL, "Internal Server Error"),
])  # fmt: skip
def test_torchserve_refusals_keep_status_and_message(
    status: int, body: bytes, code: grpc.StatusCode, message: str
) -> None:
    error = error_from(status, body)
    assert (error.http_status, error.status_code, error.message) == (status, code, message)


def test_image_copies_every_module_the_gateway_imports() -> None:
    """deploy/kserve/Dockerfile COPYs GATEWAY_FILES only: a new mmsent import in the gateway
    must be added there (and to its import-linter contract) or the pod fails at start."""
    copied = [ROOT / p for p in GATEWAY_FILES]
    needed = set()
    for path in (ROOT / "mmsent" / "gateway").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("mmsent"):
                needed.add(node.module)
    for module in needed:
        file = ROOT / (module.replace(".", "/") + ".py")
        assert any(file == c or c in file.parents for c in copied), f"{module} not in the image"
    assert all(Path(c).exists() for c in copied)
