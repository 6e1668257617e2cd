"""The slices every evaluation reports: modality combination and modality agreement, and the
metrics of a set of predictions per slice."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from mmsent.data.labels import pair_type
from mmsent.data.manifest import Example
from mmsent.evaluation.metrics import classification_metrics

GROUPS: tuple[str, ...] = (
    "all", "text_only", "image_only", "both", "congruent", "mixed", "incongruent",
)
GROUP_TITLES = {
    "all": "all", "text_only": "text only", "image_only": "image only", "both": "text+image",
    "congruent": "congruent", "mixed": "one neutral", "incongruent": "incongruent",
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
