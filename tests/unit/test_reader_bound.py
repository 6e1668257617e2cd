"""The readers' bound: the Bayes combination follows the label rule, and the congruent /
incongruent trade-off it traces is set by what the image reader knows."""

from __future__ import annotations

import itertools

import pytest
import torch

from mmsent.config import LABELS
from mmsent.data.labels import fuse_labels
from mmsent.data.manifest import Example
from mmsent.evaluation.frontier import bound_summary
from mmsent.evaluation.reader_bound import (
    bound_sweep,
    pair_prior,
    pareto,
    perfect_reader,
    polarity_auc,
    rule_posterior,
    rule_tensor,
)

NEG, NEU, POS = LABELS


def _pairs(repeat: int = 2) -> list[Example]:
    """Every (text, image) label pair, ``repeat`` times, labelled by the rule."""
    return [Example(label=fuse_labels(t, i), text="t", image="i.jpg", text_label=t, image_label=i)
            for t, i in itertools.product(LABELS, LABELS) for _ in range(repeat)]


def _reader(labels: list[str], sure: float) -> torch.Tensor:
    """log-probabilities that put ``sure`` on each given label (the rest spread evenly)."""
    p = torch.full((len(labels), 3), (1 - sure) / 2)
    p[torch.arange(len(labels)), torch.tensor([LABELS.index(x) for x in labels])] = sure
    return p.log()


def test_rule_posterior_follows_the_label_rule_for_confident_readers() -> None:
    examples = _pairs(1)
    text = _reader([e.text_label for e in examples], 0.999)
    image = _reader([e.image_label for e in examples], 0.999)
    prior = pair_prior(examples, LABELS)
    got = rule_posterior(text, image, prior, rule_tensor(LABELS)).argmax(-1)
    assert [LABELS[i] for i in got] == [e.label for e in examples]
    # the conflict case: the emoji decides; one neutral: the polar one decides
    assert rule_tensor(LABELS)[LABELS.index(POS), LABELS.index(NEG)].argmax() == LABELS.index(NEG)
    assert rule_tensor(LABELS)[LABELS.index(NEU), LABELS.index(POS)].argmax() == LABELS.index(POS)


def test_pair_prior_counts_text_image_pairs_only() -> None:
    examples = _pairs(1) + [Example(label=POS, text="t", text_label=POS)] * 5
    prior = pair_prior(examples, LABELS)
    assert prior.sum().item() == pytest.approx(1.0)
    assert torch.allclose(prior, torch.full((3, 3), 1 / 9), atol=1e-3)


def test_perfect_readers_reach_every_slice_and_a_blind_image_reader_cannot() -> None:
    examples = _pairs()
    prior = pair_prior(examples, LABELS)
    text = _reader([e.text_label for e in examples], 0.9)
    sharp = bound_sweep(text, _reader([e.image_label for e in examples], 0.9), examples, LABELS,
                        prior)  # fmt: skip
    assert max(min(r["congruent"], r["incongruent"], r["mixed"]) for r in sharp) == 1.0
    # an image reader that says the same about every picture: a congruent and an ironic pair
    # with the same text then get the same answer, and exactly one of them can be right
    blind = bound_sweep(text, torch.full((len(examples), 3), 1 / 3).log(), examples, LABELS,
                        prior)  # fmt: skip
    assert max(r["congruent"] + r["incongruent"] for r in blind) <= 1.0 + 1e-9
    summary = bound_summary(blind, (0.9, 0.5))
    assert summary["in_target"] == 0 and summary["settings"] == len(blind)
    assert summary["best_incongruent_at_target_congruent"] == 0.0  # following the text
    assert summary["best_congruent_at_target_incongruent"] is None  # never gets there
    with pytest.raises(ValueError, match="readings for"):
        bound_sweep(text[:-1], text, examples, LABELS, prior)


def test_pareto_keeps_only_undominated_points() -> None:
    rows = [{"congruent": c, "incongruent": i} for c, i in
            [(0.5, 0.5), (0.6, 0.4), (0.4, 0.4), (0.6, 0.45), (0.3, 0.7), (0.5, 0.2)]]
    assert [(r["congruent"], r["incongruent"]) for r in pareto(rows)] == [
        (0.3, 0.7), (0.5, 0.5), (0.6, 0.45)]


def test_polarity_auc() -> None:
    labels = [POS, POS, NEG, NEG, NEU]
    good = _reader([POS, POS, NEG, NEG, POS], 0.8)
    assert polarity_auc(good, labels, LABELS) == 1.0
    assert polarity_auc(_reader([NEG, NEG, POS, POS, POS], 0.8), labels, LABELS) == 0.0
    assert polarity_auc(torch.zeros(5, 3), labels, LABELS) == 0.5
    with pytest.raises(ValueError, match="positive and negative"):
        polarity_auc(good, [POS] * 5, LABELS)


def test_perfect_text_reader_knows_each_tweet_and_alone_cannot_solve_ironic_pairs() -> None:
    examples = _pairs()
    text = perfect_reader(examples, LABELS)
    assert [LABELS[i] for i in text.argmax(-1)] == [e.text_label for e in examples]
    assert torch.allclose(text.exp().sum(-1), torch.ones(len(examples)))
    # with a blind image reader even the perfect text reader trades congruent for ironic pairs
    rows = bound_sweep(text, torch.full((len(examples), 3), 1 / 3).log(), examples, LABELS,
                       pair_prior(examples, LABELS))  # fmt: skip
    assert max(r["congruent"] + r["incongruent"] for r in rows) <= 1.0 + 1e-9
