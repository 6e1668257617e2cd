"""Open Inference Protocol (v2) over TorchServe 0.12's own gRPC service, with its quirks handled.

TorchServe serves v2 gRPC as ``org.pytorch.serve.grpc.openinference.GRPCInferenceService`` (only
when started with ``TS_OPEN_INFERENCE_PROTOCOL=oip``), not as ``inference.GRPCInferenceService``
which KServe / Triton clients call (pytorch/serve#3394): stock clients get ``UNIMPLEMENTED``.
This client uses stubs generated from the jar's ``open_inference_grpc.proto`` and undoes what the
frontend does to answers (measured on 0.12.0; tests/integration/test_open_inference_grpc.py):

- BYTES inputs must travel in ``contents.bytes_contents``: the frontend ignores
  ``raw_input_contents`` (Triton's default). It base64-encodes each element for the handler.
- BYTES outputs come back JSON-quoted (``b'"positive"'``): the frontend writes each JSON element
  with ``toString()``. Decoded here.
- A refused request is gRPC ``OK`` with outputs ``error`` (BYTES) and ``code`` (INT32), because
  the frontend drops the item's status (and an ``{"error"}`` body would crash its converter).
  Raised here as :class:`PredictionError` with that status.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import grpc

from mmsent.clients.grpc import CHANNEL_OPTIONS, PredictionError
from mmsent.config import DEFAULT_MODEL_NAME, DEFAULT_PORTS

try:
    from mmsent.clients.grpc_stubs import open_inference_grpc_pb2 as pb
    from mmsent.clients.grpc_stubs import open_inference_grpc_pb2_grpc as pb_grpc
except ImportError as exc:  # stubs from an older checkout: say what to run
    raise ImportError(
        "Open Inference gRPC stubs are missing: run `python scripts/gen_grpc_stubs.py --force`"
    ) from exc

SERVICE = "org.pytorch.serve.grpc.openinference.GRPCInferenceService"
STOCK_SERVICE = "inference.GRPCInferenceService"  # what KServe / Triton clients call
DEFAULT_TARGET = f"127.0.0.1:{DEFAULT_PORTS['grpc_inference']}"


@dataclass(frozen=True)
class V2Answer:
    """One v2 answer: per-item labels and the FP32 tensors as nested lists."""

    request_id: str
    model_name: str
    model_version: str
    outputs: dict[str, list[Any]]  # name -> rows (label: str per item; others: list per item)


def infer_request(
    texts: Sequence[str | None] | None = None,
    images: Sequence[bytes | None] | None = None,
    model_name: str = DEFAULT_MODEL_NAME,
    request_id: str = "",
) -> Any:
    """A ``ModelInferRequest`` with N items; ``None`` / missing elements are sent empty (absent)."""
    request = pb.ModelInferRequest(model_name=model_name, id=request_id)
    for name, values in (("text", texts), ("image", images)):
        if values is None:
            continue
        tensor = request.inputs.add(name=name, datatype="BYTES", shape=[len(values)])
        tensor.contents.bytes_contents.extend(
            (v.encode("utf-8") if isinstance(v, str) else v or b"") for v in values
        )
    return request


def decode_response(response: Any) -> V2Answer:
    """The answer in ``response``; raise PredictionError for a refusal (``error`` output)."""
    outputs: dict[str, list[Any]] = {}
    for tensor in response.outputs:
        shape = list(tensor.shape)
        if tensor.datatype == "BYTES":
            values: list[Any] = [json.loads(v) for v in tensor.contents.bytes_contents]
        elif tensor.datatype == "FP32":
            values = list(tensor.contents.fp32_contents)
        else:
            values = list(tensor.contents.int_contents)
        if len(shape) == 2:
            values = [values[i : i + shape[1]] for i in range(0, len(values), shape[1])]
        outputs[tensor.name] = values
    if "error" in outputs:
        status = int(outputs.get("code", [400])[0])
        raise PredictionError(grpc.StatusCode.OK, str(outputs["error"][0]), status)
    return V2Answer(response.id, response.model_name, response.model_version, outputs)


class OpenInferenceGrpcClient:
    """``ModelInfer`` / health / metadata on TorchServe's v2 gRPC service."""

    def __init__(self, target: str = DEFAULT_TARGET, timeout: float = 60.0) -> None:
        self.channel = grpc.insecure_channel(target, options=list(CHANNEL_OPTIONS))
        self.stub = pb_grpc.GRPCInferenceServiceStub(self.channel)
        self.timeout = timeout

    def infer(
        self,
        texts: Sequence[str | None] | None = None,
        images: Sequence[bytes | None] | None = None,
        model_name: str = DEFAULT_MODEL_NAME,
        request_id: str = "",
    ) -> V2Answer:
        """Classify N items in one request; a refused request raises PredictionError."""
        request = infer_request(texts, images, model_name, request_id)
        try:
            return decode_response(self.stub.ModelInfer(request, timeout=self.timeout))
        except grpc.RpcError as err:
            raise PredictionError(err.code(), err.details() or "") from err

    def server_live(self) -> bool:
        return self.stub.ServerLive(pb.ServerLiveRequest(), timeout=self.timeout).live

    def server_ready(self) -> bool:
        return self.stub.ServerReady(pb.ServerReadyRequest(), timeout=self.timeout).ready

    def model_ready(self, model_name: str = DEFAULT_MODEL_NAME) -> bool:
        request = pb.ModelReadyRequest(name=model_name)
        return self.stub.ModelReady(request, timeout=self.timeout).ready

    def model_metadata(self, model_name: str = DEFAULT_MODEL_NAME) -> Any:
        request = pb.ModelMetadataRequest(name=model_name)
        return self.stub.ModelMetadata(request, timeout=self.timeout)

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> OpenInferenceGrpcClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
