"""Loader for MVSA-Single and MVSA-Multiple (Niu et al., MMM 2016), which users download.

Folder layout (as distributed)::

    MVSA_Single/   data/<id>.txt  data/<id>.jpg  labelResultAll.txt
    MVSA/          data/<id>.txt  data/<id>.jpg  labelResultAll.txt   (MVSA-Multiple)

``labelResultAll.txt`` is tab separated with a header row. MVSA-Single has one ``text,image``
column (one annotator); MVSA-Multiple has three (three annotators).

Merge rule, the usual one in the literature (Xu & Mao, MultiSentiNet, CIKM 2017, and later work):

* MVSA-Multiple first takes, per modality, the majority of the three annotators; a modality with
  no majority (three different labels) drops the pair.
* Then, as for MVSA-Single: equal labels -> that label; one neutral -> the other (polar) label;
  positive vs negative -> the pair is dropped.

Text files are mostly UTF-8 but some are Latin-1 / Windows-1252; both are read.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from mmsent.config import LABELS
from mmsent.data.labels import fuse_labels
from mmsent.data.manifest import Example


def _read_text(path: Path) -> str:
    raw = path.read_bytes()
    for encoding in ("utf-8", "cp1252"):
        try:
            return " ".join(raw.decode(encoding).split())
        except UnicodeDecodeError:
            continue
    return " ".join(raw.decode("latin-1").split())


def majority(labels: Sequence[str]) -> str | None:
    """The label chosen by more than half of the annotators, else None."""
    if not labels:
        return None
    label, count = Counter(labels).most_common(1)[0]
    return label if count * 2 > len(labels) else None


def _parse_votes(cell: str) -> tuple[str, str]:
    text_label, image_label = (part.strip().lower() for part in cell.split(","))
    if text_label not in LABELS or image_label not in LABELS:
        raise ValueError(f"unexpected MVSA label cell {cell!r}")
    return text_label, image_label


def load_mvsa(root: str | Path, kind: str = "auto") -> tuple[list[Example], dict[str, int]]:
    """Load MVSA-Single or -Multiple as merged examples, plus counts of what was dropped.

    ``kind``: "single", "multiple", or "auto" (decided by the number of annotator columns).
    Image paths are absolute, so the manifest can be written anywhere.
    """
    root = Path(root)
    label_file = root / "labelResultAll.txt"
    data_dir = root / "data"
    if not label_file.exists() or not data_dir.is_dir():
        raise FileNotFoundError(f"{root} lacks labelResultAll.txt or data/ (see docs/training.md)")
    lines = label_file.read_text(encoding="utf-8", errors="replace").splitlines()
    stats = Counter({"rows": 0, "no_majority": 0, "conflict": 0, "missing_files": 0, "kept": 0})
    examples = []
    for line in lines[1:]:  # header: ID, text,image [, text,image, text,image]
        cells = [c for c in line.strip().split("\t") if c.strip()]
        if len(cells) < 2:
            continue
        stats["rows"] += 1
        ident, votes = cells[0].strip(), [_parse_votes(c) for c in cells[1:]]
        detected = "single" if len(votes) == 1 else "multiple"
        if kind not in ("auto", detected):
            raise ValueError(f"{label_file} looks like MVSA-{detected}, not MVSA-{kind}")
        text_label = majority([v[0] for v in votes])
        image_label = majority([v[1] for v in votes])
        if text_label is None or image_label is None:
            stats["no_majority"] += 1
            continue
        label = fuse_labels(text_label, image_label, conflict="drop")
        if label is None:
            stats["conflict"] += 1
            continue
        text_path, image_path = data_dir / f"{ident}.txt", data_dir / f"{ident}.jpg"
        if not text_path.exists() or not image_path.exists():
            stats["missing_files"] += 1
            continue
        stats["kept"] += 1
        examples.append(
            Example(
                label=label, text=_read_text(text_path), image=str(image_path.resolve()),
                id=f"mvsa-{ident}", text_label=text_label, image_label=image_label,
            )
        )
    return examples, dict(stats)


def assign_splits(
    examples: Sequence[Example], seed: int = 0,
    fractions: tuple[float, float, float] = (0.8, 0.1, 0.1),
) -> list[Example]:
    """Random train/val/test split (8:1:1 is the customary MVSA protocol), reproducible by seed."""
    order = list(range(len(examples)))
    random.Random(seed).shuffle(order)
    n_train = int(len(order) * fractions[0])
    n_val = int(len(order) * fractions[1])
    split_of = {}
    for rank, index in enumerate(order):
        split_of[index] = "train" if rank < n_train else "val" if rank < n_train + n_val else "test"
    return [replace(ex, split=split_of[i]) for i, ex in enumerate(examples)]
