#!/usr/bin/env python
"""Evaluate trained heads: see ``python scripts/evaluate.py --help`` and docs/TRAINING.md."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mmsent.evaluate import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main())
