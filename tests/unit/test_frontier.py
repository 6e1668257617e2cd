"""The congruent / incongruent frontier: the mixing sweep and its plot."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mmsent.config import LABELS
from mmsent.data.manifest import Example
from mmsent.evaluation.frontier import (
    frontier_points,
    mixture_sweep,
    plot_frontier,
    target_corner,
)
from mmsent.evaluation.groups import grouped_metrics

NEG, NEU, POS = LABELS


def _pairs() -> list[Example]:
    """Text+image pairs of every agreement type plus single-modality rows, labelled by the rule."""
    rows = [  # (text label, image label, fused label)
        (POS, POS, POS), (NEG, NEG, NEG), (NEU, NEU, NEU), (POS, POS, POS),
        (POS, NEG, NEG), (NEG, POS, POS), (POS, NEG, NEG),
        (NEU, POS, POS), (NEG, NEU, NEG),
    ]
    out = [Example(label=f, text="t", image="i.jpg", text_label=t, image_label=i)
           for t, i, f in rows]
    return out + [Example(label=POS, text="t", text_label=POS),
                  Example(label=NEG, image="i.jpg", image_label=NEG)]


def test_sweep_endpoints_are_the_two_models_and_the_middle_mixes() -> None:
    examples = _pairs()
    gen = torch.Generator().manual_seed(0)
    a = torch.rand(len(examples), 3, generator=gen).softmax(-1)
    b = torch.rand(len(examples), 3, generator=gen).softmax(-1)
    sweep = mixture_sweep(a, b, examples, LABELS, weights=(0.0, 0.5, 1.0))
    assert [r["w"] for r in sweep] == [0.0, 0.5, 1.0]
    for row, probs in ((sweep[0], a), (sweep[-1], b)):
        own = grouped_metrics(examples, probs.argmax(-1).tolist(), LABELS)
        assert {g: row[g] for g in own} == {g: m["accuracy"] for g, m in own.items()}
    mixed = grouped_metrics(examples, (a + b).argmax(-1).tolist(), LABELS)
    assert sweep[1]["incongruent"] == mixed["incongruent"]["accuracy"]


def test_sweep_traces_text_reading_to_emoji_reading() -> None:
    # a reads the text (right on congruent pairs, wrong on every ironic pair); b reads the emoji
    examples = _pairs()
    one_hot = torch.eye(3)
    a = torch.stack([one_hot[LABELS.index(e.text_label or e.label)] for e in examples])
    b = torch.stack([one_hot[LABELS.index(e.image_label or e.label)] for e in examples])
    sweep = mixture_sweep(a * 0.9 + 0.05, b * 0.8 + 0.1, examples, LABELS)
    assert (sweep[0]["congruent"], sweep[0]["incongruent"]) == (1.0, 0.0)
    assert (sweep[-1]["congruent"], sweep[-1]["incongruent"]) == (1.0, 1.0)
    with pytest.raises(ValueError, match="shapes differ"):
        mixture_sweep(a[:-1], b, examples, LABELS)


def _results() -> dict:
    def entry(role: str, modalities: str, cong: float, incong: float) -> dict:
        return {"role": role, "modalities": modalities,
                "splits": {"test": {"congruent": {"accuracy": cong},
                                    "incongruent": {"accuracy": incong}}}}
    return {"labels": list(LABELS), "splits": {"test": {}}, "models": {
        "default": entry("fusion", "both", 0.52, 0.53),
        "text only": entry("baseline", "text", 0.66, 0.15),
        "image only": entry("baseline", "image", 0.39, 0.50),
    }}


def test_target_region_and_plot(tmp_path: Path) -> None:
    points = frontier_points(_results(), "test")
    assert [p["name"] for p in points] == ["default", "text only", "image only"]
    assert target_corner(points) == (0.66, 0.50)  # text-only congruent, best single incongruent
    assert target_corner([p for p in points if p["modalities"] != "text"]) is None
    sweep = [{"w": w, "congruent": 0.66 - 0.14 * w, "incongruent": 0.15 + 0.38 * w}
             for w in (0.0, 0.5, 1.0)]
    path = plot_frontier(_results(), "test", tmp_path / "f.png", sweep, "mix")
    assert path.stat().st_size > 10_000 and path.read_bytes()[:4] == b"\x89PNG"
