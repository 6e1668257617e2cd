"""The label rule that turns a (text label, image label) pair into one example label.

It is shared by the "tweets + emoji" dataset, the MVSA merge and modality dropout, so the three can
never disagree about what a pair means.

Rule (documented in docs/training.md):

* both modalities agree -> that label;
* one modality is neutral -> the polar one decides (a neutral caption under an angry emoji is
  angry; a neutral emoji under a glowing review is glowing);
* positive vs negative (the sarcasm / irony case) -> depends on ``conflict``: ``"image"`` (the
  dataset default: the emoji is the tone marker, as in "great, another delay 😡"), ``"text"``,
  or ``"drop"`` (return None; the MVSA convention, where such pairs are discarded).
"""

from __future__ import annotations

NEUTRAL = "neutral"
PAIR_TYPES: tuple[str, ...] = ("text_only", "image_only", "congruent", "mixed", "incongruent")
CONFLICT_RULES: tuple[str, ...] = ("image", "text", "drop")


def fuse_labels(text_label: str, image_label: str, conflict: str = "image") -> str | None:
    """Combine per-modality labels into the example label (None = drop the pair)."""
    if conflict not in CONFLICT_RULES:
        raise ValueError(f"conflict must be one of {CONFLICT_RULES}, got {conflict!r}")
    if text_label == image_label:
        return text_label
    if text_label == NEUTRAL:
        return image_label
    if image_label == NEUTRAL:
        return text_label
    if conflict == "drop":
        return None
    return image_label if conflict == "image" else text_label


def pair_type(text_label: str | None, image_label: str | None) -> str:
    """Name the modality combination / agreement of an example, for the evaluation breakdown.

    ``congruent``: same label; ``mixed``: one neutral, one polar; ``incongruent``: opposite poles.
    """
    if text_label is None and image_label is None:
        raise ValueError("an example needs at least one modality")
    if image_label is None:
        return "text_only"
    if text_label is None:
        return "image_only"
    if text_label == image_label:
        return "congruent"
    if NEUTRAL in (text_label, image_label):
        return "mixed"
    return "incongruent"
