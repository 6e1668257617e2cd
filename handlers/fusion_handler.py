"""TorchServe handler for the fusion sentiment model: an engine adapter over the exchange.

TorchServe batches requests (``batchSize`` / ``maxBatchDelay`` in model-config.yaml) and hands
the list to :meth:`handle`, which only translates: TorchServe's context into
``mmsent.serving.messages.Request`` objects, and each ``Reply`` into a status, headers and a body.
Deadlines, protocols, per-item errors and explanations all happen in
``mmsent.serving.exchange``, the same code every other engine runs.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import torch
from ts.context import Context
from ts.metrics.dimension import Dimension
from ts.metrics.metric_type_enum import MetricTypes
from ts.torch_handler.base_handler import BaseHandler

from mmsent.serving import exchange as exchange_module
from mmsent.serving.exchange import Exchange, Outcome
from mmsent.serving.explain import EXPLAIN_HEADER
from mmsent.serving.limits import RequestLimits
from mmsent.serving.logs import OneLine
from mmsent.serving.messages import Request
from mmsent.serving.pipeline import SentimentPipeline, cpu_threads

logger = logging.getLogger(__name__)

# TorchServe 0.12's gRPC StreamPredictions job reads this header on EVERY gRPC answer and throws
# in the frontend without it (GRPCJob.response), killing the worker. "false" = last message of
# the stream; unary gRPC ignores it. REST must NOT get it (RestJob then never writes a status).
STREAM_NEXT = "ts_stream_next"

# TorchServe's worker logs these with a traceback when a body does not decode (JSON with an
# application/json content type); the request is the client's mistake and the exchange answers
# it 400 with one log line of its own, so the worker's line stays and its traceback goes.
CLIENT_BODY_LOGS = OneLine("Failed json decoding of input data", "Failed utf-8 decoding")

# Model metrics: name -> (TorchServe type, unit), exactly as metrics.yaml declares them (tested).
# Stage times are per batch, in seconds, to fit Prometheus' default 5 ms .. 10 s buckets.
HANDLER_METRICS: dict[str, tuple[str, str]] = {
    "HandlerTime": ("gauge", "ms"),
    "BatchSize": ("histogram", "Count"),
    "HandlerPreprocessSeconds": ("histogram", "s"),
    "HandlerInferenceSeconds": ("histogram", "s"),
    "HandlerPostprocessSeconds": ("histogram", "s"),
    "HandlerExplainSeconds": ("histogram", "s"),
    "RequestErrors": ("counter", "Count"),
}


def serving_device(gpu_id: int | str | None, cuda_available: bool) -> str:
    """``cuda:<gpu_id>`` when TorchServe assigned a GPU and CUDA works, else ``cpu``."""
    if gpu_id is None or str(gpu_id) == "" or not cuda_available:
        return "cpu"
    return f"cuda:{int(gpu_id)}"


class FusionSentimentHandler(BaseHandler):
    """``initialize`` loads the model; ``handle`` runs one TorchServe batch through the exchange."""

    def initialize(self, context: Context) -> None:
        """Load the model on the GPU TorchServe assigned to this worker (``gpu_id``, round-robin
        over ``deviceIds``), never a default ``cuda:0``; on the CPU without one."""
        props = context.system_properties
        device = serving_device(props.get("gpu_id"), torch.cuda.is_available())
        if device.startswith("cuda"):
            torch.cuda.set_device(device)  # allocations without an explicit device land here too
        config = getattr(context, "model_yaml_config", None) or {}
        settings = config.get("handler") or {}
        limits = RequestLimits.from_mapping(settings.get("limits"))
        if device == "cpu":  # the cores split between this model's workers
            torch.set_num_threads(cpu_threads(int(config.get("maxWorkers", 1)),
                                              settings.get("threads")))  # fmt: skip
        self.pipeline = SentimentPipeline.from_dir(props["model_dir"], device, limits=limits)
        self.pipeline.warmup()
        model = (getattr(context, "manifest", None) or {}).get("model") or {}
        self.exchange = Exchange(self.pipeline, getattr(context, "model_name", None) or "",
                                 model.get("modelVersion"))  # fmt: skip
        self.context, self.initialized = context, True
        logging.getLogger().addFilter(CLIENT_BODY_LOGS)  # TorchServe logs on the root logger
        logger.info("gpu_id=%s assigned, loaded on %s in %s, %d threads; serving code from %s",
                    props.get("gpu_id"), device, self.pipeline.dtype, torch.get_num_threads(),
                    Path(exchange_module.__file__).parent)  # fmt: skip

    def handle(self, data: list[dict[str, Any]], context: Context) -> list[str]:
        """One reply per request, in order: status, content type, headers, JSON body."""
        start = time.perf_counter()
        self.context = context
        requests = [to_request(context, slot, raw) for slot, raw in enumerate(data)]
        outcome = self.exchange.run(requests)
        for slot, (request, reply) in enumerate(zip(requests, outcome.replies, strict=True)):
            if reply.error is not None:
                context.set_response_status(reply.status, status_phrase(reply.error.message),
                                            idx=slot)  # fmt: skip
            context.set_response_content_type(slot, reply.content_type)
            for name, value in reply.headers.items():
                context.set_response_header(slot, name, value)
            if request.grpc:
                context.set_response_header(slot, STREAM_NEXT, "false")
        emit_metrics(context, outcome, (time.perf_counter() - start) * 1000)
        return [reply.text() for reply in outcome.replies]


def to_request(context: Context, slot: int, raw: Any) -> Request:
    """TorchServe's item ``slot`` as an exchange request, header names lower-cased.

    TorchServe mixes each input field's content type (a dict) into the headers: dropped, so a
    gRPC item has none, which is how gRPC is told apart. ``explain: True`` marks
    ``/explanations``, read per item (one batch can mix both routes).
    """
    props = context.get_all_request_header(slot) or {}
    headers = {str(k).lower(): v for k, v in props.items() if isinstance(v, str)}
    return Request(raw, headers, explain=headers.get(EXPLAIN_HEADER) == "True", grpc=not headers)


def status_phrase(message: str, limit: int = 200) -> str:
    """``message`` as a safe HTTP reason phrase: printable ASCII, bounded. TorchServe 0.12 frames
    the phrase with its length in characters, so one non-ASCII character desynchronises the frame
    and restarts the worker (measured); the full message still goes out in the JSON body."""
    return "".join(ch if " " <= ch <= "~" else "?" for ch in message)[:limit]


def emit_metrics(context: Context, outcome: Outcome, handler_ms: float) -> None:
    """``HANDLER_METRICS``, once per batch, each with its declared type (Prometheus mode serves
    histograms and a counter by status). Dimensions are explicit: TorchServe's default list is
    a shared mutable default. Metrics never cost an answer: failures are only logged."""
    metrics = getattr(context, "metrics", None)
    if metrics is None:
        return
    model = getattr(context, "model_name", None) or "unknown"

    def emit(name: str, value: float, *extra: Dimension) -> None:
        kind, unit = HANDLER_METRICS[name]
        dims = [Dimension("ModelName", model), Dimension("Level", "Model"), *extra]
        metrics.add_metric(name, value, unit, None, dims, MetricTypes(kind))

    try:
        emit("HandlerTime", handler_ms)
        emit("BatchSize", outcome.batch_size)
        for stage, ms in outcome.timings_ms.items():
            if (name := f"Handler{stage.capitalize()}Seconds") in HANDLER_METRICS:
                emit(name, ms / 1000)
        for error in outcome.errors:
            emit("RequestErrors", 1, Dimension("Status", str(error.status)))
    except Exception:
        logger.debug("could not emit metrics", exc_info=True)
