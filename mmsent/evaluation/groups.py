"""The slices every evaluation reports: modality combination and modality agreement."""

GROUPS: tuple[str, ...] = (
    "all", "text_only", "image_only", "both", "congruent", "mixed", "incongruent",
)
GROUP_TITLES = {
    "all": "all", "text_only": "text only", "image_only": "image only", "both": "text+image",
    "congruent": "congruent", "mixed": "one neutral", "incongruent": "incongruent",
}
