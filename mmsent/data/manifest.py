"""One manifest format for every dataset: JSON Lines, one example per line.

Required keys: ``label`` (one of the model's labels) and at least one of ``text`` (string) and
``image`` (path, relative to the manifest's folder unless absolute). Optional: ``split``
("train"/"val"/"test"/...), ``id``, and per-modality labels ``text_label`` / ``image_label``
(used by modality dropout to relabel an example whose other modality is dropped). Any other key is
kept in ``meta`` and written back unchanged, so tools can add bookkeeping without a schema change.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mmsent.config import LABELS

_CORE = ("id", "text", "image", "label", "split", "text_label", "image_label")


@dataclass(frozen=True)
class Example:
    """A text and/or image with its sentiment label."""

    label: str
    text: str | None = None
    image: str | None = None  # as written in the manifest (relative or absolute)
    split: str | None = None
    id: str | None = None
    text_label: str | None = None
    image_label: str | None = None
    meta: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def has_text(self) -> bool:
        return self.text is not None

    @property
    def has_image(self) -> bool:
        return self.image is not None

    def image_path(self, root: str | Path) -> Path | None:
        """Absolute image path, resolving relative paths against the manifest folder ``root``."""
        if self.image is None:
            return None
        path = Path(self.image)
        return path if path.is_absolute() else Path(root) / path

    def to_dict(self) -> dict[str, Any]:
        row: dict[str, Any] = {}
        for key in _CORE:
            value = getattr(self, key)
            if value is not None or key in ("text", "image", "label"):
                row[key] = value
        row.update(self.meta)
        return row

    @classmethod
    def from_dict(cls, row: dict[str, Any], labels: Sequence[str] = LABELS) -> Example:
        row = dict(row)
        if "label" not in row:
            raise ValueError(f"manifest row has no 'label': {row}")
        if row.get("text") is None and row.get("image") is None:
            raise ValueError(f"manifest row has neither 'text' nor 'image': {row}")
        for key in ("label", "text_label", "image_label"):
            value = row.get(key)
            if value is not None and value not in labels:
                raise ValueError(f"{key} {value!r} is not one of {tuple(labels)}")
        core = {key: row.pop(key) for key in _CORE if key in row}
        return cls(**core, meta=row)


def write_manifest(examples: Iterable[Example], path: str | Path) -> Path:
    """Write examples as JSON Lines (UTF-8, emoji and accents kept readable)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as fh:
        for example in examples:
            fh.write(json.dumps(example.to_dict(), ensure_ascii=False, sort_keys=True) + "\n")
    return path


def read_manifest(
    path: str | Path, split: str | None = None, labels: Sequence[str] = LABELS
) -> list[Example]:
    """Read a manifest, optionally keeping one split; errors name the offending line."""
    path = Path(path)
    examples = []
    with path.open(encoding="utf-8") as fh:
        for number, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                example = Example.from_dict(json.loads(line), labels)
            except (ValueError, TypeError) as exc:
                raise ValueError(f"{path}:{number}: {exc}") from exc
            if split is None or example.split == split:
                examples.append(example)
    return examples
