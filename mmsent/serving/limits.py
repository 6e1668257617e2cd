"""Per-request limits: serving policy, not part of the model.

They live in the archive's ``model-config.yaml`` under ``handler: limits:`` (TorchServe hands
that section to the handler as ``context.model_yaml_config``), so an operator changes a limit by
editing that file or re-archiving, never by re-exporting the model. Absent keys keep these
defaults.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any


@dataclass(frozen=True)
class RequestLimits:
    """Limits enforced per item before any expensive work (decode, tokenize).

    They sit below TorchServe's ``max_request_size`` so a normal phone photo (a few MB) passes
    while a decompression bomb or a 100 MB upload is refused with a clear message.
    """

    max_image_bytes: int = 16 * 1024 * 1024
    max_image_pixels: int = 40_000_000  # ~ a 7700x5200 photo; bombs claim far more
    max_text_chars: int = 20_000  # longer text is clipped (and reported), never an error
    # /explanations costs one perturbed forward row per word and per region (serving/explain.py)
    # and holds the worker meanwhile: these bound one request (measured worst case, 62 words +
    # a 10x10 grid, default model, 2-core CPU: 3.1 s); beyond them the answer is a 413.
    max_explain_words: int = 64  # every text max_text_length=64 admits (<= 62 words) fits
    max_explain_cells: int = 100  # up to a 10x10 grid (22 px cells at 224 px)
    # items in one Open Inference (v2) request (shape [N]): its N rows join the TorchServe batch
    # (batchSize 8 requests) in one forward pass, so N bounds what one caller adds to everyone's
    # latency; beyond it the answer is a 413 (serving/open_inference.py)
    max_items_per_request: int = 32
    # Decode and explanation budgets (serving/budget.py), charged in arrival order before any
    # decode or model work. Decode work is counted in decoded pixels (a JPEG at its draft
    # scale): 8.3 MP per request is one 4K frame (3840x2160), measured 120-170 ms of PNG decoding
    # on the 2-core EPYC, about 1.5 ordinary batches of 8 (0.11 s there); the batch allows 1.25
    # of that, so a request at the limit always fits beside ordinary images, never beside a
    # second one. The explanation budget is in model rows (one per word, region and modality,
    # plus one): one worst-case explanation (64 words, 10x10 grid: 167 rows), or three default ones
    # (a tweet and an image, 7x7 grid: ~62 rows each), fit in a batch.
    # Over a per-request limit: 413; fits alone but not beside its mates: 503 + Retry-After.
    max_decode_pixels_per_request: int = 8_300_000
    max_decode_pixels_per_batch: int = 10_400_000
    max_explain_rows_per_batch: int = 192

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any] | None) -> RequestLimits:
        """Limits from a ``handler: limits:`` mapping; unknown keys are a configuration error."""
        values = dict(values or {})
        unknown = set(values) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"unknown request limits: {sorted(unknown)}")
        return cls(**{k: int(v) for k, v in values.items()})


DEFAULT_LIMITS = RequestLimits()
