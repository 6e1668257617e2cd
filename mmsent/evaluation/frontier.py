"""The congruent / incongruent trade-off (issue 13): one point per model, and a mixing sweep.

On a text+image pair a model must decide how far to trust the emoji. Trusting the text alone
solves congruent pairs whenever the text is read right and fails every ironic (incongruent) pair;
trusting an unseen emoji solves ironic pairs about as often as the glyph is read right. This
module draws that frontier: x = accuracy on congruent pairs, y = accuracy on incongruent pairs,
one marker per evaluated model, plus the curve traced by mixing the served probabilities of two
models, ``p = (1 - w) p_a + w p_b`` for ``w`` in 0..1 (``a`` = the text-only head, ``b`` = the
default fusion model), the best any rule-aware combination of the default's own two readers
reaches (:mod:`mmsent.evaluation.reader_bound`, dashed), and the issue's target region shaded
(congruent at least the text-only head's, incongruent at least the best single-modality head's).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from torch import Tensor

from mmsent.data.manifest import Example, read_manifest
from mmsent.evaluation.groups import GROUP_TITLES, grouped_metrics
from mmsent.evaluation.reader_bound import (
    bound_sweep,
    evidence_readers,
    pair_prior,
    pareto,
    perfect_reader,
    polarity_auc,
)
from mmsent.evaluation.report import first_fusion, pyplot, save_figure

AXES = ("congruent", "incongruent")  # x, y
DEFAULT_WEIGHTS = tuple(round(0.05 * i, 2) for i in range(21))


def mixture_sweep(
    probs_a: Tensor, probs_b: Tensor, examples: Sequence[Example], labels: Sequence[str],
    weights: Sequence[float] = DEFAULT_WEIGHTS,
) -> list[dict[str, Any]]:
    """Grouped metrics of ``argmax((1 - w) probs_a + w probs_b)`` for every ``w``.

    Returns one row per weight: ``{"w": w, "<group>": accuracy, ...}`` for every group of
    :func:`mmsent.evaluation.evaluate.grouped_metrics` (``w = 0`` is model a, ``w = 1`` model b).
    """
    if probs_a.shape != probs_b.shape or len(probs_a) != len(examples):
        raise ValueError(f"shapes differ: {tuple(probs_a.shape)}, {tuple(probs_b.shape)}, "
                         f"{len(examples)} examples")
    rows = []
    for w in weights:
        pred = ((1 - w) * probs_a + w * probs_b).argmax(-1).tolist()
        metrics = grouped_metrics(examples, pred, labels)
        rows.append({"w": float(w), **{g: m["accuracy"] for g, m in metrics.items()}})
    return rows


def frontier_points(results: dict[str, Any], split: str) -> list[dict[str, Any]]:
    """(name, role, modalities, congruent, incongruent) of every model evaluated on ``split``."""
    points = []
    for name, entry in results["models"].items():
        metrics = entry["splits"].get(split, {})
        if all(g in metrics for g in AXES):
            points.append({"name": name, "role": entry["role"],
                           "modalities": entry.get("modalities", "both"),
                           **{g: metrics[g]["accuracy"] for g in AXES}})
    return points


def target_corner(points: Sequence[dict[str, Any]]) -> tuple[float, float] | None:
    """Lower-left corner of the issue's target region: congruent >= the text-only head's,
    incongruent >= the best single-modality head's (None without a text-only head)."""
    singles = [p for p in points if p["role"] == "baseline"]
    text = [p for p in singles if p["modalities"] == "text"]
    if not text:
        return None
    return text[0]["congruent"], max(p["incongruent"] for p in singles)


def plot_frontier(
    results: dict[str, Any], split: str, path: Path, sweep: Sequence[dict[str, Any]] | None = None,
    sweep_label: str = "mixture", bound: Sequence[dict[str, Any]] | None = None,
    bound_label: str = "best rule-aware combination of the default's two readers",
) -> Path:
    """Congruent vs incongruent accuracy of every model, the sweep curve, the readers' bound
    (its Pareto front, dashed), the target region."""
    plt = pyplot()
    points = frontier_points(results, split)
    fig, ax = plt.subplots(figsize=(6.4, 5.0))
    corner = target_corner(points)
    if corner is not None:
        ax.fill_between([corner[0], 1.0], corner[1], 1.0, color="tab:green", alpha=0.12,
                        label="issue 13 target (congruent >= text-only head, incongruent >= "
                              "best single modality)")
        ax.axvline(corner[0], color="tab:green", lw=0.8, ls=":")
    if sweep:
        ax.plot([r[AXES[0]] for r in sweep], [r[AXES[1]] for r in sweep], "-", color="gray",
                lw=1.2, marker=".", ms=4, label=sweep_label, zorder=1)
        for r in sweep:
            if r["w"] in (0.25, 0.5, 0.75):
                ax.annotate(f"w={r['w']:g}", (r[AXES[0]], r[AXES[1]]), fontsize=6,
                            color="gray", xytext=(3, -8), textcoords="offset points")
    if bound:
        front = pareto(bound)
        ax.plot([r[AXES[0]] for r in front], [r[AXES[1]] for r in front], "--", color="tab:purple",
                lw=1.2, label=bound_label, zorder=2)
    first = next((p["name"] for p in points if p["role"] == "fusion"), None)
    for p in points:
        style = ({"marker": "s", "s": 60, "color": "tab:red"} if p["role"] == "baseline"
                 else {"marker": "*", "s": 140, "color": "tab:blue"} if p["name"] == first
                 else {"marker": "o", "s": 36, "color": "tab:blue"})
        ax.scatter(p[AXES[0]], p[AXES[1]], zorder=3, edgecolor="black", lw=0.5, **style)
        ax.annotate(p["name"], (p[AXES[0]], p[AXES[1]]), fontsize=6.5, xytext=(4, 3),
                    textcoords="offset points")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel(f"{GROUP_TITLES[AXES[0]]} pairs: accuracy", fontsize=8)
    ax.set_ylabel(f"{GROUP_TITLES[AXES[1]]} (ironic) pairs: accuracy", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.legend(fontsize=6.5, loc="lower left")
    ax.set_title(f"congruent vs incongruent pairs ({split}); squares: single-modality heads, "
                 "star: default", fontsize=8)
    return save_figure(plt, fig, path, dpi=100)


def sweep_pair(results: dict[str, Any]) -> tuple[str, str] | None:
    """(text-only baseline, first fusion model): the two ends of the sweep, if both were run."""
    models = results["models"]
    text = next((n for n, e in models.items()
                 if e["role"] == "baseline" and e.get("modalities") == "text"), None)
    first = first_fusion(results)
    return (text, first) if text and first else None


def frontier_sweeps(
    results: dict[str, Any], probs: dict[str, dict[str, Tensor]], manifest: str | Path,
    splits: Sequence[str], weights: Sequence[float] = DEFAULT_WEIGHTS,
    cache_dir: str | Path | None = None, train_split: str = "train",
) -> dict[str, Any]:
    """The mixing sweep between :func:`sweep_pair`'s two models on every split, and the
    readers' bound of the first fusion model where it is an image-evidence head (JSON-ready)."""
    pair = sweep_pair(results)
    if pair is None:
        return {}
    out: dict[str, Any] = {"a": pair[0], "b": pair[1], "splits": {}, "bound": {}}
    for split in splits:
        examples = read_manifest(manifest, split=split)
        out["splits"][split] = mixture_sweep(
            probs[pair[0]][split], probs[pair[1]][split], examples, results["labels"], weights)
    readers = evidence_readers(results["models"][pair[1]]["path"], manifest, splits, cache_dir)
    if readers is not None:
        labels = results["labels"]
        prior = pair_prior(read_manifest(manifest, split=train_split), labels)
        for split, (text_logp, image_logp, pairs) in readers.items():
            corner = target_corner(frontier_points(results, split))
            sweep = bound_sweep(text_logp, image_logp, pairs, labels, prior)
            perfect = bound_sweep(perfect_reader(pairs, labels), image_logp, pairs, labels, prior)
            out["bound"][split] = {
                "polarity_auc": polarity_auc(image_logp, [e.image_label for e in pairs], labels),
                "sweep": sweep,
                "summary": bound_summary(sweep, corner),
                "perfect_text_summary": bound_summary(perfect, corner),
            }
    return out


def bound_summary(
    sweep: Sequence[dict[str, Any]], corner: tuple[float, float] | None
) -> dict[str, Any]:
    """What the readers' bound says about the target corner (congruent, incongruent):
    how many settings reach it, the best incongruent at the congruent target and the best
    congruent at the incongruent target (None where no setting gets there)."""
    if corner is None:
        return {}
    cx, cy = corner
    at_x = [r[AXES[1]] for r in sweep if r[AXES[0]] >= cx]
    at_y = [r[AXES[0]] for r in sweep if r[AXES[1]] >= cy]
    return {"target": [cx, cy], "settings": len(sweep),
            "in_target": sum(r[AXES[0]] >= cx and r[AXES[1]] >= cy for r in sweep),
            "best_incongruent_at_target_congruent": max(at_x, default=None),
            "best_congruent_at_target_incongruent": max(at_y, default=None)}


def plot_frontiers(results: dict[str, Any], out_dir: Path) -> dict[str, Path]:
    """``frontier_<split>.png`` for every evaluated split, with the sweep when there is one."""
    sweeps = results.get("frontier") or {}
    label = f"(1 - w) {sweeps['a']} + w {sweeps['b']}" if sweeps else ""
    bounds = sweeps.get("bound", {})
    return {
        f"frontier_{split}": plot_frontier(
            results, split, out_dir / f"frontier_{split}.png",
            sweeps.get("splits", {}).get(split), label,
            bounds.get(split, {}).get("sweep"),
            f"best rule-aware combination of {sweeps.get('b')}'s two readers "
            f"(image polarity AUC {bounds[split]['polarity_auc']:.2f})" if split in bounds else "")
        for split in results["splits"]
    }
