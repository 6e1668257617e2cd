"""The model's side of serving: validated inputs -> batch tensors -> model -> per-input answers.

:class:`SentimentPipeline` decodes, tokenizes (one tokenizer call per batch) and runs a list of
inputs; every per-input failure is captured as a :class:`RequestError` for that input, so one bad
input never fails its batch mates. It knows nothing of requests, protocols or engines: the
exchange (``mmsent.serving.exchange``) turns an engine's batch into inputs and the outcomes back
into replies. Nothing here imports TorchServe.
"""

from __future__ import annotations

import logging
import os
import time
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from mmsent.config import MODALITIES, ModelConfig
from mmsent.errors import RequestError
from mmsent.serving.imaging import decode_image_uint8, normalize
from mmsent.serving.limits import DEFAULT_LIMITS, RequestLimits
from mmsent.serving.payload import Item, parse_item
from mmsent.serving.tokenizer import load_tokenizer, tokenize

logger = logging.getLogger(__name__)

DECODE_THREADS = min(4, os.cpu_count() or 1)
POOL_MIN_BATCH_BYTES = 512 * 1024
Model = Callable[..., tuple[Tensor, Tensor]]


@dataclass
class Batch:
    """The valid inputs of one pipeline call as tensors, plus an error for each invalid one.

    Inputs are numbered by their position in the list given to :meth:`SentimentPipeline.
    preprocess`; ``kept[r]`` is the input behind tensor row ``r``. Both stay inside the
    pipeline and the exchange call that made them.
    """

    size: int  # inputs given, valid or not
    kept: list[int] = field(default_factory=list)  # input position of each tensor row
    items: list[Item] = field(default_factory=list)  # the parsed input of each tensor row
    errors: dict[int, RequestError] = field(default_factory=dict)  # by input position
    truncated: list[bool] = field(default_factory=list)
    modalities: list[list[str]] = field(default_factory=list)
    tensors: dict[str, Tensor] = field(default_factory=dict)
    timings_ms: dict[str, float] = field(default_factory=dict)
    outputs: tuple[Tensor, Tensor] | None = None  # (probabilities, contributions), set by infer


DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def resolve_dtype(precision: str, device: str | torch.device) -> torch.dtype:
    """The serving dtype for a ``ModelConfig.precision`` on ``device``.

    ``auto`` is fp16 on CUDA and fp32 on CPU (bf16 is several times slower than fp32 on CPUs
    without AVX-512 BF16 / AMX, such as this project's EPYC). Explicit values are honoured
    everywhere, so fp16/bf16 can be checked on a CPU too (slowly).
    """
    if precision == "auto":
        return torch.float16 if torch.device(device).type == "cuda" else torch.float32
    if precision not in DTYPES:
        raise ValueError(f"precision must be auto or one of {sorted(DTYPES)}, got {precision!r}")
    return DTYPES[precision]


def cpu_threads(workers: int, configured: int | None = None) -> int:
    """torch threads for one of ``workers`` CPU workers: ``configured``, else the cores split
    evenly. Measured on the 2-core EPYC: 2 workers x 1 thread served 1.9x the requests of
    1 worker x 2 threads at a lower p95 (handlers/model-config.yaml); 2 workers x 2 threads
    would oversubscribe the cores."""
    if configured:
        return max(1, int(configured))
    return max(1, (os.cpu_count() or 1) // max(1, workers))


def optimize_loaded(
    model: torch.jit.ScriptModule, device: str, dtype: torch.dtype = torch.float32
) -> torch.jit.ScriptModule:
    """Cast to the serving dtype, freeze the TorchScript model (BatchNorm folded into
    convolutions, weights inlined) and, on CPU in fp32, apply oneDNN inference rewrites.

    Measured on the default model (2-core EPYC): 1.4x at batch 1 and 2.2x at batch 8; without it
    MobileNetV2's unfolded BatchNorm made batch 8 *slower* per item than batch 1, so dynamic
    batching did not pay. Logits move by < 1e-5. Done at load time because the oneDNN rewrites
    are specific to the device the model runs on.
    """
    frozen = torch.jit.freeze(model.to(dtype).eval())
    if torch.device(device).type == "cpu" and dtype == torch.float32:
        frozen = torch.jit.optimize_for_inference(frozen)
    return frozen


def _guard(position: int, fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)``, or the RequestError to answer for this input: a bug costs one input only."""
    try:
        return fn(*args)
    except RequestError as err:
        return err
    except Exception as exc:
        logger.exception("unexpected error preparing input %d", position)
        return RequestError(f"internal error: {type(exc).__name__}", 500)


class SentimentPipeline:
    """Everything between an input's fields and its answer, batched."""

    def __init__(
        self,
        model: Model,
        tokenizer: Any,
        cfg: ModelConfig,
        device: str = "cpu",
        dtype: torch.dtype = torch.float32,
        limits: RequestLimits = DEFAULT_LIMITS,
    ):
        self.model = model
        self.limits = limits
        self.tokenizer = tokenizer
        self.cfg = cfg
        self.device = torch.device(device)
        self.dtype = dtype  # the model's floating dtype; softmax and answers stay fp32
        self._pool: ThreadPoolExecutor | None = None

    @classmethod
    def from_dir(
        cls,
        model_dir: str | Path,
        device: str = "cpu",
        precision: str | None = None,
        limits: RequestLimits = DEFAULT_LIMITS,
    ) -> SentimentPipeline:
        """Load an exported model folder / unpacked archive: model file, config, tokenizer files.

        The archive's ``ModelConfig.runtime`` picks the loader: TorchScript (``model.pt``) or
        ONNX Runtime (``model.onnx``; CUDA EP on a ``cuda`` device, else CPU EP; always fp32).
        ``precision`` overrides the archive's ``ModelConfig.precision`` (default ``auto``);
        ``limits`` is serving policy (the handler reads it from model-config.yaml).
        """
        model_dir = Path(model_dir)
        cfg = ModelConfig.load(model_dir)
        if cfg.runtime == "onnx":
            from mmsent.serving.onnx_model import OnnxModel

            # ORT takes CPU tensors and moves them to its EP itself, so the pipeline's tensors
            # stay on the CPU; the file is fp32 (int8 weights, if quantized, are inside it)
            model = OnnxModel(model_dir / cfg.model_filename, device)
            return cls(model, load_tokenizer(model_dir), cfg, "cpu", torch.float32, limits)
        dtype = resolve_dtype(precision or cfg.precision, device)
        with warnings.catch_warnings():  # torch.jit's deprecation notices; the format is ours
            warnings.filterwarnings("ignore", message=r"`torch\.jit\..*` is deprecated")
            model = torch.jit.load(str(model_dir / cfg.model_filename), map_location=device).eval()
            model = optimize_loaded(model, device, dtype)
        return cls(model, load_tokenizer(model_dir), cfg, device, dtype, limits)

    # -- decode -> tokenize/preprocess ------------------------------------------------------
    def preprocess(self, inputs: Sequence[Any]) -> Batch:
        """Validate and decode every input, then tokenize all texts in ONE tokenizer call.

        Images are decoded on a small thread pool: Pillow releases the GIL while decoding and
        resampling, so a batch's images use the cores that would otherwise idle.
        """
        start = time.perf_counter()
        batch = Batch(size=len(inputs))
        parsed = [_guard(pos, parse_item, raw) for pos, raw in enumerate(inputs)]
        jobs = [(pos, it.image) for pos, it in enumerate(parsed)
                if isinstance(it, Item) and it.image is not None]  # fmt: skip
        results = self._map(
            lambda job: _guard(job[0], decode_image_uint8, job[1], self.cfg, self.limits), jobs
        )
        decoded = {pos: result for (pos, _), result in zip(jobs, results, strict=True)}
        images: list[Tensor | None] = []
        for pos, item in enumerate(parsed):
            image = decoded.get(pos)
            failure = item if isinstance(item, RequestError) else image
            if isinstance(failure, RequestError):
                batch.errors[pos] = failure
                continue
            batch.kept.append(pos)
            batch.items.append(item)
            images.append(image)
            batch.modalities.append(
                [m for m, v in zip(MODALITIES, (item.text, image), strict=True) if v is not None]
            )
        if batch.items:
            self._tensorize(batch, images)
        batch.timings_ms["preprocess"] = (time.perf_counter() - start) * 1000
        return batch

    def _tensorize(self, batch: Batch, images: list[Tensor | None]) -> None:
        """``_to_tensors`` for the valid rows; if that batch-wide step fails, retry each row
        alone, answer the rows that still fail with their own error and rebuild without them.

        The tokenizer call and the stacking take every row at once, so one row they choke on
        would otherwise cost the whole engine batch a 503. Validation in ``parse_item`` catches
        the known cases (lone surrogates) with a 400; this is the net for the unknown ones, and
        it costs nothing unless a batched step raised.
        """
        try:
            batch.tensors = self._to_tensors(batch.items, images, batch)
            return
        except Exception:
            logger.exception("batched preprocessing failed; retrying its %d rows one by one",
                             len(batch.items))  # fmt: skip
        keep = self._rows_that_pass_alone(batch, images)
        batch.kept = [batch.kept[r] for r in keep]
        batch.items = [batch.items[r] for r in keep]
        batch.modalities = [batch.modalities[r] for r in keep]
        if not keep:
            return
        rebuilt = _guard(-1, self._to_tensors, batch.items, [images[r] for r in keep], batch)
        if isinstance(rebuilt, RequestError):  # every row passes alone, not together: our bug
            batch.errors.update({pos: rebuilt for pos in batch.kept})
            batch.kept, batch.items, batch.modalities = [], [], []
        else:
            batch.tensors = rebuilt

    def _rows_that_pass_alone(self, batch: Batch, images: list[Tensor | None]) -> list[int]:
        """Rows whose ``_to_tensors`` works on its own; each other row's input gets its error."""
        keep = []
        for row, (pos, item, image) in enumerate(
            zip(batch.kept, batch.items, images, strict=True)
        ):
            alone = _guard(pos, self._to_tensors, [item], [image], Batch(size=1))
            if isinstance(alone, RequestError):
                batch.errors[pos] = alone
            else:
                keep.append(row)
        return keep

    def _map(self, fn: Callable[[Any], Any], jobs: list[tuple[int, bytes]]) -> list[Any]:
        # Small images decode in well under a millisecond: thread hand-offs would cost more
        # than they save (measured: 224 px JPEGs 5.8 -> 7.3 ms per batch of 8 with the pool,
        # 1-2 MP photos 54 -> 33 ms). Only batches carrying real photos use the pool.
        if len(jobs) < 2 or sum(len(data) for _, data in jobs) < POOL_MIN_BATCH_BYTES:
            return [fn(job) for job in jobs]
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=DECODE_THREADS, thread_name_prefix="decode")
        return list(self._pool.map(fn, jobs))

    def _to_tensors(
        self, items: list[Item], images: list[Tensor | None], batch: Batch
    ) -> dict[str, Tensor]:
        max_chars = self.limits.max_text_chars
        texts = [(it.text or "")[:max_chars] for it in items]
        enc = tokenize(self.tokenizer, texts, self.cfg)
        batch.truncated = [
            len(it.text or "") > max_chars or bool(e.overflowing)
            for it, e in zip(items, enc.encodings, strict=True)
        ]
        size = self.cfg.image_size
        blank = torch.zeros(3, size, size, dtype=torch.uint8)
        # still uint8: normalised on the model's device in model_inputs (4x less to transfer)
        return {
            "input_ids": enc["input_ids"],
            "attention_mask": enc["attention_mask"],
            "pixels": torch.stack([blank if im is None else im for im in images]),
            "has_text": torch.tensor([float(it.text is not None) for it in items]),
            "has_image": torch.tensor([float(im is not None) for im in images]),
        }

    # -- model ------------------------------------------------------------------------------
    def model_inputs(self, batch: Batch) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """The model's five inputs on its device and in its dtype.

        Pixels cross to the device as uint8 (from pinned memory, asynchronously, on CUDA) and
        are normalised there, in fp32, then cast: a batch of 8 at 224 px moves 1.2 MB instead of
        4.8 MB of fp32, and the GPU does the arithmetic. Rows without an image are zeroed
        after normalisation (the model masks them anyway; zeros keep them inert).
        """
        t = batch.tensors
        cuda = self.device.type == "cuda"

        def move(x: Tensor) -> Tensor:
            return (x.pin_memory() if cuda else x).to(self.device, non_blocking=cuda)

        has_image = move(t["has_image"])
        pixels = normalize(move(t["pixels"]), self.cfg) * has_image.view(-1, 1, 1, 1)
        return (
            move(t["input_ids"]),
            move(t["attention_mask"]),
            pixels.to(self.dtype),
            move(t["has_text"]).to(self.dtype),
            has_image.to(self.dtype),
        )

    def infer(self, batch: Batch) -> tuple[Tensor, Tensor] | None:
        """Run the model on the valid rows; (probabilities, contributions) on CPU, also kept in
        ``batch.outputs`` so a server's postprocess step needs only the batch."""
        if not batch.kept:
            return None
        start = time.perf_counter()
        with torch.inference_mode():
            logits, contributions = self.model(*self.model_inputs(batch))
            # the temperature fitted on validation (ModelConfig.temperature, 1.0 if absent)
            probs = torch.softmax(logits.float() / self.cfg.temperature, dim=-1).cpu()
            contributions = contributions.float().cpu()
        batch.timings_ms["inference"] = (time.perf_counter() - start) * 1000
        batch.outputs = (probs, contributions)
        return batch.outputs

    # -- answer -----------------------------------------------------------------------------
    def postprocess(self, batch: Batch) -> list[dict[str, Any] | RequestError]:
        """Per input, in input order: its answer (label, probabilities, contributions,
        modalities, text_truncated) from ``batch.outputs``, or the RequestError it failed with."""
        start = time.perf_counter()
        outputs = batch.outputs
        answers: list[dict[str, Any] | RequestError] = [
            batch.errors.get(pos, RequestError("internal error: input not run", 500))
            for pos in range(batch.size)
        ]
        if outputs is not None:
            probs, contributions = outputs
            labels = self.cfg.labels
            for row, pos in enumerate(batch.kept):
                p = probs[row].tolist()
                c = contributions[row].tolist()
                answers[pos] = {
                    "label": labels[max(range(len(p)), key=p.__getitem__)],
                    "probabilities": {n: round(v, 6) for n, v in zip(labels, p, strict=True)},
                    "contributions": {m: round(v, 4) for m, v in zip(MODALITIES, c, strict=True)},
                    "modalities": batch.modalities[row],
                    "text_truncated": batch.truncated[row],
                }
        batch.timings_ms["postprocess"] = (time.perf_counter() - start) * 1000
        return answers

    def warmup(self, runs: int = 2) -> None:
        """Run dummy batches so TorchScript's profiling executor has optimised the graph before
        the first real request (otherwise that request pays seconds of compilation)."""
        size = self.cfg.image_size
        pixels = torch.zeros(3, size, size, dtype=torch.uint8)
        for batch_size in (1, 2)[:runs]:
            fake = Batch(size=batch_size, kept=list(range(batch_size)))
            fake.tensors = self._to_tensors(
                [Item(text="warm up", image=None)] * batch_size, [pixels] * batch_size, fake
            )
            self.infer(fake)
