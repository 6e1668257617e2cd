"""LitServe adapter: the same archive and the same exchange as TorchServe, on a maintained engine.

Run it with ``python scripts/serve_litserve.py --mar <archive>``.

LitServe (``litserve==0.2.19``) batches what its queue holds (``max_batch_size``,
``batch_timeout``) and calls ``decode_request`` per request, ``predict`` once per batch and
``encode_response`` per request. This module only translates, like the TorchServe handler:

- :class:`ExchangeSpec` (a ``LitSpec``) serves TorchServe's routes (``/predictions/<model>``,
  ``/explanations/<model>``, ``/v2/models/<model>/infer``, ``/ping``) and hands the worker the
  raw body and headers, in the shape TorchServe hands its handler;
- :class:`ExchangeAPI` (a ``LitAPI``) turns those into ``Request`` objects, runs
  ``Exchange.run`` on the batch and returns each request's reply as ``(status, headers, body)``,
  which the spec writes out as that request's HTTP answer.

Per-request statuses travel inside the replies: LitServe answers a whole batch with one error
when ``predict`` raises (LitServe #340), so nothing here raises for a client's mistake.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from pathlib import Path
from typing import Any

import litserve as ls
import torch
from fastapi import Request as HttpRequest
from fastapi import Response
from litserve.specs.base import LitSpec
from litserve.utils import LitAPIStatus, ResponseBufferItem
from starlette.datastructures import UploadFile

from mmsent.config import DEFAULT_MODEL_NAME, MAX_MESSAGE_BYTES
from mmsent.serving.exchange import Exchange
from mmsent.serving.explain import EXPLAIN_HEADER
from mmsent.serving.limits import RequestLimits
from mmsent.serving.messages import JSON, Request
from mmsent.serving.pipeline import SentimentPipeline, cpu_threads

logger = logging.getLogger(__name__)
FORM_TYPES = ("multipart/form-data", "application/x-www-form-urlencoded")
Wire = tuple[int, dict[str, str], bytes]  # a reply as it crosses LitServe's queue back


async def payload_of(request: HttpRequest) -> dict[str, Any]:
    """The request as TorchServe would hand it to a handler, plus its headers.

    Form fields (multipart: files as bytes, text as str) become the item's fields; any other
    body goes as raw bytes under ``body`` (the exchange's parsers read JSON, the Open Inference
    binary extension and bare images from bytes).
    """
    headers = {k.lower(): v for k, v in request.headers.items()}
    if headers.get("content-type", "").startswith(FORM_TYPES):
        form = await request.form()
        data: dict[str, Any] = {}
        for name, value in form.multi_items():
            data[name] = await value.read() if isinstance(value, UploadFile) else value
    else:
        data = {"body": await request.body()}
    return {"data": data, "headers": headers}


class ExchangeSpec(LitSpec):
    """TorchServe's inference routes for one model, answered with each reply's own status."""

    def __init__(self, model_name: str = DEFAULT_MODEL_NAME) -> None:
        super().__init__()
        self.model_name = model_name
        self.api_path = f"/predictions/{model_name}"  # LitServe keys its worker queue by this
        self.add_endpoint(self.api_path, self.predictions, ["POST"])
        self.add_endpoint(f"/explanations/{model_name}", self.explanations, ["POST"])
        self.add_endpoint(f"/v2/models/{model_name}/infer", self.predictions, ["POST"])
        self.add_endpoint("/ping", self.ping, ["GET"])

    async def predictions(self, request: HttpRequest) -> Response:
        return await self._answer(await payload_of(request))

    async def explanations(self, request: HttpRequest) -> Response:
        payload = await payload_of(request)
        payload["headers"][EXPLAIN_HEADER] = "True"  # what TorchServe's frontend sets
        return await self._answer(payload)

    async def ping(self) -> Response:
        return Response(json.dumps({"status": "Healthy"}), media_type=JSON)

    async def _answer(self, payload: dict[str, Any]) -> Response:
        """Queue the payload for the inference worker and write out its reply."""
        uid = uuid.uuid4()
        event = asyncio.Event()
        self.response_buffer[uid] = ResponseBufferItem(event=event)
        self.request_queue.put_nowait((self.response_queue_id, uid, time.monotonic(), payload))
        await event.wait()
        wire, status = self.response_buffer.pop(uid).response
        if status != LitAPIStatus.OK:  # the engine failed the batch (a bug, or its timeout)
            code = getattr(wire, "status_code", 500)
            detail = getattr(wire, "detail", "internal error")
            body = json.dumps({"error": str(detail), "code": code})
            return Response(body, status_code=code, media_type=JSON)
        code, headers, body = wire
        return Response(body, status_code=code, headers=headers, media_type=JSON)

    def decode_request(self, request: Any, context_kwargs: Any = None) -> Any:
        return request  # the API decodes; the spec only routes

    def encode_response(self, output: Any, context_kwargs: Any = None) -> Any:
        return output


class ExchangeAPI(ls.LitAPI):
    """One LitServe worker: the archive's pipeline behind ``Exchange.run``."""

    def __init__(self, model_dir: str | Path, model_name: str = DEFAULT_MODEL_NAME,
                 limits: RequestLimits | None = None, workers: int = 1,
                 **kwargs: Any) -> None:  # fmt: skip
        super().__init__(spec=ExchangeSpec(model_name), **kwargs)
        self.model_dir = str(model_dir)
        self.model_name = model_name
        self.limits = limits or RequestLimits()
        self.workers = workers  # worker processes sharing the CPU (threads split between them)

    def setup(self, device: str) -> None:
        """Load the unpacked archive on the device LitServe assigned (``cpu``, ``cuda:N``)."""
        if str(device).startswith("cpu"):
            torch.set_num_threads(cpu_threads(self.workers))
        pipeline = SentimentPipeline.from_dir(self.model_dir, device, limits=self.limits)
        pipeline.warmup()
        self.exchange = Exchange(pipeline, self.model_name)
        logger.info("fusion sentiment model on %s in %s", device, pipeline.dtype)

    def decode_request(self, request: dict[str, Any], **kwargs: Any) -> Request:
        headers = request["headers"]
        return Request(request["data"], headers, explain=headers.get(EXPLAIN_HEADER) == "True")

    def batch(self, inputs: list[Request]) -> list[Request]:
        return list(inputs)

    def predict(self, x: Request | list[Request], **kwargs: Any) -> list[Wire] | Wire:
        requests = x if isinstance(x, list) else [x]
        replies = self.exchange.run(requests).replies
        wires = [(r.status, r.headers, r.text().encode()) for r in replies]
        return wires if isinstance(x, list) else wires[0]

    def unbatch(self, output: list[Wire]) -> list[Wire]:
        return output

    def encode_response(self, output: Wire, **kwargs: Any) -> Wire:
        return output


def build_server(
    model_dir: str | Path,
    model_name: str = DEFAULT_MODEL_NAME,
    max_batch_size: int = 8,
    batch_timeout: float = 0.03,
    accelerator: str = "auto",
    devices: int | str = "auto",
    workers_per_device: int = 1,
    timeout: float = 60.0,
    limits: RequestLimits | None = None,
) -> ls.LitServer:
    """A LitServer for the unpacked archive at ``model_dir`` (dynamic batching as given)."""
    api = ExchangeAPI(model_dir, model_name, limits, workers_per_device,
                      max_batch_size=max_batch_size, batch_timeout=batch_timeout)  # fmt: skip
    # max_payload_size: the same body limit TorchServe's max_request_size sets (413 beyond it)
    return ls.LitServer(api, accelerator=accelerator, devices=devices,
                        workers_per_device=workers_per_device, timeout=timeout,
                        max_payload_size=MAX_MESSAGE_BYTES)  # fmt: skip

