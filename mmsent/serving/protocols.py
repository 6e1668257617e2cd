"""Wire protocols as small objects: which requests they claim, and decode / encode / refuse.

Each class here implements ``messages.Protocol``. Adding a protocol means adding one class and
listing it in ``exchange.PROTOCOLS``; the exchange and the engines do not change (as LitServe's
``LitSpec`` keeps the wire apart from the model loop).
"""

from __future__ import annotations

from mmsent.errors import RequestError
from mmsent.serving import open_inference as oip
from mmsent.serving.explain import split_options
from mmsent.serving.limits import RequestLimits
from mmsent.serving.messages import BatchInfo, Reply, Request, Row


class Plain:
    """The model's own form, one item per request: a JSON body ``{"text", "image"}``, form
    fields (multipart, gRPC ``input`` map) or a bare image body (``payload.parse_item``).

    ``/explanations`` is an option of this protocol: the request's ``x-explain-*`` fields or
    headers are taken out here and the row carries them.
    """

    name = "plain"

    def claims(self, request: Request) -> bool:
        return True  # the fallback: anything unclaimed is read as a plain item

    def decode(self, request: Request, limits: RequestLimits) -> list[Row]:
        if not request.explain:
            return [Row(request.data)]
        fields, options = split_options(request.data, limits, request.headers)
        return [Row(fields, explain=options)]

    def encode(self, request: Request, info: BatchInfo) -> Reply:
        (row,) = request.rows
        if row.error is not None or row.answer is None:
            error = row.error or RequestError("internal error: row without an answer", 500)
            return self.refuse(request, error, info)
        body = {**row.answer, "batch_size": info.batch_size, "batch_rows": info.batch_rows,
                "timings_ms": info.timings_ms}  # fmt: skip
        if row.explanation is not None:
            body["explanation"] = row.explanation
        return Reply(200, body)

    def refuse(self, request: Request, error: RequestError, info: BatchInfo) -> Reply:
        return Reply(error.status, error.to_dict(), error=error)


class OpenInference:
    """The Open Inference Protocol (KServe v2) over REST (JSON and binary extension) and
    TorchServe's gRPC ``ModelInfer``; the parser and answers live in ``open_inference``.

    One request of N items is N rows; its first bad row refuses the whole request (the protocol
    has no per-item errors), naming the item.
    """

    name = "open_inference"

    def claims(self, request: Request) -> bool:
        parsed = oip.as_v2(request.data, request.headers)
        if parsed is None:
            return False
        request.data = parsed  # the JSON body parsed once, here
        return True

    def decode(self, request: Request, limits: RequestLimits) -> list[Row]:
        if request.explain:
            raise RequestError(oip.NO_EXPLAIN)
        request.decoded = oip.parse_request(request.data, request.headers, limits, request.grpc)
        return [Row(item) for item in request.decoded.items]

    def encode(self, request: Request, info: BatchInfo) -> Reply:
        rows = request.rows
        bad = next((i for i, row in enumerate(rows) if row.answer is None), None)
        if bad is not None:
            error = rows[bad].error or RequestError("internal error: row without an answer", 500)
            return self.refuse(request, oip.item_error(bad, len(rows), error), info)
        return Reply(200, oip.response(request.decoded, [row.answer for row in rows], info))

    def refuse(self, request: Request, error: RequestError, info: BatchInfo) -> Reply:
        decoded = request.decoded
        request_id = decoded.request_id if decoded is not None else oip.request_id_of(request.data)
        body = oip.error_response(error, request.grpc, request_id, info.model_name,
                                  info.model_version)  # fmt: skip
        return Reply(error.status, body, error=error)
