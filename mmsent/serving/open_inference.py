"""The Open Inference Protocol (KServe v2) on top of the one request path: parse, answer.

TorchServe 0.12 routes ``POST /v2/models/{name}/infer`` to the handler like ``/predictions``:
the body passes through untouched (JSON parsed by the worker when ``Content-Type`` is
``application/json``, else raw bytes). Its gRPC ``ModelInfer`` (service
``org.pytorch.serve.grpc.openinference.GRPCInferenceService``, only with
``TS_OPEN_INFERENCE_PROTOCOL=oip``) re-encodes the request as JSON in the same shape, with every
``bytes_contents`` element base64-encoded, and arrives without HTTP headers. KServe's stock
``kservev2`` envelope would read only the first element of each input (pytorch/serve#2158), so no
envelope is configured and this module does the protocol instead, framework-neutral and testable
without a server.

A request is told apart from a ``/predictions`` body by its structure (a JSON object with an
``inputs`` key) or by the binary-extension header; the URL never reaches the handler. A v2
request carries N items (inputs ``text`` and/or ``image``, BYTES, shape ``[N]``); each item
becomes the same form-field mapping ``payload.parse_item`` validates for every other route, so the
rules (empty = absent, valid Unicode, image limits) are the same everywhere.

The protocol has no per-item errors: one bad item refuses the whole request with that item's
status and a message naming its index; the other requests of the batch are unharmed. The
exchange drives this module through ``protocols.OpenInference``.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from mmsent.config import LABELS, MODALITIES
from mmsent.errors import RequestError
from mmsent.serving.limits import RequestLimits
from mmsent.serving.messages import BatchInfo
from mmsent.wire.json_fields import json_type, loads, reject_unknown
from mmsent.wire.v2_bytes import BytesTensorError, unpack_bytes

BINARY_HEADER = "inference-header-content-length"  # the binary tensor extension (lower-case)
INPUTS = ("text", "image")
OUTPUTS = ("label", "probabilities", "contributions")
_REQUEST_KEYS = {"id", "inputs", "outputs", "parameters", "model_name", "model_version"}
_TENSOR_KEYS = {"name", "shape", "datatype", "data", "parameters"}
NO_EXPLAIN = (
    "explanations are not offered over the Open Inference Protocol: "
    "POST /explanations/{model} takes the same inputs"
)
_V2_KEY = b'"inputs"'
_MAX_SHOWN = 40  # characters of a client-chosen name quoted back in a message


@dataclass(frozen=True)
class V2Request:
    """One parsed v2 request: its items (form fields for ``parse_item``) and how to answer it.

    ``grpc``: it came through TorchServe's gRPC ``ModelInfer``, whose frontend builds the
    ``ModelInferResponse`` from our JSON and needs ``id`` / ``model_version`` always present.
    """

    items: list[dict[str, Any]]
    request_id: str | None
    outputs: tuple[str, ...]
    grpc: bool


def is_v2(raw: Any, headers: Mapping[str, str]) -> bool:
    """True for an Open Inference Protocol request (JSON with ``inputs``, or binary extension).

    Detection is by structure because the handler never sees the URL; a ``/predictions`` JSON
    body has only ``text`` / ``image``, so the two can never be confused.
    """
    return as_v2(raw, headers) is not None


def as_v2(raw: Any, headers: Mapping[str, str]) -> Mapping[str, Any] | None:
    """``raw`` with its v2 body parsed, or None when it is not a v2 request.

    A v2 JSON body sent without ``Content-Type: application/json`` (tritonclient.http sends
    none) reaches the handler as bytes; it is parsed here, once, when it mentions ``"inputs"``.
    """
    if BINARY_HEADER in headers:
        return raw if isinstance(raw, Mapping) else None
    body = raw.get("body") if isinstance(raw, Mapping) and len(raw) == 1 else None
    if isinstance(body, bytes | bytearray | str) and _V2_KEY in _as_bytes(body):
        try:
            body = json.loads(body)
        except (ValueError, RecursionError):  # malformed: the /predictions path says why
            return None
        raw = {"body": body}
    return raw if isinstance(body, Mapping) and "inputs" in body else None


def request_id_of(raw: Any) -> str:
    """The ``id`` of a request refused before or while parsing, when there is a plain one."""
    body = raw.get("body") if isinstance(raw, Mapping) else None
    request_id = body.get("id") if isinstance(body, Mapping) else None
    return request_id if isinstance(request_id, str) else ""


def _as_bytes(body: bytes | bytearray | str) -> bytes | bytearray:
    return body.encode("utf-8", "replace") if isinstance(body, str) else body


def parse_request(
    raw: Mapping[str, Any], headers: Mapping[str, str], limits: RequestLimits, grpc: bool = False
) -> V2Request:
    """The v2 request in ``raw`` (what the engine hands over), or a RequestError.

    ``grpc``: it came through TorchServe's gRPC ``ModelInfer`` (elements arrive base64-encoded).
    """
    body = raw.get("body")
    tail = b""
    if BINARY_HEADER in headers:
        body, tail = _split_binary(body, headers[BINARY_HEADER])
    if not isinstance(body, Mapping):
        raise RequestError('Open Inference request must be a JSON object with an "inputs" list')
    reject_unknown(body.keys(), _REQUEST_KEYS, "request field")
    request_id = body.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise RequestError(f'"id" must be a string, got {json_type(request_id)}')
    columns = _read_inputs(body.get("inputs"), tail, grpc, limits)
    count = len(next(iter(columns.values())))
    items = [{name: values[i] for name, values in columns.items()} for i in range(count)]
    return V2Request(items, request_id if request_id else None, _requested(body), grpc)


def _split_binary(body: Any, header_length: str) -> tuple[Any, bytes]:
    """(JSON header object, binary tail) of a binary-extension body."""
    if isinstance(body, Mapping):  # the worker already parsed it: nothing binary follows
        return body, b""
    if isinstance(body, str):
        body = body.encode("utf-8")
    if not isinstance(body, bytes | bytearray):
        raise RequestError("binary Open Inference request has no body")
    try:
        size = int(header_length)
    except ValueError:
        raise RequestError(f'"Inference-Header-Content-Length" must be an integer, got '
                           f"{header_length[:_MAX_SHOWN]!r}") from None  # fmt: skip
    if not 0 < size <= len(body):
        raise RequestError(f'"Inference-Header-Content-Length" {size} does not fit a '
                           f"{len(body)}-byte body")  # fmt: skip
    return loads(bytes(body[:size]), "Open Inference JSON header"), bytes(body[size:])


def _read_inputs(
    inputs: Any, tail: bytes, grpc: bool, limits: RequestLimits
) -> dict[str, list[Any]]:
    """{input name: N elements}; every input the same N, within ``max_items_per_request``."""
    if not isinstance(inputs, list) or not inputs:
        raise RequestError('"inputs" must be a non-empty list of tensors named "text" / "image"')
    columns: dict[str, list[Any]] = {}
    offset = 0
    for tensor in inputs:
        if not isinstance(tensor, Mapping):
            raise RequestError(f"each input must be an object, got {json_type(tensor)}")
        name = tensor.get("name")
        if name not in INPUTS:
            shown = json.dumps(str(name)[:_MAX_SHOWN]) if name is not None else "no name"
            raise RequestError(f'unknown input {shown}: this model takes "text" and "image"')
        if name in columns:
            raise RequestError(f'input "{name}" is given twice')
        reject_unknown(tensor.keys(), _TENSOR_KEYS, f'field of input "{name}"')
        if tensor.get("datatype") != "BYTES":
            got = json.dumps(str(tensor.get("datatype"))[:_MAX_SHOWN])
            raise RequestError(f'input "{name}" must have datatype "BYTES", got {got}')
        count = _count(name, tensor.get("shape"), limits)
        values, offset = _values(name, tensor, tail, offset, grpc)
        if len(values) != count:
            raise RequestError(
                f'input "{name}" has shape {tensor["shape"]} ({count} items) but '
                f"{len(values)} data element{'s' if len(values) != 1 else ''}"
            )
        columns[name] = [_element(name, v, grpc) for v in values]
    if offset != len(tail):
        raise RequestError(f"{len(tail) - offset} bytes of binary data follow the last input")
    counts = {name: len(values) for name, values in columns.items()}
    if len(set(counts.values())) > 1:
        raise RequestError(f'inputs "text" and "image" must carry the same number of items, got '
                           f'{counts["text"]} and {counts["image"]}')  # fmt: skip
    return columns


def _count(name: str, shape: Any, limits: RequestLimits) -> int:
    """N from ``[N]`` (or ``[N, 1]``, as batch-major clients write it), bounded."""
    valid = (
        isinstance(shape, list)
        and len(shape) in (1, 2)
        and all(isinstance(d, int) and not isinstance(d, bool) for d in shape)
        and (len(shape) == 1 or shape[1] == 1)
    )
    if not valid:
        raise RequestError(f'input "{name}" must have shape [N] or [N, 1], got '
                           f"{json.dumps(shape)[:_MAX_SHOWN]}")  # fmt: skip
    count = shape[0]
    if count < 1:
        raise RequestError(f'input "{name}" is empty (shape {shape}): send at least one item')
    if count > limits.max_items_per_request:
        raise RequestError(
            f'input "{name}" has {count} items: at most {limits.max_items_per_request} per '
            "request (send several requests; TorchServe batches them)",
            413,
        )
    return count


def _values(
    name: str, tensor: Mapping[str, Any], tail: bytes, offset: int, grpc: bool
) -> tuple[list[Any], int]:
    """The tensor's elements (JSON ``data`` or its slice of the binary tail), next offset."""
    params = tensor.get("parameters") or {}
    size = params.get("binary_data_size") if isinstance(params, Mapping) else None
    if size is None:
        data = tensor.get("data")
        if not isinstance(data, list):
            raise RequestError(f'input "{name}" needs "data" as a list of strings')
        if data and all(isinstance(row, list) for row in data):
            data = [v for row in data for v in row]  # nested [[a], [b]] for shape [N, 1]
        return data, offset
    if "data" in tensor:
        raise RequestError(f'input "{name}" has both "data" and binary data')
    if not isinstance(size, int) or isinstance(size, bool) or not 0 <= size <= len(tail) - offset:
        raise RequestError(f'input "{name}": binary_data_size does not fit the binary data')
    try:
        return unpack_bytes(tail[offset : offset + size]), offset + size
    except BytesTensorError as exc:
        raise RequestError(f'input "{name}": {exc}') from None


def _element(name: str, value: Any, grpc: bool) -> Any:
    """One element as the form field ``parse_item`` takes: text str/bytes, image bytes/base64.

    gRPC: TorchServe base64-encodes every ``bytes_contents`` element, so it is decoded here.
    An image given as bytes may itself be base64 text (the protocol allows either): a raw image
    is never valid strict base64, so a successful decode means it was base64.
    """
    if grpc and isinstance(value, str):
        try:
            value = base64.b64decode(value, validate=True)  # the frontend's own encoding
        except (binascii.Error, ValueError):
            raise RequestError(
                f'input "{name}": element is not the base64 TorchServe sends'
            ) from None
    if isinstance(value, bytes) and name == "image" and value:
        try:
            return base64.b64decode(value, validate=True) or value
        except (binascii.Error, ValueError):
            return value
    if not isinstance(value, str | bytes):
        raise RequestError(f'input "{name}" elements must be strings, got {json_type(value)}')
    return value


def _requested(body: Mapping[str, Any]) -> tuple[str, ...]:
    """The outputs to answer: the ones asked for by name, else all three."""
    asked = body.get("outputs")
    if asked is None:
        return OUTPUTS
    if not isinstance(asked, list) or not all(isinstance(o, Mapping) for o in asked):
        raise RequestError('"outputs" must be a list of objects with a "name"')
    names = tuple(dict.fromkeys(str(o.get("name")) for o in asked))
    unknown = [n for n in names if n not in OUTPUTS]
    if unknown:
        shown = ", ".join(json.dumps(n[:_MAX_SHOWN]) for n in unknown[:3])
        raise RequestError(f"unknown output {shown}: this model answers "
                           + ", ".join(f'"{o}"' for o in OUTPUTS))  # fmt: skip
    return names or OUTPUTS


# -- answers -----------------------------------------------------------------------------------
def item_error(index: int, count: int, error: RequestError) -> RequestError:
    """The request's error for its bad item ``index``: same status, message naming the item."""
    if count == 1:
        return error
    return RequestError(f"item {index}: {error.message}", error.status)


def response(
    request: V2Request, answers: Sequence[Mapping[str, Any]], context: BatchInfo
) -> dict[str, Any]:
    """The v2 answer for the request's N item answers (``SentimentPipeline`` answer dicts).

    ``probabilities`` columns follow ``labels`` and ``contributions`` columns ``MODALITIES``
    (each output's ``parameters.columns`` says so, since the protocol has no column names).
    """
    count, labels = len(answers), context.labels
    tensors = {
        "label": ("BYTES", [count], [a["label"] for a in answers], {}),
        "probabilities": ("FP32", [count, len(labels)],
                          [float(a["probabilities"][k]) for a in answers for k in labels],
                          {"columns": ",".join(labels)}),
        "contributions": ("FP32", [count, len(MODALITIES)],
                          [float(a["contributions"][m]) for a in answers for m in MODALITIES],
                          {"columns": ",".join(MODALITIES)}),
    }  # fmt: skip
    outputs = []
    for name in request.outputs:
        datatype, shape, data, params = tensors[name]
        tensor = {"name": name, "datatype": datatype, "shape": shape, "data": data}
        if params and not request.grpc:  # TorchServe's gRPC frontend drops tensor parameters
            tensor["parameters"] = params
        outputs.append(tensor)
    body = _envelope(request.request_id, context.model_name, context.model_version, request.grpc)
    if not request.grpc:  # gRPC: TorchServe's frontend drops response parameters
        body["parameters"] = {"batch_size": context.batch_size, "batch_rows": context.batch_rows}
    body["outputs"] = outputs
    return body


def error_response(
    error: RequestError,
    grpc: bool,
    request_id: str | None,
    model_name: str,
    model_version: str | None,
) -> dict[str, Any]:
    """The refusal body: ``{"error": msg}`` over REST (the protocol's form, with the 4xx status).

    Over gRPC, TorchServe 0.12 ignores the item status and builds a ``ModelInferResponse`` from
    the body, dereferencing ``id``, ``model_name``, ``model_version`` and ``outputs`` without a
    null check: an ``{"error"}`` body there throws in the frontend and kills the worker, failing
    every batch mate (measured). So a gRPC refusal is a well-formed response whose two outputs,
    ``error`` (BYTES) and ``code`` (INT32), carry the message and the status.
    """
    if not grpc:
        return {"error": error.message}
    body = _envelope(request_id, model_name, model_version, grpc=True)
    body["outputs"] = [
        {"name": "error", "datatype": "BYTES", "shape": [1], "data": [error.message]},
        {"name": "code", "datatype": "INT32", "shape": [1], "data": [error.status]},
    ]
    return body


def _envelope(
    request_id: str | None, model_name: str, model_version: str | None, grpc: bool
) -> dict[str, Any]:
    body: dict[str, Any] = {"model_name": model_name}
    if model_version or grpc:
        body["model_version"] = model_version or ""
    if request_id or grpc:
        body["id"] = request_id or ""
    return body


def model_metadata(model_name: str, model_version: str | None = None) -> dict[str, Any]:
    """What ``GET /v2/models/{name}`` should say (TorchServe 0.12 does not route that URL: 404).

    Served nowhere by TorchServe; documented in docs/calling.md and kept here, next to
    the parser it describes, so a test can hold the two together.
    """
    tensor = {"datatype": "BYTES", "shape": [-1]}
    return {
        "name": model_name,
        "versions": [model_version] if model_version else [],
        "platform": "pytorch_torchscript",
        "inputs": [{"name": name, **tensor} for name in INPUTS],
        "outputs": [
            {"name": "label", **tensor},
            {"name": "probabilities", "datatype": "FP32", "shape": [-1, len(LABELS)]},
            {"name": "contributions", "datatype": "FP32", "shape": [-1, len(MODALITIES)]},
        ],
    }
