"""gRPC client for TorchServe: predictions with the same payload forms as REST, plus management.

The request goes in the ``input`` map exactly like multipart form fields
(``{"text": b"...", "image": <raw image bytes>}``), which ``mmsent.serving.payload`` parses
identically to REST, so gRPC and REST answers are the same JSON. The stubs are generated from the
installed TorchServe jar by ``python scripts/gen_grpc_stubs.py`` (run by scripts/setup_env.sh),
never on import: importing a module must not run a compiler.

Errors: TorchServe 0.12's gRPC frontend DROPS the per-item HTTP status the handler sets: a bad
item comes back with gRPC status ``OK`` and the handler's error JSON (``{"error": msg, "code":
400}``) as the prediction bytes (measured; tests/test_grpc.py pins it). Frontend-level failures
(unknown model, queue full, worker died) do arrive as gRPC errors (e.g. ``INTERNAL`` + details).
Both become a :class:`PredictionError` here, so callers never mistake an error body for an
answer.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import grpc
from google.protobuf import empty_pb2

from mmsent.clients.bodies import deadline_after, form_fields
from mmsent.config import DEADLINE_HEADER, DEFAULT_PORTS, MAX_MESSAGE_BYTES

try:
    from mmsent.clients.grpc_stubs import (
        inference_pb2,
        inference_pb2_grpc,
        management_pb2,
        management_pb2_grpc,
    )
except ImportError as exc:  # a fresh clone before setup: say what to run
    raise ImportError(
        "gRPC stubs are missing: run `python scripts/gen_grpc_stubs.py` (scripts/setup_env.sh "
        "does) to generate them from the installed TorchServe jar"
    ) from exc

DEFAULT_TARGET = f"127.0.0.1:{DEFAULT_PORTS['grpc_inference']}"
DEFAULT_MANAGEMENT_TARGET = f"127.0.0.1:{DEFAULT_PORTS['grpc_management']}"
# MAX_MESSAGE_BYTES (config.py) is config.properties' max_request_size: gRPC's 4 MB default
# would reject an ordinary phone photo before TorchServe ever saw it.
CHANNEL_OPTIONS: tuple[tuple[str, int], ...] = (
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
)


# What a handler's HTTP-style status means in gRPC terms (for callers that think in gRPC codes).
HTTP_TO_GRPC: dict[int, grpc.StatusCode] = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    404: grpc.StatusCode.NOT_FOUND,
    408: grpc.StatusCode.DEADLINE_EXCEEDED,  # the handler's deadline refusal
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    429: grpc.StatusCode.RESOURCE_EXHAUSTED,
    500: grpc.StatusCode.INTERNAL,
    503: grpc.StatusCode.UNAVAILABLE,
    504: grpc.StatusCode.DEADLINE_EXCEEDED,
}


class PredictionError(RuntimeError):
    """A prediction the server refused or failed.

    ``grpc_code``: the status the server actually returned (``OK`` for a handler error body);
    ``status``: the HTTP-style status the handler chose (400, 413, ...) when known, else None;
    ``code``: the gRPC-equivalent code of that error (``INVALID_ARGUMENT`` for a 400 item, or the
    transport code for a frontend failure); ``message``: the server's words.
    """

    def __init__(
        self, grpc_code: grpc.StatusCode, message: str, status: int | None = None
    ) -> None:
        self.grpc_code = grpc_code
        self.status = status
        self.message = message
        self.code = (
            HTTP_TO_GRPC.get(status, grpc.StatusCode.UNKNOWN)
            if grpc_code == grpc.StatusCode.OK and status is not None
            else grpc_code
        )
        where = f"HTTP {status}, " if status is not None else ""
        super().__init__(
            f"{self.code.name} ({where}server gRPC status {grpc_code.name}): {message}"
        )


def _error_from_rpc(err: grpc.RpcError) -> PredictionError:
    code = err.code() if callable(getattr(err, "code", None)) else grpc.StatusCode.UNKNOWN
    details = (err.details() if callable(getattr(err, "details", None)) else None) or str(err)
    status = None
    try:  # the handler's body {"error": ..., "code": 400} when TorchServe forwards it verbatim
        body = json.loads(details)
        if isinstance(body, dict) and "error" in body:
            details, status = str(body["error"]), int(body.get("code", 0)) or None
    except (ValueError, TypeError):
        match = re.search(r"\b([45]\d\d)\b", details)
        status = int(match.group(1)) if match else None
    return PredictionError(code, details, status)


def answer_or_raise(prediction: bytes) -> dict[str, Any]:
    """The handler's JSON answer; a per-item error (delivered as gRPC OK) is raised."""
    answer = json.loads(prediction)
    if isinstance(answer, dict) and "error" in answer:
        raise PredictionError(grpc.StatusCode.OK, str(answer["error"]), answer.get("code"))
    return answer


build_input = form_fields  # the gRPC ``input`` map: the same field names REST multipart uses


@dataclass
class GrpcClient:
    """Inference + management channels to one TorchServe.  Use as a context manager."""

    target: str = DEFAULT_TARGET
    management_target: str = DEFAULT_MANAGEMENT_TARGET
    timeout: float = 60.0
    # Under token authorization (config.production.properties): the "inference" and
    # "management" keys from TorchServe's key_file.json, sent as call metadata.
    inference_key: str | None = None
    management_key: str | None = None

    def _metadata(self, key: str | None) -> tuple[tuple[str, str], ...] | None:
        return (("authorization", f"Bearer {key}"),) if key else None

    def __post_init__(self) -> None:
        self._channel = grpc.insecure_channel(self.target, options=CHANNEL_OPTIONS)
        self._mgmt_channel = grpc.insecure_channel(self.management_target, options=CHANNEL_OPTIONS)
        self.inference = inference_pb2_grpc.InferenceAPIsServiceStub(self._channel)
        self.management = management_pb2_grpc.ManagementAPIsServiceStub(self._mgmt_channel)

    # -- inference ---------------------------------------------------------------------------
    def ping(self) -> str:
        """TorchServe's health string (JSON text like ``{"status": "Healthy"}``)."""
        return self.inference.Ping(
            empty_pb2.Empty(), timeout=self.timeout, metadata=self._metadata(self.inference_key)
        ).health

    def predict_raw(self, model: str, fields: Mapping[str, bytes], version: str = "") -> bytes:
        """Send one request's ``input`` map; return the prediction bytes or raise.

        Unless ``fields`` has one, an ``x-request-deadline`` field (now + ``timeout``) goes
        along: TorchServe does not pass gRPC deadlines to the worker, this field reaches it.
        """
        fields = {DEADLINE_HEADER: deadline_after(self.timeout).encode(), **fields}
        request = inference_pb2.PredictionsRequest(
            model_name=model, model_version=version, input=dict(fields)
        )
        try:
            return self.inference.Predictions(
                request, timeout=self.timeout, metadata=self._metadata(self.inference_key)
            ).prediction
        except grpc.RpcError as err:
            raise _error_from_rpc(err) from None

    def predict(
        self, model: str, text: str | None = None, image: bytes | None = None, version: str = ""
    ) -> dict[str, Any]:
        """Predict on text and/or raw image bytes; returns the handler's JSON answer."""
        return answer_or_raise(self.predict_raw(model, build_input(text, image), version))

    def stream_predict_raw(
        self, model: str, fields: Mapping[str, bytes], version: str = ""
    ) -> list[bytes]:
        """``StreamPredictions``: every message of the server stream, in order.

        This model answers a stream call with exactly one message (the same bytes as
        ``Predictions``); the handler marks it as the last one (``ts_stream_next: false``), which
        TorchServe 0.12 requires, or its frontend fails and the worker is restarted.
        """
        request = inference_pb2.PredictionsRequest(
            model_name=model, model_version=version, input=dict(fields)
        )
        try:
            stream = self.inference.StreamPredictions(
                request, timeout=self.timeout, metadata=self._metadata(self.inference_key)
            )
            return [reply.prediction for reply in stream]
        except grpc.RpcError as err:
            raise _error_from_rpc(err) from None

    def stream_predict(
        self, model: str, text: str | None = None, image: bytes | None = None, version: str = ""
    ) -> dict[str, Any]:
        """:meth:`predict` over ``StreamPredictions`` (one message expected)."""
        messages = self.stream_predict_raw(model, build_input(text, image), version)
        if len(messages) != 1:
            raise PredictionError(
                grpc.StatusCode.OK, f"expected one stream message, got {len(messages)}"
            )
        return answer_or_raise(messages[0])

    # -- management --------------------------------------------------------------------------
    def list_models(self, limit: int = 100) -> dict[str, Any]:
        msg = self._management_call(
            self.management.ListModels, management_pb2.ListModelsRequest(limit=limit)
        )
        return json.loads(msg)

    def describe_model(self, model: str, version: str = "") -> list[dict[str, Any]]:
        request = management_pb2.DescribeModelRequest(model_name=model, model_version=version)
        return json.loads(self._management_call(self.management.DescribeModel, request))

    def _management_call(self, method: Any, request: Any) -> str:
        try:
            return method(
                request, timeout=self.timeout, metadata=self._metadata(self.management_key)
            ).msg
        except grpc.RpcError as err:
            raise _error_from_rpc(err) from None

    # -- lifecycle ---------------------------------------------------------------------------
    def close(self) -> None:
        self._channel.close()
        self._mgmt_channel.close()

    def __enter__(self) -> GrpcClient:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
