"""Do the exported variants answer like the eager model? Checked through the serving pipeline.

Eager, TorchScript and dynamic-int8 TorchScript each sit behind the same
:class:`~mmsent.serving.pipeline.SentimentPipeline` (same decoding, same tokenization), fed the
raw text and image files of a manifest split, so any difference is the export's alone.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from mmsent.data.manifest import read_manifest
from mmsent.evaluation.metrics import prediction_agreement
from mmsent.modeling.checkpoint import load_checkpoint
from mmsent.modeling.encoders import build_tokenizer
from mmsent.modeling.export import export_model_dir
from mmsent.serving.exchange import Exchange
from mmsent.serving.pipeline import SentimentPipeline


def _requests(manifest: Path, split: str, limit: int) -> tuple[list[dict[str, Any]], list[str]]:
    rows, labels = [], []
    for example in read_manifest(manifest, split=split)[:limit]:
        image = example.image_path(manifest.parent)
        rows.append({
            "text": example.text.encode() if example.text is not None else None,
            "image": image.read_bytes() if image is not None else None,
        })
        labels.append(example.label)
    return rows, labels


def _probabilities(
    pipeline: SentimentPipeline, rows: list[dict[str, Any]], batch: int
) -> tuple[torch.Tensor, float]:
    started = time.perf_counter()
    answers = []
    for i in range(0, len(rows), batch):
        answers += Exchange(pipeline).predict(rows[i : i + batch])
    elapsed = time.perf_counter() - started
    labels = pipeline.cfg.labels
    return torch.tensor([[a["probabilities"][k] for k in labels] for a in answers]), elapsed


def export_agreement(
    manifest: str | Path, checkpoint: str | Path, split: str = "test", limit: int = 300,
    batch: int = 16,
) -> dict[str, dict[str, float]]:
    """Agreement of TorchScript and int8 TorchScript with eager on ``limit`` raw examples."""
    manifest = Path(manifest)
    model, cfg, _ = load_checkpoint(checkpoint)
    rows, gold = _requests(manifest, split, limit)
    eager = SentimentPipeline(model, build_tokenizer(cfg.text_encoder), cfg)
    variants = {"eager": eager}
    with tempfile.TemporaryDirectory() as tmp:
        for name, int8 in (("torchscript", False), ("torchscript int8", True)):
            export_model_dir(model, cfg, Path(tmp) / name.replace(" ", "_"), int8=int8)
            variants[name] = SentimentPipeline.from_dir(Path(tmp) / name.replace(" ", "_"))
        probs = {name: _probabilities(p, rows, batch) for name, p in variants.items()}
    return _compare(probs, "eager", gold, cfg.labels)


def precision_agreement(
    manifest: str | Path, checkpoint: str | Path, precisions: tuple[str, ...] = ("fp16", "bf16"),
    split: str = "test", limit: int = 300, batch: int = 16, device: str = "cpu",
) -> dict[str, dict[str, float]]:
    """Agreement of the served TorchScript model in half precision with the same file in fp32.

    Runs on ``device`` (CPU here, where fp16/bf16 are slow but exact in what they compute, so
    the agreement figures transfer to a GPU; the speed figures do not).
    """
    manifest = Path(manifest)
    model, cfg, _ = load_checkpoint(checkpoint)
    rows, gold = _requests(manifest, split, limit)
    with tempfile.TemporaryDirectory() as tmp:
        export_model_dir(model, cfg, Path(tmp))
        probs = {
            p: _probabilities(SentimentPipeline.from_dir(tmp, device, precision=p), rows, batch)
            for p in ("fp32", *precisions)
        }
    return _compare(probs, "fp32", gold, cfg.labels)


def _compare(
    probs: dict[str, tuple[torch.Tensor, float]], ref: str, gold: list[str],
    labels: tuple[str, ...],
) -> dict[str, dict[str, float]]:
    reference = probs[ref][0]
    out: dict[str, dict[str, float]] = {}
    for name, (table, seconds) in probs.items():
        entry = prediction_agreement(reference, table) if name != ref else {}
        entry["accuracy"] = sum(
            labels[i] == g for i, g in zip(table.argmax(-1).tolist(), gold, strict=True)
        ) / len(gold)
        entry["examples_per_s"] = len(gold) / seconds
        out[f"{name} vs {ref}" if name != ref else ref] = entry
    return out
