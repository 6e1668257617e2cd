"""Cross-fitted image evidence: what the fusion head learns to trust must be as reliable in
training as it will be when served.

The image branch of an ``image_input="evidence"`` head is a small classifier
(:class:`mmsent.modeling.heads.ImageEvidence`). Trained on all training glyphs it recognises
them almost perfectly, while on glyphs it has never seen (every test and validation emoji) it is
right about half the time. A fusion head trained on its in-sample outputs would therefore learn
to follow the image blindly. Instead the training glyphs are split into ``k`` folds and every
training image gets *out-of-fold* logits: those of a classifier trained without any of the
image's glyphs. The served branch is the classifier trained on all glyphs (its outputs on unseen
glyphs look like the out-of-fold ones: same recipe, slightly more data).

An image shows 1-3 emoji (all of one class), so "without any of the image's glyphs" means:
one classifier per distinct set of folds its glyphs fall into (at most k + C(k,2) + C(k,3)
tiny models, each trained in about a second on pooled, cached CNN features).
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import torch
from torch import Tensor, nn
from tqdm import tqdm

from mmsent.config import ModelConfig
from mmsent.modeling.heads import ImageEvidence

EPOCHS = 40
BATCH = 128
LR = 1e-3
WEIGHT_DECAY = 0.05


def glyphs_of(emoji: str | None) -> list[str]:
    """The glyphs of an image's ``emoji`` manifest field (one code point each here;
    variation selectors and joiners are not glyphs)."""
    return [c for c in (emoji or "") if c not in "\ufe0f\u200d"]


def glyph_folds(glyph_labels: dict[str, int], k: int, seed: int) -> dict[str, int]:
    """Assign glyphs to k folds, stratified by label (round robin over a seeded shuffle)."""
    rng = random.Random(seed)
    folds: dict[str, int] = {}
    offset = 0
    for label in sorted(set(glyph_labels.values())):
        members = sorted(g for g, lab in glyph_labels.items() if lab == label)
        rng.shuffle(members)
        for j, g in enumerate(members):
            folds[g] = (offset + j) % k
        offset += len(members)
    return folds


def fit_classifier(
    pooled: Tensor,
    labels: Tensor,
    image_dim: int,
    cfg: ModelConfig,
    seed: int,
    class_weights: Tensor | None = None,
) -> ImageEvidence:
    """Train an :class:`ImageEvidence` on (N, C) pooled features with a fixed recipe."""
    torch.manual_seed(seed)
    model = ImageEvidence(image_dim, cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)
    loss_fn = nn.CrossEntropyLoss(weight=class_weights, label_smoothing=0.05)
    gen = torch.Generator().manual_seed(seed)
    model.train()
    x = pooled.unsqueeze(1)  # ImageEvidence mean-pools cells; one "cell" = the pooled vector
    for _ in range(EPOCHS):
        order = torch.randperm(len(labels), generator=gen)
        for start in range(0, len(order), BATCH):
            idx = order[start : start + BATCH]
            loss = loss_fn(model(x[idx]), labels[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return model.eval()


def crossfit(
    pooled: Tensor,
    labels: Tensor,
    emoji: Sequence[str | None],
    image_dim: int,
    cfg: ModelConfig,
    k: int = 5,
    seed: int = 0,
) -> tuple[Tensor, ImageEvidence]:
    """Out-of-fold logits (N, K) for N distinct training images, and the all-glyph classifier.

    ``k = 0`` gives in-sample logits of the all-glyph classifier instead (the ablation: what
    the fusion head saw before cross-fitting).
    """
    counts = torch.bincount(labels, minlength=cfg.num_labels).float()
    weights = counts.sum() / (cfg.num_labels * counts.clamp_min(1))
    full = fit_classifier(pooled, labels, image_dim, cfg, seed, weights)
    if k == 0:
        with torch.no_grad():
            return full(pooled.unsqueeze(1)), full
    glyph_labels: dict[str, int] = {}
    for e, lab in zip(emoji, labels.tolist(), strict=True):
        for g in glyphs_of(e):
            glyph_labels[g] = lab
    folds = glyph_folds(glyph_labels, k, seed)
    image_folds = [frozenset(folds[g] for g in glyphs_of(e)) for e in emoji]
    out = torch.zeros(len(labels), cfg.num_labels)
    held_sets = sorted(set(image_folds), key=sorted)
    for n, held in enumerate(tqdm(held_sets, desc="cross-fit image evidence", unit="model")):
        train_rows = [i for i, f in enumerate(image_folds) if not (f & held)]
        rows = [i for i, f in enumerate(image_folds) if f == held]
        model = fit_classifier(
            pooled[train_rows], labels[train_rows], image_dim, cfg, seed + 1 + n, weights
        )
        with torch.no_grad():
            out[rows] = model(pooled[rows].unsqueeze(1))
    return out, full
