"""The kserve ``ModelServer`` around :class:`TorchServeForwarder`: REST and gRPC front-ends, with
two adjustments to kserve 0.21's DataPlane and one error handler, each for a measured reason.

- ``/v2/health/ready`` and gRPC ``ServerReady``: kserve answers a constant ``true`` unless it is
  a transformer with a predictor health check. In the pod, "ready" should mean "a worker can
  answer", so :class:`GatewayDataPlane` asks every registered model's ``healthy()``.
- REST bodies kserve hands over as bytes (the binary tensor extension, and JSON sent without a
  JSON content-type, as tritonclient.http does): kserve's decoder converts binary BYTES to UTF-8
  strings and answers 500 for image bytes, and refuses header-less bytes outright. The gateway
  keeps such bodies as they came (``RawV2Request``) and TorchServe's handler decodes them.
- ``UpstreamError`` (TorchServe's refusals): REST answers ``{"error": message}`` with TorchServe's
  status (kserve's handlers know only 400/500/503...); gRPC needs nothing extra, since kserve's
  interceptor already turns a ``GrpcException`` into its status code and message.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fastapi.responses import JSONResponse
from kserve import ModelServer
from kserve.constants.constants import INFERENCE_CONTENT_LENGTH_HEADER
from kserve.errors import InvalidInput
from kserve.protocol.dataplane import DataPlane
from kserve.protocol.infer_type import InferRequest

from mmsent.gateway.forward import RawV2Request, UpstreamError
from mmsent.gateway.kserve_model import TorchServeForwarder


class GatewayDataPlane(DataPlane):
    """kserve's DataPlane with server readiness = every model healthy, and binary bodies kept."""

    async def ready(self) -> bool:
        models = list(self.model_registry.get_models().values())
        return bool(models) and all([await model.healthy() for model in models])

    def decode_inference_request(
        self, body: Any, headers: Mapping[str, str], model_name: str
    ) -> InferRequest:
        if not isinstance(body, bytes):
            return super().decode_inference_request(body, headers, model_name)
        length = headers.get(INFERENCE_CONTENT_LENGTH_HEADER.lower()) or headers.get(
            INFERENCE_CONTENT_LENGTH_HEADER)
        if length is None:  # no binary part: the whole body is the JSON request (tritonclient
            return RawV2Request(body, len(body), model_name)  # sends it without content-type)
        try:
            json_length = int(length)
        except ValueError:
            json_length = -1
        if not 0 <= json_length <= len(body):
            raise InvalidInput(f"binary request needs an integer {INFERENCE_CONTENT_LENGTH_HEADER}"
                               f" header within the body's {len(body)} bytes, got {length!r}")
        return RawV2Request(body, json_length, model_name)


async def upstream_error_handler(_: Any, exc: UpstreamError) -> JSONResponse:
    """TorchServe's status and message, in the protocol's ``{"error": ...}`` form."""
    return JSONResponse(status_code=exc.http_status, content={"error": exc.message})


def build_server(
    model: TorchServeForwarder, http_port: int, grpc_port: int, **kwargs: Any
) -> ModelServer:
    """A ModelServer serving ``model`` on ``http_port`` (REST v2) and ``grpc_port`` (gRPC v2)."""
    import kserve.model_server

    server = ModelServer(http_port=http_port, grpc_port=grpc_port, **kwargs)
    server.dataplane = GatewayDataPlane(model_registry=server.registered_models)
    # kserve's RESTServer serves this module-level app and adds its own handlers at start
    kserve.model_server.app.add_exception_handler(UpstreamError, upstream_error_handler)
    return server
