"""Scores shared by training (model selection), evaluation and export checks: one of each."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor


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


def macro_f1(
    y_true: Tensor | Sequence[int], y_pred: Tensor | Sequence[int], num_labels: int
) -> float:
    """Macro-F1 over the classes present in ``y_true`` (training's model selection uses it)."""
    labels = [str(k) for k in range(num_labels)]
    return classification_metrics(_ints(y_true), _ints(y_pred), labels)["macro_f1"]


def _ints(values: Tensor | Sequence[int]) -> list[int]:
    return values.tolist() if isinstance(values, Tensor) else [int(v) for v in values]


def prediction_agreement(reference: Tensor, other: Tensor) -> dict[str, float]:
    """Top-1 agreement and largest probability difference between two (N, K) prob tables."""
    return {
        "top1_agreement": (reference.argmax(-1) == other.argmax(-1)).float().mean().item(),
        "max_abs_prob_diff": (reference - other).abs().max().item(),
    }


ECE_BINS = 15


def calibration(
    probs: Tensor, y_true: Tensor | Sequence[int], bins: int = ECE_BINS
) -> dict[str, Any]:
    """Expected calibration error of the top-1 confidence, and the reliability-diagram data.

    Bin scheme: ``bins`` equal-width confidence bins over [0, 1] (right-closed; the top bin
    includes 1.0); ECE = sum over bins of (bin size / N) * |accuracy - mean confidence|.
    """
    y = torch.as_tensor(_ints(y_true))
    conf, pred = probs.max(-1)
    correct = (pred == y).float()
    edges = torch.linspace(0, 1, bins + 1)
    index = torch.bucketize(conf, edges[1:-1], right=False).clamp(0, bins - 1)
    rows, ece = [], 0.0
    for b in range(bins):
        members = index == b
        n = int(members.sum())
        if n == 0:
            rows.append({"lo": edges[b].item(), "hi": edges[b + 1].item(), "n": 0})
            continue
        acc, mean_conf = correct[members].mean().item(), conf[members].mean().item()
        ece += n / len(y) * abs(acc - mean_conf)
        rows.append(
            {
                "lo": edges[b].item(),
                "hi": edges[b + 1].item(),
                "n": n,
                "accuracy": acc,
                "confidence": mean_conf,
            }
        )
    nll = -torch.log(probs[torch.arange(len(y)), y].clamp_min(1e-12)).mean().item()
    return {"ece": ece, "nll": nll, "bins": rows, "bin_scheme": f"{bins} equal-width bins"}


def recall_gap(metrics: dict[str, Any]) -> float:
    """Largest minus smallest per-class recall (classes with support only)."""
    recalls = [c["recall"] for c in metrics["per_class"].values() if c["support"]]
    return max(recalls) - min(recalls)


BOOTSTRAP_RESAMPLES = 2000


def paired_bootstrap_diff(
    correct_a: Tensor | Sequence[bool], correct_b: Tensor | Sequence[bool],
    resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0, level: float = 0.95,
) -> dict[str, float]:
    """Accuracy of model a minus model b on the same examples, with a paired bootstrap interval.

    Both models are scored on every resample of the examples, so what they share (the hard
    examples) cancels: on a 600-example slice two independent accuracies each carry about
    +-4 points of sampling noise, their paired difference much less where the models agree.
    Returns ``{"diff", "low", "high"}`` (the central ``level`` interval, as fractions).
    """
    a = torch.as_tensor(correct_a, dtype=torch.float32)
    b = torch.as_tensor(correct_b, dtype=torch.float32)
    if a.shape != b.shape or a.ndim != 1 or len(a) == 0:
        raise ValueError(f"need two equal, non-empty 1-d vectors, got {tuple(a.shape)}, "
                         f"{tuple(b.shape)}")
    gen = torch.Generator().manual_seed(seed)
    index = torch.randint(0, len(a), (resamples, len(a)), generator=gen)
    diffs = (a - b)[index].mean(1)
    tail = (1 - level) / 2
    low, high = torch.quantile(diffs, torch.tensor([tail, 1 - tail])).tolist()
    return {"diff": (a - b).mean().item(), "low": low, "high": high}
