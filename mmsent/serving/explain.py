"""Which words and which image regions drove an answer: feature ablation on the served model.

For one request, every *word* (a whitespace-separated span of the original text; its WordPieces
are removed together) and every *region* (a cell of a ``grid x grid`` grid over the model's
``image_size`` input) is removed in turn, and the score is how much the class probability drops:

    score(feature, class) = p(class | request) - p(class | request without that feature)

A word is removed by giving its tokens ``attention_mask`` 0 and ``input_ids`` [PAD], which is
how the model already sees padding (BERT's attention and the fusion head both ignore it). A
region is replaced by 0 in normalised pixel space, i.e. the ImageNet mean colour. Each modality
is also removed as a whole (``has_text`` / ``has_image`` = 0, the model's own "absent" input),
which is the faithful counterpart of the attention-based ``contributions``.

Captum's ``FeatureAblation`` does the bookkeeping with cross-tensor feature masks (one word =
the same feature id in ``input_ids`` and ``attention_mask``) and hands all perturbations of a
request over at once (``perturbations_per_eval``); they run as ``ceil(features / MODEL_ROWS)``
forward passes of ``MODEL_ROWS`` rows, plus one pass for the request itself. The forward output
is the softmax over all classes, so the scores for *every* class come from the same passes:
asking for all classes costs nothing extra.

Only forward passes through the model's own inputs are needed, so this runs on the TorchScript
file exactly as served (no model class, no gradients, no hooks).

Nothing here imports TorchServe: the exchange calls :func:`explain_input` for every row of an
``/explanations`` request (``Exchange.explain`` in process).
"""

from __future__ import annotations

import logging
import math
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from mmsent.errors import RequestError
from mmsent.serving.limits import RequestLimits
from mmsent.serving.pipeline import Batch, SentimentPipeline
from mmsent.serving.tokenizer import tokenize

logger = logging.getLogger(__name__)

# TorchServe's frontend sets this request header on /explanations/<model> (never on /predictions)
EXPLAIN_HEADER = "explain"
# Request options, as HTTP headers (any request form) or as form fields (multipart, in process).
# Not query parameters: TorchServe 0.12 drops the query string of /predictions and
# /explanations before the worker (InferenceRequestHandler.handlePredictions passes no decoder).
GRID_FIELD = "x-explain-grid"
CLASSES_FIELD = "x-explain-classes"
OPTION_FIELDS = (GRID_FIELD, CLASSES_FIELD)
DEFAULT_GRID = 7  # 32 px cells at 224 px; finer grids cost one forward row per extra cell
# Perturbed copies Captum builds per step (a default request's features fit in one step: it
# has at most 62 words + 49 cells + 2 modalities) and the batch the model sees them in (see
# _Forward). 8 rows had the lowest measured cost per row on the default model, 2-core EPYC:
# 7-9 ms per row at 4 or 8 rows, 11.5-12 ms at 16.
PERTURBATIONS_PER_EVAL = 128
MODEL_ROWS = 8
METHOD = "feature ablation (Captum): score = p(class) - p(class without the feature)"
_WORD = re.compile(r"\S+")


@dataclass(frozen=True)
class ExplainOptions:
    """What one request asked to have explained."""

    grid: int = DEFAULT_GRID
    all_classes: bool = False


@dataclass(frozen=True)
class Word:
    """A whitespace-separated word of the original text and the token positions it became."""

    word: str
    start: int  # character offsets into the request's text: text[start:end] == word
    end: int
    tokens: tuple[int, ...]


def split_options(
    raw: Mapping[str, Any], limits: RequestLimits, headers: Mapping[str, str] | None = None
) -> tuple[Any, ExplainOptions]:
    """``raw`` without the explanation options, and the options; RequestError when bad.

    Options come from form fields of ``raw`` or else from ``headers`` (names lower-case). The
    fields are removed before the payload parser sees the item, which would (rightly) refuse
    them as unknown fields on ``/predictions``.
    """
    headers = headers or {}
    fields = raw if isinstance(raw, Mapping) else {}
    item = {k: v for k, v in fields.items() if k not in OPTION_FIELDS} if fields else raw
    values = {k: fields[k] if k in fields else headers.get(k) for k in OPTION_FIELDS}
    grid = DEFAULT_GRID
    if values[GRID_FIELD] is not None:
        value = _as_text(values[GRID_FIELD])
        # isascii: "²".isdigit() is True but int() refuses it; len: int() refuses > 4300 digits
        if not (value.isascii() and value.isdigit() and len(value) <= 4) or int(value) < 1:
            raise RequestError(f'"{GRID_FIELD}" must be a positive integer, got {value[:20]!r}')
        grid = int(value)
        if grid * grid > limits.max_explain_cells:
            most = limits.max_explain_cells
            raise RequestError(
                f"grid {grid}x{grid} = {grid * grid} regions; explanations allow at most "
                f"{most} regions ({GRID_FIELD} <= {math.isqrt(most)})",
                413,
            )
    classes = _as_text(values[CLASSES_FIELD] or "predicted")
    if classes not in ("predicted", "all"):
        raise RequestError(f'"{CLASSES_FIELD}" must be "predicted" or "all", got {classes[:20]!r}')
    return item, ExplainOptions(grid=grid, all_classes=classes == "all")


def _as_text(value: Any) -> str:
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("utf-8", errors="replace").strip()
    return str(value).strip()


def words_of(text: str, encoding: Any) -> list[Word]:
    """Group a fast-tokenizer encoding's WordPieces into the whitespace words of ``text``.

    A token belongs to the word its first character falls in (the tokenizer's offset mapping is
    in characters of the original string, emoji and accented letters included, so
    ``text[start:end]`` is the word exactly). Words that produced no token (cut off by
    ``max_text_length``, or made only of characters BERT drops) are left out: the model never
    saw them, so there is nothing to attribute.
    """
    spans = [(m.start(), m.end()) for m in _WORD.finditer(text)]
    tokens: list[list[int]] = [[] for _ in spans]
    span = 0
    for position, ((start, end), special) in enumerate(
        zip(encoding.offsets, encoding.special_tokens_mask, strict=True)
    ):
        if special or end <= start:
            continue
        while span < len(spans) and spans[span][1] <= start:
            span += 1
        if span < len(spans) and spans[span][0] <= start:
            tokens[span].append(position)
    pairs = zip(spans, tokens, strict=True)
    return [Word(text[a:b], a, b, tuple(toks)) for (a, b), toks in pairs if toks]


def region_ids(size: int, grid: int, first_id: int, device: torch.device) -> Tensor:
    """(1, 1, size, size) feature ids: row-major ``grid x grid`` cells, numbered from
    ``first_id``. Cells are as equal as integer pixels allow (224 / 7 = 32 px each)."""
    band = torch.arange(size, device=device) * grid // size
    return (first_id + band.view(-1, 1) * grid + band.view(1, -1)).view(1, 1, size, size)


class _Forward:
    """Captum's forward function: the attributed inputs first, the rest as additional args,
    reordered into the model's five inputs; returns the softmax over classes (fp32), at the
    served temperature so the explained probabilities are the answered ones.

    Captum hands over up to ``PERTURBATIONS_PER_EVAL`` perturbed copies at once; they reach the
    model in chunks of exactly ``MODEL_ROWS`` (the last one padded with copies of its first
    row), so every pass has the one batch size with the lowest cost per row, whatever the
    number of words.
    """

    ORDER = ("input_ids", "attention_mask", "pixel_values", "has_text", "has_image")

    def __init__(self, model: Any, attributed: Sequence[str], temperature: float = 1.0) -> None:
        self.model = model
        self.temperature = temperature  # the served probabilities' (ModelConfig.temperature)
        self.names = [*attributed, *(n for n in self.ORDER if n not in attributed)]
        self.passes = 0

    def __call__(self, *tensors: Tensor) -> Tensor:
        named = dict(zip(self.names, tensors, strict=True))
        inputs = [named[n] for n in self.ORDER]
        rows = inputs[0].shape[0]
        if rows == 1:  # the unperturbed request: the shape serving already uses
            return self._run(inputs, 1)
        out = []
        for lo in range(0, rows, MODEL_ROWS):
            part = [t[lo : lo + MODEL_ROWS] for t in inputs]
            n = part[0].shape[0]
            if n < MODEL_ROWS:
                part = [torch.cat([t, t[:1].expand(MODEL_ROWS - n, *t.shape[1:])]) for t in part]
            out.append(self._run(part, n))
        return torch.cat(out)

    def _run(self, inputs: list[Tensor], keep: int) -> Tensor:
        self.passes += 1
        logits, _ = self.model(*inputs)
        return torch.softmax(logits[:keep].float() / self.temperature, dim=-1)


def explain_one(
    pipeline: SentimentPipeline,
    text: str | None,
    pixels: Tensor | None,
    options: ExplainOptions,
    predicted: int,
) -> dict[str, Any]:
    """The explanation of one request (``pixels``: uint8 (3, H, W) as decoded, or None).

    Raises RequestError (413) when the text has more words than ``max_explain_words``.
    """
    try:
        from captum.attr import FeatureAblation
    except ImportError:  # predictions work without it; only this endpoint needs it
        raise RequestError(
            "explanations need the captum package in the serving environment "
            "(pip install captum==0.9.0)", 501
        ) from None

    start = time.perf_counter()
    cfg, device, limits = pipeline.cfg, pipeline.device, pipeline.limits
    clipped = (text or "")[: limits.max_text_chars]
    enc = tokenize(pipeline.tokenizer, [clipped], cfg)
    words = words_of(clipped, enc.encodings[0]) if text is not None else []
    if len(words) > limits.max_explain_words:
        raise RequestError(
            f"text has {len(words)} words; explanations cover at most "
            f"{limits.max_explain_words} words: shorten it or use /predictions",
            413,
        )
    size = cfg.image_size
    one = Batch(size=1, kept=[0])
    one.tensors = {
        "input_ids": enc["input_ids"],
        "attention_mask": enc["attention_mask"],
        "pixels": (pixels if pixels is not None else torch.zeros(3, size, size, dtype=torch.uint8))
        .unsqueeze(0),
        "has_text": torch.tensor([float(text is not None)]),
        "has_image": torch.tensor([float(pixels is not None)]),
    }
    ids, mask, pixel_values, has_text, has_image = pipeline.model_inputs(one)
    inputs: dict[str, Tensor] = {}
    masks: dict[str, Tensor] = {}
    baselines: dict[str, Tensor | float] = {}
    next_id = 0
    if words:
        token_ids = torch.full_like(ids, -1)
        for index, word in enumerate(words):
            token_ids[0, list(word.tokens)] = index
        next_id = len(words)
        modality = next_id + (options.grid**2 if pixels is not None else 0)
        # [CLS]/[SEP] join the text-modality feature but keep their value: only has_text flips
        keep = token_ids < 0
        token_ids[keep] = modality
        inputs.update(input_ids=ids, attention_mask=mask, has_text=has_text)
        masks.update(input_ids=token_ids, attention_mask=token_ids,
                     has_text=torch.tensor([modality], device=device))  # fmt: skip
        baselines.update(
            input_ids=torch.where(keep, ids, pipeline.tokenizer.pad_token_id),
            attention_mask=torch.where(keep, mask, 0),
            has_text=0.0,
        )
    cells = 0
    if pixels is not None:
        cells = options.grid**2
        inputs.update(pixel_values=pixel_values, has_image=has_image)
        masks.update(
            pixel_values=region_ids(size, options.grid, next_id, device).expand_as(pixel_values),
            has_image=torch.tensor([next_id + cells + (1 if words else 0)], device=device),
        )
        baselines.update(pixel_values=0.0, has_image=0.0)
    names = list(inputs)
    forward = _Forward(pipeline.model, names, pipeline.cfg.temperature)
    with torch.inference_mode():
        attributions = FeatureAblation(forward).attribute(
            tuple(inputs[n] for n in names),
            baselines=tuple(baselines[n] for n in names),
            additional_forward_args=tuple(
                t for n, t in zip(_Forward.ORDER, (ids, mask, pixel_values, has_text, has_image),
                                  strict=True) if n not in inputs  # fmt: skip
            ),
            feature_mask=tuple(masks[n] for n in names),
            perturbations_per_eval=PERTURBATIONS_PER_EVAL,
        )
    scores = {n: a.float().cpu() for n, a in zip(names, attributions, strict=True)}  # (C, ...)
    return _answer(cfg.labels, predicted, options, words, scores, cells, forward.passes, start)


def _answer(
    labels: Sequence[str],
    predicted: int,
    options: ExplainOptions,
    words: list[Word],
    scores: dict[str, Tensor],
    cells: int,
    passes: int,
    start: float,
) -> dict[str, Any]:
    """JSON-ready explanation: per-class score tables, the predicted class's at the top."""
    grid = options.grid

    def per_class(c: int) -> dict[str, Any]:
        out: dict[str, Any] = {
            "words": [_r(scores["input_ids"][c, w.tokens[0]]) for w in words],
            "image": None,
            "modalities": {
                "text": _r(scores["has_text"][c]) if "has_text" in scores else 0.0,
                "image": _r(scores["has_image"][c]) if "has_image" in scores else 0.0,
            },
        }
        if cells:
            pixels = scores["pixel_values"][c, 0]
            first = [-(-i * pixels.shape[-1] // grid) for i in range(grid)]  # 1st pixel of a cell
            out["image"] = [[_r(pixels[y, x]) for x in first] for y in first]
        return out

    table = {label: per_class(c) for c, label in enumerate(labels)}
    top = table[labels[predicted]]
    answer: dict[str, Any] = {
        "target": labels[predicted],
        "method": METHOD,
        "words": [
            {"word": w.word, "start": w.start, "end": w.end, "score": s}
            for w, s in zip(words, top["words"], strict=True)
        ],
        "image": {"grid": [grid, grid], "scores": top["image"]} if cells else None,
        "modalities": top["modalities"],
        "forward_passes": passes,
        "ms": round((time.perf_counter() - start) * 1000, 1),
    }
    if options.all_classes:
        answer["classes"] = table
    return answer


def _r(value: Tensor) -> float:
    return round(float(value.reshape(-1)[0]), 4)


def explain_input(
    pipeline: SentimentPipeline, batch: Batch, position: int, options: ExplainOptions
) -> dict[str, Any] | RequestError:
    """The explanation of input ``position`` of ``batch`` (after ``infer``), or the
    RequestError to answer instead: a failure costs this explanation only, never the batch.

    The parsed text and the decoded image are reused from the batch.
    """
    if batch.outputs is None or position not in batch.kept:
        return RequestError("internal error: explaining an input that did not run", 500)
    row = batch.kept.index(position)
    try:
        text = batch.items[row].text
        pixels = batch.tensors["pixels"][row] if batch.tensors["has_image"][row] > 0 else None
        predicted = int(batch.outputs[0][row].argmax())
        return explain_one(pipeline, text, pixels, options, predicted)
    except RequestError as err:
        return err
    except Exception as exc:
        logger.exception("explaining input %d failed", position)
        return RequestError(f"internal error explaining: {type(exc).__name__}", 500)
