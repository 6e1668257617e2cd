"""TorchServe handler for the fusion sentiment model: a thin adapter over mmsent.serving.pipeline.

TorchServe batches requests (``batchSize`` / ``maxBatchDelay`` in model-config.yaml) and hands
the list to :meth:`handle`. Every step works on the whole batch; a bad item gets its own 4xx
status and error body while its batch mates are answered normally, and the worker stays up.
Open Inference Protocol (v2) requests (``/v2/models/{name}/infer``, v2 gRPC ``ModelInfer``) are
recognised by their body, spread over one pipeline row per item and answered in the protocol's
form by mmsent.serving.open_inference (docs/OPEN_INFERENCE.md).
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import torch
from ts.context import Context
from ts.metrics.dimension import Dimension
from ts.metrics.metric_type_enum import MetricTypes
from ts.torch_handler.base_handler import BaseHandler

from mmsent.errors import RequestError
from mmsent.serving import open_inference
from mmsent.serving import pipeline as pipeline_module
from mmsent.serving.deadline import admit
from mmsent.serving.explain import EXPLAIN_HEADER, ExplainOptions, explain_batch, split_options
from mmsent.serving.limits import RequestLimits
from mmsent.serving.pipeline import Batch, SentimentPipeline

logger = logging.getLogger(__name__)

# TorchServe 0.12's gRPC StreamPredictions job reads this response header on EVERY answer and
# throws a NullPointerException in the frontend when it is missing (GRPCJob.response), which
# kills the worker and fails its batch mates. "false" = "this is the last (here: only) message of
# the stream". The backend cannot tell a stream call from a unary one (both arrive as the same
# "I" command, without headers), so every answer to a gRPC item carries it; unary gRPC ignores it.
# REST must NOT get it: RestJob treats it as a chunked stream and never writes the status line.
STREAM_NEXT = "ts_stream_next"

# The handler's model metrics: name -> (TorchServe metric type, unit). metrics.yaml declares
# exactly these (a test keeps them equal), which is what makes them appear on the Prometheus
# metrics port. Stage times are per batch and in seconds: TorchServe's Prometheus histograms use
# the client library's default buckets (5 ms .. 10 s), which fit seconds and would put every
# stage in one bucket if it were in ms. HandlerTime stays TorchServe's own gauge in ms.
# RequestErrors counts refused items by HTTP status.
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
    """initialize -> preprocess -> inference -> postprocess, each batched."""

    def __init__(self) -> None:
        super().__init__()
        self.pipeline: SentimentPipeline | None = None

    def initialize(self, context: Context) -> None:
        """Load the TorchScript model on the GPU TorchServe assigned (else CPU) + tokenizer.

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
        self.context = context
        self.initialized = True
        logger.info(
            "fusion sentiment model: gpu_id=%s assigned, loaded on %s in %s",
            props.get("gpu_id"),
            device,
            self.pipeline.dtype,
        )
        logger.info("serving code from %s", Path(pipeline_module.__file__).parent)

    def preprocess(self, data: list[dict[str, Any]]) -> Batch:
        return self.pipeline.preprocess(data)

    def inference(self, data: Batch, *args: Any, **kwargs: Any) -> Batch:
        self.pipeline.infer(data)  # the outputs travel in the batch
        return data

    def postprocess(self, data: Batch) -> list[dict[str, Any]]:
        return self.pipeline.postprocess(data)

    def handle(self, data: list[dict[str, Any]], context: Context) -> list[str]:
        """Run the batch; set each item's HTTP status; answer one JSON string per request.

        Items whose client deadline has passed are answered 408 without decoding or running the
        model, so abandoned requests do not delay the live ones queued behind them.
        """
        start = time.perf_counter()
        self.context = context
        headers = [request_headers(context, slot) for slot in range(len(data))]  # read once
        admitted, items, refused = split_expired(data, headers)
        # Open Inference (v2) requests become one row per item: from here "admitted" maps each
        # pipeline row to its slot, and a v2 slot appears once per item
        v2 = open_inference.expand(data, admitted, items, headers, self.pipeline.limits, refused)
        admitted, items, wanted = self._take_explain_options(headers, v2.rows, v2.items, refused)
        batch = self.inference(self.preprocess(items))
        rows = self.postprocess(batch)
        by_slot = {slot: err.to_dict() for slot, err in refused.items()}
        by_slot.update(zip(admitted, rows, strict=True))
        if wanted:
            self._add_explanations(batch, items, wanted, admitted, by_slot)
        errors = {**refused, **{admitted[row]: err for row, err in batch.errors.items()}}
        if v2.v2:  # the protocol's answer replaces its slot's per-row answers
            shared = self._v2_context(context, len(data), batch.size)
            bodies, v2_errors = open_inference.collect(v2, admitted, rows, batch.errors, refused,
                                                       shared)  # fmt: skip
            by_slot.update(bodies)
            errors.update(v2_errors)
        for slot, err in errors.items():
            context.set_response_status(err.status, status_phrase(err.message), idx=slot)
        for slot in range(len(data)):
            context.set_response_content_type(slot, "application/json")
            if not headers[slot]:  # gRPC: the frontend copies every HTTP header, gRPC has none
                context.set_response_header(slot, STREAM_NEXT, "false")
        answers = [json.dumps(by_slot[slot]) for slot in range(len(data))]
        self._emit_metrics(context, batch, errors, (time.perf_counter() - start) * 1000)
        return answers

    def _v2_context(
        self, context: Context, requests: int, rows: int
    ) -> open_inference.AnswerContext:
        """What every Open Inference answer of this batch shares (model name and version)."""
        manifest = getattr(context, "manifest", None) or {}
        return open_inference.AnswerContext(
            model_name=getattr(context, "model_name", None) or "",
            model_version=(manifest.get("model") or {}).get("modelVersion"),
            labels=self.pipeline.cfg.labels,
            batch_size=requests,
            batch_rows=rows,
        )

    def _take_explain_options(
        self,
        headers: list[dict[str, str]],
        admitted: list[int],
        items: list[dict[str, Any]],
        refused: dict[int, RequestError],
    ) -> tuple[list[int], list[dict[str, Any]], dict[int, ExplainOptions]]:
        """(slots, items, {position in items: options}) for the ``/explanations`` requests.

        TorchServe marks those with the request header ``explain: True``. It is read per item:
        ``BaseHandler._is_explain`` looks at item 0 only, but one batch can mix /predictions and
        /explanations requests. The options (``x-explain-grid``, ``x-explain-classes``: headers,
        or form fields taken out of the item before the payload parser sees it) are checked
        here; a bad option refuses that item only.
        """
        slots: list[int] = []
        kept: list[dict[str, Any]] = []
        wanted: dict[int, ExplainOptions] = {}
        for slot, item in zip(admitted, items, strict=True):
            if headers[slot].get(EXPLAIN_HEADER) == "True":
                try:
                    item, wanted[len(kept)] = split_options(item, self.pipeline.limits,
                                                            headers[slot])  # fmt: skip
                except RequestError as err:
                    refused[slot] = err
                    continue
            slots.append(slot)
            kept.append(item)
        return slots, kept, wanted

    def _add_explanations(
        self,
        batch: Batch,
        items: list[dict[str, Any]],
        wanted: dict[int, ExplainOptions],
        admitted: list[int],
        by_slot: dict[int, Any],
    ) -> None:
        """Add ``explanation`` to each answered /explanations item (mmsent.serving.explain does
        the work); an item whose explanation fails gets that error instead, alone."""
        start = time.perf_counter()
        for pos, result in explain_batch(self.pipeline, batch, items, wanted).items():
            if isinstance(result, RequestError):
                batch.errors[pos] = result
                by_slot[admitted[pos]] = result.to_dict()
            else:
                by_slot[admitted[pos]]["explanation"] = result
        batch.timings_ms["explain"] = (time.perf_counter() - start) * 1000

    @staticmethod
    def _emit_metrics(
        context: Context, batch: Batch, errors: dict[int, RequestError], handler_ms: float
    ) -> None:
        """The handler's model metrics (``HANDLER_METRICS``), one emission per batch.

        Each goes to TorchServe's metrics pipeline with its declared type, so under
        ``metrics_mode=prometheus`` the metrics port serves a batch-size histogram (not a counter
        that sums batch sizes), stage-time histograms and an error counter by HTTP status.
        Dimensions are passed explicitly in metrics.yaml's order: TorchServe's own defaults
        append to a shared list (a mutable default argument).
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
            emit("BatchSize", batch.size)
            for stage, ms in batch.timings_ms.items():
                name = f"Handler{stage.capitalize()}Seconds"
                if name in HANDLER_METRICS:
                    emit(name, ms / 1000)
            for err in errors.values():
                emit("RequestErrors", 1, Dimension("Status", str(err.status)))
        except Exception:  # metrics must never cost an answer
            logger.debug("could not emit metrics", exc_info=True)


def split_expired(
    data: list[dict[str, Any]], headers: list[dict[str, str]]
) -> tuple[list[int], list[dict[str, Any]], dict[int, RequestError]]:
    """(slots to run, their items, refusals by slot): past-deadline or bad-deadline items are
    refused here, before any decoding, so they cost the live requests nothing."""
    now_ms = time.time() * 1000
    admitted: list[int] = []
    items: list[dict[str, Any]] = []
    refused: dict[int, RequestError] = {}
    for slot, raw in enumerate(data):
        item, error = admit(raw, headers[slot], now_ms)
        if error is None:
            admitted.append(slot)
            items.append(item)
        else:
            refused[slot] = error
    return admitted, items, refused


def status_phrase(message: str, limit: int = 200) -> str:
    """``message`` as a safe HTTP reason phrase: printable ASCII only, one line, bounded.

    TorchServe 0.12's worker frames the phrase with its length in *characters*
    (``create_predict_response``: ``len(phrase)`` then ``phrase.encode("utf-8")``), so one
    non-ASCII character in it (e.g. an echoed bad value) desynchronises the frame: the frontend
    reads a garbage length ("Message size exceed limit"), drops the connection and restarts the
    worker, failing every batch mate. The full message still goes out in the JSON body.
    """
    safe = "".join(ch if " " <= ch <= "~" else "?" for ch in message)
    return safe[:limit]


def request_headers(context: Context, slot: int) -> dict[str, str]:
    """The HTTP request headers of ``slot``, names lower-cased (HTTP names are case-blind).

    TorchServe mixes each input field's content type (a dict) into the same map; those are not
    headers and are dropped. A gRPC item therefore has none.
    """
    props = context.get_all_request_header(slot) or {}
    return {str(k).lower(): v for k, v in props.items() if isinstance(v, str)}
