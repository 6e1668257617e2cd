"""Per-batch work budgets: no cheap request may buy seconds of everyone's time.

Per-item limits (``RequestLimits``: bytes, header pixels, words, grid, items) bound one item.
They do not bound a request or a batch: 32 Open Inference items of 39 MP each passed every
per-item limit and held a TorchServe batch for 9 s. So the exchange charges each request, in
the order the engine batched them and before any decoding, against two budgets per batch:

- **decode work**, in decoded pixels (``imaging.decode_pixels``: a JPEG at its draft scale,
  anything else at full size), ``max_decode_pixels_per_request`` and ``_per_batch``;
- **explanation work**, in model rows (``explain_rows``), ``max_explain_rows_per_batch``.

A request that exceeds a budget on its own can never be served: 413, naming the limit. One that
fits alone but not beside the requests before it in this batch is answered 503 with
``Retry-After``: retrying puts it in another batch. Either way nothing of it is decoded or run.
"""

from __future__ import annotations

from dataclasses import dataclass

from mmsent.config import ModelConfig
from mmsent.errors import RequestError
from mmsent.serving.imaging import decode_pixels
from mmsent.serving.limits import RequestLimits
from mmsent.serving.messages import Request
from mmsent.serving.payload import Item

RETRY_AFTER_S = 1
BUSY = 503


class BudgetExceeded(RequestError):
    """A refusal by a batch budget; ``retry`` when the request fits in a batch of its own."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message, status)
        self.retry = status == BUSY


@dataclass
class BatchBudget:
    """What one engine batch may still spend; :meth:`charge` each request in arrival order."""

    cfg: ModelConfig
    limits: RequestLimits
    pixels_used: int = 0
    explain_rows_used: int = 0

    def charge(self, request: Request) -> None:
        """Spend ``request``'s share, or raise :class:`BudgetExceeded` and spend nothing."""
        items = [row.fields for row in request.rows if isinstance(row.fields, Item)]
        pixels = sum(decode_pixels(it.image, self.cfg, self.limits) for it in items if it.image)
        rows = sum(explain_rows(row.fields, row.explain.grid, self.limits)
                   for row in request.rows
                   if row.explain is not None and isinstance(row.fields, Item))  # fmt: skip
        limits = self.limits
        self._check(pixels, self.pixels_used, "decoded pixels",
                    (limits.max_decode_pixels_per_request, "max_decode_pixels_per_request"),
                    (limits.max_decode_pixels_per_batch, "max_decode_pixels_per_batch"))
        self._check(rows, self.explain_rows_used, "explanation model rows",
                    (limits.max_explain_rows_per_batch, "max_explain_rows_per_batch"),
                    (limits.max_explain_rows_per_batch, "max_explain_rows_per_batch"))
        self.pixels_used += pixels
        self.explain_rows_used += rows

    @staticmethod
    def _check(cost: int, used: int, unit: str, alone: tuple[int, str],
               batch: tuple[int, str]) -> None:  # fmt: skip
        """413 over the per-request limit ``alone`` (or the whole batch budget, if smaller);
        503 over what is left of ``batch``."""
        most, name = min(alone, batch, key=lambda limit: limit[0])
        budget, budget_name = batch
        if cost > most:
            raise BudgetExceeded(
                f"this request needs {cost} {unit}; at most {most} are allowed ({name}): "
                "send smaller images or fewer items per request", 413)  # fmt: skip
        if used + cost > budget:
            raise BudgetExceeded(
                f"this batch's budget of {budget} {unit} ({budget_name}) is taken by requests "
                "ahead of this one; retry", BUSY)  # fmt: skip


def explain_rows(item: Item, grid: int, limits: RequestLimits) -> int:
    """Model rows an explanation of ``item`` can take: one per word (at most
    ``max_explain_words``: more is refused before any pass), one per region, one per modality
    and the unperturbed request. An upper bound: words the tokenizer drops cost nothing."""
    words = min(len((item.text or "").split()), limits.max_explain_words + 1)
    cells = grid * grid if item.image is not None else 0
    return words + cells + 2 + 1
