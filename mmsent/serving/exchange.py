"""The one request exchange: an engine's batch of requests in, one reply per request out.

Every engine drives this the same way (TorchServe's handler, the LitServe adapter, in-process
callers, the benchmark's ceiling)::

    replies = exchange.run([Request(data, headers, explain=..., grpc=...), ...]).replies

``run`` keeps Triton's ``execute`` contract: exactly one :class:`Reply` per request, in order,
the error a field of that request's reply. In between, once and for every route:

1. **admit**: a request past its client deadline is refused with 408 before any decoding
   (``deadline.admit``), and the deadline field is taken out of its data;
2. **decode**: the first protocol that claims the request (``PROTOCOLS``) turns it into model
   rows, or refuses it as a whole; each row's fields are validated (``payload.parse_item``);
3. **budget**: each request is charged, in arrival order, against the batch's decode and
   explanation budgets (``budget.BatchBudget``), before any pixel is decoded;
4. **run**: every row of every admitted request goes through the pipeline in one batch (one
   tokenizer call, one forward pass); a bad row gets its own error, its mates their answers;
5. **explain**: rows of ``/explanations`` requests get their explanation;
6. **encode**: each request's protocol turns its rows' outcomes into its reply; every refusal
   is logged as one line (status and reason), never with a traceback.

Requests own their rows and rows own their outcomes, so nothing here keeps an index map
between engine slots, pipeline inputs and tensor rows.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from mmsent.errors import RequestError
from mmsent.serving.budget import RETRY_AFTER_S, BatchBudget, BudgetExceeded
from mmsent.serving.deadline import admit
from mmsent.serving.explain import explain_input
from mmsent.serving.messages import BatchInfo, Protocol, Reply, Request, Row
from mmsent.serving.payload import parse_item
from mmsent.serving.pipeline import SentimentPipeline
from mmsent.serving.protocols import OpenInference, Plain

logger = logging.getLogger(__name__)

# Asked in order; Plain claims everything, so it comes last.
PROTOCOLS: tuple[Protocol, ...] = (OpenInference(), Plain())


@dataclass
class Outcome:
    """What one :meth:`Exchange.run` produced: the replies, and what metrics need."""

    replies: list[Reply]
    batch_size: int  # requests the engine batched
    batch_rows: int  # model rows they became
    timings_ms: dict[str, float] = field(default_factory=dict)  # stage -> ms, this batch

    @property
    def errors(self) -> list[RequestError]:
        return [reply.error for reply in self.replies if reply.error is not None]


class Exchange:
    """Runs engine batches through one :class:`SentimentPipeline`."""

    def __init__(
        self,
        pipeline: SentimentPipeline,
        model_name: str = "",
        model_version: str | None = None,
        protocols: Iterable[Protocol] = PROTOCOLS,
    ) -> None:
        self.pipeline = pipeline
        self.model_name = model_name
        self.model_version = model_version
        self.protocols = tuple(protocols)

    def run(self, requests: Sequence[Request]) -> Outcome:
        """One reply per request, in order (also left in each ``request.reply``)."""
        now_ms = time.time() * 1000
        budget = BatchBudget(self.pipeline.cfg, self.pipeline.limits)
        for request in requests:
            self._decode(request, now_ms)
            if request.error is None:
                self._charge(request, budget)
        rows = [row for request in requests if request.error is None for row in request.rows]
        timings = self._run_rows([row for row in rows if row.error is None])
        info = BatchInfo(
            model_name=self.model_name,
            model_version=self.model_version,
            labels=tuple(self.pipeline.cfg.labels),
            batch_size=len(requests),
            batch_rows=len(rows),
            timings_ms={stage: round(ms, 2) for stage, ms in timings.items()},
        )
        for request in requests:
            request.reply = self._encode(request, info)
        return Outcome([r.reply for r in requests], len(requests), len(rows), timings)

    # -- the steps ------------------------------------------------------------------------------
    def _decode(self, request: Request, now_ms: float) -> None:
        """Admit (deadline), pick the protocol, decode into rows; or note the refusal."""
        request.data, late = admit(request.data, request.headers, now_ms)
        try:
            request.protocol = next(p for p in self.protocols if p.claims(request))
            if late is not None:
                request.error = late
                return
            request.rows = request.protocol.decode(request, self.pipeline.limits)
        except RequestError as err:
            request.error = err
        except Exception as exc:  # a protocol bug costs this request only, never its mates
            logger.exception("unexpected error decoding a request")
            request.error = RequestError(f"internal error: {type(exc).__name__}", 500)

    @staticmethod
    def _charge(request: Request, budget: BatchBudget) -> None:
        """Validate the request's rows, then charge it to the batch's budgets."""
        for row in request.rows:
            try:
                row.fields = parse_item(row.fields)
            except RequestError as err:
                row.error = err
        try:
            budget.charge(request)
        except BudgetExceeded as err:
            request.error = err

    def _run_rows(self, rows: list[Row]) -> dict[str, float]:
        """The model's outcome in every row; returns the stage times in ms."""
        if not rows:
            return {}
        batch = self.pipeline.preprocess([row.fields for row in rows])
        self.pipeline.infer(batch)
        for row, outcome in zip(rows, self.pipeline.postprocess(batch), strict=True):
            if isinstance(outcome, RequestError):
                row.error = outcome
            else:
                row.answer = outcome
        wanted = [(pos, row) for pos, row in enumerate(rows)
                  if row.explain is not None and row.answer is not None]  # fmt: skip
        if wanted:
            start = time.perf_counter()
            for pos, row in wanted:
                result = explain_input(self.pipeline, batch, pos, row.explain)
                if isinstance(result, RequestError):
                    row.answer, row.error = None, result
                else:
                    row.explanation = result
            batch.timings_ms["explain"] = (time.perf_counter() - start) * 1000
        return dict(batch.timings_ms)

    def _encode(self, request: Request, info: BatchInfo) -> Reply:
        protocol = request.protocol or PROTOCOLS[-1]
        try:
            if request.error is not None:
                reply = protocol.refuse(request, request.error, info)
            else:
                reply = protocol.encode(request, info)
        except Exception as exc:  # an encoder bug costs this request only
            logger.exception("unexpected error encoding a reply")
            error = RequestError(f"internal error: {type(exc).__name__}", 500)
            reply = Reply(error.status, error.to_dict(), error=error)
        if reply.error is not None:
            if getattr(reply.error, "retry", False):
                reply.headers["Retry-After"] = str(RETRY_AFTER_S)
            # one line per refusal: a client sending bad requests must not fill the disk with
            # tracebacks (server faults were logged with theirs where they happened)
            level = logging.WARNING if reply.status >= 500 else logging.INFO
            logger.log(level, "answered %d: %s", reply.status, reply.error.message[:200])
        return reply

    # -- in-process use -------------------------------------------------------------------------
    def predict(self, requests: Sequence[Any]) -> list[dict[str, Any]]:
        """In-process ``/predictions``: one JSON-ready body per request (the answer, or
        ``{"error", "code"}``), as an engine without headers would have answered them."""
        return [r.body for r in self.run([Request(data) for data in requests]).replies]

    def explain(self, requests: Sequence[Any]) -> list[dict[str, Any]]:
        """In-process ``/explanations``: the prediction plus ``explanation`` per request; the
        ``x-explain-grid`` / ``x-explain-classes`` options go in as form fields."""
        batch = [Request(data, explain=True) for data in requests]
        return [r.body for r in self.run(batch).replies]
