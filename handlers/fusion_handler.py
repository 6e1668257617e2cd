"""TorchServe handler for the fusion sentiment model: a thin adapter over mmsent.pipeline.

TorchServe batches requests (``batchSize`` / ``maxBatchDelay`` in model-config.yaml) and hands
the list to :meth:`handle`. Every step works on the whole batch; a bad item gets its own 4xx
status and error body while its batch mates are answered normally, and the worker stays up.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import torch
from ts.context import Context
from ts.torch_handler.base_handler import BaseHandler

from mmsent.pipeline import Batch, SentimentPipeline

logger = logging.getLogger(__name__)


class FusionSentimentHandler(BaseHandler):
    """initialize -> preprocess -> inference -> postprocess, each batched."""

    def __init__(self) -> None:
        super().__init__()
        self.pipeline: SentimentPipeline | None = None

    def initialize(self, context: Context) -> None:
        """Load the TorchScript model on the GPU TorchServe assigned (else CPU) + tokenizer."""
        props = context.system_properties
        gpu_id = props.get("gpu_id")
        use_cuda = torch.cuda.is_available() and gpu_id is not None
        device = f"cuda:{gpu_id}" if use_cuda else "cpu"
        self.pipeline = SentimentPipeline.from_dir(props["model_dir"], device)
        self.pipeline.warmup()
        self.context = context
        self.initialized = True
        logger.info("fusion sentiment model loaded on %s", device)

    def preprocess(self, data: list[dict[str, Any]]) -> Batch:
        return self.pipeline.preprocess(data)

    def inference(self, data: Batch, *args: Any, **kwargs: Any):
        return self.pipeline.infer(data)

    def postprocess(self, data: Batch, outputs=None) -> list[dict[str, Any]]:  # type: ignore[override]
        return self.pipeline.postprocess(data, outputs)

    def handle(self, data: list[dict[str, Any]], context: Context) -> list[str]:
        """Run the batch; set each item's HTTP status; answer one JSON string per request."""
        self.context = context
        batch = self.preprocess(data)
        outputs = self.inference(batch)
        start = time.perf_counter()
        answers = self.postprocess(batch, outputs)
        batch.timings_ms["postprocess"] = (time.perf_counter() - start) * 1000
        for slot, err in batch.errors.items():
            context.set_response_status(err.status, err.message, idx=slot)
        for slot in range(batch.size):
            context.set_response_content_type(slot, "application/json")
        self._emit_metrics(context, batch)
        return [json.dumps(answer) for answer in answers]

    @staticmethod
    def _emit_metrics(context: Context, batch: Batch) -> None:
        """Batch size and stage timings as model metrics (model_metrics.log / metrics API)."""
        metrics = getattr(context, "metrics", None)
        if metrics is None:
            return
        try:
            metrics.add_metric("BatchSize", batch.size, "count")
            for stage, ms in batch.timings_ms.items():
                metrics.add_time(f"Handler{stage.capitalize()}Time", ms, None, "ms")
        except Exception:  # metrics must never cost an answer
            logger.debug("could not emit metrics", exc_info=True)
