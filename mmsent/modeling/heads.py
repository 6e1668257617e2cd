"""Fusion heads: how projected text tokens and image cells become logits + contributions.

Every strategy shares the projection (:class:`FusionHead`) and implements only ``fuse``.
``has_text`` / ``has_image`` (float 0/1 per example) switch a modality off, so text-only and
image-only requests are first-class and the same masks drive modality dropout in training.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from mmsent.config import ModelConfig

_EPS = 1e-6


def _normalise(parts: Tensor) -> Tensor:
    """Scale non-negative (B, 2) contributions to sum to 1 (all-zero rows stay zero)."""
    return parts / parts.sum(dim=-1, keepdim=True).clamp_min(_EPS)


def _masked_mean(tokens: Tensor, mask: Tensor) -> Tensor:
    weights = mask.unsqueeze(-1)
    return (tokens * weights).sum(1) / weights.sum(1).clamp_min(1.0)


class FusionHead(nn.Module):
    """Common part of every strategy: project both modalities to ``fusion_dim``."""

    def __init__(self, text_dim: int, image_dim: int, cfg: ModelConfig) -> None:
        super().__init__()
        d = cfg.fusion_dim
        self.text_proj = nn.Sequential(nn.Linear(text_dim, d), nn.LayerNorm(d))
        self.image_proj = nn.Sequential(nn.Linear(image_dim, d), nn.LayerNorm(d))
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(
        self,
        text_tokens: Tensor,
        text_mask: Tensor,
        image_tokens: Tensor,
        has_text: Tensor,
        has_image: Tensor,
    ) -> tuple[Tensor, Tensor]:
        """Project both modalities, then let the strategy fuse them into (logits, contributions)."""
        return self.fuse_tokens(
            text_tokens, text_mask, self.image_proj(image_tokens), has_text, has_image
        )

    def fuse_tokens(
        self,
        text_tokens: Tensor,
        text_mask: Tensor,
        i: Tensor,
        has_text: Tensor,
        has_image: Tensor,
    ) -> tuple[Tensor, Tensor]:
        """Project the text, build the masks, and fuse with image tokens ``i`` (already in the
        fusion width). ``tmask`` is the text token mask with whole rows zeroed where the text is
        absent."""
        t = self.text_proj(text_tokens)
        # type_as, not .to(t.dtype): tracing would freeze t's dtype as a constant (float32) and
        # break half precision; type_as reads the dtype at run time (see portable_graph.py).
        has_text, has_image = has_text.type_as(t), has_image.type_as(t)
        tmask = text_mask.type_as(t) * has_text.unsqueeze(1)
        return self.fuse(t, i, tmask, has_text, has_image)

    def fuse(
        self, t: Tensor, i: Tensor, tmask: Tensor, has_text: Tensor, has_image: Tensor
    ) -> tuple[Tensor, Tensor]:
        raise NotImplementedError


class ImageEvidence(nn.Module):
    """Image-only sentiment classifier on the mean-pooled CNN cells: (B, N, C) -> (B, K) logits.

    Small on purpose (it is trained on a few hundred glyphs); cross-fitted copies of it produce
    the out-of-fold evidence the fusion is trained on (mmsent.training.crossfit).
    """

    def __init__(self, image_dim: int, cfg: ModelConfig) -> None:
        super().__init__()
        d = cfg.fusion_dim
        self.net = nn.Sequential(
            nn.LayerNorm(image_dim),
            nn.Dropout(0.2),
            nn.Linear(image_dim, d),
            nn.GELU(),
            nn.Dropout(0.2),
            nn.Linear(d, cfg.num_labels),
        )

    def forward(self, image_tokens: Tensor) -> Tensor:
        return self.net(image_tokens.mean(1))


class AttentionFusion(FusionHead):
    """A learned query attends over [null, text tokens, image cells] with multi-head attention.

    The attention mass landing on text vs image tokens is the contribution. The always-visible
    null token keeps the softmax defined when a modality is missing.
    """

    def __init__(self, text_dim: int, image_dim: int, cfg: ModelConfig) -> None:
        super().__init__(text_dim, image_dim, cfg)
        d = cfg.fusion_dim
        self.evidence = cfg.image_input == "evidence"
        if self.evidence:
            # the image enters as ONE token: its own sentiment evidence (log-probabilities of a
            # small image classifier), projected to d. Training feeds cross-fitted (out-of-fold)
            # evidence, so the fusion learns how far an unseen glyph can be trusted.
            self.image_classifier = ImageEvidence(image_dim, cfg)
            self.evidence_proj = nn.Sequential(nn.Linear(cfg.num_labels, d), nn.LayerNorm(d))
        self.query = nn.Parameter(torch.randn(1, 1, d) * 0.02)
        self.null = nn.Parameter(torch.zeros(1, 1, d))
        self.modality = nn.Parameter(torch.randn(2, d) * 0.02)
        self.attn = nn.MultiheadAttention(d, cfg.num_heads, dropout=cfg.dropout, batch_first=True)
        self.norm1 = nn.LayerNorm(d)
        self.ffn = nn.Sequential(nn.Linear(d, 2 * d), nn.GELU(), nn.Linear(2 * d, d))
        self.norm2 = nn.LayerNorm(d)
        self.classifier = nn.Linear(d, cfg.num_labels)

    def forward(self, *inputs: Tensor) -> tuple[Tensor, Tensor]:
        """The base class's five inputs; with ``image_input="evidence"`` the image enters as its
        classifier's evidence (one token) instead of projected feature tokens."""
        if not self.evidence:
            return super().forward(*inputs)
        text_tokens, text_mask, image_tokens, has_text, has_image = inputs
        return self.forward_evidence(
            text_tokens, text_mask, self.image_classifier(image_tokens), has_text, has_image
        )

    def forward_evidence(
        self,
        text_tokens: Tensor,
        text_mask: Tensor,
        image_logits: Tensor,
        has_text: Tensor,
        has_image: Tensor,
    ) -> tuple[Tensor, Tensor]:
        """Fusion on given image-classifier logits (B, K): training passes out-of-fold ones."""
        i = self.evidence_proj(torch.log_softmax(image_logits, dim=-1)).unsqueeze(1)
        return self.fuse_tokens(text_tokens, text_mask, i, has_text, has_image)

    def fuse(
        self, t: Tensor, i: Tensor, tmask: Tensor, has_text: Tensor, has_image: Tensor
    ) -> tuple[Tensor, Tensor]:
        batch, n_text, n_img = t.shape[0], t.shape[1], i.shape[1]
        keys = torch.cat(
            [self.null.expand(batch, 1, -1), t + self.modality[0], i + self.modality[1]], dim=1
        )
        ignore = torch.cat(
            [
                # zeros_like inherits the device at run time; zeros(device=...) would trace
                # it as a constant and pin the graph to the export machine's device
                torch.zeros_like(tmask[:, :1], dtype=torch.bool),
                tmask <= 0,
                (has_image <= 0).unsqueeze(1).expand(batch, n_img),
            ],
            dim=1,
        )
        query = self.query.expand(batch, 1, -1)
        out, weights = self.attn(query, keys, keys, key_padding_mask=ignore, need_weights=True)
        h = self.norm1(query[:, 0] + self.dropout(out[:, 0]))
        h = self.norm2(h + self.dropout(self.ffn(h)))
        logits = self.classifier(self.dropout(h))
        w = weights[:, 0]  # (B, 1 + T + N), averaged over heads
        parts = torch.stack([w[:, 1 : 1 + n_text].sum(-1), w[:, 1 + n_text :].sum(-1)], dim=-1)
        return logits, _normalise(parts)


class ConcatFusion(FusionHead):
    """Early fusion: pooled text and image vectors concatenated into an MLP.

    Contribution = norm of each modality's share of the first layer's pre-activation.
    """

    def __init__(self, text_dim: int, image_dim: int, cfg: ModelConfig) -> None:
        super().__init__(text_dim, image_dim, cfg)
        d = cfg.fusion_dim
        self.from_text = nn.Linear(d, 2 * d, bias=False)
        self.from_image = nn.Linear(d, 2 * d, bias=False)
        self.from_presence = nn.Linear(2, 2 * d)
        self.mlp = nn.Sequential(
            nn.GELU(), nn.Dropout(cfg.dropout), nn.Linear(2 * d, cfg.num_labels)
        )

    def fuse(
        self, t: Tensor, i: Tensor, tmask: Tensor, has_text: Tensor, has_image: Tensor
    ) -> tuple[Tensor, Tensor]:
        presence = torch.stack([has_text, has_image], dim=-1)
        tv = self.from_text(self.dropout(_masked_mean(t, tmask))) * presence[:, :1]
        iv = self.from_image(self.dropout(i.mean(1))) * presence[:, 1:]
        logits = self.mlp(tv + iv + self.from_presence(presence))
        parts = torch.stack([tv.norm(dim=-1), iv.norm(dim=-1)], dim=-1)
        return logits, _normalise(parts)


class LateFusion(FusionHead):
    """Late fusion: one classifier per modality, logits averaged over the modalities present."""

    def __init__(self, text_dim: int, image_dim: int, cfg: ModelConfig) -> None:
        super().__init__(text_dim, image_dim, cfg)
        d = cfg.fusion_dim
        self.text_classifier = nn.Sequential(
            nn.Linear(d, d), nn.GELU(), nn.Dropout(cfg.dropout), nn.Linear(d, cfg.num_labels)
        )
        self.image_classifier = nn.Sequential(
            nn.Linear(d, d), nn.GELU(), nn.Dropout(cfg.dropout), nn.Linear(d, cfg.num_labels)
        )

    def fuse(
        self, t: Tensor, i: Tensor, tmask: Tensor, has_text: Tensor, has_image: Tensor
    ) -> tuple[Tensor, Tensor]:
        text_logits = self.text_classifier(self.dropout(_masked_mean(t, tmask)))
        image_logits = self.image_classifier(self.dropout(i.mean(1)))
        weights = _normalise(torch.stack([has_text, has_image], dim=-1))
        logits = weights[:, :1] * text_logits + weights[:, 1:] * image_logits
        return logits, weights


HEADS: dict[str, type[FusionHead]] = {
    "attention": AttentionFusion,
    "concat": ConcatFusion,
    "late": LateFusion,
}
