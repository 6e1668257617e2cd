"""A small gRPC proxy that lets stock KServe / Triton v2 clients call TorchServe 0.12.

Stock clients call ``/inference.GRPCInferenceService/<Method>``; TorchServe serves the same
messages as ``/org.pytorch.serve.grpc.openinference.GRPCInferenceService/<Method>``
(pytorch/serve#3394). Renaming the method is not quite enough, because TorchServe's converter and
Triton's client disagree on where tensor data lives (measured, docs/calling.md):

- requests: tritonclient.grpc sends inputs in ``raw_input_contents``, which TorchServe ignores;
  BYTES inputs are moved into ``contents.bytes_contents`` here;
- answers: TorchServe writes ``contents`` (BYTES elements JSON-quoted), tritonclient.grpc reads
  only ``raw_output_contents`` for numbers; every output is re-encoded as raw little-endian data;
- refusals: the handler's ``error`` / ``code`` outputs (gRPC OK) become a real gRPC error.

Messages are the same protocol buffers field for field, so everything else passes as bytes.
Run: ``python -m mmsent.clients.oip_proxy --listen 0.0.0.0:8033 --upstream 127.0.0.1:7070``.
"""

from __future__ import annotations

import argparse
import json
import struct
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc

from mmsent.clients.grpc import CHANNEL_OPTIONS, HTTP_TO_GRPC
from mmsent.clients.open_inference import SERVICE, STOCK_SERVICE, pb
from mmsent.wire.v2_bytes import BytesTensorError, pack_bytes, unpack_bytes

METHODS = ("ServerLive", "ServerReady", "ModelReady", "ServerMetadata", "ModelMetadata",
           "ModelInfer")  # fmt: skip
_PACK = {"FP32": "f", "FP64": "d", "INT32": "i", "INT64": "q"}


def to_torchserve(data: bytes) -> bytes:
    """A stock ``ModelInferRequest`` with BYTES inputs moved from raw to ``contents``."""
    request = pb.ModelInferRequest.FromString(data)
    raw = list(request.raw_input_contents)
    for tensor, blob in zip(request.inputs, raw, strict=False):
        if tensor.datatype == "BYTES":
            try:
                tensor.contents.bytes_contents.extend(unpack_bytes(blob))
            except BytesTensorError as exc:
                raise _Refused(grpc.StatusCode.INVALID_ARGUMENT,
                               f'input "{tensor.name}": {exc}') from None
    del request.raw_input_contents[:]
    return request.SerializeToString()


def from_torchserve(data: bytes) -> bytes:
    """TorchServe's ``ModelInferResponse`` with every output as raw data, as Triton sends it.

    Raises ``_Refused`` for the handler's refusal form (outputs ``error`` and ``code``).
    """
    response = pb.ModelInferResponse.FromString(data)
    names = [t.name for t in response.outputs]
    if "error" in names:
        values = {t.name: t.contents for t in response.outputs}
        message = json.loads(values["error"].bytes_contents[0])
        status = values["code"].int_contents[0] if "code" in values else 400
        raise _Refused(HTTP_TO_GRPC.get(status, grpc.StatusCode.UNKNOWN), str(message))
    for tensor in response.outputs:
        response.raw_output_contents.append(_raw(tensor))
        tensor.ClearField("contents")
    return response.SerializeToString()


class _Refused(Exception):
    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _raw(tensor: Any) -> bytes:
    contents = tensor.contents
    if tensor.datatype == "BYTES":  # TorchServe wrote each element as JSON text: undo that
        items = [json.loads(v) for v in contents.bytes_contents]
        encoded = [(v if isinstance(v, str) else json.dumps(v)).encode("utf-8") for v in items]
        return pack_bytes(encoded)
    code = _PACK.get(tensor.datatype)
    if code is None:
        raise _Refused(grpc.StatusCode.INTERNAL, f"proxy cannot encode {tensor.datatype}")
    field = {"f": "fp32_contents", "d": "fp64_contents", "i": "int_contents",
             "q": "int64_contents"}[code]  # fmt: skip
    values = list(getattr(contents, field))
    return struct.pack(f"<{len(values)}{code}", *values)


class _Rename(grpc.GenericRpcHandler):
    """Answers the stock service's methods by calling TorchServe's under their own name."""

    def __init__(self, channel: grpc.Channel, timeout: float) -> None:
        self.channel = channel
        self.timeout = timeout

    def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        service, _, method = details.method.lstrip("/").partition("/")
        if service != STOCK_SERVICE or method not in METHODS:
            return None  # grpc answers UNIMPLEMENTED
        upstream = self.channel.unary_unary(f"/{SERVICE}/{method}")  # bytes in, bytes out
        infer = method == "ModelInfer"
        return grpc.unary_unary_rpc_method_handler(self._forward(upstream, infer))

    def _forward(self, upstream: Callable[..., bytes], infer: bool) -> Callable[..., bytes]:
        def call(request: bytes, context: grpc.ServicerContext) -> bytes:
            try:
                answer = upstream(to_torchserve(request) if infer else request,
                                  timeout=self.timeout)  # fmt: skip
                return from_torchserve(answer) if infer else answer
            except grpc.RpcError as err:
                context.abort(err.code(), err.details() or "")
            except _Refused as err:
                context.abort(err.code, err.message)
            raise AssertionError("unreachable: abort raises")

        return call


class OipProxy:
    """The proxy as a context manager: ``with OipProxy(upstream) as proxy: proxy.target``."""

    def __init__(self, upstream: str, listen: str = "127.0.0.1:0", timeout: float = 120.0) -> None:
        self.channel = grpc.insecure_channel(upstream, options=list(CHANNEL_OPTIONS))
        self.server = grpc.server(ThreadPoolExecutor(max_workers=16),
                                  handlers=[_Rename(self.channel, timeout)],
                                  options=list(CHANNEL_OPTIONS))  # fmt: skip
        host = listen.rsplit(":", 1)[0]
        self.port = self.server.add_insecure_port(listen)
        self.target = f"{host}:{self.port}"

    def start(self) -> OipProxy:
        self.server.start()
        return self

    def stop(self) -> None:
        self.server.stop(grace=1).wait()
        self.channel.close()

    def __enter__(self) -> OipProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--listen", default="0.0.0.0:8033", help="address the stock clients call")
    p.add_argument("--upstream", default="127.0.0.1:7070", help="TorchServe's gRPC inference")
    args = p.parse_args(argv)
    with OipProxy(args.upstream, args.listen) as proxy:
        print(f"[oip-proxy] {proxy.target} -> {args.upstream}", flush=True)
        proxy.server.wait_for_termination()


if __name__ == "__main__":
    main()
