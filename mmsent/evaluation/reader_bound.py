"""How far can *any* fusion of two fixed readers go on congruent vs incongruent pairs?

Issue 13 asks for a default model at least as good as the text-only head on congruent pairs
(text and emoji agree) and at least as good as the best single modality on incongruent (ironic)
pairs. A text+image pair carries two readings: what the text says and what the emoji says. The
label rule (:func:`mmsent.data.labels.fuse_labels`) turns the true pair into the label, and the
dataset's pair mix is a known prior. So the best a fusion can do *with a given pair of readers*
is the Bayes rule

    P(label = y | x) ∝ Σ_{t, i: rule(t, i) = y} π(t, i) p_text(t|x)^g p_image(i|x)^a e^(b [t = i])

where ``π`` is the training pairs' (text label, image label) frequency, ``a`` and ``g`` say how
far each reader is trusted (a calibration of each), and ``b`` leans towards "the two agree".
Sweeping ``(a, g, b)`` traces the best (congruent, incongruent) trade-off reachable by any such
combination; no setting in the target region means the readers, not the fusion, are the limit.

On a congruent and an incongruent pair with the same text the readings differ *only* in the
emoji, so the trade-off is set by how well the image reader tells a positive unseen emoji from a
negative one: :func:`polarity_auc` measures that.

Used by ``scripts/evaluate.py --frontier`` (docs/notes/2026-12-06-congruent-gap.md: why the
congruent target is not reachable).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from mmsent.data.labels import fuse_labels
from mmsent.data.manifest import Example
from mmsent.evaluation.groups import grouped_metrics
from mmsent.modeling.checkpoint import load_checkpoint
from mmsent.training.features import load_data, predict_logits

SLICES = ("congruent", "mixed", "incongruent")
# trust in the image reader, in the text reader, and the lean towards "they agree"
DEFAULT_GRID: dict[str, tuple[float, ...]] = {
    "a": (0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0),
    "g": (0.5, 1.0, 2.0),
    "b": (-2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 2.0, 3.0),
}


def pair_prior(examples: Sequence[Example], labels: Sequence[str]) -> Tensor:
    """(K, K) frequency of (text label, image label) over the text+image examples given."""
    k = len(labels)
    counts = torch.full((k, k), 1e-3)  # no pair type is impossible, only rare
    for e in examples:
        if e.has_text and e.has_image and e.text_label and e.image_label:
            counts[labels.index(e.text_label), labels.index(e.image_label)] += 1
    return counts / counts.sum()


def rule_tensor(labels: Sequence[str]) -> Tensor:
    """(K, K, K) one-hot: ``[t, i, y] = 1`` where the label rule maps (t, i) to y."""
    k = len(labels)
    out = torch.zeros(k, k, k)
    for t, i in itertools.product(range(k), range(k)):
        fused = fuse_labels(labels[t], labels[i])
        assert fused is not None
        out[t, i, labels.index(fused)] = 1
    return out


def rule_posterior(
    text_logp: Tensor, image_logp: Tensor, prior: Tensor, rule: Tensor,
    a: float = 1.0, g: float = 1.0, b: float = 0.0,
) -> Tensor:
    """(N, K) label probabilities of N pairs under the label rule (formula in the docstring)."""
    k = prior.shape[0]
    joint = (prior.log() + g * text_logp[:, :, None] + a * image_logp[:, None, :]
             + b * torch.eye(k))  # fmt: skip
    joint = joint.flatten(1).softmax(-1).view(-1, k, k)
    return torch.einsum("nti,tiy->ny", joint, rule)


def bound_sweep(
    text_logp: Tensor, image_logp: Tensor, examples: Sequence[Example], labels: Sequence[str],
    prior: Tensor, grid: dict[str, tuple[float, ...]] = DEFAULT_GRID,
) -> list[dict[str, Any]]:
    """Accuracy per pair slice for every (a, g, b) of ``grid``, on the text+image examples.

    ``text_logp`` / ``image_logp`` are (N, K) log-probabilities of each reader on those N pairs.
    """
    if not (len(text_logp) == len(image_logp) == len(examples)):
        raise ValueError(f"{len(text_logp)} text and {len(image_logp)} image readings for "
                         f"{len(examples)} pairs")
    rule = rule_tensor(labels)
    rows = []
    for a, g, b in itertools.product(grid["a"], grid["g"], grid["b"]):
        pred = rule_posterior(text_logp, image_logp, prior, rule, a, g, b).argmax(-1)
        metrics = grouped_metrics(examples, pred.tolist(), labels)
        rows.append({"a": a, "g": g, "b": b,
                     **{s: metrics[s]["accuracy"] for s in SLICES if s in metrics}})
    return rows


def pareto(rows: Sequence[dict[str, Any]], x: str = "congruent", y: str = "incongruent"
           ) -> list[dict[str, Any]]:
    """The rows no other row beats on both ``x`` and ``y``, sorted by ``x``."""
    best: list[dict[str, Any]] = []
    for r in sorted(rows, key=lambda r: (-r[x], -r[y])):
        if not best or r[y] > best[-1][y]:
            best.append(r)
    return sorted(best, key=lambda r: r[x])


def perfect_reader(
    examples: Sequence[Example], labels: Sequence[str], sure: float = 0.999
) -> Tensor:
    """(N, K) log-probabilities of a text reader that knows every tweet's true label.

    The pairing of tweet and emoji is random given the tweet's label, so nothing in a tweet
    beyond its label says whether its pair is congruent or ironic: this is the best text reader
    there can be, and its bound is what the image reader alone allows.
    """
    p = torch.full((len(examples), len(labels)), (1 - sure) / (len(labels) - 1))
    rows = torch.arange(len(examples))
    p[rows, torch.tensor([labels.index(e.text_label or e.label) for e in examples])] = sure
    return p.log()


def polarity_auc(image_logp: Tensor, image_labels: Sequence[str], labels: Sequence[str]) -> float:
    """ROC AUC of ``logp(positive) - logp(negative)`` separating positive from negative images
    (neutral ones left out): 0.5 is a coin, 1.0 never confuses the poles."""
    neg, pos = labels.index("negative"), labels.index("positive")
    keep = [j for j, lab in enumerate(image_labels) if lab in ("negative", "positive")]
    score = (image_logp[keep, pos] - image_logp[keep, neg]).tolist()
    is_pos = [image_labels[j] == "positive" for j in keep]
    positives = [s for s, p in zip(score, is_pos, strict=True) if p]
    negatives = [s for s, p in zip(score, is_pos, strict=True) if not p]
    if not positives or not negatives:
        raise ValueError("polarity_auc needs positive and negative images")
    wins = sum((p > n) + 0.5 * (p == n) for p in positives for n in negatives)
    return wins / (len(positives) * len(negatives))


@torch.no_grad()
def evidence_readers(
    checkpoint: str | Path, manifest: str | Path, splits: Sequence[str],
    cache_dir: str | Path | None = None,
) -> dict[str, tuple[Tensor, Tensor, list[Example]]] | None:
    """The two readers of an image-evidence head, on every text+image example of each split.

    Text reader: the head itself with the image masked (what it answers for the text alone, at
    its temperature). Image reader: its image classifier (the served evidence). Returns
    ``{split: (text_logp, image_logp, pair examples)}``, or None for a head without an image
    classifier (image cells as keys).
    """
    model, cfg, extra = load_checkpoint(checkpoint)
    classifier = getattr(model.head, "image_classifier", None)
    if classifier is None or extra.get("modalities", "both") != "both":
        return None
    manifest = Path(manifest)
    cache = Path(cache_dir) if cache_dir else manifest.parent / "cache"
    layer = extra.get("text_from_layer")
    text = load_data(manifest, list(splits), model, cfg, cache, "text", text_layer=layer)
    both = load_data(manifest, list(splits), model, cfg, cache, "both", text_layer=layer)
    out = {}
    for split in splits:
        examples = both[split].examples
        rows = [n for n, e in enumerate(examples) if e.has_text and e.has_image]
        logits, _ = predict_logits(model, text[split])
        text_logp = (logits[rows] / cfg.temperature).log_softmax(-1)
        keys = [both[split].images[n] for n in rows]
        image_logp = torch.cat([classifier(both[split].image.batch(keys[i : i + 256]))
                                for i in range(0, len(keys), 256)]).log_softmax(-1)
        out[split] = (text_logp, image_logp, [examples[n] for n in rows])
    return out
