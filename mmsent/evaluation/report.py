"""The evaluation report: Markdown tables and the confusion / per-group plots."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from mmsent.evaluation.groups import GROUP_TITLES, GROUPS


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
    lines += _target_lines(results, splits)
    lines += _bound_lines(results, splits)
    lines += ["## Calibration and class balance", "",
              "ECE: 15 equal-width bins of the top-1 probability; *before* = softmax(logits), "
              "*after* = softmax(logits / T) with the temperature T the checkpoint ships "
              "(fitted on the validation split). Recall gap = largest minus smallest per-class "
              "recall. Reliability diagrams: `reliability_<split>.png`.", "",
              "| model | split | T | ECE before | ECE after | NLL before | NLL after | "
              "recall gap |", "|---|---|---|---|---|---|---|---|"]
    for name, entry in results["models"].items():
        for split in splits:
            cal = entry["splits"][split]["all"].get("calibration")
            if not cal:
                continue
            gap = entry["splits"][split]["all"].get("recall_gap")
            lines.append(
                f"| {name} | {split} | {cal['temperature']:.3f} | "
                f"{_fmt(cal['uncalibrated']['ece'])} | {_fmt(cal['served']['ece'])} | "
                f"{cal['uncalibrated']['nll']:.3f} | {cal['served']['nll']:.3f} | "
                f"{_fmt(gap)} |")
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


def _bound_lines(results: dict[str, Any], splits: list[str]) -> list[str]:
    """The readers' bound (mmsent.evaluation.reader_bound) against the congruent target."""
    bounds = (results.get("frontier") or {}).get("bound") or {}
    rows = [(s, bounds[s]) for s in splits if bounds.get(s, {}).get("summary")]
    if not rows:
        return []
    name = results["frontier"]["b"]
    lines = [f"## Congruent vs incongruent: what `{name}`'s two readers allow", "",
             "Every rule-aware combination of its text reading and its image evidence (label "
             "rule, training pair prior, trust in each reader and a lean towards agreement "
             "swept; `mmsent/evaluation/reader_bound.py`). Target: congruent >= the text-only "
             "head, incongruent >= the best single-modality head.", "",
             "*Perfect text reader*: the same sweep with a text reader that knows every "
             "tweet's true label, so only the image reader limits it.", "",
             "| split | image polarity AUC | target (congruent, incongruent) | text reader | "
             "settings in target | best incongruent at target congruent | best congruent at "
             "target incongruent |", "|---|---|---|---|---|---|---|"]
    for split, b in rows:
        for reader, key in (("the model's", "summary"), ("perfect", "perfect_text_summary")):
            m = b.get(key)
            if not m:
                continue
            lines.append(
                f"| {split} | {b['polarity_auc']:.3f} | {_fmt(m['target'][0])}, "
                f"{_fmt(m['target'][1])} | {reader} | {m['in_target']} of {m['settings']} | "
                f"{_fmt(m['best_incongruent_at_target_congruent'])} | "
                f"{_fmt(m['best_congruent_at_target_incongruent'])} |")
    return [*lines, ""]


def first_fusion(results: dict[str, Any]) -> str | None:
    """The first ``--model``: the one every comparison in the report is about."""
    return next((n for n, e in results["models"].items() if e["role"] == "fusion"), None)


def best_baseline(results: dict[str, Any], split: str, group: str) -> str:
    """The single-modality baseline with the highest accuracy on one slice of one split."""
    models = results["models"]
    baselines = [n for n, e in models.items() if e["role"] == "baseline"]
    return max(baselines, key=lambda b: models[b]["splits"][split][group]["accuracy"])


def _target_lines(results: dict[str, Any], splits: list[str]) -> list[str]:
    """The first fusion model vs the best single-modality baseline on every slice."""
    models = results["models"]
    first = first_fusion(results)
    if first is None or not any(e["role"] == "baseline" for e in models.values()):
        return []
    comparisons = results.get("comparisons") or {}
    lines = [f"## `{first}` vs the best single-modality model, per slice (accuracy)", "",
             "95 % interval: paired bootstrap over the slice's examples (2,000 resamples); an "
             "interval that straddles 0 is a tie at this sample size.", "",
             f"| split | slice | {first} | best single-modality | difference | 95 % interval |",
             "|---|---|---|---|---|---|"]
    for split in splits:
        mine = models[first]["splits"][split]
        for g in GROUPS[1:]:
            if g not in mine:
                continue
            name = best_baseline(results, split, g)
            best = models[name]["splits"][split][g]["accuracy"]
            diff = 100 * (mine[g]["accuracy"] - best)
            ci = comparisons.get(split, {}).get(g)
            interval = f"{100 * ci['low']:+.1f} .. {100 * ci['high']:+.1f}" if ci else "–"
            lines.append(f"| {split} | {GROUP_TITLES[g]} | {_fmt(mine[g]['accuracy'])} | "
                         f"{_fmt(best)} ({name}) | {diff:+.1f} | {interval} |")
    return [*lines, ""]


def pyplot() -> Any:
    """matplotlib's pyplot on the file-only Agg backend (imported late: plots are optional)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(plt: Any, fig: Any, path: Path, dpi: int) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path


def plot_confusions(results: dict[str, Any], split: str, path: Path) -> Path:
    """One normalised confusion matrix per fusion model, side by side."""
    plt = pyplot()
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
    return save_figure(plt, fig, path, dpi=90)


def plot_groups(results: dict[str, Any], split: str, path: Path) -> Path:
    """Macro-F1 per modality combination for every model and the chance baseline."""
    plt = pyplot()
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
    return save_figure(plt, fig, path, dpi=90)


def plot_reliability(results: dict[str, Any], split: str, path: Path) -> Path:
    """Reliability diagrams of every fusion model: before and after temperature scaling."""
    plt = pyplot()
    models = [(n, e) for n, e in results["models"].items()
              if e["role"] == "fusion" and "calibration" in e["splits"][split]["all"]]
    fig, axes = plt.subplots(len(models), 2, figsize=(7, 2.7 * len(models)), squeeze=False)
    for row, (name, entry) in enumerate(models):
        cal = entry["splits"][split]["all"]["calibration"]
        for ax, key, title in ((axes[row][0], "uncalibrated", "before (T = 1)"),
                               (axes[row][1], "served", f"after (T = {cal['temperature']:.2f})")):
            bins = [b for b in cal[key]["bins"] if b["n"]]
            width = bins[0]["hi"] - bins[0]["lo"] if bins else 0.1
            ax.bar([b["lo"] for b in bins], [b["accuracy"] for b in bins], width=width,
                   align="edge", edgecolor="black", alpha=0.7)
            ax.plot([0, 1], [0, 1], "--", color="gray", lw=1)
            ax.set_xlim(0, 1)
            ax.set_ylim(0, 1)
            ax.set_title(f"{title}: ECE {100 * cal[key]['ece']:.1f} %", fontsize=8)
        axes[row][0].set_ylabel(f"{name}\naccuracy", fontsize=7)
        axes[row][0].tick_params(labelsize=7)
        axes[row][1].tick_params(labelsize=7)
    for ax in axes[-1]:
        ax.set_xlabel("top-1 probability (15 equal-width bins)", fontsize=7)
    fig.suptitle(f"reliability on {split}", fontsize=9)
    return save_figure(plt, fig, path, dpi=80)


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
        if any(e["role"] == "fusion" and "calibration" in e["splits"][split]["all"]
               for e in results["models"].values()):
            paths[f"reliability_{split}"] = plot_reliability(
                results, split, out / f"reliability_{split}.png")
    return paths
