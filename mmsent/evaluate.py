"""Evaluate trained heads side by side and write JSON + Markdown + PNG reports.

Every model is scored on the same examples, overall and broken down by modality combination
(text only / image only / both) and by agreement of the two modalities (congruent / one neutral /
incongruent), because the overall number hides exactly what fusion is for: an ironic pair is
only solved by a model that actually combines the modalities.

Baselines: chance (majority class of the training split, and the expected score of uniform
random guessing) and single-modality heads (trained with ``--modalities text`` or ``image``),
which see only their modality on every example.

Hook for the export module: :func:`prediction_agreement` compares two probability tables (e.g.
eager vs TorchScript vs int8); pass its result as ``agreement`` to :func:`write_report` and it
becomes a section of the report.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from mmsent.config import ModelConfig
from mmsent.data.labels import pair_type
from mmsent.data.manifest import Example, read_manifest
from mmsent.model import load_checkpoint

GROUPS: tuple[str, ...] = (
    "all", "text_only", "image_only", "both", "congruent", "mixed", "incongruent",
)
GROUP_TITLES = {
    "all": "all", "text_only": "text only", "image_only": "image only", "both": "text+image",
    "congruent": "congruent", "mixed": "one neutral", "incongruent": "incongruent",
}


def classification_metrics(
    y_true: Sequence[int], y_pred: Sequence[int], labels: Sequence[str]
) -> dict[str, Any]:
    """Accuracy, macro-F1, per-class precision/recall/F1/support and the confusion matrix.

    ``confusion[i][j]`` counts examples of true class i predicted as class j.
    """
    k = len(labels)
    confusion = [[0] * k for _ in range(k)]
    for t, p in zip(y_true, y_pred, strict=True):
        confusion[t][p] += 1
    n = len(y_true)
    per_class = {}
    for i, label in enumerate(labels):
        tp = confusion[i][i]
        predicted = sum(confusion[r][i] for r in range(k))
        support = sum(confusion[i])
        precision = tp / predicted if predicted else 0.0
        recall = tp / support if support else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_class[label] = {"precision": precision, "recall": recall, "f1": f1, "support": support}
    present = [c for c in per_class.values() if c["support"] > 0] or list(per_class.values())
    return {
        "n": n,
        "accuracy": sum(confusion[i][i] for i in range(k)) / n if n else 0.0,
        "macro_f1": sum(c["f1"] for c in present) / len(present),
        "per_class": per_class,
        "confusion": confusion,
    }


def example_group(example: Example) -> list[str]:
    """The breakdown groups an example belongs to (always includes "all")."""
    groups = ["all"]
    if example.has_text and example.has_image:
        groups.append("both")
        if example.text_label and example.image_label:
            groups.append(pair_type(example.text_label, example.image_label))
    else:
        groups.append("text_only" if example.has_text else "image_only")
    return groups


def grouped_metrics(
    examples: Sequence[Example], y_pred: Sequence[int], labels: Sequence[str]
) -> dict[str, dict[str, Any]]:
    """Metrics per group of :data:`GROUPS` (groups without examples are left out)."""
    y_true = [labels.index(e.label) for e in examples]
    members: dict[str, list[int]] = {g: [] for g in GROUPS}
    for i, example in enumerate(examples):
        for g in example_group(example):
            members[g].append(i)
    return {
        g: classification_metrics([y_true[i] for i in rows], [y_pred[i] for i in rows], labels)
        for g, rows in members.items() if rows
    }


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


def prediction_agreement(reference: Tensor, other: Tensor) -> dict[str, float]:
    """Top-1 agreement and largest probability difference between two (N, K) prob tables."""
    return {
        "top1_agreement": (reference.argmax(-1) == other.argmax(-1)).float().mean().item(),
        "max_abs_prob_diff": (reference - other).abs().max().item(),
    }


@dataclass
class ModelSpec:
    name: str
    path: str
    role: str = "fusion"  # "fusion" or "baseline"


def evaluate_models(
    manifest: str | Path, models: Sequence[ModelSpec], splits: Sequence[str],
    cache_dir: str | Path | None = None, train_split: str = "train", num_threads: int = 2,
) -> dict[str, Any]:
    """Score every model on every split; returns the full result tree (JSON-serialisable)."""
    from mmsent.train import load_data, predict

    torch.set_num_threads(num_threads)
    manifest = Path(manifest)
    cache = Path(cache_dir) if cache_dir else manifest.parent / "cache"
    results: dict[str, Any] = {"manifest": str(manifest), "splits": {}, "models": {}}
    examples = {s: read_manifest(manifest, split=s) for s in splits}
    train_examples = read_manifest(manifest, split=train_split)
    labels: tuple[str, ...] | None = None
    for spec in models:
        started = time.time()
        model, cfg, extra = load_checkpoint(spec.path)
        labels = cfg.labels
        modalities = extra.get("modalities", "both")
        data = load_data(manifest, list(splits), model, cfg, cache, modalities)
        entry: dict[str, Any] = {
            "path": spec.path, "role": spec.role, "fusion": cfg.fusion, "modalities": modalities,
            "config": _config_summary(cfg), "val_at_save": extra.get("val"),
            "epoch": extra.get("epoch"), "splits": {},
        }
        for split in splits:
            probs, parts = predict(model, data[split])
            pred = probs.argmax(-1).tolist()
            metrics = grouped_metrics(examples[split], pred, cfg.labels)
            both = [i for i, e in enumerate(examples[split]) if e.has_text and e.has_image]
            metrics["all"]["text_contribution_on_pairs"] = (
                parts[both, 0].mean().item() if both else None
            )
            entry["splits"][split] = metrics
        entry["eval_s"] = time.time() - started
        results["models"][spec.name] = entry
    assert labels is not None, "no models given"
    results["labels"] = list(labels)
    for split in splits:
        results["splits"][split] = {
            "n": len(examples[split]),
            "chance": chance_baselines(train_examples, examples[split], labels),
        }
    return results


def _config_summary(cfg: ModelConfig) -> dict[str, Any]:
    keys = ("fusion", "text_encoder", "image_backbone", "image_weights", "image_size",
            "max_text_length", "fusion_dim")
    return {k: getattr(cfg, k) for k in keys}


def _fmt(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f}"


def _rows(results: dict[str, Any], split: str) -> list[tuple[str, dict[str, Any]]]:
    """(display name, grouped metrics) for fusion models, then baselines, then chance."""
    rows = []
    for role in ("fusion", "baseline"):
        for name, entry in results["models"].items():
            if entry["role"] == role and split in entry["splits"]:
                rows.append((name, entry["splits"][split]))
    for name, metrics in results["splits"][split]["chance"].items():
        rows.append((f"chance: {name}", metrics))
    return rows


def markdown_report(results: dict[str, Any], command: str | None = None) -> str:
    """The report as Markdown: summary table, breakdown tables, per-class scores."""
    labels = results["labels"]
    splits = list(results["splits"])
    lines = ["# Evaluation report", ""]
    if command:
        lines += ["Reproduce with:", "", "```bash", command, "```", ""]
    lines += [f"Manifest: `{results['manifest']}`. Scores are percentages.", ""]
    header = "| model | " + " | ".join(f"{s} acc | {s} macro-F1" for s in splits) + " |"
    lines += ["## Summary", "", header, "|---" * (1 + 2 * len(splits)) + "|"]
    for name, _ in _rows(results, splits[0]):
        cells = []
        for split in splits:
            metrics = dict(_rows(results, split)).get(name, {}).get("all", {})
            cells += [_fmt(metrics.get("accuracy")), _fmt(metrics.get("macro_f1"))]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines.append("")
    for split in splits:
        n = results["splits"][split]["n"]
        for metric, title in (("accuracy", "accuracy"), ("macro_f1", "macro-F1")):
            groups = [g for g in GROUPS if any(g in m for _, m in _rows(results, split))]
            counts = {g: next(m[g]["n"] for _, m in _rows(results, split) if g in m)
                      for g in groups}
            lines += [f"## `{split}` ({n} examples): {title} by modality combination", ""]
            lines.append("| model | " + " | ".join(
                f"{GROUP_TITLES[g]} (n={counts[g]})" for g in groups) + " |")
            lines.append("|---" * (1 + len(groups)) + "|")
            for name, metrics in _rows(results, split):
                lines.append(f"| {name} | " + " | ".join(
                    _fmt(metrics[g][metric]) if g in metrics else "–" for g in groups) + " |")
            lines.append("")
    for name, entry in results["models"].items():
        if entry["role"] != "fusion":
            continue
        for split in splits:
            metrics = entry["splits"][split]["all"]
            lines += [f"### {name} on `{split}`: per class", "",
                      "| class | precision | recall | F1 | support |", "|---|---|---|---|---|"]
            for label in labels:
                c = metrics["per_class"][label]
                lines.append(f"| {label} | {_fmt(c['precision'])} | {_fmt(c['recall'])} | "
                             f"{_fmt(c['f1'])} | {c['support']} |")
            lines += ["", "Confusion matrix (rows = true, columns = predicted):", "",
                      "| true \\ pred | " + " | ".join(labels) + " |",
                      "|---" * (1 + len(labels)) + "|"]
            for label, row in zip(labels, metrics["confusion"], strict=True):
                lines.append(f"| {label} | " + " | ".join(str(v) for v in row) + " |")
            share = metrics.get("text_contribution_on_pairs")
            if share is not None:
                lines += ["", f"Mean text contribution on text+image examples: {share:.2f}"]
            lines.append("")
    if results.get("agreement"):
        lines += ["## Export agreement (serving pipeline on raw examples)", "",
                  "| variant | top-1 agreement with eager | max prob diff | accuracy | "
                  "examples/s |", "|---|---|---|---|---|"]
        for name, a in results["agreement"].items():
            top1 = _fmt(a["top1_agreement"]) if "top1_agreement" in a else "-"
            diff = f"{a['max_abs_prob_diff']:.2e}" if "max_abs_prob_diff" in a else "-"
            lines.append(f"| {name} | {top1} | {diff} | {_fmt(a.get('accuracy'))} | "
                         f"{a.get('examples_per_s', 0):.1f} |")
        lines.append("")
    return "\n".join(lines)


def plot_confusions(results: dict[str, Any], split: str, path: Path) -> Path:
    """One normalised confusion matrix per fusion model, side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = results["labels"]
    names = [n for n, e in results["models"].items() if e["role"] == "fusion"]
    fig, axes = plt.subplots(1, len(names), figsize=(3.3 * len(names), 3.2), squeeze=False)
    for ax, name in zip(axes[0], names, strict=True):
        cm = torch.tensor(results["models"][name]["splits"][split]["all"]["confusion"]).float()
        norm = cm / cm.sum(1, keepdim=True).clamp_min(1)
        ax.imshow(norm.numpy(), cmap="Blues", vmin=0, vmax=1)
        for i in range(len(labels)):
            for j in range(len(labels)):
                ax.text(j, i, f"{int(cm[i, j])}", ha="center", va="center",
                        color="white" if norm[i, j] > 0.5 else "black", fontsize=8)
        ax.set_xticks(range(len(labels)), [lab[:3] for lab in labels], fontsize=8)
        ax.set_yticks(range(len(labels)), [lab[:3] for lab in labels], fontsize=8)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("predicted", fontsize=8)
    axes[0][0].set_ylabel("true", fontsize=8)
    fig.suptitle(f"confusion matrices ({split})", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def plot_groups(results: dict[str, Any], split: str, path: Path) -> Path:
    """Macro-F1 per modality combination for every model and the chance baseline."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [(n, m) for n, m in _rows(results, split) if n != "chance: uniform random"]
    groups = [g for g in GROUPS if all(g in m for _, m in rows)]
    width = 0.8 / len(rows)
    fig, ax = plt.subplots(figsize=(8, 3.2))
    for k, (name, metrics) in enumerate(rows):
        xs = [i + k * width for i in range(len(groups))]
        ax.bar(xs, [metrics[g]["macro_f1"] for g in groups], width, label=name)
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(groups))],
                  [GROUP_TITLES[g] for g in groups], fontsize=8)
    ax.set_ylabel("macro-F1")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=7, ncol=2)
    ax.set_title(f"macro-F1 by modality combination ({split})", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def write_report(
    results: dict[str, Any], out_dir: str | Path, command: str | None = None,
    agreement: dict[str, dict[str, float]] | None = None,
) -> dict[str, Path]:
    """Write ``metrics.json``, ``report.md`` and PNG plots into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if agreement:
        results["agreement"] = agreement
    if command:
        results["command"] = command
    paths = {"json": out / "metrics.json", "markdown": out / "report.md"}
    paths["json"].write_text(json.dumps(results, indent=1) + "\n")
    paths["markdown"].write_text(markdown_report(results, command) + "\n")
    for split in results["splits"]:
        if any(e["role"] == "fusion" for e in results["models"].values()):
            paths[f"confusion_{split}"] = plot_confusions(
                results, split, out / f"confusion_{split}.png")
        paths[f"groups_{split}"] = plot_groups(results, split, out / f"groups_{split}.png")
    return paths


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
    results = evaluate_models(args.manifest, specs, args.splits, args.cache_dir, args.train_split)
    command = "python scripts/evaluate.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    agreement = None
    if args.export_agreement and args.model:
        from mmsent.export_check import export_agreement

        agreement = export_agreement(args.manifest, specs[0].path, args.splits[0],
                                     args.export_agreement)
    paths = write_report(results, args.out, command, agreement)
    if args.docs:
        docs = Path(args.docs)
        docs.mkdir(parents=True, exist_ok=True)
        shutil.copy(paths["markdown"], docs / "report.md")
        for key in (f"confusion_{args.splits[0]}", f"groups_{args.splits[0]}"):
            if key in paths:
                shutil.copy(paths[key], docs / paths[key].name)
    print(paths["markdown"].read_text())
    print(f"evaluated {len(specs)} models in {time.time() - started:.0f} s -> {args.out}")
    return 0
