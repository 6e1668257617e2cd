"""The gateway's wire work: a kserve ``InferRequest`` -> a v2 body for TorchServe's REST route, and
TorchServe's answer -> a kserve ``InferResponse`` (or a typed error).

Why the request is re-encoded with the binary tensor extension rather than as plain JSON: images
are raw bytes over gRPC (``bytes_contents`` or ``raw_input_contents``) and over tritonclient.http's
binary extension, and JSON can carry only UTF-8 text. Our handler reads both forms
(docs/calling.md), so bytes travel as bytes and JSON ``data`` stays JSON: the handler sees
what the client sent. A REST request that already uses the binary extension is forwarded
byte-for-byte (:class:`RawV2Request`): kserve 0.21's own decoder turns binary BYTES into UTF-8
strings and fails on image bytes, so the gateway does not let it decode them.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from http import HTTPStatus
from typing import Any

import grpc
import orjson
from grpc_interceptor.exceptions import GrpcException
from kserve.protocol.infer_type import (
    InferOutput,
    InferRequest,
    InferResponse,
    RequestedOutput,
    to_http_parameters,
)

from mmsent.wire.v2_bytes import pack_bytes

HEADER_LENGTH = "Inference-Header-Content-Length"
# HTTP status from TorchServe -> the gRPC code a stock client should see (4xx: the caller's fault)
GRPC_CODES: dict[int, grpc.StatusCode] = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    404: grpc.StatusCode.NOT_FOUND,
    408: grpc.StatusCode.DEADLINE_EXCEEDED,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    429: grpc.StatusCode.RESOURCE_EXHAUSTED,
    501: grpc.StatusCode.UNIMPLEMENTED,
    503: grpc.StatusCode.UNAVAILABLE,
    504: grpc.StatusCode.DEADLINE_EXCEEDED,
}


class UpstreamError(GrpcException):
    """TorchServe refused or failed a request (or could not be reached).

    A ``GrpcException`` so kserve's gRPC interceptor aborts with :attr:`status_code` and the
    message; the gateway registers a REST handler that answers ``{"error": message}`` with
    :attr:`http_status`. One exception, both front-ends, the protocol's error form on each.
    """

    def __init__(self, http_status: int, message: str) -> None:
        client_fault = http_status < 500
        fallback = grpc.StatusCode.INVALID_ARGUMENT if client_fault else grpc.StatusCode.INTERNAL
        code = GRPC_CODES.get(http_status, fallback)
        super().__init__(details=message, status_code=code)
        self.http_status = http_status
        self.message = message

    def __str__(self) -> str:
        return f"[{self.http_status}] {self.message}"


class RawV2Request(InferRequest):
    """A REST request kserve handed over as bytes (binary tensor extension, or JSON without a
    JSON content-type), kept as the client's exact bytes.

    ``inputs`` is empty on purpose: the gateway never decodes the tensors, TorchServe's handler
    does (and reports bad sizes with its own messages).
    """

    def __init__(self, body: bytes, json_length: int, model_name: str) -> None:
        try:
            header = orjson.loads(body[:json_length])
        except orjson.JSONDecodeError:
            header = {}  # forwarded anyway: the handler answers "malformed JSON ..."
        header = header if isinstance(header, dict) else {}
        parameters = header.get("parameters")
        outputs = header.get("outputs")
        super().__init__(
            model_name=model_name,
            infer_inputs=[],
            request_id=header.get("id") if isinstance(header.get("id"), str) else None,
            parameters=parameters if isinstance(parameters, dict) else None,
            request_outputs=[RequestedOutput(o["name"], o.get("parameters"))
                             for o in outputs if isinstance(o, dict) and "name" in o]
            if isinstance(outputs, list) else None,
        )  # fmt: skip
        self.body = body
        self.json_length = json_length


def _http_parameters(parameters: Any) -> dict[str, Any]:
    """gRPC ``InferParameter`` maps or plain dicts -> JSON-able dicts ({} when none)."""
    return to_http_parameters(parameters) if parameters else {}


def encode_request(request: InferRequest) -> tuple[bytes, dict[str, str]]:
    """``request`` as (body, headers) for TorchServe's ``POST /v2/models/<name>/infer``.

    All inputs, all items, ``id``, ``parameters`` and requested ``outputs`` are kept: the stock
    kfs wrapper's gRPC path kept ``{"data": <first element of the first input>}`` only.
    """
    if isinstance(request, RawV2Request):
        if request.json_length == len(request.body):
            return request.body, {"Content-Type": "application/json"}
        return request.body, {HEADER_LENGTH: str(request.json_length),
                              "Content-Type": "application/octet-stream"}  # fmt: skip
    inputs: list[dict[str, Any]] = []
    binary: list[bytes] = []
    for tensor in request.inputs:
        entry: dict[str, Any] = {"name": tensor.name, "shape": list(tensor.shape),
                                 "datatype": tensor.datatype}  # fmt: skip
        parameters = _http_parameters(tensor.parameters)
        parameters.pop("binary_data_size", None)
        raw = tensor._raw_data  # the SDK keeps gRPC raw_input_contents only here
        data = tensor.data
        if raw is None and isinstance(data, list) and any(isinstance(d, bytes) for d in data):
            raw = pack_bytes(data)  # gRPC bytes_contents: bytes, not text
        if raw is not None:
            parameters["binary_data_size"] = len(raw)
            binary.append(raw)
        else:
            entry["data"] = list(data) if data is not None else []
        if parameters:
            entry["parameters"] = parameters
        inputs.append(entry)
    header: dict[str, Any] = {"inputs": inputs}
    if request.id:
        header["id"] = request.id
    if request.parameters:
        header["parameters"] = _http_parameters(request.parameters)
    if request.request_outputs:
        header["outputs"] = [
            {"name": o.name, **({"parameters": _http_parameters(o.parameters)}
                                if o.parameters else {})}
            for o in request.request_outputs
        ]  # fmt: skip
    json_part = orjson.dumps(header)
    if not binary:
        return json_part, {"Content-Type": "application/json"}
    return json_part + b"".join(binary), {HEADER_LENGTH: str(len(json_part)),
                                          "Content-Type": "application/octet-stream"}  # fmt: skip


def _scalar_parameters(parameters: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """Parameters kserve can put on the gRPC wire (str, bool, int); anything else as JSON text."""
    if not parameters:
        return None
    return {k: v if isinstance(v, str | bool | int) else orjson.dumps(v).decode()
            for k, v in parameters.items()}  # fmt: skip


def decode_answer(answer: Mapping[str, Any], request: InferRequest) -> InferResponse:
    """TorchServe's v2 JSON answer as an ``InferResponse`` both kserve front-ends can encode.

    Over gRPC the outputs go out as ``raw_output_contents`` (tritonclient.grpc reads numbers only
    from there); over REST as JSON unless the client asked for binary (``binary_data_output``).
    kserve's REST schema requires an ``id``: the client's, else TorchServe's, else a fresh one.
    """
    outputs = [
        InferOutput(name=o["name"], shape=list(o["shape"]), datatype=o["datatype"],
                    data=list(o["data"]), parameters=_scalar_parameters(o.get("parameters")))
        for o in answer["outputs"]
    ]  # fmt: skip
    return InferResponse(
        response_id=answer.get("id") or request.id or str(uuid.uuid4()),
        model_name=answer.get("model_name") or request.model_name,
        model_version=answer.get("model_version"),
        infer_outputs=outputs,
        parameters=_scalar_parameters(answer.get("parameters")),
        use_binary_outputs=bool(request.from_grpc or request.use_binary_outputs),
    )


def error_from(status: int, body: bytes) -> UpstreamError:
    """TorchServe's non-200 answer as an :class:`UpstreamError` carrying its message: the
    handler's ``{"error": ...}`` or the frontend's ``{"code", "type", "message"}``."""
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        parsed = None
    message = None
    if isinstance(parsed, dict):
        message = parsed.get("error") or parsed.get("message")
    if not message:
        try:
            phrase = HTTPStatus(status).phrase
        except ValueError:
            phrase = f"HTTP {status}"
        message = body.decode(errors="replace").strip()[:500] or phrase
    return UpstreamError(status, str(message))
