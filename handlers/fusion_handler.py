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
from mmsent.serving.messages import Request
from mmsent.serving.pipeline import SentimentPipeline

logger = logging.getLogger(__name__)

# TorchServe 0.12's gRPC StreamPredictions job reads this response header on EVERY answer and
# throws a NullPointerException in the frontend when it is missing (GRPCJob.response), which
# kills the worker and fails its batch mates. "false" = "this is the last (here: only) message of
# the stream". The backend cannot tell a stream call from a unary one (both arrive as the same
# "I" command, without headers), so every answer to a gRPC item carries it; unary gRPC ignores it.
# REST must NOT get it: RestJob treats it as a chunked stream and never writes the status line.
STREAM_NEXT = "ts_stream_next"

# The handler's model metrics: name -> (TorchServe metric type, unit); metrics.yaml declares
# exactly these (a test keeps them equal), which is what puts them on the metrics port. Stage
# times are per batch in seconds (TorchServe's Prometheus histograms use the client library's
# default 5 ms .. 10 s buckets). BatchSize counts the requests TorchServe batched.
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
        """Load the model on the GPU TorchServe assigned to this worker (else CPU).

        TorchServe gives each worker its own ``gpu_id`` (round-robin over ``deviceIds`` in
        model-config.yaml); the worker must use exactly that GPU, never a default ``cuda:0``.
        """
        props = context.system_properties
        device = serving_device(props.get("gpu_id"), torch.cuda.is_available())
        if device.startswith("cuda"):
            torch.cuda.set_device(device)  # allocations without an explicit device land here too
        settings = (getattr(context, "model_yaml_config", None) or {}).get("handler") or {}
        limits = RequestLimits.from_mapping(settings.get("limits"))
        self.pipeline = SentimentPipeline.from_dir(props["model_dir"], device, limits=limits)
        self.pipeline.warmup()
        model = (getattr(context, "manifest", None) or {}).get("model") or {}
        self.exchange = Exchange(self.pipeline, getattr(context, "model_name", None) or "",
                                 model.get("modelVersion"))  # fmt: skip
        self.context = context
        self.initialized = True
        logger.info("fusion sentiment model: gpu_id=%s assigned, loaded on %s in %s",
                    props.get("gpu_id"), device, self.pipeline.dtype)  # fmt: skip
        logger.info("serving code from %s", Path(exchange_module.__file__).parent)

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
    """TorchServe's item ``slot`` as an exchange request.

    Header names are lower-cased (HTTP names are case-blind). TorchServe mixes each input
    field's content type (a dict) into the same map: those are not headers and are dropped, so
    a gRPC item has none, which is how gRPC is told apart (the backend never sees the
    transport). ``/explanations`` requests carry the header ``explain: True``, read per item
    (``BaseHandler._is_explain`` looks at item 0 only, but one batch can mix both routes).
    """
    props = context.get_all_request_header(slot) or {}
    headers = {str(k).lower(): v for k, v in props.items() if isinstance(v, str)}
    return Request(raw, headers, explain=headers.get(EXPLAIN_HEADER) == "True", grpc=not headers)


def status_phrase(message: str, limit: int = 200) -> str:
    """``message`` as a safe HTTP reason phrase: printable ASCII only, one line, bounded.

    TorchServe 0.12's worker frames the phrase with its length in *characters*
    (``create_predict_response``: ``len(phrase)`` then ``phrase.encode("utf-8")``), so one
    non-ASCII character in it (e.g. an echoed bad value) desynchronises the frame: the frontend
    reads a garbage length ("Message size exceed limit"), drops the connection and restarts the
    worker, failing every batch mate. The full message still goes out in the JSON body.
    """
    return "".join(ch if " " <= ch <= "~" else "?" for ch in message)[:limit]


def emit_metrics(context: Context, outcome: Outcome, handler_ms: float) -> None:
    """The handler's model metrics (``HANDLER_METRICS``), one emission per batch.

    Each goes to TorchServe's metrics pipeline with its declared type, so under
    ``metrics_mode=prometheus`` the metrics port serves a batch-size histogram, stage-time
    histograms and an error counter by HTTP status. Dimensions are passed explicitly in
    metrics.yaml's order: TorchServe's own defaults append to a shared list (a mutable
    default argument). Metrics must never cost an answer, so failures are only logged.
    """
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
