"""Evaluate trained heads side by side and write JSON + Markdown + PNG reports.

Every model is scored on the same examples, overall and broken down by modality combination
(text only / image only / both) and by agreement of the two modalities (congruent / one neutral /
incongruent), because the overall number hides exactly what fusion is for: an ironic pair is
only solved by a model that actually combines the modalities.

Baselines: chance (majority class of the training split, and the expected score of uniform
random guessing) and single-modality heads (trained with ``--modalities text`` or ``image``),
which see only their modality on every example.

The report itself is written by :mod:`mmsent.evaluation.report`; export agreement
(:mod:`mmsent.evaluation.export_agreement`) becomes one of its sections.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from mmsent.config import ModelConfig
from mmsent.data.manifest import Example, read_manifest
from mmsent.evaluation.export_agreement import export_agreement
from mmsent.evaluation.groups import GROUPS, example_group, grouped_metrics
from mmsent.evaluation.metrics import (
    calibration,
    paired_bootstrap_diff,
    recall_gap,
)
from mmsent.evaluation.report import best_baseline, first_fusion, write_report
from mmsent.modeling.checkpoint import load_checkpoint
from mmsent.training.features import load_data, predict_logits


def chance_baselines(
    train: Sequence[Example], test: Sequence[Example], labels: Sequence[str]
) -> dict[str, dict[str, dict[str, Any]]]:
    """Majority class of the training split, and the *expected* score of uniform guessing.

    For uniform guessing each class has recall 1/K and precision equal to its share of the
    evaluated group, so the expected F1 is computed in closed form (no random seed involved).
    """
    counts = [sum(e.label == label for e in train) for label in labels]
    majority = counts.index(max(counts))
    out: dict[str, dict[str, dict[str, Any]]] = {
        "majority class": grouped_metrics(test, [majority] * len(test), labels)
    }
    uniform: dict[str, dict[str, Any]] = {}
    k = len(labels)
    for g, metrics in out["majority class"].items():
        support = [metrics["per_class"][label]["support"] for label in labels]
        n = sum(support)
        f1s = [2 * (s / n) * (1 / k) / (s / n + 1 / k) for s in support if s]
        uniform[g] = {"n": n, "accuracy": 1 / k, "macro_f1": sum(f1s) / len(f1s),
                      "per_class": {}, "confusion": []}
    out["uniform random"] = uniform
    return out


@dataclass
class ModelSpec:
    name: str
    path: str
    role: str = "fusion"  # "fusion" or "baseline"


def _config_summary(cfg: ModelConfig) -> dict[str, Any]:
    keys = ("fusion", "text_encoder", "image_backbone", "image_weights", "image_size",
            "max_text_length", "fusion_dim")
    return {k: getattr(cfg, k) for k in keys}


def evaluate_models(
    manifest: str | Path, models: Sequence[ModelSpec], splits: Sequence[str],
    cache_dir: str | Path | None = None, train_split: str = "train", num_threads: int = 2,
    probs_out: dict[str, dict[str, torch.Tensor]] | None = None,
) -> dict[str, Any]:
    """Score every model on every split; returns the full result tree (JSON-serialisable).

    ``probs_out``, when given, receives the served probabilities: ``[model name][split]``.
    """

    torch.set_num_threads(num_threads)
    manifest = Path(manifest)
    cache = Path(cache_dir) if cache_dir else manifest.parent / "cache"
    results: dict[str, Any] = {"manifest": str(manifest), "splits": {}, "models": {}}
    examples = {s: read_manifest(manifest, split=s) for s in splits}
    train_examples = read_manifest(manifest, split=train_split)
    labels: tuple[str, ...] | None = None
    predictions: dict[str, dict[str, list[int]]] = {}
    for spec in models:
        started = time.time()
        model, cfg, extra = load_checkpoint(spec.path)
        labels = cfg.labels
        modalities = extra.get("modalities", "both")
        data = load_data(manifest, list(splits), model, cfg, cache, modalities,
                         text_layer=extra.get("text_from_layer"))
        entry: dict[str, Any] = {
            "path": spec.path, "role": spec.role, "fusion": cfg.fusion, "modalities": modalities,
            "config": _config_summary(cfg), "val_at_save": extra.get("val"),
            "epoch": extra.get("epoch"), "temperature": cfg.temperature, "splits": {},
        }
        preds: dict[str, list[int]] = {}
        for split in splits:
            logits, parts = predict_logits(model, data[split])
            pred = logits.argmax(-1).tolist()
            preds[split] = pred
            metrics = grouped_metrics(examples[split], pred, cfg.labels)
            y = data[split].labels
            raw, served = logits.softmax(-1), (logits / cfg.temperature).softmax(-1)
            if probs_out is not None:
                probs_out.setdefault(spec.name, {})[split] = served
            for g in metrics:  # ECE of the served (temperature-scaled) probabilities per group
                rows = [i for i, e in enumerate(examples[split]) if g in example_group(e)]
                metrics[g]["ece"] = calibration(served[rows], y[rows])["ece"]
                metrics[g]["recall_gap"] = recall_gap(metrics[g])
            metrics["all"]["calibration"] = {
                "temperature": cfg.temperature,
                "uncalibrated": calibration(raw, y), "served": calibration(served, y),
            }
            both = [i for i, e in enumerate(examples[split]) if e.has_text and e.has_image]
            metrics["all"]["text_contribution_on_pairs"] = (
                parts[both, 0].mean().item() if both else None
            )
            entry["splits"][split] = metrics
        entry["eval_s"] = time.time() - started
        results["models"][spec.name] = entry
        predictions[spec.name] = preds
    assert labels is not None, "no models given"
    results["labels"] = list(labels)
    results["comparisons"] = slice_comparisons(results, examples, predictions)
    for split in splits:
        results["splits"][split] = {
            "n": len(examples[split]),
            "chance": chance_baselines(train_examples, examples[split], labels),
        }
    return results


def slice_comparisons(
    results: dict[str, Any], examples: dict[str, list[Example]],
    predictions: dict[str, dict[str, list[int]]],
) -> dict[str, dict[str, dict[str, Any]]]:
    """The first fusion model minus the best single-modality baseline on every slice of every
    split, with a paired bootstrap 95 % interval (``[split][group]``; empty without both)."""
    first = first_fusion(results)
    if first is None or not any(e["role"] == "baseline" for e in results["models"].values()):
        return {}
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for split, items in examples.items():
        truth = [results["labels"].index(e.label) for e in items]
        out[split] = {}
        for g in GROUPS[1:]:
            rows = [i for i, e in enumerate(items) if g in example_group(e)]
            if not rows:
                continue
            best = best_baseline(results, split, g)
            right = {n: [predictions[n][split][i] == truth[i] for i in rows] for n in (first, best)}
            out[split][g] = {"model": first, "baseline": best,
                             **paired_bootstrap_diff(right[first], right[best])}
    return out


def main(argv: list[str] | None = None) -> int:
    import argparse
    import shlex
    import shutil
    import sys

    parser = argparse.ArgumentParser(description="Evaluate fusion heads side by side.")
    parser.add_argument("--manifest", required=True)
    parser.add_argument("--model", action="append", default=[], metavar="NAME=CHECKPOINT",
                        help="a fusion model to compare (repeatable)")
    parser.add_argument("--baseline", action="append", default=[], metavar="NAME=CHECKPOINT",
                        help="a single-modality baseline head (repeatable)")
    parser.add_argument("--splits", nargs="+", default=["test"])
    parser.add_argument("--train-split", default="train")
    parser.add_argument("--cache-dir", default=None)
    parser.add_argument("--out", default="results/eval")
    parser.add_argument("--export-agreement", type=int, default=0, metavar="N",
                        help="also run the first --model as eager / TorchScript / int8 TorchScript "
                             "through the serving pipeline on N raw examples of the first split")
    parser.add_argument("--docs", default=None,
                        help="also copy report.md and the test-split PNGs here (e.g. docs/eval)")
    parser.add_argument("--frontier", action="store_true",
                        help="also plot congruent vs incongruent accuracy per split "
                             "(frontier_<split>.png, every split copied to --docs), with the "
                             "sweep mixing the text-only baseline into the first --model and, "
                             "for an image-evidence head, the best any rule-aware combination "
                             "of its two readers reaches (mmsent/evaluation/reader_bound.py)")
    args = parser.parse_args(argv)

    def parse(items: list[str], role: str) -> list[ModelSpec]:
        specs = []
        for item in items:
            name, _, path = item.partition("=")
            if not path:
                parser.error(f"expected NAME=CHECKPOINT, got {item!r}")
            specs.append(ModelSpec(name, path, role))
        return specs

    specs = parse(args.model, "fusion") + parse(args.baseline, "baseline")
    if not specs:
        parser.error("give at least one --model or --baseline")
    started = time.time()
    probs: dict[str, dict[str, torch.Tensor]] = {}
    results = evaluate_models(args.manifest, specs, args.splits, args.cache_dir, args.train_split,
                              probs_out=probs)
    command = "python scripts/evaluate.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    agreement = None
    if args.export_agreement and args.model:
        agreement = export_agreement(args.manifest, specs[0].path, args.splits[0],
                                     args.export_agreement)
    if args.frontier:
        from mmsent.evaluation.frontier import frontier_sweeps

        results["frontier"] = frontier_sweeps(results, probs, args.manifest, args.splits,
                                              cache_dir=args.cache_dir,
                                              train_split=args.train_split)
    paths = write_report(results, args.out, command, agreement)
    if args.frontier:
        from mmsent.evaluation.frontier import plot_frontiers

        paths.update(plot_frontiers(results, Path(args.out)))
    if args.docs:
        docs = Path(args.docs)
        docs.mkdir(parents=True, exist_ok=True)
        shutil.copy(paths["markdown"], docs / "report.md")
        for key in (f"confusion_{args.splits[0]}", f"groups_{args.splits[0]}",
                    f"reliability_{args.splits[0]}"):
            if key in paths:
                shutil.copy(paths[key], docs / paths[key].name)
        for key in paths:
            if key.startswith("frontier_"):
                shutil.copy(paths[key], docs / paths[key].name)
    print(paths["markdown"].read_text())
    print(f"evaluated {len(specs)} models in {time.time() - started:.0f} s -> {args.out}")
    return 0
